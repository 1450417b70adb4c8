"""Full scoring of a dictionary against predicted activations, fast on one CPU core (numba).

For sigmoids ``sig`` (v,) and a word w with pattern P_w of n_w rows::

    s(w) = mean(sig[P_w]) - mean(sig[not P_w]) = S_w * (1/n_w + 1/(v - n_w)) - S_all / (v - n_w)

with ``S_w = sum(sig[P_w])`` and ``S_all = sum(sig)``. Summing S_w row by row costs ~84 gathers per word (8.4M for
the 100k multilingual dictionary of bench/decode.py). Two facts cut that down:

1. A pattern is the union of its trigrams' row sets, and those 100k words hold only ~38k distinct trigrams. So the
   sums t_j = sum(sig[rows of trigram j]) are computed once (T*m gathers), and S_w = sum of t_j over w's distinct
   trigrams, minus sig[r] once more for each row r that two of its trigrams share (about one per two words).
2. Words are visited in trie order of their trigram sequences and keep a stack of partial sums, so a word re-uses
   its predecessor's sum over their common prefix: 845k trigram additions become 393k.
3. Common word endings (2-6 trigrams: "ing ", "ungen ", "ость ") are summed once as units of their own and end
   the sequences of the words that have them, which leaves ~300k additions.

The trigram rows are recomputed here from the codec's hash rule, and every word is checked: its pattern must be
exactly the union of those rows. A word that is not (a marker word, hashed whole; any word if the codec's hash
changes) is scored from its own rows instead, so the result is always exactly the formula above.

Batches run ``LANES`` positions at a time with sigmoids stored (v, LANES): a trigram sum or a trie node is then one
contiguous run of floats. The trie restarts every ``CHUNK`` words, so chunks can be scored on several threads.
Scores come out in trie order (``order[i]`` is the word at position i), with their argmax, minimum and
sum(exp((s - 1) / T)) from the same pass (s <= 1, so no overflow; see decode.py for the rare second pass). When
only those (and the scores of given target words) are needed, as for greedy decoding and log-probabilities, each
chunk's scores stay in a chunk-sized buffer instead of a (W, LANES) array: 26 MB less written per batch. (Not a
per-thread buffer: numba's get_thread_id does not survive its on-disk cache.)
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types as nbtypes
from numba.extending import intrinsic

from ..text._kernels import draw_rows, padded_utf8, splitmix64


LANES = 64    # batch positions scored together; a trie node is then LANES contiguous floats
CHUNK = 2048  # words per trie chunk (the unit of parallel work)
_LOG2E = np.float32(1.4426950408889634)
_C1, _C2, _C3, _C4, _C5, _C6 = (np.float32(math.log(2) ** i / math.factorial(i)) for i in range(1, 7))


# -- building the factorisation ------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def word_keys(cps, coff, lower, factor):
    """Each word's distinct trigram keys ``tri | ltri << 24`` (its padded UTF-8 trigram and the lower-cased one at
    the same bytes) in order of first occurrence; none for words with ``factor`` False. -> (kptr, keys)."""
    nw = coff.shape[0] - 1
    maxlen = 1
    for w in range(nw):
        maxlen = max(maxlen, coff[w + 1] - coff[w])
    buf = np.empty(4 * maxlen + 2, np.uint8)
    lbuf = np.empty(4 * maxlen + 2, np.uint8)
    kptr = np.zeros(nw + 1, np.int64)
    keys = np.empty(4 * coff[nw] + 2 * nw, np.uint64)
    pos = 0
    for w in range(nw):
        if factor[w]:
            nb = padded_utf8(cps, coff[w], coff[w + 1], lower, buf, lbuf)
            start = pos
            for j in range(nb - 2):
                key = (np.uint64(buf[j]) | np.uint64(buf[j + 1]) << np.uint64(8)
                       | np.uint64(buf[j + 2]) << np.uint64(16) | np.uint64(lbuf[j]) << np.uint64(24)
                       | np.uint64(lbuf[j + 1]) << np.uint64(32) | np.uint64(lbuf[j + 2]) << np.uint64(40))
                dup = False
                for q in range(start, pos):
                    if keys[q] == key:
                        dup = True
                        break
                if not dup:
                    keys[pos] = key
                    pos += 1
        kptr[w + 1] = pos
    return kptr, keys[:pos]


@njit(cache=True, nogil=True)
def tfree_trigram_rows(keys, v, m, k, seed):
    """(T, m) int32 rows of each key, the ``tfree`` rule of trigrams.tfree_rows / _reference.word_pattern: k rows
    from the lower-cased trigram's sequence (when it differs), then the trigram's own, all distinct."""
    out = np.empty((keys.shape[0], m), np.int32)
    mask = np.uint64(v - 1)
    sm = splitmix64(np.uint64(seed))
    low24 = np.uint64(0xFFFFFF)
    for t in range(keys.shape[0]):
        tri = keys[t] & low24
        ltri = keys[t] >> np.uint64(24)
        got = 0
        if k > 0 and ltri != tri:
            got = draw_rows(splitmix64(ltri ^ sm), out[t], 0, k, mask)
        draw_rows(splitmix64(tri ^ sm), out[t], got, m, mask)
    return out


@njit(cache=True, nogil=True)
def verify(kptr, tids, trows, indptr, indices, v):
    """Which words' patterns are exactly the union of their trigrams' rows; for those, the rows counted more than
    once (each extra count listed once). -> (ok (W,) bool, dup_ptr (W+1,), dup_rows)."""
    nw = kptr.shape[0] - 1
    m = trows.shape[1]
    cnt = np.zeros(v, np.int32)
    ok = np.zeros(nw, np.bool_)
    dptr = np.zeros(nw + 1, np.int64)
    drow = np.empty(16, np.int32)
    pos = 0
    for w in range(nw):
        distinct = 0
        for q in range(kptr[w], kptr[w + 1]):
            for j in range(m):
                r = trows[tids[q], j]
                distinct += cnt[r] == 0
                cnt[r] += 1
        good = kptr[w + 1] > kptr[w] and distinct == indptr[w + 1] - indptr[w]
        for q in range(indptr[w], indptr[w + 1]):
            good = good and cnt[indices[q]] > 0
        if good:
            for q in range(indptr[w], indptr[w + 1]):
                for _ in range(cnt[indices[q]] - 1):
                    if pos == drow.shape[0]:
                        grown = np.empty(2 * pos, np.int32)
                        grown[:pos] = drow
                        drow = grown
                    drow[pos] = indices[q]
                    pos += 1
        for q in range(kptr[w], kptr[w + 1]):
            for j in range(m):
                cnt[trows[tids[q], j]] = 0
        ok[w] = good
        dptr[w + 1] = pos
    return ok, dptr, drow[:pos]


@njit(cache=True, nogil=True)
def build_trie(order, ok, kptr, kid, first_new, next_id, start, chunk):
    """Lay out words (in ``order``) as a front-coded trie over their trigram id sequences, restarting every
    ``chunk`` positions (counted from ``start``, the position of order[0]). Trigram ids >= first_new are
    provisional and get final ids from next_id on, in order of first use, so the scoring pass reads trigram sums
    nearly in sequence. Negative ids (word endings, see scorer.choose_endings) pass through.
    -> (lcp, sptr, stid, remap, next_id)."""
    n = order.shape[0]
    lcp = np.zeros(n, np.int32)
    sptr = np.zeros(n + 1, np.int64)
    stid = np.empty(kid.shape[0], np.int32)
    remap = np.full(max(kid.max() + 1 if kid.shape[0] else 0, first_new) - first_new, -1, np.int64)
    pos = 0
    prev = -1
    for i in range(n):
        w = order[i]
        a, b = kptr[w], kptr[w + 1]
        if not ok[w]:
            a = b
        l = 0
        if prev >= 0 and (start + i) % chunk != 0:
            pa, pb = kptr[prev], kptr[prev + 1]
            if not ok[prev]:
                pa = pb
            while l < b - a and l < pb - pa and kid[a + l] == kid[pa + l]:
                l += 1
        lcp[i] = l
        for q in range(a + l, b):
            t = kid[q]
            if t >= first_new:
                if remap[t - first_new] < 0:
                    remap[t - first_new] = next_id
                    next_id += 1
                t = remap[t - first_new]
            stid[pos] = t
            pos += 1
        sptr[i + 1] = pos
        prev = w
    return lcp, sptr, stid[:pos], remap, next_id


@njit(cache=True, nogil=True)
def corrections(order, ok, dptr, drow, indptr, indices):
    """Per trie position, the rows added to the trigram sums: -1 for each doubly counted row of a factored word,
    +1 for each row of a word scored directly. -> (xptr, xrow, xval)."""
    n = order.shape[0]
    xptr = np.zeros(n + 1, np.int64)
    for i in range(n):
        w = order[i]
        xptr[i + 1] = xptr[i] + (dptr[w + 1] - dptr[w] if ok[w] else indptr[w + 1] - indptr[w])
    xrow = np.empty(xptr[n], np.int32)
    xval = np.empty(xptr[n], np.float32)
    for i in range(n):
        w = order[i]
        p = xptr[i]
        if ok[w]:
            for q in range(dptr[w], dptr[w + 1]):
                xrow[p], xval[p] = drow[q], -1
                p += 1
        else:
            for q in range(indptr[w], indptr[w + 1]):
                xrow[p], xval[p] = indices[q], 1
                p += 1
    return xptr, xrow, xval


# -- scoring -------------------------------------------------------------------------------------------------------
@intrinsic
def _f32_from_bits(typingctx, x):
    """The float32 whose bit pattern is the low 32 bits of integer x (a register move, and vectorisable)."""
    if not isinstance(x, nbtypes.Integer):
        return None

    def codegen(context, builder, signature, args):
        bits = builder.trunc(args[0], ir.IntType(32)) if x.bitwidth > 32 else args[0]
        return builder.bitcast(bits, ir.FloatType())
    return nbtypes.float32(x), codegen


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def exp_neg(x):
    """exp(x) for x <= 0 in float32 (relative error < 1e-6; e^-87 at most below e^-87): vectorisable, unlike
    libm's expf. 2^y = 2^n * 2^f with n = round(y), |f| <= 1/2 by a degree-6 Taylor series."""
    y = max(x * _LOG2E, np.float32(-126.0))
    n = np.floor(y + np.float32(0.5))
    f = y - n
    p = np.float32(1) + f * (_C1 + f * (_C2 + f * (_C3 + f * (_C4 + f * (_C5 + f * _C6)))))
    return p * _f32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _sigmoid(x):
    q = np.float32(1) / (np.float32(1) + exp_neg(-abs(x)))
    return q if x >= np.float32(0) else np.float32(1) - q


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def sigmoid(x):
    """float32 sigmoid of (B, v) logits (stable for any finite x)."""
    out = np.empty(x.shape, np.float32)
    for b in range(x.shape[0]):
        for r in range(x.shape[1]):
            out[b, r] = _sigmoid(np.float32(x[b, r]))
    return out


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def sigmoid_lanes(x, b0, out, apply=True):
    """out (v, LANES) = sigmoid of logits rows b0 ... b0 + LANES - 1 (the logits themselves if not ``apply``),
    transposed (zero past the last row), by tiles: rows are read and transposed in L1-sized pieces."""
    v = x.shape[1]
    nb = min(LANES, x.shape[0] - b0)
    tile = np.zeros((LANES, 64), np.float32)
    for r0 in range(0, v, 64):
        w = min(v, r0 + 64) - r0
        for b in range(nb):
            row = x[b0 + b]
            for j in range(w):
                tile[b, j] = _sigmoid(np.float32(row[r0 + j])) if apply else np.float32(row[r0 + j])
        for j in range(w):
            for b in range(LANES):
                out[r0 + j, b] = tile[b, j]


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _chunk1(p0, p1, base, ts, sig, s_all, lcp, sptr, stid, xptr, xrow, xval, a, c, bias, ref, acc, invt, o, tpos,
            tval, part, ch):
    for i in range(p0, p1):
        d = lcp[i]
        s = acc[d]
        for q in range(sptr[i], sptr[i + 1]):
            s += ts[stid[q]]
            d += 1
            acc[d] = s
        for q in range(xptr[i], xptr[i + 1]):
            s += xval[q] * sig[xrow[q]]
        o[i - base] = s * a[i] - s_all * c[i] + bias[i]
    best, second, arg, low, z = np.float32(-np.inf), np.float32(-np.inf), p0, np.float32(np.inf), np.float32(0)
    for i in range(p0, p1):
        x = o[i - base]
        low = min(low, x)
        if x > best:
            best, second, arg = x, best, i
        else:
            second = max(second, x)
    if invt > 0:
        for i in range(p0, p1):
            z += exp_neg((o[i - base] - ref) * invt)
    if p0 <= tpos[0] < p1:
        tval[0] = o[tpos[0] - base]
    part[ch, 0], part[ch, 1], part[ch, 2], part[ch, 3], part[ch, 4] = best, arg, z, low, second


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _chunk_lanes(p0, p1, base, ts, sigt, s_all, lcp, sptr, stid, xptr, xrow, xval, a, c, bias, ref, acc, invt, o,
                 tpos, tval, part, ch):
    for i in range(p0, p1):
        d = lcp[i]
        for q in range(sptr[i], sptr[i + 1]):
            t = stid[q]
            for b in range(LANES):
                acc[d + 1, b] = acc[d, b] + ts[t, b]
            d += 1
        ai, ci, bi = a[i], c[i], bias[i]
        for b in range(LANES):
            o[i - base, b] = acc[d, b] * ai - s_all[b] * ci + bi
        for q in range(xptr[i], xptr[i + 1]):
            r, wv = xrow[q], xval[q] * ai
            for b in range(LANES):
                o[i - base, b] += wv * sigt[r, b]
    best = np.full(LANES, -np.inf, np.float32)
    second = np.full(LANES, -np.inf, np.float32)  # the best of the other words (a near tie is checked again)
    low = np.full(LANES, np.inf, np.float32)
    arg = np.full(LANES, p0, np.int64)
    for i in range(p0 - base, p1 - base):
        for b in range(LANES):
            x = o[i, b]
            low[b] = min(low[b], x)
            second[b] = max(second[b], min(best[b], x))
            if x > best[b]:
                best[b], arg[b] = x, i + base
    z = np.zeros(LANES, np.float32)  # a chunk's terms are <= 1 and few: float32 sums them well enough
    if invt > 0:
        for i in range(p0 - base, p1 - base):
            for b in range(LANES):
                z[b] += exp_neg((o[i, b] - ref) * invt)
    for b in range(LANES):
        if p0 <= tpos[b] < p1:
            tval[b] = o[tpos[b] - base, b]
        part[ch, 0, b], part[ch, 1, b], part[ch, 2, b], part[ch, 3, b] = best[b], arg[b], z[b], low[b]
        part[ch, 4, b] = second[b]


