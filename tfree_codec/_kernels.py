"""The fast core: numba kernels over flat numpy arrays. Python code validates input and builds objects.

Encoding runs in three passes, all ``nogil`` so ``encode_batch`` scales across threads:

1. ``split_words``: one walk over the code points emits the words (spans or marker ids) and gives every
   distinct word an id, found through an open-addressing table keyed by the word's code points.
2. ``hash_words``: each *distinct* word is hashed once into its trigram activation pattern (``tfree`` family).
3. ``gather_patterns``: the per-word CSR is assembled by copying each word's pattern from the distinct table.

Natural text repeats its words, so step 2 touches a few percent of the text and step 3 is a memory copy.
``_reference.py`` is the slow, readable twin these kernels are tested against.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._unicode import CLASS_MASK, DIGIT, LETTER, LETTER_NS, NEWLINE, NO_WS_AFTER, NO_WS_BEFORE, SPACE

# Marker word ids (see words.MARKERS): 0 end-of-text, 1 <|no_ws|>, 2.. spaces 1,2,4,..,64, then newlines alike.
NO_WS = 1
WS_BASE = 2
NL_BASE = 9
N_POW = 7  # runs of 2**0 .. 2**6 merge into one marker
N_MARKERS = 16
_FNV = np.uint64(0x100000001B3)
_FNV0 = np.uint64(0xCBF29CE484222325)


@njit(cache=True, nogil=True, inline="always")
def splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True, nogil=True)
def _grow(a, n):
    b = np.empty((a.shape[0] * 2,) + a.shape[1:], a.dtype)
    b[:n] = a[:n]
    return b


@njit(cache=True, nogil=True)
def ns_runs(cps, cls):
    """(start, end) of every letter run that holds a letter of a no-space script: the runs ICU segments."""
    out = np.empty((16, 2), np.int64)
    k = 0
    i, n = 0, cps.shape[0]
    while i < n:
        c = cls[cps[i]] & CLASS_MASK
        if c != LETTER and c != LETTER_NS:
            i += 1
            continue
        j, has_ns = i, False
        while j < n:
            cj = cls[cps[j]] & CLASS_MASK
            if cj == LETTER_NS:
                has_ns = True
            elif cj != LETTER:
                break
            j += 1
        if has_ns:
            if k == out.shape[0]:
                out = _grow(out, k)
            out[k, 0] = i
            out[k, 1] = j
            k += 1
        i = j
    return out[:k].copy()


@njit(cache=True, nogil=True)
def split_words(cps, cls, breaks, max_chars):
    """Words of ``cps`` as (offsets (n, 2) int64, ids int32, distinct (u, 2) int64).

    ids < N_MARKERS are marker words; id N_MARKERS + j is the j-th distinct text word, whose first occurrence
    spans ``distinct[j]``. ``breaks`` are sorted extra boundaries inside letter runs (from ICU).
    """
    n = cps.shape[0]
    cap = n // 3 + 16
    offs = np.empty((cap, 2), np.int64)
    ids = np.empty(cap, np.int32)
    nw = 0
    ucap = 1024
    ustart = np.empty((ucap, 2), np.int64)
    nu = 0
    tsize = 4096
    table = np.full(tsize, -1, np.int32)
    thash = np.empty(tsize, np.uint64)

    prev_kind = 0  # 0 nothing yet, 1 marker, 2 text word
    prev_flags = 0
    pend = 0       # spaces seen since the previous word
    pend_at = 0
    bi = 0
    nb = breaks.shape[0]
    i = 0
    # The loop body handles one "unit": a run of spaces, a run of newlines, or one text word (a letter piece,
    # a digit, a symbol). Before each word it settles the pending spaces against the T-FREE rules.
    while True:
        if i < n:
            c = cps[i]
            t = cls[c]
            k = t & CLASS_MASK
            if k == SPACE:
                j = i
                while j < n and cps[j] == 32:
                    j += 1
                pend = j - i
                pend_at = i
                i = j
                continue
            if k == NEWLINE:
                j = i
                while j < n and cps[j] == 10:
                    j += 1
                s, e, is_marker, flags_first, flags_last = i, j, True, 0, 0
            elif k == LETTER or k == LETTER_NS:
                # scan at most max_chars ahead, so a giant word costs O(length) in all
                j = i + 1
                while j < n and j - i < max_chars:
                    kj = cls[cps[j]] & CLASS_MASK
                    if kj != LETTER and kj != LETTER_NS:
                        break
                    j += 1
                while bi < nb and breaks[bi] <= i:
                    bi += 1
                if bi < nb and breaks[bi] < j:
                    j = breaks[bi]
                s, e, is_marker = i, j, False
                flags_first = cls[cps[s]]
                flags_last = cls[cps[e - 1]]
            else:
                s, e, is_marker = i, i + 1, False
                flags_first = t
                flags_last = t
        else:
            s, e, is_marker, flags_first, flags_last = n, n, True, 0, 0  # end of text acts like a marker
        # -- settle the spaces between the previous word and this one
        expected = (prev_kind == 2 and not is_marker and (prev_flags & NO_WS_AFTER) == 0
                    and (flags_first & NO_WS_BEFORE) == 0)
        if pend == 0:
            if expected:
                if nw + 1 > cap:
                    offs = _grow(offs, nw)
                    ids = _grow(ids, nw)
                    cap *= 2
                offs[nw, 0] = s
                offs[nw, 1] = s
                ids[nw] = NO_WS
                nw += 1
        elif not (pend == 1 and expected):
            p = pend_at
            for q in range(N_POW - 1, -1, -1):
                size = 1 << q
                while pend >= size:
                    if nw + 1 > cap:
                        offs = _grow(offs, nw)
                        ids = _grow(ids, nw)
                        cap *= 2
                    offs[nw, 0] = p
                    offs[nw, 1] = p + size
                    ids[nw] = WS_BASE + q
                    nw += 1
                    p += size
                    pend -= size
        pend = 0
        if i >= n:
            break
        # -- emit the word itself
        if is_marker:  # a run of newlines
            p = s
            left = e - s
            for q in range(N_POW - 1, -1, -1):
                size = 1 << q
                while left >= size:
                    if nw + 1 > cap:
                        offs = _grow(offs, nw)
                        ids = _grow(ids, nw)
                        cap *= 2
                    offs[nw, 0] = p
                    offs[nw, 1] = p + size
                    ids[nw] = NL_BASE + q
                    nw += 1
                    p += size
                    left -= size
            prev_kind = 1
        else:
            h = _FNV0
            for q in range(s, e):
                h = (h ^ np.uint64(cps[q])) * _FNV
            h = splitmix64(h ^ np.uint64(e - s))
            slot = np.int64(h & np.uint64(tsize - 1))
            wid = -1
            while True:
                u = table[slot]
                if u < 0:
                    break
                if thash[slot] == h:
                    us, ue = ustart[u, 0], ustart[u, 1]
                    if ue - us == e - s:
                        same = True
                        for q in range(e - s):
                            if cps[us + q] != cps[s + q]:
                                same = False
                                break
                        if same:
                            wid = u
                            break
                slot = (slot + 1) & (tsize - 1)
            if wid < 0:
                wid = nu
                if nu == ucap:
                    ustart = _grow(ustart, nu)
                    ucap *= 2
                ustart[nu, 0] = s
                ustart[nu, 1] = e
                nu += 1
                table[slot] = wid
                thash[slot] = h
                if 2 * nu > tsize:  # keep the load under one half
                    tsize *= 2
                    table = np.full(tsize, -1, np.int32)
                    thash = np.empty(tsize, np.uint64)
                    for u in range(nu):
                        hu = _FNV0
                        for q in range(ustart[u, 0], ustart[u, 1]):
                            hu = (hu ^ np.uint64(cps[q])) * _FNV
                        hu = splitmix64(hu ^ np.uint64(ustart[u, 1] - ustart[u, 0]))
                        sl = np.int64(hu & np.uint64(tsize - 1))
                        while table[sl] >= 0:
                            sl = (sl + 1) & (tsize - 1)
                        table[sl] = u
                        thash[sl] = hu
            if nw + 1 > cap:
                offs = _grow(offs, nw)
                ids = _grow(ids, nw)
                cap *= 2
            offs[nw, 0] = s
            offs[nw, 1] = e
            ids[nw] = N_MARKERS + wid
            nw += 1
            prev_kind = 2
        prev_flags = flags_last
        i = e
    return offs[:nw].copy(), ids[:nw].copy(), ustart[:nu].copy()


@njit(cache=True, nogil=True, inline="always")
def _put_utf8(buf, p, c):
    if c < 0x80:
        buf[p] = c
        return p + 1
    if c < 0x800:
        buf[p] = 0xC0 | (c >> 6)
        buf[p + 1] = 0x80 | (c & 0x3F)
        return p + 2
    if c < 0x10000:
        buf[p] = 0xE0 | (c >> 12)
        buf[p + 1] = 0x80 | ((c >> 6) & 0x3F)
        buf[p + 2] = 0x80 | (c & 0x3F)
        return p + 3
    buf[p] = 0xF0 | (c >> 18)
    buf[p + 1] = 0x80 | ((c >> 12) & 0x3F)
    buf[p + 2] = 0x80 | ((c >> 6) & 0x3F)
    buf[p + 3] = 0x80 | (c & 0x3F)
    return p + 4


@njit(cache=True, nogil=True)
def trigram_ids(cps, s, e, lower, buf, lbuf):
    """Fill buf/lbuf with the UTF-8 bytes of " word " and of its lower-case form; return their length."""
    buf[0] = 32
    lbuf[0] = 32
    p = 1
    for q in range(s, e):
        c = cps[q]
        p2 = _put_utf8(buf, p, c)
        _put_utf8(lbuf, p, lower[c])  # lower keeps the UTF-8 length (see _unicode.py)
        p = p2
    buf[p] = 32
    lbuf[p] = 32
    return p + 1


@njit(cache=True, nogil=True)
def hash_words(cps, spans, lower, v, m, k, seed):
    """Patterns (CSR indptr, indices) of the words cps[s:e] for (s, e) in spans, ``tfree`` hash family.

    A trigram's rows come from one strong 64-bit hash and double hashing, ``h1 + i*h2`` mod v with h2 odd and
    v a power of two, so the first m are distinct. With case sharing, the first k rows are those of the
    lower-cased trigram (so ``Hello`` and ``hello`` share k rows per trigram) and the rest fill up from the
    trigram's own sequence, skipping rows already taken.
    """
    nu = spans.shape[0]
    indptr = np.zeros(nu + 1, np.int64)
    cap = 64 * nu + 64
    out = np.empty(cap, np.uint32)
    mark = np.full(v, -1, np.int64)
    mask = np.uint64(v - 1)
    seedmix = splitmix64(np.uint64(seed))
    maxlen = 0
    for u in range(nu):
        maxlen = max(maxlen, spans[u, 1] - spans[u, 0])
    buf = np.empty(4 * maxlen + 2, np.uint8)
    lbuf = np.empty(4 * maxlen + 2, np.uint8)
    rows = np.empty(m, np.int64)
    pos = 0
    for u in range(nu):
        nb = trigram_ids(cps, spans[u, 0], spans[u, 1], lower, buf, lbuf)
        start = pos
        for j in range(nb - 2):
            tri = np.uint64(buf[j]) | (np.uint64(buf[j + 1]) << np.uint64(8)) | (np.uint64(buf[j + 2]) << np.uint64(16))
            ltri = np.uint64(lbuf[j]) | (np.uint64(lbuf[j + 1]) << np.uint64(8)) | (np.uint64(lbuf[j + 2]) << np.uint64(16))
            got = 0
            if k > 0 and ltri != tri:
                h1 = splitmix64(ltri ^ seedmix)
                h2 = splitmix64(h1) | np.uint64(1)
                for i in range(k):
                    rows[got] = np.int64((h1 + np.uint64(i) * h2) & mask)
                    got += 1
            h1 = splitmix64(tri ^ seedmix)
            h2 = splitmix64(h1) | np.uint64(1)
            i = 0
            while got < m:
                r = np.int64((h1 + np.uint64(i) * h2) & mask)
                i += 1
                dup = False
                for g in range(got):
                    if rows[g] == r:
                        dup = True
                        break
                if not dup:
                    rows[got] = r
                    got += 1
            for g in range(m):
                r = rows[g]
                if mark[r] != u:
                    mark[r] = u
                    if pos == cap:
                        out = _grow(out, pos)
                        cap *= 2
                    out[pos] = r
                    pos += 1
        out[start:pos].sort()
        indptr[u + 1] = pos
    return indptr, out[:pos].copy()


@njit(cache=True, nogil=True)
def gather_patterns(ids, tab_indptr, tab_indices):
    """Per-word CSR from word ids into a table of patterns (markers first, then distinct words)."""
    nw = ids.shape[0]
    indptr = np.empty(nw + 1, np.int64)
    indptr[0] = 0
    for w in range(nw):
        u = ids[w]
        indptr[w + 1] = indptr[w] + tab_indptr[u + 1] - tab_indptr[u]
    out = np.empty(indptr[nw], np.uint32)
    for w in range(nw):
        u = ids[w]
        a = tab_indptr[u]
        out[indptr[w]:indptr[w + 1]] = tab_indices[a:tab_indptr[u + 1]]
    return indptr, out
