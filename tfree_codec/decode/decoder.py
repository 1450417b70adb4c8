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

import threading

import numpy as np

from . import _score
from ..config import TfreeError
from .dictionary import Dictionary
from .sampling import _LOW, Decoded, Sampler, Sampling  # noqa: F401  (Decoded: re-exported)
from .scorer import SCORES, Scorer, sigmoid
from .spell import Speller, spell  # noqa: F401  (re-exported: decoding words that are not in the dictionary)

_GROW = threading.Lock()  # one scorer per dictionary, shared by its decoders: grown under this lock


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _rows(logits) -> int:
    """Positions in (B, v) or (v,) logits."""
    shape = tuple(getattr(logits, "shape", np.shape(logits)))
    return shape[0] if len(shape) == 2 else 1


class Decoder:
    """Ranks a ``Dictionary`` against logits and samples words. ``num_threads`` > 1 scores on that many threads
    (numba); the dictionary may grow (``dictionary.extend``) between calls. ``backend``: "auto" (torch for
    tensors on a GPU, numba otherwise), "numba" or "torch" (any input, on its device)."""

    def __init__(self, dictionary, *, num_threads: int = 1, spell_below: float | None = None, beam: int = 8,
                 backend: str = "auto", score: str = "sigmoid_diff"):
        if backend not in ("auto", "numba", "torch"):
            raise TfreeError(f"backend must be 'auto', 'numba' or 'torch', not {backend!r}")
        if score not in SCORES:
            raise TfreeError(f"unknown word score {score!r} (choose from {', '.join(SCORES)})")
        if not isinstance(dictionary, Dictionary):  # None or a word list would fail later, far from the cause
            raise TfreeError(f"Decoder needs a Dictionary, not {type(dictionary).__name__}")
        self.backend, self.score = backend, score
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
        with _GROW:
            sc = d._scorers.get(self.score)
            if sc is None:
                sc = d._scorers[self.score] = Scorer(d.codec, self.score)
            if len(sc) < len(d):
                n0, base = len(sc), int(d.indptr[len(sc)])
                sc.add(d.words[n0:], d.indptr[n0:] - base, d.indices[base:])
            return sc

    def _use_torch(self, logits) -> bool:
        if self.backend == "auto":  # mean logits are not bounded above: the numba normaliser assumes s <= 1
            return self.score == "mean_logit" or (_is_torch(logits) and logits.device.type != "cpu")
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
        for blk in sc.run(x, 0.0, self.num_threads):
            out[blk.rows] = blk.scores[pos, :len(blk.rows)].T
        return out

    def _blocks(self, logits, temperature, keep=True, targets=None):
        """Scored blocks, each with (ref, z) per row: sum(exp((s - ref) / temperature)) = z over the dictionary."""
        invt = 1.0 / temperature if temperature > 0 else 0.0
        x = self._logits(logits)
        sc = self.scorer()
        for blk in sc.run(x, invt, self.num_threads, keep=keep, targets=targets):
            ref = np.ones(len(blk.rows), np.float32)
            z = blk.z.copy()
            low = np.nonzero((blk.best - 1.0) * invt < _LOW)[0]  # the fused sum may have underflowed: redo it
            for j in low:
                row = blk.rows[j]
                scores = blk.scores[:, j] if keep else next(sc.run(x[row:row + 1], 0.0)).scores[:, 0]
                ref[j] = blk.best[j]
                z[j] = _score.sum_exp(np.ascontiguousarray(scores), ref[j:j + 1], np.float32(invt))[0]
            yield blk, ref, z

    # -- decoding ----------------------------------------------------------------------------------------------
    def decode(self, logits, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               generator=None) -> Decoded:
        """One word per position of (B, v) or (v,) logits: greedy when temperature is 0 (or top_k is 1), else
        sampled from softmax(s / temperature), restricted to the top_k words and then to the smallest set whose
        probability reaches top_p (renormalised): ``sampling.Sampler``, its random numbers from ``generator`` (an
        int seed or a numpy Generator)."""
        sampler = Sampler(Sampling(temperature, top_k, top_p, seed=generator))
        if _rows(logits) == 0:  # nothing to decode (the kernels' blocks would be none)
            return Decoded([], np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
        if self._use_torch(logits):
            return self._torch().decode(self._tensor(logits), sampler)
        order = self.scorer().order
        pos, probs, scores = [], [], []
        for blk, ref, z in self._blocks(logits, temperature, keep=not sampler.greedy):
            if sampler.greedy:  # the kernel's argmax, no scores kept
                pos.append(blk.best_pos)
                probs.append(np.ones(len(blk.rows)))
                scores.append(blk.best.astype(np.float64))
            else:
                p, pr = sampler.block(blk.scores, len(blk.rows), blk.best, blk.low, ref, z)
                pos.append(p)
                probs.append(pr)
                scores.append(blk.scores[p, np.arange(len(blk.rows))].astype(np.float64))
        pos = np.concatenate(pos)
        ids = order[pos]
        out = Decoded([self.dictionary.words[i] for i in ids], ids.astype(np.int64), np.concatenate(probs),
                      np.concatenate(scores))
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
        if _rows(logits) == 0 and len(targets) == 0:
            return np.zeros(0)
        if self._use_torch(logits):
            return self._torch().log_probs(self._tensor(logits), targets, temperature)
        x = self._logits(logits)
        if len(targets) != len(x):
            raise TfreeError(f"{len(targets)} targets for {len(x)} positions")
        out = []
        for blk, ref, z in self._blocks(x, temperature, keep=False, targets=targets):
            out.append((blk.target.astype(np.float64) - ref) / temperature - np.log(z))
        return np.concatenate(out)

    def text(self, words) -> str:
        """Words back to ordinary text (markers become whitespace)."""
        return self.codec.join(words)

    # -- unseen words ------------------------------------------------------------------------------------------
    def speller(self):
        if self._speller is None:
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
        from .torch_decoder import TorchDecoder  # noqa: PLC0415

        with self._lock:
            if getattr(self, "_torch_decoder", None) is None:
                self._torch_decoder = TorchDecoder(self.dictionary, self.score)
        return self._torch_decoder
