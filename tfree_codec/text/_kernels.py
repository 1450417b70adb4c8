"""The fast core: numba kernels over flat numpy arrays. Python code validates input and builds objects.

Encoding runs in three passes, all ``nogil`` so ``encode_batch`` scales across threads:

1. ``split_words``: one walk over the code points emits the words (character spans, or marker ids) and interns
   each text word in a word cache: an open-addressing table keyed by the word's code points.
2. ``hash_new``: each word the cache has not seen before is hashed once into its activation pattern.
3. ``gather``: the per-word CSR is assembled by copying each word's pattern out of the cache.

Natural text repeats its words, so pass 2 touches a few percent of the text and pass 3 is a memory copy. The
cache outlives a call (``codec.WordCache``), so a corpus fed in chunks hashes each distinct word once.
``_reference.py`` is the slow, readable twin these kernels are tested against.

A cache is a handful of arrays, passed in and returned (they may have been grown):
  tab   uint64[2 * size]  slot -> (word hash, (id + 1) | length << 32); 0 = empty
  chars uint32[...]       the code points of the distinct words, back to back
  coff  int64[...]        word u spans chars[coff[u]:coff[u + 1]]
  ascii int32[65536]      id of each one-character word of the BMP, or -1 (skips the hash table for
                          punctuation, digits and the many one-character words of Chinese and Japanese)
  pptr  int64[...]        pattern of word id w (markers first) is pidx[pptr[w]:pptr[w + 1]]
  pidx  uint32[...]
  cnt   int64[2]          [distinct words, of which hashed]
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._unicode import CLASS_MASK, LETTER, LETTER_NS, NEWLINE, NO_WS_AFTER, NO_WS_BEFORE, SPACE
from .markers import N_MARKERS, N_POW, NL_BASE, WS_BASE
from .markers import NO_WS_ID as NO_WS

_FNV = np.uint64(0x100000001B3)
_FNV0 = np.uint64(0xCBF29CE484222325)
_LOW32 = np.uint64(0xFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_DEBRUIJN_MUL = 0x03F79D71B4CA8B09  # a de Bruijn sequence: (lowest set bit * it) >> 58 names the bit
_DEBRUIJN = np.zeros(64, np.int64)
for _i in range(64):
    _DEBRUIJN[((1 << _i) * _DEBRUIJN_MUL % (1 << 64)) >> 58] = _i


@njit(cache=True, nogil=True, inline="always")
def splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True, nogil=True)
def _grow(a, need):
    n = a.shape[0]
    while n < need:
        n *= 2
    b = np.empty((n,) + a.shape[1:], a.dtype)
    b[:a.shape[0]] = a
    return b


@njit(cache=True, nogil=True, inline="always")
def _word_hash(cps, s, e):
    h = _FNV0
    for q in range(s, e):
        h = (h ^ np.uint64(cps[q])) * _FNV
    return splitmix64(h ^ np.uint64(e - s))


@njit(cache=True, nogil=True)
def _rehash(tab):
    size = tab.shape[0]  # the new table has twice the slots
    new = np.zeros(2 * size, np.uint64)
    for t in range(size // 2):
        v = tab[2 * t + 1]
        if v != 0:
            h = tab[2 * t]
            sl = np.int64(h & np.uint64(size - 1))
            while new[2 * sl + 1] != 0:
                sl = (sl + 1) & (size - 1)
            new[2 * sl] = h
            new[2 * sl + 1] = v
    return new


@njit(cache=True, nogil=True)
def _reserve(L, tab, chars, coff, cnt):
    """Make room for one more word of length L (rarely does anything)."""
    u = cnt[0]
    if u + 2 > coff.shape[0]:
        coff = _grow(coff, u + 2)
    if coff[u] + L > chars.shape[0]:
        chars = _grow(chars, coff[u] + L)
    if 2 * (u + 1) > tab.shape[0] // 2:  # keep the table's load under one half
        tab = _rehash(tab)
    return tab, chars, coff


@njit(cache=True, nogil=True, inline="always")
def intern(cps, s, e, h, tab, chars, coff, ascii_ids, cnt):
    """Id (>= N_MARKERS) of the word cps[s:e], adding it to the cache if new (room must be reserved)."""
    L = e - s
    if L == 1 and cps[s] < ascii_ids.shape[0] and ascii_ids[cps[s]] >= 0:
        return ascii_ids[cps[s]]
    size = tab.shape[0] // 2
    slot = np.int64(h & np.uint64(size - 1))
    while True:
        val = tab[2 * slot + 1]
        if val == 0:
            break
        if tab[2 * slot] == h and np.int64(val >> np.uint64(32)) == L:
            u = np.int64(val & _LOW32) - 1
            a = coff[u]
            same = True
            for q in range(L):
                if chars[a + q] != cps[s + q]:
                    same = False
                    break
            if same:
                return N_MARKERS + u
        slot = (slot + 1) & (size - 1)
    u = cnt[0]
    a = coff[u]
    for q in range(L):
        chars[a + q] = cps[s + q]
    coff[u + 1] = a + L
    cnt[0] = u + 1
    tab[2 * slot] = h
    tab[2 * slot + 1] = np.uint64(u + 1) | (np.uint64(L) << np.uint64(32))
    if L == 1 and cps[s] < ascii_ids.shape[0]:
        ascii_ids[cps[s]] = N_MARKERS + u
    return N_MARKERS + u


@njit(cache=True, nogil=True)
def has_ns(cps, cls):
    """Whether any code point is a letter of a no-space script (then ICU has work to do)."""
    for i in range(cps.shape[0]):
        if cls[cps[i]] & CLASS_MASK == LETTER_NS:
            return True
    return False


@njit(cache=True, nogil=True)
def ns_mask(cps, cls, starts):
    """Per code point: whether it lies in a letter run that holds a letter of a no-space script (the only text
    ICU sees). Runs end where a text ends: text d is cps[starts[d]:starts[d+1]]."""
    mask = np.zeros(cps.shape[0], np.bool_)
    for d in range(starts.shape[0] - 1):
        i = starts[d]
        n = starts[d + 1]
        while i < n:
            c = cls[cps[i]] & CLASS_MASK
            if c != LETTER and c != LETTER_NS:
                i += 1
                continue
            j = i
            ns = False
            while j < n:
                c = cls[cps[j]] & CLASS_MASK
                if c == LETTER_NS:
                    ns = True
                elif c != LETTER:
                    break
                j += 1
            if ns:
                mask[i:j] = True
            i = j
    return mask


@njit(cache=True, nogil=True)
def split_words(cps, cls, breaks, max_chars, offs, ids, tab, chars, coff, ascii_ids, cnt):
    """Words of ``cps`` into offs ((cap, 2) int64 character spans) and ids (int32), grown if too small:
    returns (number of words, offs, ids, tab, chars, coff).

    ids < N_MARKERS are marker words, the rest are word-cache ids. ``breaks`` are sorted extra word boundaries
    inside letter runs (from ICU). Output arrays come from the caller because numpy's allocator asks the kernel
    for huge pages, and first-touch page faults otherwise cost as much as the walk itself.
    """
    n = cps.shape[0]
    nw = 0
    prev_text = False  # the previous word is a text word (not a marker, not the start)
    prev_flags = 0
    pend = 0           # spaces seen since the previous word, starting at pend_at
    pend_at = 0
    bi = 0
    nb = breaks.shape[0]
    i = 0
    # One "unit" per turn: a run of spaces (only counted), a run of newlines, or one text word. Before each
    # newline run or word the pending spaces are settled against the T-FREE rules; the end of text acts like
    # a marker, so trailing spaces are explicit.
    while True:
        is_marker = True
        first = 0
        last = 0
        h = np.uint64(0)
        s = n
        e = n
        if i < n:
            t = cls[cps[np.uint64(i)]]
            k = t & CLASS_MASK
            if k == SPACE:
                j = i
                while j < n and cps[np.uint64(j)] == 32:
                    j += 1
                pend = j - i
                pend_at = i
                i = j
                continue
            s = i
            if k == NEWLINE:
                e = i
                while e < n and cps[e] == 10:
                    e += 1
            elif k == LETTER or k == LETTER_NS:
                # scan at most max_chars ahead, so a giant word costs O(length) in all
                while bi < nb and breaks[bi] <= i:
                    bi += 1
                stop = min(n, i + max_chars)
                if bi < nb and breaks[bi] < stop:
                    stop = breaks[bi]
                h = (_FNV0 ^ np.uint64(cps[i])) * _FNV  # the word's hash, as it is scanned
                last = t
                e = i + 1
                while e < stop:
                    c = cps[np.uint64(e)]
                    te = cls[c]
                    ke = te & CLASS_MASK
                    if ke != LETTER and ke != LETTER_NS:
                        break
                    h = (h ^ np.uint64(c)) * _FNV
                    last = te
                    e += 1
                h = splitmix64(h ^ np.uint64(e - i))
                is_marker = False
                first = t
            else:
                e = i + 1
                h = splitmix64(((_FNV0 ^ np.uint64(cps[i])) * _FNV) ^ np.uint64(1))
                is_marker = False
                first = t
                last = t
        # -- settle the spaces between the previous word and this one
        expected = prev_text and not is_marker and (prev_flags & NO_WS_AFTER) == 0 and (first & NO_WS_BEFORE) == 0
        if nw + pend // 64 + 8 > ids.shape[0]:
            offs = _grow(offs, nw + pend // 64 + 8)
            ids = _grow(ids, nw + pend // 64 + 8)
        if pend == 0:
            if expected:
                offs[nw, 0] = s
                offs[nw, 1] = s
                ids[nw] = NO_WS
                nw += 1
        elif not (pend == 1 and expected):
            p = pend_at
            for q in range(N_POW - 1, -1, -1):
                while pend >= (1 << q):
                    offs[nw, 0] = p
                    offs[nw, 1] = p + (1 << q)
                    ids[nw] = WS_BASE + q
                    nw += 1
                    p += 1 << q
                    pend -= 1 << q
        pend = 0
        if i >= n:
            break
        if nw + (e - s) // 64 + 8 > ids.shape[0]:
            offs = _grow(offs, nw + (e - s) // 64 + 8)
            ids = _grow(ids, nw + (e - s) // 64 + 8)
        # -- the word itself
        if is_marker:  # a run of newlines
            p = s
            for q in range(N_POW - 1, -1, -1):
                while e - p >= (1 << q):
                    offs[nw, 0] = p
                    offs[nw, 1] = p + (1 << q)
                    ids[nw] = NL_BASE + q
                    nw += 1
                    p += 1 << q
            prev_text = False
        else:
            if cnt[0] + 2 > coff.shape[0] or coff[cnt[0]] + (e - s) > chars.shape[0] or 2 * (cnt[0] + 1) > tab.shape[0] // 2:
                tab, chars, coff = _reserve(e - s, tab, chars, coff, cnt)
            offs[nw, 0] = s
            offs[nw, 1] = e
            ids[nw] = intern(cps, s, e, h, tab, chars, coff, ascii_ids, cnt)
            nw += 1
            prev_text = True
            prev_flags = last
        i = e
    return nw, offs, ids, tab, chars, coff


@njit(cache=True, nogil=True)
def split_many(cps, starts, cls, breaks, bstarts, max_chars, offs, ids, nws, tab, chars, coff, ascii_ids, cnt):
    """``split_words`` of each text cps[starts[d]:starts[d+1]] (its breaks: breaks[bstarts[d]:bstarts[d+1]]),
    one after the other in offs/ids (spans relative to each text); nws[d] gets text d's word count. One call for
    a whole record batch: per-call overhead is most of the cost of a short text. Returns (total words, offs,
    ids, tab, chars, coff)."""
    total = 0
    for d in range(starts.shape[0] - 1):
        a = starts[d]
        b = starts[d + 1]
        need = total + (b - a) // 2 + 16  # room for a typical text, so the inner call seldom grows its own
        if need > ids.shape[0]:
            offs = _grow(offs, need)
            ids = _grow(ids, need)
        room = ids.shape[0] - total
        nw, o, w, tab, chars, coff = split_words(cps[a:b], cls, breaks[bstarts[d]:bstarts[d + 1]], max_chars,
                                                 offs[total:], ids[total:], tab, chars, coff, ascii_ids, cnt)
        if w.shape[0] != room:  # the inner call grew its views into fresh arrays: copy its words back
            offs = _grow(offs, total + nw)
            ids = _grow(ids, total + nw)
            offs[total:total + nw] = o[:nw]
            ids[total:total + nw] = w[:nw]
        nws[d] = nw
        total += nw
    return total, offs, ids, tab, chars, coff


@njit(cache=True, nogil=True)
def intern_spans(cps, spans, tab, chars, coff, ascii_ids, cnt):
    """Cache ids of the words cps[s:e] for (s, e) in spans."""
    ids = np.empty(spans.shape[0], np.int32)
    for w in range(spans.shape[0]):
        tab, chars, coff = _reserve(spans[w, 1] - spans[w, 0], tab, chars, coff, cnt)
        ids[w] = intern(cps, spans[w, 0], spans[w, 1], _word_hash(cps, spans[w, 0], spans[w, 1]), tab, chars, coff, ascii_ids, cnt)
    return ids, tab, chars, coff


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
def padded_utf8(cps, s, e, lower, buf, lbuf):
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


@njit(cache=True, nogil=True, inline="always")
def draw_rows(h, rows, got, want, mask):
    """Append rows ``splitmix64(h + i*golden) & mask`` (i = 0, 1, ...) to rows[:got], skipping any already there,
    until there are ``want``."""
    i = 0
    while got < want:
        r = np.int64(splitmix64(h + np.uint64(i) * _GOLDEN) & mask)
        i += 1
        dup = False
        for g in range(got):
            if rows[g] == r:
                dup = True
                break
        if not dup:
            rows[got] = r
            got += 1
    return got


@njit(cache=True, nogil=True)
def hash_new(chars, coff, cnt, pptr, pidx, lower, v, m, k, seed):
    """Hash the cached words not hashed yet (``tfree`` family) and append their patterns: (pptr, pidx).

    A trigram's rows are its strong 64-bit hash h, then ``splitmix64(h + i*golden) mod v`` for i = 0, 1, ...,
    skipping repeats until m are distinct. (Double hashing, ``h1 + i*h2``, is cheaper but its row set is fixed by
    h1 and h2 mod v alone: one pair in ~3e7 trigram pairs shares all m rows. We hash each distinct word once, so
    the cheap form buys nothing.) With case sharing, the first k rows are those of the lower-cased trigram (so
    ``Hello`` and ``hello`` share k rows per trigram) and the rest come from the trigram's own sequence. The union
    is kept in a bitmap, which also sorts it.
    """
    nu, nh = cnt[0], cnt[1]
    if nh == nu:
        return pptr, pidx
    if N_MARKERS + nu + 1 > pptr.shape[0]:
        pptr = _grow(pptr, N_MARKERS + nu + 1)
    maxlen = 1
    for u in range(nh, nu):
        maxlen = max(maxlen, coff[u + 1] - coff[u])
    buf = np.empty(4 * maxlen + 2, np.uint8)
    lbuf = np.empty(4 * maxlen + 2, np.uint8)
    bits = np.zeros((v >> 6) + 1, np.uint64)
    rows = np.empty(m, np.int64)
    mask = np.uint64(v - 1)
    seedmix = splitmix64(np.uint64(seed))
    pos = pptr[N_MARKERS + nh]
    for u in range(nh, nu):
        nb = padded_utf8(chars, coff[u], coff[u + 1], lower, buf, lbuf)
        if pos + m * nb > pidx.shape[0]:
            pidx = _grow(pidx, pos + m * nb)
        lo = v
        hi = 0
        for j in range(nb - 2):
            tri = np.uint64(buf[j]) | (np.uint64(buf[j + 1]) << np.uint64(8)) | (np.uint64(buf[j + 2]) << np.uint64(16))
            ltri = np.uint64(lbuf[j]) | (np.uint64(lbuf[j + 1]) << np.uint64(8)) | (np.uint64(lbuf[j + 2]) << np.uint64(16))
            got = 0
            if k > 0 and ltri != tri:
                got = draw_rows(splitmix64(ltri ^ seedmix), rows, 0, k, mask)
            draw_rows(splitmix64(tri ^ seedmix), rows, got, m, mask)
            for g in range(m):
                r = rows[g]
                bits[r >> 6] |= np.uint64(1) << np.uint64(r & 63)
                lo = min(lo, r >> 6)
                hi = max(hi, r >> 6)
        for wi in range(lo, hi + 1):  # read the bitmap back in order, clearing it
            x = bits[wi]
            bits[wi] = 0
            while x != 0:
                low = x & (~x + np.uint64(1))
                pidx[pos] = np.uint32((wi << 6) + _DEBRUIJN[np.int64((low * np.uint64(_DEBRUIJN_MUL)) >> np.uint64(58))])
                pos += 1
                x ^= low
        pptr[N_MARKERS + u + 1] = pos
    cnt[1] = nu
    return pptr, pidx


@njit(cache=True, nogil=True)
def append_patterns(cnt, pptr, pidx, new_indptr, new_indices):
    """Append patterns computed outside numba (the ``aleph`` family) for the words not hashed yet."""
    nh, nu = cnt[1], cnt[0]
    if N_MARKERS + nu + 1 > pptr.shape[0]:
        pptr = _grow(pptr, N_MARKERS + nu + 1)
    pos = pptr[N_MARKERS + nh]
    if pos + new_indices.shape[0] > pidx.shape[0]:
        pidx = _grow(pidx, pos + new_indices.shape[0])
    pidx[pos:pos + new_indices.shape[0]] = new_indices
    for u in range(nh, nu):
        pptr[N_MARKERS + u + 1] = pos + new_indptr[u - nh + 1]
    cnt[1] = nu
    return pptr, pidx


@njit(cache=True, nogil=True)
def pattern_indptr(ids, pptr, indptr):
    """indptr (len(ids) + 1) of the per-word CSR, from word ids into the cache's pattern store."""
    indptr[0] = 0
    for w in range(ids.shape[0]):
        u = ids[w]
        indptr[w + 1] = indptr[w] + pptr[u + 1] - pptr[u]


@njit(cache=True, nogil=True)
def gather(ids, pptr, pidx, indptr, out):
    """Copy each word's pattern out of the cache's store into the per-word CSR ``out``."""
    # Unsigned indices: numba skips its negative-index wraparound, and the copy vectorises (4x faster).
    for w in range(ids.shape[0]):
        u = ids[w]
        a = np.uint64(pptr[u])
        b = np.uint64(indptr[w])
        for q in range(np.uint64(pptr[u + 1]) - a):
            out[b + q] = pidx[a + q]
