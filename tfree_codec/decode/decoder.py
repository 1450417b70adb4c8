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

from . import _prune, _score
from ..config import TfreeError
from .dictionary import Dictionary, count_prior
from .sampling import _LOW, Decoded, Sampler, Sampling  # noqa: F401  (Decoded: re-exported)
from .scorer import MIN_LANES, Scorer, sigmoid
from .search import Ranker, canonical
from .wordscore import VARIANT2, Ranking
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
    tensors on a GPU, numba otherwise), "numba" or "torch" (any input, on its device). ``search``: "pruned" (the
    default: search.py) or "full" (every word scored). ``rank`` (a wordscore.Ranking: the score, "sigmoid_diff" or
    "mean_logit", its scale and a bias) makes the ranking z = scale * s + bias: ``bias`` is None, a count prior's
    weights ``(b, c)`` (``count_prior``), or a function of the dictionary giving its (W,) bias (called again when
    the dictionary grows)."""

    def __init__(self, dictionary, *, num_threads: int = 1, spell_below: float | None = None, beam: int = 8,
                 backend: str = "auto", search: str = "pruned", rank: Ranking = Ranking()):
        if backend not in ("auto", "numba", "torch"):
            raise TfreeError(f"backend must be 'auto', 'numba' or 'torch', not {backend!r}")
        if search not in ("pruned", "full"):
            raise TfreeError(f"search must be 'pruned' or 'full', not {search!r}")
        if not isinstance(rank, Ranking):
            raise TfreeError(f"rank must be a wordscore.Ranking, not {type(rank).__name__}")
        if not isinstance(dictionary, Dictionary):  # None or a word list would fail later, far from the cause
            raise TfreeError(f"Decoder needs a Dictionary, not {type(dictionary).__name__}")
        self.backend, self.search, self.rank = backend, search, rank
        self.score, self.scale, self.bias = rank.score, rank.scale, rank.bias
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

    def ranker(self, raw: bool = False, prune: bool | None = None) -> Ranker:
        """The search over the current dictionary: for z (or, ``raw``, for s itself: scale 1, no bias); ``prune``
        False scores every word (default: as ``search`` says)."""
        sc = self.scorer()
        prune = self.search == "pruned" if prune is None else prune
        key = (raw, len(sc), self.num_threads, prune)
        rk = self._rankers.get(key)
        if rk is None:
            self._rankers = {k: v for k, v in self._rankers.items() if k[1] == len(sc)}
            rk = self._rankers[key] = Ranker(sc, self.score, 1.0 if raw else self.scale,
                                             None if raw else self.bias_by_id(), prune, self.num_threads)
        return rk

    def _rank(self) -> tuple:
        return self.score, self.scale, self.bias_by_id()

    def _plain(self, batch: int, mass: bool = False) -> bool:
        """Full scoring on the fused kernels (their normaliser needs s <= 1): for search="full"; for what needs the
        softmax's mass (sampling without top-k, log-probabilities), where the search read every word of every
        dictionary measured and paid for trying first (docs/decoding.md); and for batches of MIN_LANES positions
        or more without a bias, where the kernels' 64 positions at a time cost less per position than the pruned
        search's one at a time (bench/decode.py)."""
        return self.score == VARIANT2 and (self.search == "full" or mass
                                           or (batch >= MIN_LANES and self.bias is None))

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
        for blk in sc.run(x, 0.0, self.num_threads, rank=(self.score, 1.0, None)):
            out[blk.rows] = blk.scores[pos, :len(blk.rows)].T
        return out

    def _blocks(self, x, temperature, keep=True, targets=None):
        """Blocks of z = scale * s + bias (variant 2), each with (ref, z) per row: sum(exp((z - ref) / temperature))
        = z over the dictionary."""
        invt = 1.0 / temperature if temperature > 0 else 0.0
        sc, bias = self.scorer(), self._bias_pos()
        top = np.float32(self.scale + (float(bias.max()) if bias is not None else 0.0))  # s <= 1: z <= top
        kw = dict(rank=(self.score, self.scale, bias))
        for blk in sc.run(x, invt, self.num_threads, keep=keep, targets=targets, ref=top, **kw):
            ref = np.full(len(blk.rows), top, np.float32)
            z = blk.z.copy()
            low = np.nonzero((blk.best - top) * invt < _LOW)[0]  # the fused sum may have underflowed: redo it
            for j in low:
                row = blk.rows[j]
                scores = blk.scores[:, j] if keep else next(sc.run(x[row:row + 1], 0.0, **kw)).scores[:, 0]
                ref[j] = blk.best[j]
                z[j] = _score.sum_exp(np.ascontiguousarray(scores), ref[j:j + 1], np.float32(invt))[0]
            yield blk, ref, z

    def _bias_pos(self) -> np.ndarray | None:
        """The bias in the scorer's trie order (None without one)."""
        b = self.bias_by_id()
        if b is None:
            return None
        if getattr(self, "_bias_trie", (None, 0))[1] != len(b):
            self._bias_trie = (np.ascontiguousarray(b[self.scorer().order]), len(b))
        return self._bias_trie[0]

    # -- decoding ----------------------------------------------------------------------------------------------
    def decode(self, logits, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               generator=None) -> Decoded:
        """One word per position of (B, v) or (v,) logits: greedy when temperature is 0 (or top_k is 1), else
        sampled from softmax(z / temperature), restricted to the top_k words and then to the smallest set whose
        probability reaches top_p (renormalised): ``sampling.Sampler``, its random numbers from ``generator`` (an
        int seed or a numpy Generator)."""
        return self.draw(logits, Sampler(Sampling(temperature, top_k, top_p, seed=generator)))

    def draw(self, logits, sampler: Sampler) -> Decoded:
        """``decode`` with a ``sampling.Sampler`` (its settings and its stream of random numbers: generation keeps
        one sampler for all its words)."""
        temperature, top_k = sampler.sampling.temperature, sampler.sampling.top_k
        if _rows(logits) == 0:  # nothing to decode (the kernels' blocks would be none)
            return Decoded([], np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
        if self._use_torch(logits):
            return self._torch().decode(self._tensor(logits), sampler, self._rank())
        x = self._logits(logits)
        greedy = sampler.greedy
        mass = not greedy and not top_k
        if self._plain(len(x), mass):
            pos, probs, scores = self._decode_plain(x, temperature, sampler)
        else:
            pos, probs, scores = np.empty(len(x), np.int64), np.ones(len(x)), np.empty(len(x))
            rk = self.ranker(prune=False) if mass else self.ranker()  # mass: every word holds some (measured)
            mode, k = (_prune.MASS, 1) if mass else (_prune.TOP, top_k or 1)
            for r, (cand, cz, _, _) in enumerate(rk.rows(x, mode, k, 0.0 if greedy else 1.0 / temperature)):
                if greedy:
                    j = self._pick(x[r], cand, cz, rk)
                else:
                    if len(cand) < len(rk):  # draw in storage order, as full scoring does: then the same u picks
                        o = np.argsort(cand)  # the same word unless it falls within the mass left out (<= 1e-6)
                        cand, cz = cand[o], cz[o]
                    j, probs[r] = sampler.pick(cz)
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

    def _decode_plain(self, x, temperature, sampler):
        """Full scoring on the fused kernels: (trie positions, probabilities, scores s)."""
        pos, probs, zs = [], [], []
        for blk, ref, z in self._blocks(x, temperature, keep=not sampler.greedy):
            if sampler.greedy:  # greedy: the kernel's argmax; a near tie is settled as the pruned search settles it
                p = blk.best_pos.copy()
                for j in np.nonzero(blk.best - blk.second <= self.ranker().window(1.0))[0]:
                    (cand, cz, _, _), = self.ranker().rows(x[blk.rows[j]][None], _prune.TOP)
                    p[j] = cand[self._pick(x[blk.rows[j]], cand, cz, self.ranker())]
                pos.append(p)
                probs.append(np.ones(len(blk.rows)))
                zs.append(blk.best.astype(np.float64))
            else:
                p, pr = sampler.block(blk.scores, len(blk.rows), blk.best, blk.low, ref, z)
                pos.append(p)
                probs.append(pr)
                zs.append(blk.scores[p, np.arange(len(blk.rows))].astype(np.float64))
        pos = np.concatenate(pos)
        bias = self._bias_pos()
        return pos, np.concatenate(probs), (np.concatenate(zs) - (0 if bias is None else bias[pos])) / self.scale

    def log_probs(self, logits, targets, temperature: float = 1.0) -> np.ndarray:
        """(B,) natural-log probability of dictionary word ``targets[b]`` at position b under softmax(z /
        temperature) over the dictionary (what bits per byte needs; the pruned search leaves out words holding at
        most 1e-6 of the mass, so the normaliser is short by at most that share)."""
        if not temperature > 0:
            raise TfreeError(f"log_probs needs a temperature > 0, not {temperature}")
        targets = np.asarray(targets, np.int64).reshape(-1)
        if len(targets) and (targets.min() < 0 or targets.max() >= len(self.dictionary)):
            raise TfreeError("targets must be dictionary ids in [0, len(dictionary))")
        if _rows(logits) == 0 and len(targets) == 0:
            return np.zeros(0)
        if self._use_torch(logits):
            return self._torch().log_probs(self._tensor(logits), targets, temperature, self._rank())
        x = self._logits(logits)
        if len(targets) != len(x):
            raise TfreeError(f"{len(targets)} targets for {len(x)} positions")
        out = []
        if self._plain(len(x), mass=True):
            for blk, ref, z in self._blocks(x, temperature, keep=False, targets=targets):
                out.append((blk.target.astype(np.float64) - ref) / temperature - np.log(z))
            return np.concatenate(out)
        invt = np.float32(1.0 / temperature)
        for cand, cz, _, tz in self.ranker(prune=False).rows(x, _prune.MASS, 1, float(invt), targets):
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
            if got is None:
                continue
            s = got[1]
            if self.score != VARIANT2:  # compared in the ranking's score: the spelling's own, from its rows
                rows = self.codec.encode_words([got[0]])[1]
                s = float(self.score.of_patterns(x[b], [rows], self.codec.vocab_size)[0])
            if s > best[b]:
                out.words[b] = got[0]
                out.ids[b] = self.dictionary.index(got[0])
                out.probs[b], out.scores[b] = np.nan, s

    def _torch(self):
        from .torch_decoder import TorchDecoder  # noqa: PLC0415

        with self._lock:
            if getattr(self, "_torch_decoder", None) is None:
                self._torch_decoder = TorchDecoder(self.dictionary, self.score)
        return self._torch_decoder

