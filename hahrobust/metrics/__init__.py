"""Evaluation metrics: accuracy, and (see the submodules) sparsity, SNR and noise robustness."""

from hahrobust.metrics.accuracy import accuracy

__all__ = ["accuracy"]
