"""Kernels of the pruned search (search.py): one position at a time, over the scorer's trie positions.

A word's sum S_w = sum of its distinct trigrams' sums T_t, corrected for rows two trigrams share. So
S_w <= sum_t T+_t, with T+_t the trigram's sum of max(g, 0) (T_t itself for sigmoids), and S_w <= n_w * max(g).

1. When the ``hot`` rows of largest g stand out from the rest, the trigrams holding one (the row -> trigram
   index) get their sums computed; every other trigram has T+ <= m * (the largest g of the other rows). The
   touched trigrams are read by falling T+, bin by bin: each word of a trigram's posting list gathers the T+ of
   its trigrams read so far, and the words whose partial bound (those T+, the rest <= tau) can still reach the
   threshold are scored exactly, the highest bounds first. A word never read has all its trigrams below the bins
   read, so S_w <= k_w * tau (k_w distinct trigrams, tau the bins' edge), which with n_w, a_w, c_w and the bias
   bounds z. ``_envelope`` bounds all such words at once; reading stops when it proves the rest cannot matter,
   or when each word's own bound would leave no more words to score than have been read. (When the rows do not
   stand out, tau = m max(g, 0).) A trigram's sums are computed once, when first needed.
2. Then each remaining word's own bound decides, by blocks in falling bias (the bias alone often rules out all
   but the first blocks).

What is left out is what the bounds prove cannot matter: for top-k, words whose bound is below the k-th best z
found (less a float margin); for the mass mode, words whose bounds together hold at most ``eps`` of the mass
found. Arrays travel as tuples: ``ix`` the index (scorer.py), ``rk`` one ranking (search.Ranker), ``buf`` buffers.
Per-word data sits in one record per word (search.Ranker): a random read costs as much as dozens of sequential
ones.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

NBINS = 1024
BLOCK = 64  # words per block of the bias-ordered list (search.py's ``blocks``)
TOP, MASS = 0, 1
FULL = -1  # returned by search when the bounds leave too much to score: score everything instead
_NEG = -1e300


@njit(cache=True, nogil=True, error_model="numpy")
def _tsum(t, g, trows, ts, tsp, tst, sv):
    """Trigram t's sums of g and of max(g, 0), computed once per position (tst marks them)."""
    if tst[t] != sv:
        s, sp = np.float32(0), np.float32(0)
        for j in range(trows.shape[1]):
            x = g[trows[t, j]]
            s += x
            sp += max(x, np.float32(0))
        ts[t], tsp[t], tst[t] = s, sp, sv
    return ts[t]


@njit(cache=True, nogil=True, error_model="numpy")
def _z(p, g, G, scale, sv, ix, rk, buf):
    """z of the word at trie position p (float32). rk[0] rows: a, c, bias, k, n; rk[1] rows: kptr, xptr."""
    trows, ktid, xrow, xval = ix[0], ix[1], ix[2], ix[3]
    w, ptr = rk[0], rk[1]
    ts, tsp, tst = buf[2], buf[3], buf[1]
    s = np.float32(0)
    for q in range(ptr[p, 0], ptr[p + 1, 0]):
        s += _tsum(ktid[q], g, trows, ts, tsp, tst, sv)
    for q in range(ptr[p, 1], ptr[p + 1, 1]):
        s += xval[q] * g[xrow[q]]
    return np.float32(scale * (s * w[p, 0] - G * w[p, 1]) + w[p, 2])


@njit(cache=True, nogil=True, error_model="numpy")
def _bound(p, tau, gmax, G, scale, rk):
    """Upper bound (float64) on z of the word at p when all its trigrams have T+ <= tau."""
    w = rk[0]
    return scale * (w[p, 0] * min(w[p, 3] * tau, w[p, 4] * gmax) - G * w[p, 1]) + w[p, 2]


@njit(cache=True, nogil=True, error_model="numpy")
def word_z(pos, g, G, scale, sv, ix, rk, buf, out):
    """out[i] = z of the word at trie position pos[i], after ``search`` of the same position (same ``sv``)."""
    for i in range(pos.shape[0]):
        out[i] = _z(pos[i], g, G, scale, sv, ix, rk, buf)


