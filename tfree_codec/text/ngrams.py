"""Word n-gram keys and their table rows, for Over-Encoding (hashed word-bigram/trigram input embeddings).

A word's key is the FNV-1a 64-bit hash of its UTF-8 bytes, finished by splitmix64: a function of the word's text
alone, the same in every process and on every machine (Python's ``hash`` is salted per process, so never that).
The order-``n`` key of position ``t`` chains the keys of words ``t-n+1 .. t`` (oldest first), starting from the
order itself so that a bigram and a trigram of the same words differ:

    g = n;  for each word u in the window:  g = splitmix64(g * GOLDEN + u)

Words before a document's start read as the fixed key ``BOS_KEY``, so no n-gram ever spans two documents: a
position whose ``boundary`` is set starts a new document (the word after an end-of-text marker, or the first word
a caller has no history for).

**The history rule** (training, evaluation and generation follow it alike, so a model reads at generation the
rows it was trained on): a position's history is the items before it in the stream the model reads, back to the
nearest document start, and a cut of the context window never cuts it (a window's first item keeps its true
history: the loader and the generator keep the last ``n - 1`` keys). A document starts at the stream's first item
and at the item after every ``<|endoftext|>`` (``stream_boundary``); the ``<|endoftext|>`` itself belongs to the
document it ends (its history is that document's last words). Training streams also start a document at each
*unit* (shards/corpus.py cuts long documents into units of ``chunk_words``): in evaluation and generation every unit
or prompt follows an ``<|endoftext|>``, so a unit's first word has no history there either.

Slice ``j`` of order ``n`` reads row ``splitmix64(g ^ seed_j) % m_j`` of its own table. With ``distinct`` slices
(the default) each slice has its own seed and its own odd modulus ``m_j = (rows | 1) + 2 * idx`` (the paper's
``m + 2 idx``), so two n-grams that collide in one slice rarely collide in another; otherwise every slice of an
order reads the same row of equally sized tables (the paper's control: then the slices add nothing).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._kernels import splitmix64
from .markers import EOT

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
BOS_KEY = 0x2545F4914F6CDD1D  # what a word before the document's start hashes to
_SLICE_SEEDS = np.array([(0xD6E8FEB86659FD93 * (j + 1)) & _MASK for j in range(64)], dtype=np.uint64)


def _mix(x: int) -> int:
    """splitmix64 on Python ints: the reference the numba kernels are tested against."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def word_key(word: str) -> int:
    """The stable 64-bit key of one word (an unsigned Python int)."""
    h = FNV_OFFSET
    for b in word.encode("utf-8", "surrogatepass"):
        h = ((h ^ b) * FNV_PRIME) & _MASK
    return _mix(h)


@njit(cache=True, nogil=True)
def _fnv_many(data, offsets, out):
    for i in range(out.shape[0]):
        h = np.uint64(FNV_OFFSET)
        for p in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[p])) * np.uint64(FNV_PRIME)
        out[i] = splitmix64(h)


def word_keys(words) -> np.ndarray:
    """``word_key`` of each word, as a (n,) uint64 array (one numba pass over the concatenated bytes)."""
    encoded = [w.encode("utf-8", "surrogatepass") for w in words]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    out = np.empty(len(encoded), dtype=np.uint64)
    _fnv_many(data, offsets, out)
    return out


def stream_boundary(keys: np.ndarray) -> np.ndarray:
    """The history rule for one stream of items (generation, evaluation): a document starts at the first item and
    after every ``<|endoftext|>``. -> (n,) bool, for ``ngram_rows``."""
    keys = np.asarray(keys, dtype=np.uint64)
    out = np.zeros(keys.shape[0], dtype=np.bool_)
    if keys.shape[0]:
        out[0] = True
        out[1:] = keys[:-1] == np.uint64(EOT_KEY)
    return out


def moduli(orders, slices: int, rows: int, distinct: bool = True) -> list[int]:
    """The row count of each of the ``len(orders) * slices`` tables, order-major."""
    if distinct:
        return [(rows | 1) + 2 * idx for idx in range(len(orders) * slices)]
    return [rows] * (len(orders) * slices)


@njit(cache=True, nogil=True)
def _ngram_rows(keys, boundary, orders, slices, mods, distinct, out):
    n = keys.shape[0]
    for t in range(n):
        # how many words back the current document reaches from t (t itself included)
        back = 1
        while back < n and t - back >= 0 and not boundary[t - back + 1]:
            back += 1
            if back > 64:
                break
        for oi in range(orders.shape[0]):
            order = orders[oi]
            g = np.uint64(order)
            for j in range(order - 1, -1, -1):  # oldest word first
                u = keys[t - j] if j < back else np.uint64(BOS_KEY)
                g = splitmix64(g * np.uint64(_GOLDEN) + u)
            for s in range(slices):
                idx = oi * slices + s
                seed = _SLICE_SEEDS[idx] if distinct else _SLICE_SEEDS[oi * slices]
                out[t, idx] = np.int64(splitmix64(g ^ seed) % np.uint64(mods[idx]))


def ngram_rows(keys: np.ndarray, boundary: np.ndarray, orders, slices: int, rows: int,
               distinct: bool = True) -> np.ndarray:
    """The table row of every (position, slice) of a word stream: (n, len(orders) * slices) int64, order-major.

    ``keys`` are the words' ``word_key`` (uint64, oldest first); ``boundary[t]`` marks a position that starts a
    document (nothing before it is its history). A row of training windows passes each window with its first
    position marked unless it also passes the words before it."""
    keys = np.ascontiguousarray(keys, dtype=np.uint64)
    boundary = np.ascontiguousarray(boundary, dtype=np.bool_)
    if keys.ndim != 1 or boundary.shape != keys.shape:
        raise ValueError(f"keys and boundary must be two (n,) arrays, not {keys.shape} and {boundary.shape}")
    orders_a = np.asarray(list(orders), dtype=np.int64)
    if len(orders_a) and (orders_a.min() < 2 or orders_a.max() > 8):
        raise ValueError(f"n-gram orders must lie in 2..8, not {list(orders)}")
    if slices < 1 or slices > 64 // max(1, len(orders_a)) or rows < 1:
        raise ValueError(f"need 1 <= slices <= {64 // max(1, len(orders_a))} and rows >= 1 (got {slices}, {rows})")
    mods = np.asarray(moduli(orders_a, slices, rows, distinct), dtype=np.uint64)
    out = np.empty((keys.shape[0], len(orders_a) * slices), dtype=np.int64)
    if keys.shape[0] and len(orders_a):
        _ngram_rows(keys, boundary, orders_a, slices, mods, bool(distinct), out)
    return out


def ngram_rows_reference(keys, boundary, orders, slices, rows, distinct=True) -> np.ndarray:
    """The slow, readable twin of ``ngram_rows`` (Python ints), for tests."""
    mods = moduli(orders, slices, rows, distinct)
    out = np.empty((len(keys), len(orders) * slices), dtype=np.int64)
    for t in range(len(keys)):
        start = t
        while start > 0 and not boundary[start]:
            start -= 1
        for oi, order in enumerate(orders):
            g = order
            for p in range(t - order + 1, t + 1):
                u = int(keys[p]) if p >= start else BOS_KEY
                g = _mix((g * _GOLDEN + u) & _MASK)
            for s in range(slices):
                idx = oi * slices + s
                seed = int(_SLICE_SEEDS[idx if distinct else oi * slices])
                out[t, idx] = _mix(g ^ seed) % mods[idx]
    return out


EOT_KEY = word_key(EOT)  # the key of <|endoftext|>, the word that ends a document
