"""What a decoder hands back (``Decoded``) and the sampling settings that every decoding path checks alike.

Shared by the numba decoder (``decoder``), its torch twin (``torch_decoder``) and generation, so none of them
imports another for these.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import TfreeError

# The sampling defaults of the library (``stream``, ``generate``) and of ``tfree generate`` alike.
DEFAULT_MAX_NEW = 100
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95
_TAIL = 40.0  # sampling ignores words whose probability is below e^-_TAIL times the best word's
_LOW = -60.0  # below this (best - 1) / T the fused sum(exp((s - 1) / T)) may underflow: sum again around the best


@dataclass
class Decoded:
    """The decoded word of each of B positions."""

    words: list[str]
    ids: np.ndarray     # (B,) int64 dictionary ids (-1: a spelled word that is not in the dictionary)
    probs: np.ndarray   # (B,) float64 probability the sampler gave the word (1 when greedy; nan when spelled)
    scores: np.ndarray  # (B,) float64 s(w) of the word


def _check_sampling(temperature, top_k, top_p) -> None:
    if not temperature >= 0 or math.isinf(temperature):
        raise TfreeError(f"temperature must be a finite number >= 0, not {temperature}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise TfreeError(f"top_k must be a positive integer, not {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise TfreeError(f"top_p must be in (0, 1], not {top_p!r}")
