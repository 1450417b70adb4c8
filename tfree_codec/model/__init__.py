"""The model: takes word patterns (T-FREE) or token ids (the BPE baseline); hands on (B, T, v) scores.
``transformer`` is the one model file, ``step`` the numba one-position step generation uses on a CPU,
``checkpoint`` saves and loads it with its codec, ``device`` picks where it runs. Imports torch."""
from .transformer import Model, ModelConfig

__all__ = ["Model", "ModelConfig"]
