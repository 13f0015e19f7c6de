"""Training: hyperparameters and presets, the resumable loop."""

from hahrobust.training.config import PRESETS, Preset, Runtime, TrainConfig, preset
from hahrobust.training.loop import TrainResult, run_paths, train, training_step

__all__ = ["PRESETS", "Preset", "Runtime", "TrainConfig", "TrainResult", "preset", "run_paths", "train", "training_step"]
