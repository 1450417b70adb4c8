"""How an item is picked from a model's scores: the settings (``Sampling``, one frozen object from the CLI to the
kernels), the one sampler (``Sampler``) and what a decoder hands back (``Decoded``).

The sampler draws from softmax(z / temperature) over the items within e^-40 of the best, restricted to the top_k
best and then to the smallest best set holding top_p of their mass, by an inverse CDF in storage order (the O(n)
kernels of _sample.py; nothing sorts the vocabulary). The decoder draws a block of positions at once (``block``),
generation one position (``pick``), and speculative drafts need the whole distribution (``probs``): all three
restrict the scores in ``Sampler._cut``. Shared by the numba decoder, its torch twin and generation, so none of
them imports another for these.
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


@dataclass(frozen=True)
class Sampling:
    """How to pick each item: ``temperature`` (0: greedy, as is ``top_k`` 1), ``top_k``, ``top_p`` (None: no
    restriction), ``seed`` (an int, a numpy Generator, or None for fresh entropy). Generating also stops before any
    ``stop`` string, at <|endoftext|> unless ``stop_at_eot`` is off, and after ``max_new_tokens`` items; with
    ``spell_below`` (T-FREE), where even the best dictionary word scores below it, a spelling of the activations is
    taken when it scores better (None: never). Checked when made. Defaults: ``tfree generate``'s."""

    temperature: float = DEFAULT_TEMPERATURE
    top_k: int | None = None
    top_p: float | None = DEFAULT_TOP_P
    seed: object = None
    stop: tuple = ()
    max_new_tokens: int = DEFAULT_MAX_NEW
    stop_at_eot: bool = True
    spell_below: float | None = None

    def __post_init__(self) -> None:
        _check_sampling(self.temperature, self.top_k, self.top_p)
        if not isinstance(self.max_new_tokens, (int, np.integer)) or self.max_new_tokens < 1:
            raise TfreeError(f"max_new_tokens must be a positive integer, not {self.max_new_tokens!r}")
        if not (self.seed is None or isinstance(self.seed, (int, np.integer, np.random.Generator))):
            raise TfreeError(f"generator must be a numpy Generator or an int seed, not {type(self.seed).__name__}")
        if isinstance(self.seed, (int, np.integer)) and self.seed < 0:  # numpy's generators take none below 0
            raise TfreeError(f"the seed must be 0 or more, not {self.seed}")
        object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


class Sampler:
    """Draws items as a ``Sampling`` says, with one stream of random numbers (its seed's, or the Generator given).
    Scores are float32; ``block`` takes the decoder's (n, L) layout, L positions side by side."""

    def __init__(self, sampling: Sampling):
        self.sampling = sampling
        seed = sampling.seed
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.greedy = sampling.greedy

    def pick(self, logits) -> tuple[int, float]:
        """(id, probability) of one position's (n,) scores; the argmax (probability 1) when greedy."""
        x = np.ascontiguousarray(logits, np.float32).reshape(-1, 1)           # (n, 1): the kernels' layout
        if not np.isfinite(x).all():  # a diverged model: say so rather than draw from garbage
            raise TfreeError("the model's scores contain NaN or infinity")
        if self.greedy:
            return int(np.argmax(x[:, 0])), 1.0
        s = self.sampling
        u = self.rng.random(1)  # drawn first, so a seed gives the same draws whatever the restrictions cost
        invt = np.float32(1.0 / s.temperature)
        if s.top_k is None or s.top_k >= len(x):  # the common case in one fused pass (_sample.sample1)
            top_p = 1.0 if s.top_p is None else float(s.top_p)
            i, p = _sample.sample1(x[:, 0], invt, np.float32(_TAIL), top_p, float(u[0]))
            return int(i), float(p)
        best = x.max(0)
        pos, p = self._draw(x, 1, best, x.min(0), best, invt, u, None)
        return int(pos[0]), float(p[0])

    def block(self, scores, nl: int, best, low, ref, mass) -> tuple[np.ndarray, np.ndarray]:
        """One draw per position of an (n, L) block whose first ``nl`` columns are positions (best and lowest
        score, ``ref`` and ``mass``: the sum of exp((s - ref) / T) over the block, per position) -> (storage
        positions, probabilities under the restricted distribution)."""
        u = self.rng.random(nl)  # drawn first, so a seed gives the same words whatever the restrictions cost
        return self._draw(scores, nl, best, low, ref, 1.0 / self.sampling.temperature, u, mass)

    def probs(self, z) -> np.ndarray:
        """The distribution ``pick`` draws from, as an (n,) float64 vector (one-hot on the argmax when greedy)."""
        x = np.ascontiguousarray(z, np.float32).reshape(-1, 1)
        p = np.zeros(len(x))
        if self.greedy:
            p[int(np.argmax(x[:, 0]))] = 1.0
            return p
        best = x.max(0)
        thr, _ = self._cut(x, 1, best, x.min(0), best, np.float32(1.0 / self.sampling.temperature), None)
        z64 = x[:, 0].astype(np.float64)
        e = np.where(z64 >= thr[0], np.exp((z64 - float(best[0])) / self.sampling.temperature), 0.0)
        return e / e.sum()

    def _cut(self, scores, nl, best, low, ref, invt, mass):
        """The restriction, per position: (the lowest score kept, the mass exp((s - ref) * invt) of those kept).
        Scores more than _TAIL / invt below the best hold under W e^-_TAIL of the mass together (4e-13 for 100k
        words): never drawn, and the passes skip them (little work when the model is confident). ``mass``: the
        whole block's, or None to sum it here."""
        s = self.sampling
        thr = (best - _TAIL / invt).astype(np.float32)
        lo = np.maximum(low, thr)
        invt = np.float32(invt)
        if mass is None:
            mass = _sample.mass_above(scores, nl, thr, ref, invt)
        if s.top_k is not None and s.top_k < scores.shape[0]:
            thr = _sample.kth_largest(scores, nl, int(s.top_k), thr)
            mass = _sample.mass_above(scores, nl, thr, ref, invt)
            lo = np.maximum(lo, thr)
        if s.top_p is not None and s.top_p < 1:
            thr, mass = _sample.nucleus(scores, nl, lo, best, thr, ref, invt, s.top_p * mass)
        return thr, mass

    def _draw(self, scores, nl, best, low, ref, invt, u, mass):
        thr, mass = self._cut(scores, nl, best, low, ref, invt, mass)
        pos, e = np.empty(nl, np.int64), np.empty(nl, np.float64)
        _sample.draw(scores, nl, thr, ref, np.float32(invt), u * mass, pos, e)
        return pos, e / mass


def sample_logits(logits, temperature: float, top_k, top_p, rng: np.random.Generator) -> tuple[int, float]:
    """(id, probability) of one position, as ``Sampler.pick`` draws it."""
    return Sampler(Sampling(temperature, top_k, top_p, seed=rng)).pick(logits)