@njit(cache=True, nogil=True, error_model="numpy")
def _envelope(env, tau, gmax, G):
    """Upper bound on z of every word outside the seeds whose trigrams all have T+ <= tau: env rows are slope
    buckets (slope lo, slope hi, largest intercept) of the lines z <= A k tau + bias (rows 0..nb-1) and
    z <= A n gmax + bias (rows nb..), and env[-1] = (c min, c max, scale) for the - scale c G term."""
    nb = (env.shape[0] - 1) // 2
    fk, fn = _NEG, _NEG
    for j in range(nb):
        fk = max(fk, (env[j, 1] if tau >= 0 else env[j, 0]) * tau + env[j, 2])
        fn = max(fn, (env[nb + j, 1] if gmax >= 0 else env[nb + j, 0]) * gmax + env[nb + j, 2])
    cmin, cmax, scale = env[-1, 0], env[-1, 1], env[-1, 2]
    return min(fk, fn) - scale * G * (cmin if G >= 0 else cmax)


@njit(cache=True, nogil=True, error_model="numpy")
def _block_bound(blk, j, r, tau, gmax, G, scale):
    """Upper bound on z over block j's words (all trigrams with T+ <= tau). blk rows: max bias, max A k, max A n,
    min A n, min c, max c; the last row holds the same over all blocks. The slopes and c come from row r: j, or
    the last row for a looser bound that falls with j (blocks come by falling bias), so it can end a pass."""
    s = min(blk[r, 1] * tau, (blk[r, 2] if gmax >= 0 else blk[r, 3]) * gmax)
    return s + blk[j, 0] - scale * G * (blk[r, 4] if G >= 0 else blk[r, 5])


@njit(cache=True, nogil=True, error_model="numpy")
def _alive(blk, n, tau, gmax, G, scale, theta):
    """Words in the blocks whose bound reaches theta (what the bias-ordered pass would read)."""
    alive = 0
    for j in range(blk.shape[0] - 1):
        if _block_bound(blk, j, blk.shape[0] - 1, tau, gmax, G, scale) < theta:
            break
        if _block_bound(blk, j, j, tau, gmax, G, scale) >= theta:
            alive += min(BLOCK, n - j * BLOCK)
    return alive


@njit(cache=True, nogil=True, error_model="numpy")
def _mass_todo(blk, n, tau, gmax, G, scale, ref, invt, eps, found):
    """MASS: about how many words the per-word pass would leave to score with trigrams read down to tau (by the
    blocks' bounds, so at least as many as it would)."""
    nb = blk.shape[0] - 1
    b = np.empty(nb)
    hi = ref
    for j in range(nb):
        b[j] = _block_bound(blk, j, j, tau, gmax, G, scale)
        hi = max(hi, b[j])
    low = ref - 40.0 / invt
    bs = NBINS / max(hi - low, 1e-30)
    hist = np.zeros(NBINS + 1, np.int64)
    for j in range(nb):
        hist[min(max(np.int64((b[j] - low) * bs), 0), NBINS)] += min(BLOCK, n - j * BLOCK)
    return _cut(hist, low, bs, ref, invt, eps * found)[2]


@njit(cache=True, nogil=True, error_model="numpy")
def _cut(hist, low, bs, ref, invt, most):
    """Leave out the histogram's lowest bins while the mass their words can carry (each bounded by its bin's upper
    edge) stays within ``most``: (the first bin kept, the mass left out, the words in the bins kept)."""
    tail, first = 0.0, 0
    while first <= NBINS:
        m = hist[first] * math.exp(min((low + (first + 1) / bs - ref) * invt, 700.0))
        if tail + m > most:
            break
        tail += m
        first += 1
    kept = 0
    for kb in range(first, NBINS + 1):
        kept += hist[kb]
    return first, tail, kept


