"""Words -> sparse activation patterns (SPEC section 2).

A word is padded with one space on each side and UTF-8 encoded; each byte trigram activates ``m`` distinct rows
of ``[0, v)`` and the word's pattern is the sorted union (uint32). Marker words are hashed whole.

Two hash families:
- ``tfree`` (default): splitmix64 of the trigram, one splitmix64 per row, case sharing for every cased
  script. The hot path lives in ``_kernels.hash_new``.
- ``aleph``: the T-FREE reference's md5 rule, reproducing its patterns (and its ASCII-only case sharing) for every
  word that both split alike; their words differ in places and the reference sums repeated rows, so its checkpoints
  do not load as they are (docs/codec.md). md5 rows are computed lazily per trigram and cached, never the 16.7M table.
"""
from __future__ import annotations

import functools
import hashlib

import numpy as np

from ._unicode import tables
from .markers import N_MARKERS
from .words import MARKERS, grown, kernels

_MASK = (1 << 64) - 1


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def tfree_rows(key: int, count: int, v: int, seed: int, taken: tuple[int, ...] = ()) -> list[int]:
    """The first ``count`` distinct rows of key's sequence ``splitmix64(h + i*golden) mod v`` not in ``taken``."""
    h = splitmix64(key ^ splitmix64(seed))
    rows: list[int] = []
    i = 0
    while len(rows) < count:
        r = splitmix64((h + i * 0x9E3779B97F4A7C15) & _MASK) & (v - 1)
        i += 1
        if r not in rows and r not in taken:
            rows.append(r)
    return rows


def _fnv64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & _MASK
    return h


def _md5_mod(s: str, v: int) -> int:
    return int(hashlib.md5(s.encode()).hexdigest(), 16) % v


@functools.lru_cache(maxsize=1 << 20)
def aleph_trigram_row(tri: int, v: int, m: int) -> tuple[int, ...]:
    """The reference's sorted row for trigram id ``tri = b0 + 256*b1 + 65536*b2``: m distinct md5 draws."""
    s: set[int] = set()
    for k in range(m):
        j = 0
        while True:
            before = len(s)
            s.add(_md5_mod(f"{tri}_{k}_{j}", v))
            j += 1
            if len(s) > before:
                break
    return tuple(sorted(s))


_ASCII_CASED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")


def aleph_trigram(tri_bytes: bytes, v: int, m: int, k: int) -> tuple[int, ...]:
    """Reference rule with case sharing: for trigrams over [a-zA-Z ], the last k of the sorted row are replaced
    by the last k of the lower-case trigram's row (the result is not re-sorted)."""
    row = aleph_trigram_row(int.from_bytes(tri_bytes, "little"), v, m)
    if k and all(b in _ASCII_CASED for b in tri_bytes):
        low = aleph_trigram_row(int.from_bytes(tri_bytes.lower(), "little"), v, m)
        row = row[: m - k] + low[m - k:]
    return row


def aleph_word_rows(word: str, v: int, m: int, k: int) -> list[int]:
    padded = (" " + word + " ").encode("utf-8", "surrogatepass")
    rows: set[int] = set()
    for j in range(len(padded) - 2):
        rows.update(aleph_trigram(padded[j:j + 3], v, m, k))
    return sorted(rows)


def marker_rows(word: str, v: int, m: int, k: int, family: str, seed: int) -> list[int]:
    """A marker word is one unit: its rows come from hashing the whole string."""
    if family == "aleph":
        rows = {_md5_mod(f"{word}_{i}", v) for i in range(m - k)}
        rows |= {_md5_mod(f"{word.lower()}_lower_{i}", v) for i in range(k)}
        return sorted(rows)
    return sorted(tfree_rows(_fnv64(word.encode()) | (1 << 63), m, v, seed))


@functools.lru_cache(maxsize=64)
def marker_table(v: int, m: int, k: int, family: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR patterns of all marker words, in marker id order."""
    pats = [marker_rows(w, v, m, k, family, seed) for w in MARKERS]
    indptr = np.zeros(len(pats) + 1, np.int64)
    indptr[1:] = np.cumsum([len(p) for p in pats])
    return indptr, np.concatenate([np.asarray(p, np.uint32) for p in pats])


def hash_unhashed(cache, v: int, m: int, k: int, family: str, seed: int) -> None:
    """Give every word of ``cache`` that has no pattern yet its pattern."""
    nh, nu = int(cache.cnt[1]), int(cache.cnt[0])
    if nh == nu:
        return
    cache.pptr = grown(cache.pptr, N_MARKERS + nu + 1)
    pos = int(cache.pptr[N_MARKERS + nh])
    if family == "tfree":
        lens = np.diff(cache.coff[nh:nu + 1])
        cache.pidx = grown(cache.pidx, pos + m * int(lens.sum()))  # at most m rows per trigram, one per byte
        maxlen = int(lens.max())
        kernels().hash_new(cache.data, cache.coff, cache.cnt, cache.pptr, cache.pidx, tables()[1], v, m, k, seed,
                           np.empty(maxlen + 2, np.uint8), np.empty(maxlen + 2, np.uint8),
                           np.zeros((v >> 6) + 1, np.uint64), np.empty(m, np.int64))
        return
    pats = [aleph_word_rows(w, v, m, k) for w in cache.unhashed_words()]
    ends = np.cumsum([len(p) for p in pats], dtype=np.int64)
    cache.pidx = grown(cache.pidx, pos + int(ends[-1]))
    cache.pidx[pos:pos + int(ends[-1])] = np.fromiter((r for p in pats for r in p), np.uint32, count=int(ends[-1]))
    cache.pptr[N_MARKERS + nh + 1:N_MARKERS + nu + 1] = pos + ends
    cache.cnt[1] = nu
