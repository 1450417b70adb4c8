"""Sampling kernels: one draw per position from softmax(scores / T) over the whole dictionary, restricted to the
top_k best words and then to the smallest best set holding top_p of their mass, in a few O(n) passes.

Nothing sorts the dictionary. A restriction is a score threshold. For top_k, one pass keeps a sorted list of the
k best per position, touched only by rows that beat its k-th. For top_p, a histogram of probability mass over the
scores finds the bin where the running mass from the top crosses the limit, and only that bin's words are sorted
to place the threshold exactly. Words tied with a threshold are all kept. The draw is an inverse CDF in storage
order over the words at or above the threshold. Blocks are (n, L) scores, L positions side by
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
def nucleus(block, nl, lo, hi, thr, ref, invt, limit):
    """Per position b: the score t >= thr[b] such that the words scoring >= t are the fewest best words whose
    sum of exp((s - ref) * invt) reaches limit[b]; bins span [lo, hi]. -> (t, mass of the words >= t)."""
    n = block.shape[0]
    scale = _bin_scale(lo, hi, nl)
    cnt = np.zeros((nl, NBINS + 1), np.int64)      # words per bin (to size the crossing bin's buffer)
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
    cross = np.full(nl, -1, np.int64)
    total = np.zeros(nl, np.float64)
    for b in range(nl):
        for k in range(NBINS, -1, -1):
            if cross[b] < 0:
                if above[b] + mass[b, k] >= limit[b]:
                    cross[b] = k
                else:
                    above[b] += mass[b, k]
            total[b] += mass[b, k]
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
        m = above[b]
        if mine.shape[0]:
            out[b] = mine[-1]  # the whole bin, should rounding keep the limit out of reach inside it
        for j in range(mine.shape[0]):
            m += exp_neg((mine[j] - ref[b]) * invt)
            if m >= limit[b]:
                out[b] = mine[j]
                for q in range(j + 1, mine.shape[0]):  # ties with the threshold stay in
                    if mine[q] == mine[j]:
                        m += exp_neg((mine[q] - ref[b]) * invt)
                break
        got[b] = m
    return out, got


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def mass_above(block, nl, thr, ref, invt):
    """sum(exp((s - ref) * invt)) over the words with s >= thr[b], per position (vectorised over positions)."""
    acc = np.zeros(nl, np.float32)
    out = np.zeros(nl, np.float64)
    for i0 in range(0, block.shape[0], 4096):  # float32 partial sums, float64 totals
        for i in range(i0, min(block.shape[0], i0 + 4096)):
            for b in range(nl):
                s = block[i, b]
                acc[b] += exp_neg((s - ref[b]) * invt) if s >= thr[b] else np.float32(0)
        for b in range(nl):
            out[b] += acc[b]
            acc[b] = 0
    return out


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def kth_largest(block, nl, k, floor):
    """Per position: the k-th largest score (>= floor[b]; floor[b] if fewer than k reach it). One pass: a
    vectorised test per row, and a sorted top-k list per position updated only when a row beats its k-th."""
    top = np.full((nl, k), -np.inf, np.float32)  # ascending: top[b, 0] is the k-th largest so far
    cut = floor.copy()
    for i in range(block.shape[0]):
        hit = False
        for b in range(nl):
            hit |= block[i, b] > cut[b]
        if not hit:
            continue
        for b in range(nl):
            s = block[i, b]
            if s > cut[b]:
                j = 0
                while j + 1 < k and top[b, j + 1] < s:
                    top[b, j] = top[b, j + 1]
                    j += 1
                top[b, j] = s
                cut[b] = max(floor[b], top[b, 0])
    out = np.empty(nl, np.float32)
    for b in range(nl):
        out[b] = max(floor[b], top[b, 0])
    return out


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def draw(block, nl, thr, ref, invt, target, pos, prob):
    """Inverse CDF in storage order: pos[b] = the first word >= thr[b] where the running sum of
    exp((s - ref) * invt) exceeds target[b]; prob[b] = its term (divide by the set's mass for a probability).
    Each row is one vectorised step for all positions; a position that has its word stops counting."""
    acc = np.zeros(nl, np.float64)
    goal = target.copy()
    last = np.zeros(nl, np.int64)
    left = nl
    for b in range(nl):
        pos[b] = -1
    for i in range(block.shape[0]):
        hit = False
        for b in range(nl):
            s = block[i, b]
            e = exp_neg((s - ref[b]) * invt) if s >= thr[b] else np.float32(0)
            acc[b] += e
            last[b] = i if e > 0 else last[b]
            hit |= acc[b] > goal[b]
        if hit:
            for b in range(nl):
                if acc[b] > goal[b]:
                    pos[b], prob[b] = i, exp_neg((block[i, b] - ref[b]) * invt)
                    goal[b] = np.inf
                    left -= 1
            if left == 0:
                break
    for b in range(nl):  # rounding left the total just short of the target: the last word with a share
        if pos[b] < 0:
            pos[b], prob[b] = last[b], exp_neg((block[last[b], b] - ref[b]) * invt)


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def sample1(x, invt, tail, top_p, u):
    """One position's draw, the kernels above fused for a (n,) vector (generation, a word at a time: their loops
    over positions do not vectorise for one): the words scoring >= thr = best - tail / invt, then the nucleus
    holding ``top_p`` of their mass (1: all), then the inverse CDF at ``u`` in storage order. -> (position, its
    probability in the set)."""
    n = x.shape[0]
    best, low = np.float32(-np.inf), np.float32(np.inf)
    for i in range(n):
        best = max(best, x[i])
        low = min(low, x[i])
    thr = np.float32(best - tail / invt)
    e = np.empty(n, np.float32)
    total = 0.0
    for i0 in range(0, n, 4096):  # float32 partial sums, a float64 total
        acc = np.float32(0)
        for i in range(i0, min(n, i0 + 4096)):
            e[i] = exp_neg((x[i] - best) * invt) if x[i] >= thr else np.float32(0)
            acc += e[i]
        total += acc
    cut, mass = thr, total
    if top_p < 1:
        lo = max(low, thr)
        scale = np.float32(NBINS) / max(best - lo, np.float32(1e-30))
        cnt = np.zeros(NBINS + 1, np.int64)
        hist = np.zeros(NBINS + 1, np.float64)
        for i in range(n):
            if x[i] >= thr:
                k = min(max(np.int64((x[i] - lo) * scale), 0), NBINS)
                cnt[k] += 1
                hist[k] += e[i]
        limit, above, cross = top_p * total, 0.0, -1
        for k in range(NBINS, -1, -1):
            if above + hist[k] >= limit:
                cross = k
                break
            above += hist[k]
        if cross >= 0:  # else the limit is never reached (rounding): keep every word >= thr
            mine = np.empty(cnt[cross], np.float32)
            j = 0
            for i in range(n):
                if x[i] >= thr and min(max(np.int64((x[i] - lo) * scale), 0), NBINS) == cross:
                    mine[j] = x[i]
                    j += 1
            mine = np.sort(mine)[::-1]
            m = above
            cut = mine[-1]  # the whole bin, should rounding keep the limit out of reach inside it
            for j in range(mine.shape[0]):
                m += exp_neg((mine[j] - best) * invt)
                if m >= limit:
                    cut = mine[j]
                    for q in range(j + 1, mine.shape[0]):  # ties with the threshold stay in
                        if mine[q] == mine[j]:
                            m += exp_neg((mine[q] - best) * invt)
                    break
            mass = m
    goal, acc64, last = u * mass, 0.0, -1
    for i in range(n):
        if x[i] >= cut:
            acc64 += e[i]
            if e[i] > 0:
                last = i
            if acc64 > goal:
                return i, e[i] / mass
    return last, e[last] / mass  # rounding left the total just short of the goal: the last word with a share