def _score1(sig, trows, eptr, etid, lcp, sptr, stid, xptr, xrow, xval, a, c, bias, ref, maxd, invt, keep, out, tpos,
            tval, part):
    nt = trows.shape[0]
    ts = np.empty(nt + eptr.shape[0] - 1, np.float32)  # trigram sums, then word-ending sums
    for t in prange(nt):
        s = np.float32(0)
        for j in range(trows.shape[1]):
            s += sig[trows[t, j]]
        ts[t] = s
    for e in range(eptr.shape[0] - 1):
        s = np.float32(0)
        for q in range(eptr[e], eptr[e + 1]):
            s += ts[etid[q]]
        ts[nt + e] = s
    s_all = np.float32(0)
    for r in range(sig.shape[0]):
        s_all += sig[r]
    n = lcp.shape[0]
    for ch in prange(part.shape[0]):
        acc = np.zeros(maxd + 1, np.float32)  # partial sums along the current trie path
        o = out if keep else np.empty(CHUNK, np.float32)  # all scores, or just this chunk's
        _chunk1(ch * CHUNK, min(n, (ch + 1) * CHUNK), 0 if keep else ch * CHUNK, ts, sig, s_all, lcp, sptr, stid,
                xptr, xrow, xval, a, c, bias, ref, acc, invt, o, tpos, tval, part, ch)