@njit(cache=True, nogil=True, error_model="numpy")
def _stands_out(g, hot):
    """Whether the ``hot`` rows of largest g stand out from the others (the next is below 0.9 of the largest)."""
    v = g.shape[0]
    lo, hi = np.inf, -np.inf
    for r in range(v):
        lo = min(lo, np.float64(g[r]))
        hi = max(hi, np.float64(g[r]))
    bs = NBINS / max(hi - lo, 1e-30)
    cnt = np.zeros(NBINS + 1, np.int64)
    for r in range(v):
        cnt[min(np.int64((g[r] - lo) * bs), NBINS)] += 1
    cut, acc = NBINS + 1, 0
    while cut > 0 and acc + cnt[cut - 1] <= hot:
        cut -= 1
        acc += cnt[cut]
    rest = _NEG
    for r in range(v):
        if min(np.int64((g[r] - lo) * bs), NBINS) < cut:
            rest = max(rest, np.float64(g[r]))
    return hi > 0 and rest < 0.9 * hi


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _all_sums(g, trows, ts, tsp, tst, sv, nonneg):
    """Every trigram's sums, in storage order (streaming: on this machine sparse reads of the trigram rows cost
    more than reading them all). ``nonneg``: g >= 0, so T+ = T."""
    for t in range(trows.shape[0]):
        s, sp = np.float32(0), np.float32(0)
        if nonneg:
            for j in range(trows.shape[1]):
                s += g[trows[t, j]]
            sp = s
        else:
            for j in range(trows.shape[1]):
                x = g[trows[t, j]]
                s += x
                sp += max(x, np.float32(0))
        ts[t], tsp[t], tst[t] = s, sp, sv


