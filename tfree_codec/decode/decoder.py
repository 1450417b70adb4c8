"""Scores -> words (SPEC section 4): rank the dictionary's words against predicted activations, then sample.

>>> dec = Decoder(dictionary)
>>> out = dec.decode(logits, temperature=0.07, top_p=0.9, generator=np.random.default_rng(0))  # logits (B, v)
>>> out.words, out.probs, dec.text(out.words)
>>> dec.log_probs(logits, targets, temperature=0.07)      # (B,) natural-log probabilities of dictionary ids

Each word w with pattern P_w scores ``s(w) = mean(sigmoid[P_w]) - mean(sigmoid[not P_w])`` (or another member of
wordscore.py's family); words are ranked by ``z = scale * s + bias_w`` (a calibration: 1 and 0 by default, or
generation's ``1 / T_cal`` and count prior) and drawn from ``softmax(z / temperature)`` over the whole dictionary;
temperature 0 is greedy. By default the search is pruned (search.py): only the words that can matter are scored,
with the same greedy word and top-k set as scoring every word, and at most 1e-6 of the mass left out when sampling
or normalising. ``search="full"`` scores every word. numpy input (or torch tensors on the CPU) is scored by the numba
kernels; torch tensors on a GPU by a sparse product on that device (all words). Words that are not in the
dictionary can be spelled (spell.py): with ``spell_below``, a position whose best dictionary word scores below it
is spelled instead, when that scores better.
"""
from __future__ import annotations

import threading

import numpy as np

from . import _prune, _sample, _score
from ..config import TfreeError
from .dictionary import count_prior
from .sampling import _LOW, _TAIL, Decoded, _check_sampling  # noqa: F401  (Decoded: re-exported)
from .scorer import Block, Scorer, sigmoid
from .search import Ranker, canonical
from .wordscore import VARIANT2, WordScore
from .spell import Speller, spell  # noqa: F401  (re-exported: decoding words that are not in the dictionary)

_GROW = threading.Lock()  # one scorer per dictionary, shared by its decoders: grown under this lock


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _rng(generator):
    if generator is None or isinstance(generator, (int, np.integer)):
        return np.random.default_rng(generator)
    if isinstance(generator, np.random.Generator):
        return generator
    raise TfreeError(f"generator must be a numpy Generator or an int seed, not {type(generator).__name__}")