def _score_lanes(sigt, trows, eptr, etid, lcp, sptr, stid, xptr, xrow, xval, a, c, bias, ref, maxd, invt, keep, out,
                 tpos, tval, part):
    nt = trows.shape[0]
    ts = np.empty((nt + eptr.shape[0] - 1, LANES), np.float32)  # (T + endings, LANES) sums
    for t in prange(nt):
        for b in range(LANES):
            ts[t, b] = 0
        for j in range(trows.shape[1]):
            r = trows[t, j]
            for b in range(LANES):
                ts[t, b] += sigt[r, b]
    for e in prange(eptr.shape[0] - 1):
        for b in range(LANES):
            ts[nt + e, b] = 0
        for q in range(eptr[e], eptr[e + 1]):
            t = etid[q]
            for b in range(LANES):
                ts[nt + e, b] += ts[t, b]
    s_all = np.zeros(LANES, np.float32)
    for r in range(sigt.shape[0]):
        for b in range(LANES):
            s_all[b] += sigt[r, b]
    n = lcp.shape[0]
    for ch in prange(part.shape[0]):
        acc = np.zeros((maxd + 1, LANES), np.float32)
        o = out if keep else np.empty((CHUNK, LANES), np.float32)
        _chunk_lanes(ch * CHUNK, min(n, (ch + 1) * CHUNK), 0 if keep else ch * CHUNK, ts, sigt, s_all, lcp, sptr,
                     stid, xptr, xrow, xval, a, c, bias, ref, acc, invt, o, tpos, tval, part, ch)


# One body, compiled twice: serial (one thread, no threading layer) and parallel over chunks.
_FLAGS = dict(cache=True, nogil=True, fastmath=True, error_model="numpy")
score1 = njit(**_FLAGS)(_score1)
score1_parallel = njit(**_FLAGS, parallel=True)(_score1)
score_lanes = njit(**_FLAGS)(_score_lanes)
score_lanes_parallel = njit(**_FLAGS, parallel=True)(_score_lanes)


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def sum_exp(scores, ref, invt):
    """sum(exp((scores - ref) * invt)) over axis 0 of (n,) or (n, B) scores with scores <= ref, float64."""
    flat = scores.reshape(scores.shape[0], -1)
    z = np.zeros(flat.shape[1], np.float64)
    for i in range(flat.shape[0]):
        for b in range(flat.shape[1]):
            z[b] += exp_neg((flat[i, b] - ref[b]) * invt)
    return z
