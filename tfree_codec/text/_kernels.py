"""numba kernels shared by the stages, and the hashing half of encoding: word cache -> activation patterns.

The split half (UTF-8 text -> words -> word-cache ids) is ``_split.py``. A word cache (``words.WordCache``) is a
handful of arrays, grown by the caller between kernel calls (never inside a kernel: see ``_split.walk``):
  tab    uint64[2 * size]  slot -> (word hash, (id + 1) | byte length << 32); 0 = empty
  data   uint8[...]        the UTF-8 bytes of the distinct words, back to back (lone surrogates as 3 bytes)
  coff   int64[...]        word u spans data[coff[u]:coff[u + 1]]
  single int32[65536]      id of each one-character word of the BMP, or -1 (skips the hash table for
                           punctuation, digits and the many one-character words of Chinese and Japanese)
  pptr   int64[...]        pattern of word id w (markers first) is pidx[pptr[w]:pptr[w + 1]]
  pidx   uint32[...]
  cnt    int64[2]          [distinct words, of which hashed]

Natural text repeats its words, so hashing (``hash_new``) touches a few percent of the text and ``gather`` is a
memory copy. ``_reference.py`` is the slow, readable twin these kernels are tested against.

First-run compile time counts (``tfree encode`` of 1 MB compiles what it needs in a few seconds): kernels loop over
scalars only. No slicing, array allocation, tuple arithmetic or ``inline="always"``: each pulls in numba's generic
array, error-message and string code, seconds of compiling for nothing the loops need.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .markers import N_MARKERS

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_DEBRUIJN_MUL = 0x03F79D71B4CA8B09  # a de Bruijn sequence: (lowest set bit * it) >> 58 names the bit
_DEBRUIJN = np.zeros(64, np.int64)
for _i in range(64):
    _DEBRUIJN[((1 << _i) * _DEBRUIJN_MUL % (1 << 64)) >> 58] = _i


@njit(cache=True, nogil=True)
def splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True, nogil=True)
def utf8_char(buf, i, n):
    """(code point, byte length) of the UTF-8 sequence at buf[i], i < n. Input is well-formed (lone surrogates
    as 3 bytes, as Python's "surrogatepass" writes them); a sequence cut by n reads as one byte, so nothing is read
    past n whatever the input."""
    b = np.int64(buf[i])
    if b < 0x80:
        return b, 1
    if b < 0xE0:
        if i + 1 < n:
            return ((b & 0x1F) << 6) | (np.int64(buf[i + 1]) & 0x3F), 2
    elif b < 0xF0:
        if i + 2 < n:
            return ((b & 0x0F) << 12) | ((np.int64(buf[i + 1]) & 0x3F) << 6) | (np.int64(buf[i + 2]) & 0x3F), 3
    elif i + 3 < n:
        c = (((b & 0x07) << 18) | ((np.int64(buf[i + 1]) & 0x3F) << 12) | ((np.int64(buf[i + 2]) & 0x3F) << 6)
             | (np.int64(buf[i + 3]) & 0x3F))
        return min(c, 0x10FFFF), 4
    return b & 0x7F, 1


@njit(cache=True, nogil=True)
def put_utf8(buf, p, c):
    """Write code point c as UTF-8 at buf[p]; returns the position after it."""
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
    """Fill buf/lbuf with the UTF-8 bytes of " word " and of its lower-case form, the word given as code points
    cps[s:e]; return their length."""
    buf[0] = 32
    lbuf[0] = 32
    p = 1
    for q in range(s, e):
        c = cps[q]
        p2 = put_utf8(buf, p, c)
        put_utf8(lbuf, p, lower[c])  # lower keeps the UTF-8 length (see _unicode.py)
        p = p2
    buf[p] = 32
    lbuf[p] = 32
    return p + 1


@njit(cache=True, nogil=True)
def _padded_bytes(data, s, e, lower, buf, lbuf):
    """``padded_utf8`` of the word given as UTF-8 bytes data[s:e]."""
    buf[0] = 32
    lbuf[0] = 32
    p = 1
    i = s
    while i < e:
        c, n = utf8_char(data, i, e)
        for q in range(n):
            buf[p + q] = data[i + q]
        put_utf8(lbuf, p, lower[c])
        p += n
        i += n
    buf[p] = 32
    lbuf[p] = 32
    return p + 1


@njit(cache=True, nogil=True)
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
def hash_new(data, coff, cnt, pptr, pidx, lower, v, m, k, seed, buf, lbuf, bits, rows):
    """Hash the cached words not hashed yet (``tfree`` family) and append their patterns to (pptr, pidx), which
    have room (``trigrams.hash_unhashed``); buf, lbuf (longest word + 2 bytes), bits ((v >> 6) + 1 zeros) and rows
    (m) are scratch.

    A trigram's rows are its strong 64-bit hash h, then ``splitmix64(h + i*golden) mod v`` for i = 0, 1, ...,
    skipping repeats until m are distinct. (Double hashing, ``h1 + i*h2``, is cheaper but its row set is fixed by
    h1 and h2 mod v alone: one pair in ~3e7 trigram pairs shares all m rows. We hash each distinct word once, so
    the cheap form buys nothing.) With case sharing, the first k rows are those of the lower-cased trigram (so
    ``Hello`` and ``hello`` share k rows per trigram) and the rest come from the trigram's own sequence. The union
    is kept in a bitmap, which also sorts it.
    """
    mask = np.uint64(v - 1)
    seedmix = splitmix64(np.uint64(seed))
    pos = pptr[N_MARKERS + cnt[1]]
    for u in range(cnt[1], cnt[0]):
        nb = _padded_bytes(data, coff[u], coff[u + 1], lower, buf, lbuf)
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
    cnt[1] = cnt[0]


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
