"""Training: hyperparameters and presets, the resumable loop."""

from hahrobust.training.config import PRESETS, Preset, TrainConfig, preset
from hahrobust.training.loop import TrainResult, run_paths, train

__all__ = ["PRESETS", "Preset", "TrainConfig", "TrainResult", "preset", "run_paths", "train"]
