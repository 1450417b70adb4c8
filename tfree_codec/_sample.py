"""Sampling kernels: one draw per position from softmax(scores / T) over the whole dictionary, restricted to the
top_k best words and then to the smallest best set holding top_p of their mass, in a few O(n) passes.

Nothing sorts the dictionary. A restriction is a score threshold: a histogram of the scores (counts for top_k,
probability mass for top_p) finds the bin where the running total from the top crosses the limit, and only that
bin's words are sorted to place the threshold exactly (words tied with it are all kept). The draw is an inverse
CDF in storage order over the words at or above the threshold. Blocks are (n, L) scores, L positions side by
side (the scorer's layout); every pass walks the block once for all positions.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._score import exp_neg

NBINS = 1024


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _bin_scale(lo, hi, nl):
    scale = np.empty(nl, np.float32)
    for b in range(nl):
        scale[b] = np.float32(NBINS) / max(hi[b] - lo[b], np.float32(1e-30))
    return scale


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def threshold(block, nl, lo, hi, thr, ref, invt, limit, by_mass):
    """Per position b: the score t >= thr[b] such that the words scoring >= t are the fewest best words whose
    count (or, by_mass, sum of exp((s - ref) * invt)) reaches limit[b]. -> (t, mass of the words >= t)."""
    n = block.shape[0]
    scale = _bin_scale(lo, hi, nl)
    cnt = np.zeros((nl, NBINS + 1), np.int64)
    mass = np.zeros((nl, NBINS + 1), np.float64)
    for i in range(n):
        for b in range(nl):
            s = block[i, b]
            if s >= thr[b]:
                k = min(max(np.int64((s - lo[b]) * scale[b]), 0), NBINS)
                cnt[b, k] += 1
                mass[b, k] += exp_neg((s - ref[b]) * invt)
    out = thr.copy()
    above = np.zeros(nl, np.float64)     # mass of the bins above the crossing bin
    reached = np.zeros(nl, np.float64)   # their count or mass
    cross = np.full(nl, -1, np.int64)
    total = np.zeros(nl, np.float64)
    for b in range(nl):
        acc = 0.0
        for k in range(NBINS, -1, -1):
            step = mass[b, k] if by_mass else np.float64(cnt[b, k])
            total[b] += mass[b, k]
            if cross[b] < 0:
                if acc + step >= limit[b]:
                    cross[b] = k
                    reached[b] = acc
                else:
                    acc += step
                    above[b] += mass[b, k]
    # the crossing bin's words, per position, then sorted to find where the limit is reached
    start = np.zeros(nl + 1, np.int64)
    for b in range(nl):
        start[b + 1] = start[b] + (cnt[b, cross[b]] if cross[b] >= 0 else 0)
    buf = np.empty(start[nl], np.float32)
    fill = start[:nl].copy()
    for i in range(n):
        for b in range(nl):
            s = block[i, b]
            if cross[b] >= 0 and s >= thr[b] and min(max(np.int64((s - lo[b]) * scale[b]), 0), NBINS) == cross[b]:
                buf[fill[b]] = s
                fill[b] += 1
    got = np.empty(nl, np.float64)
    for b in range(nl):
        if cross[b] < 0:  # the limit is never reached: keep every word >= thr
            got[b] = total[b]
            continue
        mine = np.sort(buf[start[b]:start[b + 1]])[::-1]
        acc, m = reached[b], above[b]
        if mine.shape[0]:
            out[b] = mine[-1]  # the whole bin, should rounding keep the limit out of reach inside it
        for j in range(mine.shape[0]):
            e = exp_neg((mine[j] - ref[b]) * invt)
            acc += e if by_mass else 1.0
            m += e
            if acc >= limit[b]:
                out[b] = mine[j]
                for q in range(j + 1, mine.shape[0]):  # ties with the threshold stay in
                    if mine[q] == mine[j]:
                        m += exp_neg((mine[q] - ref[b]) * invt)
                break
        got[b] = m
    return out, got


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def draw(block, nl, thr, ref, invt, target, pos, prob):
    """Inverse CDF in storage order: pos[b] = the first word >= thr[b] where the running sum of
    exp((s - ref) * invt) exceeds target[b]; prob[b] = its term (divide by the set's mass for a probability)."""
    acc = np.zeros(nl, np.float64)
    last = np.zeros(nl, np.int64)
    left = nl
    for b in range(nl):
        pos[b] = -1
    for i in range(block.shape[0]):
        for b in range(nl):
            s = block[i, b]
            if pos[b] < 0 and s >= thr[b]:
                e = exp_neg((s - ref[b]) * invt)
                acc[b] += e
                if e > 0:
                    last[b] = i
                if acc[b] > target[b]:
                    pos[b], prob[b] = i, e
                    left -= 1
        if left == 0:
            break
    for b in range(nl):  # rounding left the total just short of the target: the last word with a share
        if pos[b] < 0:
            pos[b], prob[b] = last[b], exp_neg((block[last[b], b] - ref[b]) * invt)
