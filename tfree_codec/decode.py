"""Scores -> words (SPEC section 4): rank every dictionary word against predicted activations, then sample.

>>> dec = Decoder(dictionary)
>>> out = dec.decode(logits, temperature=0.07, top_p=0.9, generator=np.random.default_rng(0))  # logits (B, v)
>>> out.words, out.probs, dec.text(out.words)
>>> dec.log_probs(logits, targets, temperature=0.07)      # (B,) natural-log probabilities of dictionary ids

Each word w with pattern P_w scores ``s(w) = mean(sigmoid[P_w]) - mean(sigmoid[not P_w])``; probabilities are
``softmax(s / temperature)`` over the whole dictionary; temperature 0 is greedy. numpy input (or torch tensors on
the CPU) is scored by the numba kernels of scorer.py; torch tensors on a GPU by a sparse CSR product on that
device. Both give the same scores. Words that are not in the dictionary can be spelled (spell.py): with
``spell_below``, a position whose best dictionary word scores below it is spelled instead, when that scores better.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from . import _score
from .config import TfreeError
from .scorer import Scorer, sigmoid

_LOW = -60.0  # below this (best - 1) / T the fused sum(exp((s - 1) / T)) may underflow: sum again around the best


@dataclass
class Decoded:
    """The decoded word of each of B positions."""

    words: list[str]
    ids: np.ndarray     # (B,) int64 dictionary ids (-1: a spelled word that is not in the dictionary)
    probs: np.ndarray   # (B,) float64 probability the sampler gave the word (1 when greedy; nan when spelled)
    scores: np.ndarray  # (B,) float64 s(w) of the word


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _rng(generator):
    if generator is None or isinstance(generator, (int, np.integer)):
        return np.random.default_rng(generator)
    if isinstance(generator, np.random.Generator):
        return generator
    raise TfreeError(f"generator must be a numpy Generator or an int seed, not {type(generator).__name__}")


def _check_sampling(temperature, top_k, top_p) -> None:
    if not temperature >= 0 or math.isinf(temperature):
        raise TfreeError(f"temperature must be a finite number >= 0, not {temperature}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise TfreeError(f"top_k must be a positive integer, not {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise TfreeError(f"top_p must be in (0, 1], not {top_p!r}")


class Decoder:
    """Ranks a ``Dictionary`` against logits and samples words. ``num_threads`` > 1 scores on that many threads
    (numba); the dictionary may grow (``dictionary.extend``) between calls. ``backend``: "auto" (torch for
    tensors on a GPU, numba otherwise), "numba" or "torch" (any input, on its device)."""

    def __init__(self, dictionary, *, num_threads: int = 1, spell_below: float | None = None, beam: int = 8,
                 backend: str = "auto"):
        if backend not in ("auto", "numba", "torch"):
            raise TfreeError(f"backend must be 'auto', 'numba' or 'torch', not {backend!r}")
        self.backend = backend
        self.dictionary = dictionary
        self.codec = dictionary.codec
        self.num_threads = max(1, int(num_threads))
        self.spell_below = spell_below
        self.beam = beam
        self._speller = None
        self._lock = threading.Lock()

    # -- scoring -----------------------------------------------------------------------------------------------
    def scorer(self) -> Scorer:
        """The dictionary's CPU scorer, built on first use and grown with the dictionary (shared by decoders)."""
        d = self.dictionary
        with self._lock:
            if d._scorer is None:
                d._scorer = Scorer(d.codec)
            sc = d._scorer
            if len(sc) < len(d):
                n0, base = len(sc), int(d.indptr[len(sc)])
                sc.add(d.words[n0:], d.indptr[n0:] - base, d.indices[base:])
            return sc

    def _use_torch(self, logits) -> bool:
        if self.backend == "auto":
            return _is_torch(logits) and logits.device.type != "cpu"
        return self.backend == "torch"

    @staticmethod
    def _tensor(logits):
        import torch  # noqa: PLC0415

        return logits if _is_torch(logits) else torch.as_tensor(np.asarray(logits, np.float32))

    def _logits(self, logits) -> np.ndarray:
        if _is_torch(logits):
            logits = logits.detach().float().cpu().numpy()
        x = np.asarray(logits, np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.codec.vocab_size:
            raise TfreeError(f"logits must have shape (B, {self.codec.vocab_size}), not {tuple(x.shape)}")
        if not np.isfinite(x).all():
            raise TfreeError("logits contain NaN or infinity")
        return x

    def scores(self, logits):
        """(B, W) scores s(w) in dictionary order: numpy float32, or a tensor on the logits' GPU."""
        if self._use_torch(logits):
            return self._torch().scores(self._tensor(logits))
        sc = self.scorer()
        x = self._logits(logits)
        out = np.empty((x.shape[0], len(sc)), np.float32)
        pos = sc.position
        for rows, block, *_ in sc.run(x, 0.0, self.num_threads):
            out[rows] = (block[pos] if block.ndim == 1 else block[pos, :len(rows)].T)
        return out

    def _blocks(self, logits, temperature):
        """(row, scores in trie order, best position, best score, ref, z) for each position, where
        z = sum(exp((s - ref) / temperature)) over the dictionary (0 when greedy)."""
        sc = self.scorer()
        invt = 1.0 / temperature if temperature > 0 else 0.0
        for rows, block, best_pos, best, z in sc.run(self._logits(logits), invt, self.num_threads):
            for j, row in enumerate(rows):
                col = block if block.ndim == 1 else block[:, j]
                ref, zj = 1.0, float(z[j])
                if invt > 0 and (best[j] - 1.0) * invt < _LOW:  # the fused sum may have underflowed: redo it
                    ref = float(best[j])
                    zj = float(_score.sum_exp(np.ascontiguousarray(col), np.array([ref], np.float32),
                                              np.float32(invt))[0])
                yield row, col, int(best_pos[j]), float(best[j]), ref, zj

    # -- decoding ----------------------------------------------------------------------------------------------
    def decode(self, logits, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               generator=None) -> Decoded:
        """One word per position of (B, v) or (v,) logits: greedy when temperature is 0 (or top_k is 1), else
        sampled from softmax(s / temperature), restricted to the top_k words and then to the smallest set whose
        probability reaches top_p (renormalised)."""
        _check_sampling(temperature, top_k, top_p)
        if self._use_torch(logits):
            return self._torch().decode(self._tensor(logits), temperature, top_k, top_p, generator)
        rng = None if temperature == 0 or top_k == 1 else _rng(generator)
        order = self.scorer().order
        ids, probs, scores = [], [], []
        for _, col, best_pos, best, ref, z in self._blocks(logits, temperature):
            if rng is None:
                pos, p = best_pos, 1.0
            else:
                pos, p = sample(col, 1.0 / temperature, ref, z, top_k, top_p, rng)
            ids.append(int(order[pos]))
            probs.append(p)
            scores.append(float(col[pos]))
        out = Decoded([self.dictionary.words[i] for i in ids], np.array(ids, np.int64), np.array(probs),
                      np.array(scores))
        if self.spell_below is not None:
            self._spell_weak(logits, out)
        return out

    def log_probs(self, logits, targets, temperature: float = 1.0) -> np.ndarray:
        """(B,) natural-log probability of dictionary word ``targets[b]`` at position b under the full softmax
        over the dictionary (what bits per byte needs)."""
        if not temperature > 0:
            raise TfreeError(f"log_probs needs a temperature > 0, not {temperature}")
        targets = np.asarray(targets, np.int64).reshape(-1)
        if len(targets) and (targets.min() < 0 or targets.max() >= len(self.dictionary)):
            raise TfreeError("targets must be dictionary ids in [0, len(dictionary))")
        if self._use_torch(logits):
            return self._torch().log_probs(self._tensor(logits), targets, temperature)
        pos = self.scorer().position
        out = []
        for row, col, _, _, ref, z in self._blocks(logits, temperature):
            out.append((float(col[pos[targets[row]]]) - ref) / temperature - math.log(z))
        if len(out) != len(targets):
            raise TfreeError(f"{len(targets)} targets for {len(out)} positions")
        return np.array(out)

    def text(self, words) -> str:
        """Words back to ordinary text (markers become whitespace)."""
        return self.codec.join(words)

    # -- unseen words ------------------------------------------------------------------------------------------
    def speller(self):
        if self._speller is None:
            from .spell import Speller  # noqa: PLC0415

            self._speller = Speller(self.codec, self.dictionary.words)
        return self._speller

    def _spell_weak(self, logits, out: Decoded) -> None:
        weak = np.nonzero(out.scores < self.spell_below)[0]
        if len(weak) == 0:
            return
        sig = sigmoid(self._logits(logits))
        for b in weak:
            got = self.speller().spell_sigmoid(sig[b], beam=self.beam)
            if got is not None and got[1] > out.scores[b]:
                out.words[b] = got[0]
                out.ids[b] = self.dictionary.index(got[0])
                out.probs[b], out.scores[b] = np.nan, got[1]

    def _torch(self):
        from .decode_torch import TorchDecoder  # noqa: PLC0415

        with self._lock:
            if getattr(self, "_torch_decoder", None) is None:
                self._torch_decoder = TorchDecoder(self.dictionary)
        return self._torch_decoder


def sample(col: np.ndarray, invt: float, ref: float, z: float, top_k, top_p, rng: np.random.Generator):
    """Sample a position from softmax(col * invt), whose normaliser is z * exp(ref * invt), restricted to the
    top_k best and then to the smallest best set holding top_p of the mass (renormalised).
    -> (position, its probability under that distribution)."""
    n = len(col)
    u = rng.random()
    if top_k is not None and top_k < n:
        cand = _top(col, top_k)
        s = col[cand].astype(np.float64) * invt
        p = np.exp(s - s.max())
        return _pick(cand, p / p.sum(), top_p, u)
    if top_p is None or top_p >= 1:  # inverse CDF in storage order: no sorting at all
        i, e = _score.scan_cdf(col, np.float32(ref), np.float32(invt), u * z)
        return int(i), float(e) / z
    k = min(n, 256)
    while True:  # the best k words, k growing until they hold top_p of the mass
        cand = _top(col, k)
        p = np.exp((col[cand].astype(np.float64) - ref) * invt) / z
        if k == n or p.sum() >= top_p:
            break
        k = min(n, 16 * k)
    return _pick(cand, p, top_p, u)


def _top(col: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest values, best first (ties by position)."""
    if k >= len(col):
        return np.argsort(-col, kind="stable")
    cand = np.argpartition(col, len(col) - k)[len(col) - k:]
    return cand[np.lexsort((cand, -col[cand]))]


def _pick(cand: np.ndarray, p: np.ndarray, top_p, u: float) -> tuple[int, float]:
    cum = np.cumsum(p)
    if top_p is not None:
        cut = min(len(p), int(np.searchsorted(cum, top_p - 1e-12)) + 1)
        p, cum = p[:cut] / cum[cut - 1], cum[:cut] / cum[cut - 1]
    i = min(len(p) - 1, int(np.searchsorted(cum, u, side="right")))
    return int(cand[i]), float(p[i])
