"""Training: hyperparameters and presets, the resumable loop; hebb-net's staged trainer is :mod:`.hebbian`
(its settings and plan of steps: :mod:`.hebbian_config`)."""

from hahrobust.training.config import PRESETS, Preset, Runtime, TrainConfig, preset
from hahrobust.training.loop import TrainResult, run_paths, train, training_step

__all__ = ["PRESETS", "Preset", "Runtime", "TrainConfig", "TrainResult", "preset", "run_paths", "train", "training_step"]
