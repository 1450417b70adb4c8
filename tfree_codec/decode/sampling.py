"""What a decoder hands back (``Decoded``), the sampling settings that every decoding path checks alike, and the
sampler of one position (``sample_logits``).

Shared by the numba decoder (``decoder``), its torch twin (``torch_decoder``) and generation, so none of them
imports another for these.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _sample
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


def sample_logits(logits: np.ndarray, temperature: float, top_k, top_p, rng: np.random.Generator) -> tuple[int, float]:
    """(id, probability) drawn from softmax(logits / temperature) over the top_k ids, then over the smallest set
    reaching top_p; the argmax when temperature is 0 or top_k is 1. One sampler for dictionary words and BPE tokens
    alike: the decoder's O(n) kernels (_sample.py; no sort of the vocabulary), on a block of one position."""
    x = np.ascontiguousarray(logits, np.float32).reshape(-1, 1)           # (n, 1): the kernels' layout
    if not np.isfinite(x).all():  # a diverged model: say so rather than draw from garbage
        raise TfreeError("the model's scores contain NaN or infinity")
    if temperature == 0 or top_k == 1:
        return int(np.argmax(x[:, 0])), 1.0
    u = rng.random(1)  # drawn first, so a seed gives the same draws whatever the restrictions cost
    invt = np.float32(1.0 / temperature)
    if top_k is None or top_k >= len(x):  # the common case in one fused pass
        i, p = _sample.sample1(x[:, 0], invt, np.float32(_TAIL), 1.0 if top_p is None else float(top_p), float(u[0]))
        return int(i), float(p)
    best = x.max(0)
    thr = (best - _TAIL / invt).astype(np.float32)  # ids this far below the best hold no mass worth drawing
    lo = np.maximum(x.min(0), thr)
    mass = _sample.mass_above(x, 1, thr, best, invt)
    if top_k is not None and top_k < len(x):
        thr = _sample.kth_largest(x, 1, int(top_k), thr)
        mass = _sample.mass_above(x, 1, thr, best, invt)
        lo = np.maximum(lo, thr)
    if top_p is not None and top_p < 1:
        thr, mass = _sample.nucleus(x, 1, lo, best, thr, best, invt, top_p * mass)
    pos, e = np.empty(1, np.int64), np.empty(1, np.float64)
    _sample.draw(x, 1, thr, best, invt, u * mass, pos, e)
    return int(pos[0]), float(e[0] / mass[0])
