"""How likely a word is by its spelling alone: the byte n-gram model that prices words outside the dictionary.

Bits per byte (docs/training.md, "Bits per byte") charges an unseen word ``p_unk * p_spell(w)``; ``p_spell`` is a
byte-level n-gram model (interpolated Witten-Bell, uniform over 256 bytes + end-of-word at the bottom) trained on
the dictionary's word types. It sums to one over all byte strings, dictionary words included, so the mass it gives
them is simply lost: the charge is a true code length, never an underestimate. It describes the decoded
distribution, as the calibration does (calibration.py), so it lives beside the dictionary it is trained on.
"""
from __future__ import annotations

import numpy as np

from ..text.words import MARKERS

BOS, EOW, NSYM = 257, 256, 258  # spelling model symbols: bytes 0..255, end of word, start padding


class SpellingModel:
    """p(word) over all byte strings: interpolated Witten-Bell byte n-grams trained on word types.

    Unseen words are mostly rare words, and rare words look like word *types* more than like running text, so each
    distinct word counts once."""

    def __init__(self, words, order: int = 5):
        self.order = order
        self.tables = []  # per context length k: (keys ctx*NSYM+sym, counts, context ids, their totals, their types)
        grid, valid = _grid([w for w in words if w not in MARKERS], order)
        sym = grid[:, order - 1:]
        for k in range(order):
            ctx = _contexts(grid, order, k)
            keys, counts = np.unique((ctx * NSYM + sym)[valid], return_counts=True)
            cids, inv = np.unique(keys // NSYM, return_inverse=True)
            self.tables.append((keys, counts, cids, np.bincount(inv, weights=counts).astype(np.int64),
                                np.bincount(inv).astype(np.int64)))

    def log2prob(self, words) -> np.ndarray:
        """log2 p(w) of each word, (n,) float64."""
        words = list(words)
        if not words:
            return np.zeros(0)
        grid, valid = _grid(words, self.order)
        sym = grid[:, self.order - 1:]
        p = np.full(sym.shape, 1.0 / 257)  # the floor: uniform over 256 bytes and end-of-word
        for k, (keys, counts, cids, totals, types) in enumerate(self.tables):
            ctx = _contexts(grid, self.order, k)
            c_hs = _lookup(keys, counts, ctx * NSYM + sym)
            c_h, n_h = _lookup(cids, totals, ctx), _lookup(cids, types, ctx)
            p = np.where(c_h > 0, (c_hs + n_h * p) / np.maximum(c_h + n_h, 1), p)
        return np.where(valid, np.log2(p), 0.0).sum(1)


def _grid(words, order: int):
    """(n, order-1 + L) int64 symbols: order-1 BOS, the word's UTF-8 bytes, EOW, BOS filling the rest; and (n, L)
    bool: which predicted positions (the last L columns) belong to the word."""
    raw = [w.encode("utf-8", "surrogatepass") for w in words]
    lens = np.array([len(b) for b in raw], np.int64)
    L = int(lens.max(initial=0)) + 1
    grid = np.full((len(raw), order - 1 + L), BOS, np.int64)
    for i, b in enumerate(raw):
        grid[i, order - 1:order - 1 + len(b)] = np.frombuffer(b, np.uint8)
        grid[i, order - 1 + len(b)] = EOW
    return grid, np.arange(L)[None, :] <= lens[:, None]


def _contexts(grid, order: int, k: int):
    """(n, L) ids of the k symbols before each predicted position (0 for k = 0)."""
    L = grid.shape[1] - (order - 1)
    ctx = np.zeros((grid.shape[0], L), np.int64)
    for j in range(order - 1 - k, order - 1):
        ctx = ctx * NSYM + grid[:, j:j + L]
    return ctx


def _lookup(keys, values, query):
    """values[keys == query], 0 where the key is absent (keys sorted)."""
    if len(keys) == 0:
        return np.zeros(query.shape, np.int64)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[pos] == query, values[pos], 0)