class Decoder:
    """Ranks a ``Dictionary`` against logits and samples words. ``num_threads`` > 1 scores on that many threads
    (numba); the dictionary may grow (``dictionary.extend``) between calls. ``backend``: "auto" (torch for
    tensors on a GPU, numba otherwise), "numba" or "torch" (any input, on its device). ``search``: "pruned" (the
    default: search.py) or "full" (every word scored). ``score`` (a ``WordScore``), ``scale`` and ``bias`` make the
    ranking z = scale * s + bias: ``bias`` is None, a count prior's weights ``(b, c)`` (``count_prior``), or a
    function of the dictionary giving its (W,) bias (called again when the dictionary grows)."""

    def __init__(self, dictionary, *, num_threads: int = 1, spell_below: float | None = None, beam: int = 8,
                 backend: str = "auto", search: str = "pruned", score: WordScore = VARIANT2, scale: float = 1.0,
                 bias=None):
        if backend not in ("auto", "numba", "torch"):
            raise TfreeError(f"backend must be 'auto', 'numba' or 'torch', not {backend!r}")
        if search not in ("pruned", "full"):
            raise TfreeError(f"search must be 'pruned' or 'full', not {search!r}")
        if not (isinstance(score, WordScore) and scale > 0 and np.isfinite(scale)):
            raise TfreeError(f"score must be a WordScore and scale a positive number, not {score!r}, {scale!r}")
        if bias is not None and not callable(bias) and not (isinstance(bias, tuple) and len(bias) == 2):
            raise TfreeError("bias must be None, count-prior weights (b, c) or a function of the dictionary")
        self.backend, self.search, self.score, self.scale, self.bias = backend, search, score, float(scale), bias
        self.dictionary = dictionary
        self.codec = dictionary.codec
        self.num_threads = max(1, int(num_threads))
        self.spell_below = spell_below
        self.beam = beam
        self._speller = None
        self._lock = threading.Lock()
        self._rankers: dict = {}
        self._bias_cache = (0, None)

    # -- scoring -----------------------------------------------------------------------------------------------
    def scorer(self) -> Scorer:
        """The dictionary's CPU scorer and inverted index, built on first use (or read from the on-disk cache,
        index.py) and grown with the dictionary (shared by decoders)."""
        from .index import build_scorer  # noqa: PLC0415

        d = self.dictionary
        with _GROW:
            if d._scorer is None:
                d._scorer = build_scorer(d)
            sc = d._scorer
            if len(sc) < len(d):
                n0, base = len(sc), int(d.indptr[len(sc)])
                sc.add(d.words[n0:], d.indptr[n0:] - base, d.indices[base:])
            return sc

    def bias_by_id(self) -> np.ndarray | None:
        """The (W,) float32 bias of every dictionary word (None when there is none)."""
        d, (n, cached) = self.dictionary, self._bias_cache
        if self.bias is None:
            return None
        if n != len(d):
            b = count_prior(d.counts, *self.bias) if isinstance(self.bias, tuple) else self.bias(d)
            cached = np.asarray(b, np.float32)
            if cached.shape != (len(d),) or not np.isfinite(cached).all():
                raise TfreeError(f"the bias must be {len(d)} finite numbers, one per dictionary word")
            self._bias_cache = (len(d), cached)
        return cached

    def ranker(self, raw: bool = False) -> Ranker:
        """The search over the current dictionary: for z (or, ``raw``, for s itself: scale 1, no bias)."""
        sc = self.scorer()
        key = (raw, len(sc), self.num_threads)
        rk = self._rankers.get(key)
        if rk is None:
            self._rankers = {k: v for k, v in self._rankers.items() if k[1] == len(sc)}
            rk = self._rankers[key] = Ranker(sc, self.score, 1.0 if raw else self.scale,
                                             None if raw else self.bias_by_id(), self.search == "pruned",
                                             self.num_threads)
        return rk

    def _rank(self) -> tuple:
        return self.score, self.scale, self.bias_by_id()

    def _plain(self) -> bool:
        """Full scoring on the fused kernels (their normaliser needs s <= 1 and no bias)."""
        return self.search == "full" and self.bias is None and self.score == VARIANT2

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
            return self._torch().scores(self._tensor(logits), self.score)
        sc = self.scorer()
        x = self._logits(logits)
        out = np.empty((x.shape[0], len(sc)), np.float32)
        pos = sc.position
        for blk in sc.run(x, 0.0, self.num_threads, score=self.score):
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
        sampled from softmax(z / temperature), restricted to the top_k words and then to the smallest set whose
        probability reaches top_p (renormalised)."""
        _check_sampling(temperature, top_k, top_p)
        if self._use_torch(logits):
            return self._torch().decode(self._tensor(logits), temperature, top_k, top_p, generator, self._rank())
        x = self._logits(logits)
        greedy = temperature == 0 or top_k == 1
        rng = None if greedy else _rng(generator)
        if self._plain():
            pos, probs, scores = self._decode_plain(x, temperature, top_k, top_p, rng)
        else:
            pos, probs, scores = np.empty(len(x), np.int64), np.ones(len(x)), np.empty(len(x))
            rk = self.ranker()
            mode, k = (_prune.TOP, top_k or 1) if greedy or top_k else (_prune.MASS, 1)
            for r, (cand, cz, _, _) in enumerate(rk.rows(x, mode, k, 0.0 if greedy else 1.0 / temperature)):
                if greedy:
                    j = self._pick(x[r], cand, cz, rk)
                else:
                    j, probs[r] = _draw_row(cz, 1.0 / temperature, top_k, top_p, rng)
                pos[r] = cand[j]
                scores[r] = (float(cz[j]) - float(rk.bias[pos[r]])) / self.scale  # s of the word (float32 noise)
        ids = self.scorer().order[pos]
        out = Decoded([self.dictionary.words[i] for i in ids], ids, probs, scores)
        if self.spell_below is not None:
            self._spell_weak(x, out, greedy)
        return out

    def _pick(self, x_row, cand, cz, rk) -> int:
        """Index into the candidates of the greedy word: the best, or ``canonical``'s choice among those that
        float32 noise cannot tell apart."""
        g_abs = 1.0 if self.score.g == "sigmoid" else float(np.abs(x_row).max())
        near = np.nonzero(cz >= cz.max() - rk.window(g_abs))[0]
        if len(near) == 1:
            return int(near[0])
        ids = self.scorer().order[cand[near]]
        return int(near[list(ids).index(canonical(self.dictionary, self.score, self.scale, self.bias_by_id(), x_row,
                                                  ids))])

    def _decode_plain(self, x, temperature, top_k, top_p, rng):
        """Full scoring on the fused kernels: (trie positions, probabilities, scores s)."""
        t = temperature / self.scale
        pos, probs, scores = [], [], []
        for blk, ref, z in self._blocks(x, t, keep=rng is not None):
            if rng is None:  # greedy: the kernel's argmax; a near tie is settled as the pruned search settles it
                p = blk.best_pos.copy()
                for j in np.nonzero(blk.best - blk.second <= self.ranker().window(1.0))[0]:
                    (cand, cz, _, _), = self.ranker().rows(x[blk.rows[j]][None], _prune.TOP)
                    p[j] = cand[self._pick(x[blk.rows[j]], cand, cz, self.ranker())]
                pos.append(p)
                probs.append(np.ones(len(blk.rows)))
                scores.append(blk.best.astype(np.float64))
            else:
                p, pr = _draw(blk, ref, z, 1.0 / t, top_k, top_p, rng)
                pos.append(p)
                probs.append(pr)
                scores.append(blk.scores[p, np.arange(len(blk.rows))].astype(np.float64))
        return np.concatenate(pos), np.concatenate(probs), np.concatenate(scores)

    def log_probs(self, logits, targets, temperature: float = 1.0) -> np.ndarray:
        """(B,) natural-log probability of dictionary word ``targets[b]`` at position b under softmax(z /
        temperature) over the dictionary (what bits per byte needs; the pruned search leaves out words holding at
        most 1e-6 of the mass, so the normaliser is short by at most that share)."""
        if not temperature > 0:
            raise TfreeError(f"log_probs needs a temperature > 0, not {temperature}")
        targets = np.asarray(targets, np.int64).reshape(-1)
        if len(targets) and (targets.min() < 0 or targets.max() >= len(self.dictionary)):
            raise TfreeError("targets must be dictionary ids in [0, len(dictionary))")
        if self._use_torch(logits):
            return self._torch().log_probs(self._tensor(logits), targets, temperature, self._rank())
        x = self._logits(logits)
        if len(targets) != len(x):
            raise TfreeError(f"{len(targets)} targets for {len(x)} positions")
        out = []
        if self._plain():
            t = temperature / self.scale
            for blk, ref, z in self._blocks(x, t, keep=False, targets=targets):
                out.append((blk.target.astype(np.float64) - ref) / t - np.log(z))
            return np.concatenate(out)
        invt = np.float32(1.0 / temperature)
        for cand, cz, _, tz in self.ranker().rows(x, _prune.MASS, 1, float(invt), targets):
            ref = cz.max()
            out.append((tz - ref) / temperature - np.log(_score.sum_exp(cz, np.array([ref]), invt)[0]))
        return np.array(out)

    def text(self, words) -> str:
        """Words back to ordinary text (markers become whitespace)."""
        return self.codec.join(words)

    # -- unseen words ------------------------------------------------------------------------------------------
    def speller(self):
        if self._speller is None:
            self._speller = Speller(self.codec, self.dictionary.words)
        return self._speller

    def _spell_weak(self, x, out: Decoded, greedy: bool) -> None:
        """Spell the positions whose best dictionary word (by s) scores below ``spell_below``; take the spelling
        where it scores higher than that word."""
        if greedy and self.bias is None:  # the word decoded is the best by s
            best = out.scores
        else:
            best = np.array([cz.max() for _, cz, _, _ in self.ranker(raw=True).rows(x, _prune.TOP)], np.float64)
        weak = np.nonzero(best < self.spell_below)[0]
        if len(weak) == 0:
            return
        sig = sigmoid(x)
        for b in weak:
            got = self.speller().spell_sigmoid(sig[b], beam=self.beam)
            if got is not None and got[1] > best[b]:
                out.words[b] = got[0]
                out.ids[b] = self.dictionary.index(got[0])
                out.probs[b], out.scores[b] = np.nan, got[1]

    def _torch(self):
        from .torch_decoder import TorchDecoder  # noqa: PLC0415

        with self._lock:
            if getattr(self, "_torch_decoder", None) is None:
                self._torch_decoder = TorchDecoder(self.dictionary)
        return self._torch_decoder


def _draw_row(cz: np.ndarray, invt: float, top_k, top_p, rng) -> tuple[int, float]:
    """``_draw`` for one position's candidates' z (n,): (index into cz, probability). Without top_k, the fused
    one-position kernel (the same draw; its loops suit a single position)."""
    if top_k is None or top_k >= len(cz):
        u = rng.random(1)
        i, p = _sample.sample1(cz, np.float32(invt), np.float32(_TAIL), 1.0 if top_p is None else float(top_p),
                               float(u[0]))
        return int(i), float(p)
    best = np.array([cz.max()], np.float32)
    blk = Block(range(1), cz[:, None], np.zeros(1, np.int64), best, np.array([cz.min()], np.float32), None, None, None)
    pos, pr = _draw(blk, best, _score.sum_exp(cz, best, np.float32(invt)), invt, top_k, top_p, rng)
    return int(pos[0]), float(pr[0])


def _draw(blk, ref, z, invt: float, top_k, top_p, rng: np.random.Generator):
    """One word per row of a block: (trie positions, probabilities under the restricted distribution)."""
    nl, n = len(blk.rows), blk.scores.shape[0]
    u = rng.random(nl)  # drawn first, so a seed gives the same words whatever the restrictions cost
    # Words more than _TAIL * T below the best hold under W * e^-_TAIL (4e-13 for 100k words) of the mass
    # together: they are never drawn, and the passes below skip them (little work when the model is confident).
    thr = (blk.best - _TAIL / invt).astype(np.float32)
    lo = np.maximum(blk.low, thr)
    mass = z.copy()
    invt = np.float32(invt)
    if top_k is not None and top_k < n:
        thr = _sample.kth_largest(blk.scores, nl, int(top_k), thr)
        mass = _sample.mass_above(blk.scores, nl, thr, ref, invt)
        lo = np.maximum(lo, thr)
    if top_p is not None and top_p < 1:
        thr, mass = _sample.nucleus(blk.scores, nl, lo, blk.best, thr, ref, invt, top_p * mass)
    pos, e = np.empty(nl, np.int64), np.empty(nl, np.float64)
    _sample.draw(blk.scores, nl, thr, ref, invt, u * mass, pos, e)
    return pos, e / mass
