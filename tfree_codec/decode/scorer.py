"""``Scorer``: every dictionary word's score against (B, v) logits, on the CPU, with numba (see _score.py)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numba
import numpy as np

from . import _prune as P
from . import _score as S
from ..text._unicode import tables
from ..config import TfreeError
from ..text.words import MARKER_ID, code_points
from .wordscore import word_score

MIN_LANES = 6  # from this batch size on, positions are scored LANES at a time (bench/decode.py)
MAX_ENDINGS = 3000   # word endings summed once (a unit per ~30 words at most)
LONGEST_ENDING = 6   # trigrams


def is_marker(word: str) -> bool:
    return word in MARKER_ID


def words_code_points(words: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(cps uint32, coff int64) of the words back to back."""
    lens = np.fromiter((len(w) for w in words), np.int64, count=len(words))
    coff = np.zeros(len(words) + 1, np.int64)
    np.cumsum(lens, out=coff[1:])
    return code_points("".join(words)), coff


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 sigmoid of (B, v) logits."""
    return S.sigmoid(np.ascontiguousarray(logits, np.float32))


def _trigram_rule(config):
    """keys (uint64 ``tri | ltri << 24``) -> (T, m) int32 rows under the codec's hash family."""
    v, m, k, seed = config.vocab_size, config.num_activations, config.k_lower, config.seed
    if config.hash == "tfree":
        return lambda keys: S.tfree_trigram_rows(keys, v, m, k, seed)
    if config.hash == "aleph":
        from ..text.trigrams import aleph_trigram  # noqa: PLC0415

        def rows(keys):
            out = np.empty((len(keys), m), np.int32)
            for t, key in enumerate(keys.tolist()):
                out[t] = aleph_trigram((key & 0xFFFFFF).to_bytes(3, "little"), v, m, k)
            return out
        return rows
    return None


def unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(a, axis=0, return_inverse=True, return_counts=True)`` for (n, j) non-negative int64 rows, a
    column at a time: each prefix's dense rank (lexicographic, as the rows sort) joins the next column in one
    int64 key (np.unique's axis=0 sorts the rows as records: 5x slower, half of a 100k-word index's build)."""
    rank = np.zeros(len(a), np.int64)
    for c in range(a.shape[1]):
        _, rank = np.unique(rank * (int(a[:, c].max(initial=0)) + 1) + a[:, c], return_inverse=True)
        rank = rank.reshape(-1)
    first = np.full(int(rank.max(initial=-1)) + 1, len(a), np.int64)
    np.minimum.at(first, rank, np.arange(len(a)))
    return a[first], rank, np.bincount(rank, minlength=len(first))


def choose_endings(kptr, kid, ok, max_units: int):
    """Pick common word endings: the last j = 2..LONGEST_ENDING trigrams of factored words, valued by the
    additions they save, (count - 1) * (j - 1); the best ``max_units`` with a positive value. Each word's longest
    chosen ending is cut from its sequence and replaced by -1 - e (ending e). -> (kptr2, kid2, eptr, etid)."""
    n = len(kptr) - 1
    lens = np.diff(kptr) * ok
    ends = kptr[1:]
    tables, values = {}, []
    for j in range(2, LONGEST_ENDING + 1):
        w = np.nonzero(lens >= j + 1)[0]  # keep a trigram in front of the ending
        if len(w) == 0 or max_units == 0:
            continue
        tails, inv, cnt = unique_rows(kid[ends[w][:, None] - j + np.arange(j)])
        tables[j] = (w, tails, inv.ravel())
        values.append(np.stack([(cnt - 1) * (j - 1), np.full(len(cnt), j), np.arange(len(cnt))], 1))
    unit = np.full(n, -1, np.int64)
    cut = np.zeros(n, np.int64)
    eptr, etid = [0], []
    if values:
        allv = np.concatenate(values)
        best = allv[np.argsort(-allv[:, 0], kind="stable")[:max_units]]
        best = best[best[:, 0] > 0]
        for j in sorted(tables, reverse=True):  # longest chosen ending first
            w, tails, inv = tables[j]
            pick = best[best[:, 1] == j]
            eid = np.full(len(tails), -1, np.int64)
            eid[pick[:, 2]] = len(eptr) - 1 + np.arange(len(pick))
            for t in tails[pick[:, 2]]:
                etid.extend(t.tolist())
                eptr.append(len(etid))
            e = eid[inv]
            take = (e >= 0) & (unit[w] < 0)
            unit[w[take]], cut[w[take]] = e[take], j
    keep = np.repeat(np.arange(n), np.diff(kptr))
    pos = np.arange(len(kid)) - np.repeat(kptr[:-1], np.diff(kptr))
    kept = kid[pos < (np.diff(kptr) - cut)[keep]]
    new_len = np.diff(kptr) - cut + (unit >= 0)
    at = np.cumsum(np.diff(kptr) - cut)[unit >= 0]
    kid2 = np.insert(kept, at, -1 - unit[unit >= 0])
    kptr2 = np.concatenate([[0], np.cumsum(new_len)])
    return kptr2, kid2, np.array(eptr, np.int64), np.array(etid, np.int64)


class Scorer:
    """Scores every word of a growing word list against logits: ``add`` appends words (incrementally: only the new
    words are factored), ``run`` scores. Not thread-safe for ``add``; ``run`` keeps per-thread buffers."""

    def __init__(self, codec, score="sigmoid_diff"):
        # the score ``score_one`` and ``run`` compute unless told another (a name or a wordscore.WordScore); the
        # arrays below are the same for every score (coefficients() derives a score's own from the sizes)
        self.score = word_score(score)
        c = codec.config
        self.v, self.m = c.vocab_size, c.num_activations
        self._rule = _trigram_rule(c)
        self.trows = np.zeros((0, self.m), np.int32)                    # (T, m) rows of each trigram
        self.eptr, self.etid = np.zeros(1, np.int64), np.zeros(0, np.int32)  # word endings: their trigrams
        self._keys = np.zeros(0, np.uint64)                            # known trigram keys, sorted
        self._key_ids = np.zeros(0, np.int64)
        self.order = np.zeros(0, np.int64)                             # trie position -> word id
        self.lcp = np.zeros(0, np.int32)
        self.sptr, self.stid = np.zeros(1, np.int64), np.zeros(0, np.int32)
        self.xptr, self.xrow, self.xval = np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
        self.a, self.c = np.zeros(0, np.float32), np.zeros(0, np.float32)
        self.maxd = 0
        self.factored = 0   # words scored through their trigrams (the rest row by row)
        # per trie position: pattern size and distinct trigram ids (none for a word scored row by row), what the
        # pruned search (search.py) scores single words and bounds the rest with
        self.sizes = np.zeros(0, np.int32)
        self.kptr, self.ktid = np.zeros(1, np.int64), np.zeros(0, np.int32)
        self._coef: dict = {}
        self._postings = None
        self._zero = None
        self._position = None
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self.order)

    @property
    def position(self) -> np.ndarray:
        """word id -> trie position."""
        if self._position is None or len(self._position) != len(self.order):
            self._position = np.empty_like(self.order)
            self._position[self.order] = np.arange(len(self.order))
        return self._position

    def add(self, words: list[str], indptr: np.ndarray, indices: np.ndarray) -> None:
        """Append ``words`` (ids len(self) ...) with their CSR patterns."""
        n, first_id, start = len(words), len(self.order), len(self.order)
        if n == 0:
            return
        factor = np.array([self._rule is not None and not is_marker(w) for w in words], bool)
        cps, coff = words_code_points(words)
        kptr, keys = S.word_keys(cps, coff, tables()[1], factor)
        uniq, inv = np.unique(keys, return_inverse=True)
        at = np.minimum(np.searchsorted(self._keys, uniq), max(len(self._keys) - 1, 0))
        known = self._keys[at] == uniq if len(self._keys) else np.zeros(len(uniq), bool)
        first_new = len(self.trows)
        ids = np.where(known, self._key_ids[at] if len(self._keys) else 0, 0)
        ids[~known] = first_new + np.arange((~known).sum())
        kid = ids[inv].astype(np.int64)
        new_rows = self._rule(uniq[~known]) if self._rule is not None else self.trows[:0]
        all_rows = np.concatenate([self.trows, new_rows])
        ok, dptr, drow = S.verify(kptr, kid, all_rows, indptr, indices, self.v)
        kptr2, kid2, eptr, etid = choose_endings(kptr, kid, ok, min(MAX_ENDINGS, n // 30))
        local = np.array(sorted(range(n), key=words.__getitem__), np.int64)  # string order ~ trie order
        lcp, sptr, stid, remap, next_id = S.build_trie(local, ok, kptr2, kid2, first_new, first_new, start, S.CHUNK)
        only_in_endings = np.unique(etid[etid >= first_new]) - first_new
        only_in_endings = only_in_endings[remap[only_in_endings] < 0]
        remap[only_in_endings] = next_id + np.arange(len(only_in_endings))
        next_id += len(only_in_endings)
        used = remap >= 0
        final_rows = np.empty((next_id - first_new, self.m), np.int32)
        final_rows[remap[used] - first_new] = new_rows[used]
        # ids: trigrams [0, T), then the endings; stid holds the new endings as -1 - e (see choose_endings)
        n_end = len(self.eptr) - 1
        self.stid[self.stid >= first_new] += next_id - first_new
        stid = np.where(stid >= 0, stid, next_id + n_end - 1 - stid).astype(np.int32)
        etid = np.where(etid >= first_new, remap[np.maximum(etid - first_new, 0)], etid).astype(np.int32)
        self.eptr = np.concatenate([self.eptr, eptr[1:] + self.eptr[-1]])
        self.etid = np.concatenate([self.etid, etid])
        xptr, xrow, xval = S.corrections(local, ok, dptr, drow, indptr, indices)
        sizes = np.diff(indptr)[local].astype(np.float64)
        out = np.maximum(self.v - sizes, 0)
        with np.errstate(divide="ignore"):
            c = np.where(out > 0, 1.0 / out, 0.0)
        self.trows = np.concatenate([self.trows, final_rows])
        keys_all = np.concatenate([self._keys, uniq[~known][used]])
        ids_all = np.concatenate([self._key_ids, remap[used]])
        srt = np.argsort(keys_all, kind="stable")
        self._keys, self._key_ids = keys_all[srt], ids_all[srt]
        self.order = np.concatenate([self.order, local + first_id])
        self.lcp = np.concatenate([self.lcp, lcp])
        self.sptr = np.concatenate([self.sptr, sptr[1:] + self.sptr[-1]])
        self.stid = np.concatenate([self.stid, stid])
        self.xptr = np.concatenate([self.xptr, xptr[1:] + self.xptr[-1]])
        self.xrow, self.xval = np.concatenate([self.xrow, xrow]), np.concatenate([self.xval, xval])
        self.a = np.concatenate([self.a, (1.0 / sizes + c).astype(np.float32)])
        self.c = np.concatenate([self.c, c.astype(np.float32)])
        self.maxd = max(self.maxd, int(np.diff(kptr).max()))
        self.factored += int(ok.sum())
        fin = kid.copy()
        fin[kid >= first_new] = remap[kid[kid >= first_new] - first_new]
        lens = (np.diff(kptr) * ok)[local]
        total = int(lens.sum())
        at = np.repeat(kptr[:-1][local] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(total)
        self.kptr = np.concatenate([self.kptr, self.kptr[-1] + np.cumsum(lens)])
        self.ktid = np.concatenate([self.ktid, fin[at].astype(np.int32)])
        self.sizes = np.concatenate([self.sizes, np.diff(indptr)[local].astype(np.int32)])
        self._coef.clear()

    # the arrays that make a scorer, for the on-disk cache (index.py)
    STATE = ("trows", "eptr", "etid", "_keys", "_key_ids", "order", "lcp", "sptr", "stid", "xptr", "xrow", "xval",
             "a", "c", "sizes", "kptr", "ktid")

    def state(self) -> dict:
        """Everything the scorer holds, as arrays (the inverted index too), for ``restore``."""
        out = {k.lstrip("_"): getattr(self, k) for k in self.STATE}
        out["tptr"], out["tpos"] = self.postings()
        out["scalars"] = np.array([self.maxd, self.factored], np.int64)
        return out

    @classmethod
    def restore(cls, codec, arrays: dict) -> "Scorer":
        """A scorer from ``state()``'s arrays (checked by the caller: index.py validates a cache before use)."""
        sc = cls(codec)
        for k in cls.STATE:
            setattr(sc, k, arrays[k.lstrip("_")])
        sc.maxd, sc.factored = (int(x) for x in arrays["scalars"])
        sc._postings = (len(sc.order), arrays["tptr"], arrays["tpos"])
        return sc

    def postings(self) -> tuple[np.ndarray, np.ndarray]:
        """The inverted index (tptr, tpos): the trie positions of the words holding each trigram, built on first
        use after growth."""
        if self._postings is None or self._postings[0] != len(self.order):
            self._postings = (len(self.order), *P.postings(self.kptr, self.ktid, len(self.trows)))
        return self._postings[1:]

    def coefficients(self, score) -> tuple[np.ndarray, np.ndarray]:
        """(a, c) float32 per trie position for a ``WordScore``: s = a * S_w - c * G."""
        if score.name == "sigmoid_diff":
            return self.a, self.c
        if score not in self._coef:
            self._coef[score] = score.coefficients(self.sizes, self.v)
        return self._coef[score]

    def _buffers(self, lanes: bool):
        """Per-thread reused arrays: all scores (n[, LANES]) and per-chunk partials."""
        key = (lanes, len(self.order))
        cache = getattr(self._local, "buf", None)
        if cache is None or cache[0] != key:
            shape = (S.LANES,) if lanes else ()
            nch = -(-len(self.order) // S.CHUNK)
            cache = self._local.buf = (key, np.empty((len(self.order),) + shape, np.float32),
                                       np.empty((nch, 5) + shape, np.float64))
        return cache[1:]

    def score_one(self, logits: np.ndarray, score=None) -> np.ndarray:
        """Every word's score (``score``, default the scorer's) against one position's (v,) float32 logits, in
        trie order (``order[i]`` is the word at i): a word at a time, without ``run``'s blocks. A reused buffer:
        use it before the next call."""
        if len(self.order) == 0:
            raise TfreeError("the dictionary is empty")
        score = self.score if score is None else score
        out, part = self._buffers(False)
        x = np.ascontiguousarray(logits, np.float32).reshape(1, -1)
        g = x[0] if score.g == "identity" else S.sigmoid(x)[0]
        a, c = self.coefficients(score)
        S.score1(g, self.trows, self.eptr, self.etid, self.lcp, self.sptr, self.stid, self.xptr, self.xrow, self.xval,
                 a, c, self._zeros(), np.float32(1), self.maxd, np.float32(0), True, out, np.full(1, -1, np.int64),
                 np.zeros(1, np.float32), part)
        return out

    def _zeros(self) -> np.ndarray:
        if self._zero is None or len(self._zero) != len(self.order):
            self._zero = np.zeros(len(self.order), np.float32)
        return self._zero

    def run(self, logits: np.ndarray, invt: float, num_threads: int = 1, *, keep: bool = True, targets=None,
            rank=None, ref: float = 1.0):
        """Score (B, v) float32 logits; yield a ``Block`` per group of rows. ``rank``: (score, scale, bias) or None
        (the scorer's score, 1, none): values are z = scale * s + bias (``score`` a ``WordScore`` or None for the
        scorer's, ``bias`` (W,) float32 in trie order or None), and ``z`` = sum(exp((z - ref) * invt)) over the
        dictionary (0 if invt is 0; ``ref`` must bound z: variant 2's s <= 1). keep=False keeps no scores but those
        of ``targets`` (B,) word ids: faster. Kept scores are a reused buffer: use them before the next block."""
        if len(self.order) == 0:
            raise TfreeError("the dictionary is empty")
        logits = np.ascontiguousarray(logits, np.float32)
        B = logits.shape[0]
        tpos = np.full(B, -1, np.int64) if targets is None else self.position[np.asarray(targets, np.int64)]
        score, scale, bias = (None, 1.0, None) if rank is None else rank
        score = self.score if score is None else score
        identity = score.g == "identity"
        a, c = self.coefficients(score)
        if scale != 1.0:
            a, c = a * np.float32(scale), c * np.float32(scale)
        bias = self._zeros() if bias is None else np.ascontiguousarray(bias, np.float32)
        args = (self.trows, self.eptr, self.etid, self.lcp, self.sptr, self.stid, self.xptr, self.xrow, self.xval,
                a, c, bias, np.float32(ref), self.maxd, np.float32(invt), keep)
        parallel = num_threads > 1
        if parallel:
            numba.set_num_threads(min(num_threads, numba.config.NUMBA_NUM_THREADS))
        if B < MIN_LANES:
            out, part = self._buffers(False)
            kernel = S.score1_parallel if parallel else S.score1
            sig = logits if identity else S.sigmoid(logits)
            for b in range(B):
                tval = np.zeros(1, np.float32)
                kernel(sig[b], *args, out, tpos[b:b + 1], tval, part)
                yield Block.of(range(b, b + 1), out.reshape(-1, 1) if keep else None, part[:, :, None], tval)
            return
        out, part = self._buffers(True)
        kernel = S.score_lanes_parallel if parallel else S.score_lanes
        sigt = np.empty((self.v, S.LANES), np.float32)
        for b0 in range(0, B, S.LANES):
            S.sigmoid_lanes(logits, b0, sigt, not identity)
            tp = np.full(S.LANES, -1, np.int64)
            tp[:min(B, b0 + S.LANES) - b0] = tpos[b0:b0 + S.LANES]
            tval = np.zeros(S.LANES, np.float32)
            kernel(sigt, *args, out, tp, tval, part)
            yield Block.of(range(b0, min(B, b0 + S.LANES)), out if keep else None, part, tval)


@dataclass
class Block:
    """Scores of a group of batch rows: column j of ``scores`` (n, L), in trie order, is row rows[j]."""

    rows: range
    scores: np.ndarray | None  # (n, L) float32, or None when not kept
    best_pos: np.ndarray       # (len(rows),) int64 trie position of the best word
    best: np.ndarray           # (len(rows),) float32 its score
    low: np.ndarray            # (len(rows),) float32 the lowest score
    z: np.ndarray              # (len(rows),) float64 sum(exp((s - 1) * invt))
    target: np.ndarray         # (len(rows),) float32 score of each row's target word (when given)
    second: np.ndarray         # (len(rows),) float32 the best score of the other words

    @classmethod
    def of(cls, rows: range, scores, part: np.ndarray, tval: np.ndarray) -> "Block":
        """From per-chunk partials part (chunks, 5, L): best, its position, z, lowest, second best."""
        nl = len(rows)
        ch = np.argmax(part[:, 0, :nl], axis=0)  # the chunk holding each row's best word
        lane = np.arange(nl)
        others = part[:, 0, :nl].copy()
        others[ch, lane] = -np.inf
        second = np.maximum(part[:, 4, :nl].max(0), others.max(0))
        return cls(rows, scores, part[ch, 1, lane].astype(np.int64), part[ch, 0, lane].astype(np.float32),
                   part[:, 3, :nl].min(0).astype(np.float32), part[:, 2, :nl].sum(0), tval[:nl].copy(),
                   second.astype(np.float32))