@njit(cache=True, nogil=True, error_model="numpy")
def _reach(g, limit, hi, sv, ix, buf):
    """About how low tau gets once ``limit`` posting entries are read by falling T+: from every k-th trigram's sums
    (hi: T+ <= hi for all). An estimate, only used to give up early."""
    trows, tptr = ix[0], ix[4]
    tst, ts, tsp = buf[1], buf[2], buf[3]
    nt = trows.shape[0]
    step = max(1, nt // 2048)
    load = np.zeros(NBINS + 1, np.int64)
    scale = NBINS / max(hi, 1e-30)
    for t in range(0, nt, step):
        _tsum(t, g, trows, ts, tsp, tst, sv)
        load[min(np.int64(tsp[t] * scale), NBINS)] += (tptr[t + 1] - tptr[t]) * step
    b, acc = NBINS, 0
    while b >= 0 and acc <= limit:
        acc += load[b]
        b -= 1
    return (b + 1.001) / scale if b >= 0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _next_slice(tsp, below, want, tord):
    """The next slice of trigrams to read: about ``want`` of those with T+ < below, the largest, listed in tord
    (their cut from a sample of every k-th trigram's T+). -> (how many, the slice's lowest T+ bound: every trigram
    left out of it has T+ below this)."""
    nt = tsp.shape[0]
    step = max(1, nt // 4096)
    hist = np.zeros(NBINS + 1, np.int64)
    scale = NBINS / max(below, 1e-30)
    for t in range(0, nt, step):
        if tsp[t] < below:
            hist[min(np.int64(tsp[t] * scale), NBINS)] += 1
    cut, acc = NBINS + 1, 0
    while cut > 0 and acc * step < want:
        cut -= 1
        acc += hist[cut]
    floor = cut / scale if cut > 0 else -np.inf
    n = 0
    for t in range(nt):
        if floor <= tsp[t] < below:
            tord[n] = t
            n += 1
    return n, floor


@njit(cache=True, nogil=True, error_model="numpy")
def search(g, scale, sv, mode, k, invt, eps, delta, hot, maxfrac, ix, rk, buf):
    """One position: score the words that can matter, exactly; write their trie positions to ``cand`` and their
    z = scale * s + bias (float32) to ``cz`` (buf[5], buf[6]). ``seeds`` (words without trigrams, the highest
    biases) are scored first. mode TOP: every word that can reach the k-th best z (within ``delta``). mode MASS:
    every word but some whose bounds hold at most ``eps`` of the mass sum(exp(z * invt)) found.
    -> (count, bound on the mass left out relative to the mass found (0 for TOP), G), or (FULL, 0, G) when more
    than ``maxfrac`` of the words would have to be scored (the trie's full pass is cheaper then)."""
    trows, tptr, tpos = ix[0], ix[4], ix[5]
    acc, gmax, gmin = 0.0, -np.inf, np.inf
    for r in range(g.shape[0]):
        acc += g[r]
        gmax, gmin = max(gmax, np.float64(g[r])), min(gmin, np.float64(g[r]))
    G = np.float32(acc)
    seeds, env, border, blk = rk[2], rk[3], rk[4], rk[5]
    state, tst, ts, tsp, ub, cand, cz, tord, cw = buf
    stamp, slot = state[:, 0], state[:, 1]  # per word: this position's stamp, and its candidate index
    w = rk[0]
    W = stamp.shape[0]
    limit = maxfrac * W
    top = np.full(k, _NEG)  # TOP: ascending, top[0] is the k-th best so far
    ref, found = _NEG, 0.0  # MASS: the best z so far and sum(exp((z - ref) * invt)) over the words scored
    tau = trows.shape[1] * max(np.float64(gmax), 0.0)  # T+ <= m max(g, 0) for every trigram
    nc = seeds.shape[0] * 0  # counts start from runtime values: numba then compiles the helpers once, not per literal
    nt = trows.shape[0]
    summed = nt > 0 and _stands_out(g, hot)
    for i in range(seeds.shape[0]):
        stamp[seeds[i]], slot[seeds[i]] = sv, nc
        cand[nc] = seeds[i]
        nc += 1
    nc, ref, found = _score(nc - seeds.shape[0], nc, mode, invt, top, ref, found, g, G, scale, sv, ix, rk, buf)
    if mode == MASS:  # would reading as far as the limit allows leave few enough words? (estimated from a sample
        # of the trigrams, before paying for all their sums); else give up now
        reach = _reach(g, limit, tau, sv, ix, buf) if summed else tau
        if nc == 0 or nc + _mass_todo(blk, border.shape[0], reach, gmax, G, scale, ref, invt, eps, found) > limit:
            return FULL, 0.0, G
    if summed:
        _all_sums(g, trows, ts, tsp, tst, sv, gmin >= 0)
    n_seed, read, check = nc, 0, 0
    below = tau * 1.000001 + 1e-30  # trigrams from here up are read (none yet: T+ <= m max(g, 0) = tau)
    start = np.zeros(NBINS + 2, np.int64)
    while summed and below > -np.inf:  # read the trigrams by falling T+, a slice at a time
        listed, floor = _next_slice(tsp, below, max(1024, nt // 16), tord)
        lo, hi = np.inf, -np.inf
        for i in range(listed):
            lo = min(lo, np.float64(tsp[tord[i]]))
            hi = max(hi, np.float64(tsp[tord[i]]))
        lo = max(floor, lo) if listed else floor
        bscale = NBINS / max(hi - lo, 1e-30)  # bin b of the slice holds T+ in lo + [b, b + 1) / bscale
        start[:] = 0
        for i in range(listed):
            start[min(max(np.int64((tsp[tord[i]] - lo) * bscale), 0), NBINS) + 1] += 1
        for b in range(NBINS + 1):
            start[b + 1] += start[b]
        fill = start.copy()
        order = tord[listed:2 * listed]
        for i in range(listed):
            b = min(max(np.int64((tsp[tord[i]] - lo) * bscale), 0), NBINS)
            order[fill[b]] = tord[i]
            fill[b] += 1
        stop = False
        for b in range(NBINS, -1, -1):
            if start[b] == start[b + 1]:
                continue
            tau = lo + (b + 1.001) / bscale  # >= every T+ in this bin and below (a hair above: same rounding)
            f = _envelope(env, tau, gmax, G)
            if mode == TOP and read >= check and check <= 1024:  # score the few candidates with the highest
                # partial bounds, early: the k-th best rises, and the envelope can stop the reading sooner
                _refine(n_seed, nc, tau, gmax, G, scale, top, delta, np.int64(4 * k), sv, g, ix, rk, buf)
            if mode == TOP and f < top[0] - delta:
                stop = True
                break
            if mode == MASS and (W - nc) * math.exp(min((f - ref) * invt, 700.0)) <= eps * found:
                return nc, (W - nc) * math.exp(min((f - ref) * invt, 700.0)) / max(found, 1e-300), G
            if read >= check:  # would each word's own bound now leave no more to score than has been read?
                if mode == TOP and _alive(blk, border.shape[0], tau, gmax, G, scale, top[0] - delta) <= max(read, 1024):
                    stop = True
                    break
                if mode == MASS and read > limit:
                    stop = True
                    break
                check = max(2 * read, 1024)
            n0 = nc
            for q0 in range(start[b], start[b + 1]):
                t = order[q0]
                read += tptr[t + 1] - tptr[t]
                for q in range(tptr[t], tptr[t + 1]):
                    p = np.int64(tpos[q])
                    if stamp[p] != sv:
                        stamp[p], slot[p] = sv, nc
                        cand[nc] = p
                        cz[nc] = np.inf  # not scored yet
                        if mode == TOP:  # the sum of T+ of its trigrams read so far, how many, and its record:
                            cw[nc, 0], cw[nc, 1] = 0.0, 0.0  # (one random read now, sequential ones after)
                            for j in range(5):
                                cw[nc, 2 + j] = w[p, j]
                        nc += 1
                    if mode == TOP:
                        i = slot[p]
                        cw[i, 0] += tsp[t]
                        cw[i, 1] += 1.0
            if nc >= limit:  # more candidates than the trie's full pass costs: stop paying for the reading
                return FULL, 0.0, G
            if mode == MASS:
                nc, ref, found = _score(n0, nc, mode, invt, top, ref, found, g, G, scale, sv, ix, rk, buf)
            tau = max(lo + (b + 1e-3) / bscale, floor)
        below = floor
        if stop:
            break
    if summed and mode == TOP:
        _refine(n_seed, nc, tau, gmax, G, scale, top, delta, np.int64(W), sv, g, ix, rk, buf)
        if _envelope(env, tau, gmax, G) < top[0] - delta:
            return _compact(nc, buf), 0.0, G
    if mode == TOP:  # each remaining word's own bound, by blocks of falling bias
        for j in range(blk.shape[0] - 1):
            theta = top[0] - delta
            if _block_bound(blk, j, blk.shape[0] - 1, tau, gmax, G, scale) < theta:
                break  # blocks come by falling bias: none after this one can reach theta either
            if _block_bound(blk, j, j, tau, gmax, G, scale) < theta:
                continue
            n0 = nc
            for i in range(j * BLOCK, min((j + 1) * BLOCK, border.shape[0])):
                p = np.int64(border[i])
                if stamp[p] != sv and _bound(p, tau, gmax, G, scale, rk) >= theta:
                    stamp[p], slot[p] = sv, nc
                    cand[nc] = p
                    nc += 1
            if nc >= limit:
                return FULL, 0.0, G
            nc, ref, found = _score(n0, nc, mode, invt, top, ref, found, g, G, scale, sv, ix, rk, buf)
        return _compact(nc, buf), 0.0, G
    if nc == 0 or found <= 0:
        return FULL, 0.0, G
    if nc + _mass_todo(blk, border.shape[0], tau, gmax, G, scale, ref, invt, eps, found) > limit:
        return FULL, 0.0, G
    # MASS: bin each remaining word's bound; leave out the lowest bins while they hold <= eps of the mass found
    hi2 = ref
    for p in range(W):
        if stamp[p] != sv:
            ub[p] = _bound(p, tau, gmax, G, scale, rk)
            hi2 = max(hi2, ub[p])
    low = ref - 40.0 / invt  # bin 0 holds every bound below this
    bs = NBINS / max(hi2 - low, 1e-30)
    hist = np.zeros(NBINS + 1, np.int64)
    for p in range(W):
        if stamp[p] != sv:
            hist[min(max(np.int64((ub[p] - low) * bs), 0), NBINS)] += 1
    first, tail, kept = _cut(hist, low, bs, ref, invt, eps * found)  # bins [0, first) are left out
    todo = nc + kept
    if todo > limit:
        return FULL, 0.0, G
    for p in range(W):
        if stamp[p] != sv and min(max(np.int64((ub[p] - low) * bs), 0), NBINS) >= first:
            stamp[p], slot[p] = sv, nc
            cand[nc] = p
            cz[nc] = _z(p, g, G, scale, sv, ix, rk, buf)
            nc += 1
    return nc, tail / found, G  # found (the words scored before) is at most the mass of all candidates


@njit(cache=True, nogil=True, error_model="numpy")
def _refine(n0, n1, tau, gmax, G, scale, top, delta, most, sv, g, ix, rk, buf):
    """TOP: score the candidates n0..n1-1 not scored yet whose bound from the trigrams read (their T+ summed, the
    others <= tau) reaches the k-th best, the highest bounds first (by levels), so the threshold rises early; at
    most about ``most`` of them (a level is finished)."""
    cand, cz, cw = buf[5], buf[6], buf[8]
    todo = np.empty(n1 - n0, np.int64)
    bound = np.empty(n1 - n0)
    n = 0
    hi = _NEG
    for i in range(n0, n1):
        if cz[i] == np.inf:
            c = cw[i]  # T+ read, trigrams read, a, c, bias, k, n
            b = scale * (c[2] * min(c[0] + (c[5] - c[1]) * tau, c[6] * gmax) - G * c[3]) + c[4]
            if b >= top[0] - delta:
                todo[n], bound[n] = i, b
                n += 1
                hi = max(hi, b)
    if n == 0:
        return
    lo = top[0] - delta if top[0] > _NEG else hi - 1.0
    bs = 64 / max(hi - lo, 1e-30)
    start = np.zeros(66, np.int64)  # the candidates by level of their bound, highest first (a counting sort)
    for j in range(n):
        start[64 - min(max(np.int64((bound[j] - lo) * bs), 0), 64) + 1] += 1
    for j in range(65):
        start[j + 1] += start[j]
    order = np.empty(n, np.int64)
    for j in range(n):
        lv = 64 - min(max(np.int64((bound[j] - lo) * bs), 0), 64)
        order[start[lv]] = j
        start[lv] += 1
    done, level = 0, 0
    for j in order:
        lv = 64 - min(max(np.int64((bound[j] - lo) * bs), 0), 64)
        if lv != level:
            if done >= most:
                return
            level = lv
        if bound[j] >= top[0] - delta:
            i = todo[j]
            cz[i] = _z(cand[i], g, G, scale, sv, ix, rk, buf)
            _push(top, cz[i])
            done += 1


@njit(cache=True, nogil=True, error_model="numpy")
def _compact(nc, buf):
    """Drop the candidates left unscored (their bounds fell below the k-th best). -> how many remain."""
    cand, cz = buf[5], buf[6]
    j = 0
    for i in range(nc):
        if cz[i] != np.inf:
            cand[j], cz[j] = cand[i], cz[i]
            j += 1
    return j


@njit(cache=True, nogil=True, error_model="numpy")
def _score(n0, n1, mode, invt, top, ref, found, g, G, scale, sv, ix, rk, buf):
    """Score candidates n0..n1-1 and update the top-k list (TOP) or the best z and the mass found (MASS)."""
    cand, cz = buf[5], buf[6]
    for i in range(n0, n1):
        z = _z(cand[i], g, G, scale, sv, ix, rk, buf)
        cz[i] = z
        if mode == TOP:
            _push(top, z)
        elif z > ref:
            found = found * math.exp(max((ref - z) * invt, -700.0)) + 1.0
            ref = np.float64(z)
        else:
            found += math.exp(max((z - ref) * invt, -700.0))
    return n1, ref, found


@njit(cache=True, nogil=True)
def _push(top, z):
    """Insert z into the ascending top-k list when it beats the k-th best."""
    if z <= top[0]:
        return
    j = 0
    while j + 1 < top.shape[0] and top[j + 1] < z:
        top[j] = top[j + 1]
        j += 1
    top[j] = z


@njit(cache=True, nogil=True)
def postings(kptr, ktid, nt):
    """The inverted index: trie positions holding each trigram, ascending (CSR by trigram id). -> (tptr, tpos)."""
    tptr = np.zeros(nt + 1, np.int64)
    for q in range(ktid.shape[0]):
        tptr[ktid[q] + 1] += 1
    for t in range(nt):
        tptr[t + 1] += tptr[t]
    fill = tptr[:-1].copy()
    tpos = np.empty(ktid.shape[0], np.int32)
    for p in range(kptr.shape[0] - 1):
        for q in range(kptr[p], kptr[p + 1]):
            tpos[fill[ktid[q]]] = p
            fill[ktid[q]] += 1
    return tptr, tpos
