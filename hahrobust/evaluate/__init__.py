"""The library face of every evaluation command: one typed function per command, each returning a
:class:`hahrobust.results.Result` (show it with :func:`hahrobust.results.show`, write it with
:func:`hahrobust.results.write`). The command line only parses options and calls these, as RobustBench's
``benchmark()`` is a function before it is a script::

    import hahrobust
    from hahrobust import evaluate
    from hahrobust.data import balanced_subset, load_cifar10

    models = hahrobust.open_models(["checkpoints/hah-vgg16-small.safetensors", "checkpoints/vgg16-small.safetensors"])
    test = balanced_subset(load_cifar10("cifar10-jpeg.tar.gz", "test"), 200, seed=0)
    result = evaluate.noise_sweep(models, test, sigmas=[0.0, 0.1, 0.2])
    result.rows                                      # tidy pandas rows; result.settings, result.checkpoints

``models`` is :func:`open_models`'s list or a ``{label: nn.Module}`` mapping.
"""

from hahrobust.evaluate.robustness import attack, table1
from hahrobust.evaluate.auditing import AuditResult, audit
from hahrobust.evaluate.calibration import CaseResult, calibrate_case, calibration_table
from hahrobust.evaluate.certification import CertifyResult, certify
from hahrobust.evaluate.corruption import corruption_sweep
from hahrobust.evaluate.noise import noise_sweep
from hahrobust.evaluate.opening import LoadedModel, open_models
from hahrobust.evaluate.activations import snr
from hahrobust.evaluate.activations import sparsity

__all__ = [
    "AuditResult", "CaseResult", "CertifyResult", "calibrate_case", "calibration_table", "LoadedModel", "attack", "audit", "certify", "table1", "corruption_sweep", "noise_sweep", "open_models", "snr",
    "sparsity",
]
