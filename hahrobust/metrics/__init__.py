"""Evaluation metrics: accuracy, activation sparsity, block-wise SNR and accuracy under input noise."""

from hahrobust.metrics.accuracy import accuracy
from hahrobust.metrics.noise import DEFAULT_SIGMAS, NOISE_KINDS, NoiseKind, add_noise, noise_accuracy, unit_noise
from hahrobust.metrics.snr import power_ratio, snr
from hahrobust.metrics.sparsity import MeasuredTensor, default_block_count, hoyer, measured_tensor, sparsity

__all__ = [
    "DEFAULT_SIGMAS", "MeasuredTensor", "NOISE_KINDS", "NoiseKind", "accuracy", "add_noise", "default_block_count",
    "hoyer", "measured_tensor", "noise_accuracy", "power_ratio", "snr", "sparsity", "unit_noise",
]
