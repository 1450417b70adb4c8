"""``Scorer``: every dictionary word's score against (B, v) logits, on the CPU, with numba (see _score.py)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numba
import numpy as np

from . import _score as S
from ._unicode import tables
from .config import TfreeError

MIN_LANES = 6  # from this batch size on, positions are scored LANES at a time (bench/decode.py)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 sigmoid of (B, v) logits."""
    return S.sigmoid(np.ascontiguousarray(logits, np.float32))


def _trigram_rule(config):
    """keys (uint64 ``tri | ltri << 24``) -> (T, m) int32 rows under the codec's hash family."""
    v, m, k, seed = config.vocab_size, config.num_activations, config.k_lower, config.seed
    if config.hash == "tfree":
        return lambda keys: S.tfree_trigram_rows(keys, v, m, k, seed)
    if config.hash == "aleph":
        from .trigrams import aleph_trigram  # noqa: PLC0415

        def rows(keys):
            out = np.empty((len(keys), m), np.int32)
            for t, key in enumerate(keys.tolist()):
                out[t] = aleph_trigram((key & 0xFFFFFF).to_bytes(3, "little"), v, m, k)
            return out
        return rows
    return None


class Scorer:
    """Scores every word of a growing word list against logits: ``add`` appends words (incrementally: only the new
    words are factored), ``run`` scores. Not thread-safe for ``add``; ``run`` keeps per-thread buffers."""

    def __init__(self, codec):
        c = codec.config
        self.v, self.m = c.vocab_size, c.num_activations
        self._rule = _trigram_rule(c)
        self.trows = np.zeros((0, self.m), np.int32)                    # (T, m) rows of each trigram
        self._keys = np.zeros(0, np.uint64)                            # known trigram keys, sorted
        self._key_ids = np.zeros(0, np.int64)
        self.order = np.zeros(0, np.int64)                             # trie position -> word id
        self.lcp = np.zeros(0, np.int32)
        self.sptr, self.stid = np.zeros(1, np.int64), np.zeros(0, np.int32)
        self.xptr, self.xrow, self.xval = np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
        self.a, self.c = np.zeros(0, np.float32), np.zeros(0, np.float32)
        self.maxd = 0
        self.factored = 0   # words scored through their trigrams (the rest row by row)
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
        factor = np.array([self._rule is not None and not S.is_marker(w) for w in words], bool)
        cps, coff = S.words_code_points(words)
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
        local = np.array(sorted(range(n), key=words.__getitem__), np.int64)  # string order ~ trie order
        lcp, sptr, stid, remap, next_id = S.build_trie(local, ok, kptr, kid, first_new, first_new, start, S.CHUNK)
        used = remap >= 0
        final_rows = np.empty((next_id - first_new, self.m), np.int32)
        final_rows[remap[used] - first_new] = new_rows[used]
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

    def _buffers(self, lanes: bool):
        key = (lanes, len(self.order))
        cache = getattr(self._local, "buf", None)
        if cache is None or cache[0] != key:
            nch = -(-len(self.order) // S.CHUNK)
            out = np.empty((len(self.order), S.LANES) if lanes else len(self.order), np.float32)
            part = np.empty((nch, 4, S.LANES) if lanes else (nch, 4), np.float64)
            cache = self._local.buf = (key, out, part)
        return cache[1], cache[2]

    def run(self, logits: np.ndarray, invt: float, num_threads: int = 1):
        """Score (B, v) float32 logits; yield a ``Block`` per group of rows (its scores are a reused buffer:
        use them before the next block). ``z`` = sum(exp((s - 1) * invt)) over the dictionary (0 if invt is 0)."""
        if len(self.order) == 0:
            raise TfreeError("the dictionary is empty")
        logits = np.ascontiguousarray(logits, np.float32)
        B = logits.shape[0]
        args = (self.trows, self.lcp, self.sptr, self.stid, self.xptr, self.xrow, self.xval, self.a, self.c, self.maxd)
        parallel = num_threads > 1
        if parallel:
            numba.set_num_threads(min(num_threads, numba.config.NUMBA_NUM_THREADS))
        if B < MIN_LANES:
            out, part = self._buffers(False)
            kernel = S.score1_parallel if parallel else S.score1
            sig = S.sigmoid(logits)
            for b in range(B):
                kernel(sig[b], *args, np.float32(invt), out, part)
                yield Block.of(range(b, b + 1), out.reshape(-1, 1), part[:, :, None])
            return
        out, part = self._buffers(True)
        kernel = S.score_lanes_parallel if parallel else S.score_lanes
        sigt = np.empty((self.v, S.LANES), np.float32)
        for b0 in range(0, B, S.LANES):
            S.sigmoid_lanes(logits, b0, sigt)
            kernel(sigt, *args, np.float32(invt), out, part)
            yield Block.of(range(b0, min(B, b0 + S.LANES)), out, part)


@dataclass
class Block:
    """Scores of a group of batch rows: column j of ``scores`` (n, L), in trie order, is row rows[j]."""

    rows: range
    scores: np.ndarray    # (n, L) float32
    best_pos: np.ndarray  # (len(rows),) int64 trie position of the best word
    best: np.ndarray      # (len(rows),) float32 its score
    low: np.ndarray       # (len(rows),) float32 the lowest score
    z: np.ndarray         # (len(rows),) float64 sum(exp((s - 1) * invt))

    @classmethod
    def of(cls, rows: range, scores: np.ndarray, part: np.ndarray) -> "Block":
        """From per-chunk partials part (chunks, 4, L): best, its position, z, lowest."""
        nl = len(rows)
        ch = np.argmax(part[:, 0, :nl], axis=0)  # the chunk holding each row's best word
        lane = np.arange(nl)
        return cls(rows, scores, part[ch, 1, lane].astype(np.int64), part[ch, 0, lane].astype(np.float32),
                   part[:, 3, :nl].min(0).astype(np.float32), part[:, 2, :nl].sum(0))
