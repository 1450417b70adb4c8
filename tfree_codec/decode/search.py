"""Which words a position's decision needs, and their ranking values ``z = scale * s + bias``: the pruned search
(``_prune.py``) or, where its bounds leave too much to read, every word scored in the trie (``scorer.py``). Greedy
calls take whichever of the two has cost less lately (``Costs``); the others back off from searches that keep giving
up (``Backoff``), a rule of the logits alone. The answers are the same either way, up to the last float32 bits of a
sampled word's probability, which is why only greedy calls may follow the timing.

Guarantees (tests/test_search.py checks them against full scoring):

* **top-k and greedy**: every word whose z can reach the k-th best comes back, so the k best words are exactly full
  scoring's. Greedy compares the candidates within ``window`` (float32 noise) of the best again in float64 from
  their pattern rows and breaks exact ties by the lowest dictionary id, in every path (``canonical``): pruned and
  full, one position or 64, numba or torch choose the same word.
* **mass** (sampling without top-k, top-p, log-probabilities): the words left out hold at most ``MASS_EPS`` (1e-6)
  of the mass sum(exp(z / T)) of the words kept (their bounds, summed, prove it); each row reports its bound.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _prune as P
from .scorer import MIN_LANES

MASS_EPS = 1e-6      # the share of the mass the words left out may hold at most
MAX_FRACTION = 0.3   # past this share of the words to score one by one, the trie's full pass is cheaper
SEEDS = 64           # the highest-bias words, scored first so the top-k threshold starts high
EXPLORE = 16         # every this many calls of a kind, the path the costs do not pick is timed again
BACKOFF = 64         # after searches that gave up in a row, up to this many calls go straight to full scoring


class Ranker:
    """z over a scorer's words, one dictionary (``scorer`` grows with it) and one (score, scale, bias) setting;
    ``bias`` is the (W,) float32 bias by dictionary id (None: 0). Results are in trie positions."""

    def __init__(self, scorer, score, scale: float, bias, pruned: bool, num_threads: int = 1):
        self.sc, self.score, self.scale, self.pruned = scorer, score, np.float32(scale), pruned
        self.num_threads = num_threads
        n = len(scorer)
        self.bias = np.zeros(n, np.float32) if bias is None else np.ascontiguousarray(bias[scorer.order], np.float32)
        self.max_bias = float(np.abs(self.bias).max(initial=0))
        self.a, self.c = scorer.coefficients(score)
        unfactored = np.nonzero(np.diff(scorer.kptr) == 0)[0]
        top = np.argsort(-self.bias, kind="stable")[:SEEDS] if bias is not None else unfactored[:0]
        seeds = np.unique(np.concatenate([unfactored, top])).astype(np.int64)
        rest = np.ones(n, bool)
        rest[seeds] = False
        A, k = self.scale * self.a, np.diff(scorer.kptr)
        env = envelope(A[rest] * k[rest], A[rest] * scorer.sizes[rest], self.bias[rest], self.c[rest], float(scale))
        border, blk = blocks(np.nonzero(rest)[0], A, k, scorer.sizes, self.bias, self.c)
        words = np.zeros((n, 8), np.float32)  # one record per word: a, c, bias, k, n (one cache line at most)
        words[:, 0], words[:, 1], words[:, 2], words[:, 3], words[:, 4] = self.a, self.c, self.bias, k, scorer.sizes
        sc = scorer
        rows = sc.trows.astype(np.uint16) if sc.v <= 1 << 16 else sc.trows  # half the bytes to stream per position
        self.ix = (rows, sc.ktid, sc.xrow, sc.xval, *sc.postings())
        self.rk = (words, np.stack([sc.kptr, sc.xptr], 1), seeds, env, border, blk)
        self._local = threading.local()
        self.read = [0, 0.0, 0]  # pruned rows, their words scored / W summed, rows scored in full
        self._costs: dict = {}  # (mode, batched) -> Costs: which path has been cheaper per row, for greedy calls
        self._backoff: dict = {}  # (mode, k, batched) -> Backoff, for the others

    def __len__(self) -> int:
        return len(self.bias)

    def _buffers(self):
        """Per-thread buffers (per word: stamp and candidate index; trigram stamps, sums and sums of g+; bounds;
        candidates, their z, trigram lists, the candidates' partial sums and records) and this call's stamp
        value."""
        b = getattr(self._local, "buf", None)
        n, nt = len(self), len(self.sc.trows)
        if b is None or b[0].shape[0] != n or len(b[1]) != nt:
            b = (np.zeros((n, 2), np.int32), np.zeros(nt, np.int32), np.empty(nt, np.float32),
                 np.empty(nt, np.float32), np.empty(n, np.float64), np.empty(n, np.int64), np.empty(n, np.float32),
                 np.empty(2 * nt, np.int32), np.empty((n, 8), np.float64))
            self._local.buf, self._local.sv = b, 0
        self._local.sv += 1
        if self._local.sv == np.iinfo(np.int32).max:
            b[0][:], b[1][:] = 0, 0
            self._local.sv = 1
        return b, self._local.sv

    def window(self, g_abs: float) -> float:
        """How far below the best z float32 noise can reach (generous: it only sets how many words are compared
        again in float64). ``g_abs``: the largest |g| of the position."""
        return float(self.scale) * 1e-4 * max(1.0, g_abs) + 1e-5 * (1.0 + self.max_bias)

    def _row(self, g: np.ndarray, mode: int, k: int, invt: float, delta: float, target: int):
        b, sv = self._buffers()
        n, tail, G = P.search(g, self.scale, sv, mode, k, float(invt), MASS_EPS, float(delta),
                           hot_rows(len(g), self.sc.m), MAX_FRACTION, self.ix, self.rk, b)
        if n == P.FULL:
            return None
        self.read[0] += 1
        self.read[1] += n / len(self)
        tz = np.nan
        if target >= 0:
            out = np.empty(1, np.float32)
            P.word_z(np.array([target], np.int64), g, G, self.scale, sv, self.ix, self.rk, b, out)
            tz = float(out[0])
        return b[5][:n].copy(), b[6][:n].copy(), tail, tz

    def rows(self, x: np.ndarray, mode: int, k: int = 1, invt: float = 1.0, targets=None):
        """Per row of (B, v) logits: (trie positions, their z float32, bound on the mass left out / the mass
        kept (0 when all words are kept or for top-k), z of ``targets[b]`` (a dictionary id) or nan)."""
        g = self.score.transform(x)
        delta = 2 * self.window(1.0 if self.score.g == "sigmoid" else float(np.abs(g).max(initial=0)))
        tpos = np.full(len(x), -1) if targets is None else self.sc.position[np.asarray(targets, np.int64)]
        out = [None] * len(x)
        # One way for the whole call (full scoring of a batch costs less per row than of a few of its rows). Greedy
        # calls go the way that has cost less lately: every path picks the same words (``canonical``). Other calls
        # must not depend on timing (a sampled word's probability differs in the last float32 bits between the
        # paths, and a seed must give the same text every time), so they back off from a search that keeps giving
        # up, which depends on the logits alone.
        if self.pruned and k == 1 and invt == 0:
            policy = self._costs.setdefault((mode, len(x) >= MIN_LANES), Costs())
        elif self.pruned:
            policy = self._backoff.setdefault((mode, k, len(x) >= MIN_LANES), Backoff())
        searched = list(range(len(x))) if self.pruned and policy.search_next() else []

        def one(r):
            out[r] = self._row(g[r], mode, k, invt, delta, int(tpos[r]))
        t0 = time.perf_counter()
        if self.num_threads > 1 and len(searched) > 1:
            with ThreadPoolExecutor(self.num_threads) as pool:  # the kernels release the GIL
                list(pool.map(one, searched))
        else:
            for r in searched:
                one(r)
        full = [r for r in range(len(x)) if out[r] is None]
        self.read[2] += len(full)
        if full:
            every = np.arange(len(self), dtype=np.int64)
            for blk in self.sc.run(x[full], 0.0, self.num_threads, rank=(self.score, float(self.scale), self.bias)):
                for j, row in enumerate(blk.rows):
                    cz = blk.scores[:, j].copy()
                    r = full[row]
                    out[r] = (every, cz, 0.0, np.nan if targets is None else float(cz[tpos[r]]))
        if self.pruned and isinstance(policy, Costs):  # the search's path pays for the rows it gave up on too
            policy.add(bool(searched), (time.perf_counter() - t0) / max(len(x), 1))
        elif searched:
            policy.add(gave_up=len(full) == len(searched))
        return out


class Costs:
    """Which path has cost less per row, for one kind of greedy request (mode, one row or a batch): the search (with
    the full scoring of the rows it gave up on) or full scoring, each the least of its last WINDOW calls' time per
    row (a first call's compilation, or another job's burst, does not count against a path for long). A call goes
    the cheaper way, and now and then the other (every EXPLORE-th call, times how much dearer it was, up to 16 times
    that), so that a change (another text, the dictionary grown) is seen. The answer is the same either way (full
    scoring is exact; the search proves its choices): only the time differs, and a model or a mode whose bounds
    cannot prune costs what full scoring costs, not the attempt as well."""

    WINDOW = 8

    def __init__(self):
        self.search, self.full = deque(maxlen=self.WINDOW), deque(maxlen=self.WINDOW)  # seconds per row
        self.n = 0
        self._lock = threading.Lock()  # a decoder may serve several threads

    def search_next(self) -> bool:
        with self._lock:
            return self._choose()

    def _choose(self) -> bool:
        self.n += 1
        if not self.search:
            return True
        if not self.full:  # full scoring not timed yet: the second call, then now and then
            return self.n != 2 and self.n % EXPLORE != 0
        search, full = min(self.search), min(self.full)
        # the dearer path is tried again less often the dearer it is: what the tries cost stays near 1/EXPLORE of
        # the cheaper path's time
        every = EXPLORE * min(max(search, full) / max(min(search, full), 1e-12), 16.0)
        return (search < full) != (self.n % int(every) == 0)

    def add(self, searched: bool, seconds_per_row: float) -> None:
        with self._lock:
            (self.search if searched else self.full).append(seconds_per_row)


class Backoff:
    """For calls whose answer must not depend on timing: after calls whose searches all gave up (the bounds left
    too much to read, and the rows were scored in full after paying for the attempt), two in a row or more, the
    next 2, 4, ... BACKOFF calls go straight to full scoring, and then one searches again. What it decides depends
    on the logits alone, so a seed gives the same words every time."""

    def __init__(self):
        self.fails, self.skip = 0, 0
        self._lock = threading.Lock()

    def search_next(self) -> bool:
        with self._lock:
            if self.skip > 0:
                self.skip -= 1
                return False
            return True

    def add(self, gave_up: bool) -> None:
        with self._lock:
            self.fails = self.fails + 1 if gave_up else 0
            self.skip = min(1 << self.fails, BACKOFF) if self.fails >= 2 else 0


def hot_rows(v: int, m: int) -> int:
    """Rows whose trigrams get their sums up front: about a quarter of the trigrams (_prune._hot_trigrams)."""
    return max(16, v // (4 * m))


def envelope(slope_k, slope_n, bias, c, scale: float, buckets: int = 16) -> np.ndarray:
    """The lines that bound every word's z from its (k, n, bias), in ``buckets`` slope buckets each (see
    _prune._envelope): (2 * buckets + 1, 3) float64."""
    env = np.zeros((2 * buckets + 1, 3))
    env[:2 * buckets, 2] = -1e300
    for half, slope in enumerate((slope_k, slope_n)):
        if len(slope) == 0:
            continue
        lo, hi = float(slope.min()), float(slope.max())
        b = np.minimum(((slope - lo) / max(hi - lo, 1e-30) * buckets).astype(np.int64), buckets - 1)
        rows = env[half * buckets:(half + 1) * buckets]
        rows[:, 0], rows[:, 1] = np.inf, -np.inf
        np.minimum.at(rows[:, 0], b, slope)
        np.maximum.at(rows[:, 1], b, slope)
        np.maximum.at(rows[:, 2], b, bias)
        empty = ~np.isfinite(rows[:, 0])
        rows[empty, :2] = 0.0
    env[-1] = (c.min(initial=0.0), c.max(initial=0.0), scale)
    return env


def blocks(pos, A, k, n, bias, c):
    """The words at trie positions ``pos`` by falling bias, and per block of _prune.BLOCK of them (then over all):
    max bias, max A k, max A n, min A n, min c, max c. -> (order int64, (blocks + 1, 6) float64)."""
    order = pos[np.argsort(-bias[pos], kind="stable")]
    nb = -(-len(order) // P.BLOCK)
    cols = [bias[order], A[order] * k[order], A[order] * n[order], A[order] * n[order], c[order], c[order]]
    out = np.empty((nb + 1, 6))
    for j, (col, pick) in enumerate(zip(cols, (np.max, np.max, np.max, np.min, np.min, np.max))):
        pad = np.full(nb * P.BLOCK - len(order), col[0] if len(col) else 0.0)
        out[:nb, j] = pick(np.concatenate([col, pad]).reshape(nb, P.BLOCK), axis=1) if nb else []
        out[nb, j] = pick(col) if len(col) else 0.0
    return order.astype(np.int64), out


def canonical(dictionary, score, scale: float, bias, logits_row: np.ndarray, ids: np.ndarray) -> int:
    """The greedy word among dictionary ``ids`` (all within float32 noise of the best): z compared in float64
    from the pattern rows, exact ties to the lowest id."""
    ids = np.sort(np.asarray(ids, np.int64))
    if len(ids) == 1:
        return int(ids[0])
    z = scale * _s64(dictionary, score, logits_row, ids)
    if bias is not None:
        z = z + np.asarray(bias, np.float64)[ids]
    return int(ids[int(np.argmax(z))])  # argmax: the first, so the lowest id among equals


def raw_scores(dictionary, score, x: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(B,) float64 s of word ids[b] at row b of (B, v) logits."""
    return np.array([_s64(dictionary, score, x[b], ids[b:b + 1])[0] for b in range(len(ids))])


def _s64(d, score, logits_row: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return score.of_patterns(logits_row, [d.pattern(i) for i in ids], d.config.vocab_size)
