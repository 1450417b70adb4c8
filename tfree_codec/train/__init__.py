"""Training: takes shards or text; hands on a run directory of checkpoints, a dictionary and a log. ``data`` packs
batches, ``loop`` is the training loop (``train``), ``evaluate`` measures held-out bits per byte and fits the
decoder's calibration, ``checks`` refuses bad options, changed data and diverged models. Imports torch."""
from .loop import TrainConfig, train

__all__ = ["TrainConfig", "train"]
