"""The split kernels: UTF-8 text -> words -> word-cache ids, in one walk over the bytes.

``walk`` reads each text's bytes once: a character's class comes from the shipped table (``_unicode``; an
ASCII byte is its own code point, other characters are decoded on the spot), a letter run is hashed (FNV-1a over
its bytes) while it is scanned, and each word is interned in the word cache (``_kernels`` lists its arrays) where
it is found or added; marker words come out of the whitespace rules on the way. Nothing per word leaves the
kernel but its id (and, when asked, its character span). ``_reference.py`` is the readable twin it is tested
against. Every kernel here is ``nogil``, so ``encode_batch`` and ``tfree encode`` scale across threads. The caller
(``words.WordCache``) owns the arrays and grows them between calls, and sizes the word cache's table (load under a
half; a word's slot is the top bits of its hash times the golden ratio, ``rehash`` moves the words to a bigger one).

The words are those of the code-point rules (SPEC section 1), character offsets included: only the cache's keys
moved from code points to bytes. ICU's extra boundaries (scripts written without spaces) come in as character
offsets; ``icu_input`` builds the one string ICU sees for a batch of texts.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._kernels import utf8_char
from ._unicode import CLASS_MASK, LETTER, LETTER_NS, NO_WS_AFTER, NO_WS_BEFORE
from .markers import N_MARKERS, N_POW, NL_BASE, WS_BASE
from .markers import NO_WS_ID as NO_WS

FNV = np.uint64(0x100000001B3)
FNV0 = np.uint64(0xCBF29CE484222325)
_LOW32 = np.uint64(0xFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, nogil=True)
def rehash(tab, new, shift):
    """Move the table's entries into the empty table ``new`` (``walk`` has the slot rule)."""
    mask = new.shape[0] // 2 - 1
    for t in range(tab.shape[0] // 2):
        v = tab[2 * t + 1]
        if v != 0:
            sl = np.int64((tab[2 * t] * _GOLDEN) >> shift)
            while new[2 * sl + 1] != 0:
                sl = (sl + 1) & mask
            new[2 * sl] = tab[2 * t]
            new[2 * sl + 1] = v


@njit(cache=True, nogil=True)
def _find(src, s, e, h, tab, shift, data, coff):
    """Id of the word src[s:e] (hash h) if it is cached, else -1 - the free slot where it goes."""
    L = e - s
    mask = tab.shape[0] // 2 - 1
    slot = np.int64((h * _GOLDEN) >> shift)
    while True:
        val = tab[2 * slot + 1]
        if val == 0:
            return -1 - slot
        if tab[2 * slot] == h and np.int64(val >> np.uint64(32)) == L:
            a = coff[np.int64(val & _LOW32) - 1]
            q = 0
            while q < L and data[a + q] == src[s + q]:
                q += 1
            if q == L:
                return N_MARKERS + np.int64(val & _LOW32) - 1
        slot = (slot + 1) & mask


@njit(cache=True, nogil=True)
def _insert(src, s, e, h, slot, tab, data, coff, cnt):
    """Add the word src[s:e] (hash h) in the free ``slot``; room is reserved. Returns its id."""
    L = e - s
    u = cnt[0]
    a = coff[u]
    for q in range(L):
        data[a + q] = src[s + q]
    coff[u + 1] = a + L
    cnt[0] = u + 1
    tab[2 * slot] = h
    tab[2 * slot + 1] = np.uint64(u + 1) | (np.uint64(L) << np.uint64(32))
    return N_MARKERS + u


# The walk's state between calls: text, byte and character position, words so far, the text's first word, the
# previous word's kind and flags, pending spaces and where they began, the next ICU break, and what it ran out of.
D, I, CI, NW, FIRST, PREV, FLAGS, PEND, PEND_AT, BI, WANT = range(11)


@njit(cache=True, nogil=True)
def walk(buf, starts, cls, breaks, bstarts, max_chars, whole, offs, ids, nws, tab, shift, data, coff, single, cnt, st):
    """Words of each text buf[starts[d]:starts[d+1]] (UTF-8), one text after the other: ids (int32, < N_MARKERS
    for marker words, else cache ids) and, unless ``offs`` is empty, (start, end) character spans in offs
    (relative to each text); nws[d] gets text d's word count. Text d's extra boundaries (ICU's) are
    breaks[bstarts[d]:bstarts[d+1]], sorted character offsets. The table has tab.shape[0] // 2 slots and hash h
    goes in slot (h * golden) >> shift: the product's top bits, which depend on all of h (FNV-1a's low bits do not).

    With ``whole``, each (non-empty) text is one word as it stands: how a list of words is interned (the same ids
    the split gives the same words).

    Runs from state ``st`` until it is done (returns 0, st[NW] words), or the output (1) or the cache (2, for a
    word of st[WANT] bytes) lacks room for the next unit: then ``st`` is where to resume, once the caller has
    grown them (``words.WordCache``). So no array is ever reassigned or allocated here: numba would count
    references around every call in the loop (10x slower), and growing arrays in numba costs seconds of compile
    time on the first run."""
    spans = offs.shape[0] > 0
    cap = ids.shape[0]
    nsingle = single.shape[0]
    mask = tab.shape[0] // 2 - 1
    d, i, ci, nw, first_word = st[D], st[I], st[CI], st[NW], st[FIRST]
    prev_text, prev_flags, pend, pend_at, bi = st[PREV] != 0, st[FLAGS], st[PEND], st[PEND_AT], st[BI]
    while d < starts.shape[0] - 1:
        n = starts[d + 1]
        nb = bstarts[d + 1]
        # One "unit" per turn: a run of spaces (only counted), a run of newlines, or one text word. Before each
        # newline run or word the pending spaces are settled against the T-FREE rules; the end of the text acts
        # like a marker, so trailing spaces are explicit.
        while True:
            is_marker = True
            first = 0
            last = 0
            h = FNV0
            j = i   # end of the unit: byte
            e = ci  # and character
            c = -1
            if i < n and whole:
                c, L = utf8_char(buf, i, n)
                if i + L < n:
                    c = -1
                for q in range(i, n):
                    h = (h ^ np.uint64(buf[q])) * FNV
                is_marker = False
                j = n
                e = ci + 1
            elif i < n:
                b = buf[i]
                if b == 32:
                    while j < n and buf[j] == 32:
                        j += 1
                    pend = j - i
                    pend_at = ci
                    ci += j - i
                    i = j
                    continue
                if b == 10:
                    while j < n and buf[j] == 10:
                        j += 1
                    e = ci + (j - i)
                else:
                    if b < 0x80:
                        c = np.int64(b)
                        L = 1
                    else:
                        c, L = utf8_char(buf, i, n)
                    first = cls[c]
                    last = first
                    is_marker = False
                    for q in range(i, i + L):
                        h = (h ^ np.uint64(buf[q])) * FNV
                    j = i + L
                    e = ci + 1
                    k = first & CLASS_MASK
                    if k == LETTER or k == LETTER_NS:
                        # scan at most max_chars ahead, so a giant word costs O(length) in all
                        while bi < nb and breaks[bi] <= ci:
                            bi += 1
                        stop = ci + max_chars
                        if bi < nb and breaks[bi] < stop:
                            stop = breaks[bi]
                        while e < stop and j < n:
                            b = buf[j]
                            if b < 0x80:  # ASCII: the byte is the code point (no ASCII letter is LETTER_NS)
                                t = cls[b]
                                if t & CLASS_MASK != LETTER:
                                    break
                                h = (h ^ np.uint64(b)) * FNV
                                j += 1
                            else:
                                c2, L = utf8_char(buf, j, n)
                                t = cls[c2]
                                k = t & CLASS_MASK
                                if k != LETTER and k != LETTER_NS:
                                    break
                                for q in range(j, j + L):
                                    h = (h ^ np.uint64(buf[q])) * FNV
                                j += L
                            last = t
                            e += 1
                    if e > ci + 1:
                        c = -1
            hit = -1  # the word's id if it is cached, else -1 and ``slot`` is where it goes
            slot = 0
            if not is_marker:
                if 0 <= c < nsingle:  # a one-character word of the BMP
                    hit = single[c]
                if hit < 0:
                    hit = _find(buf, i, j, h, tab, shift, data, coff)
                    if hit < 0:
                        slot = -1 - hit
            full = nw + (pend >> 6) + ((e - ci) >> 6) + 10 > cap
            if full or (hit < 0 and not is_marker and not (
                    cnt[0] + 1 < coff.shape[0] and coff[cnt[0]] + j - i <= data.shape[0] and 2 * (cnt[0] + 1) <= mask + 1)):
                st[D], st[I], st[CI], st[NW], st[FIRST] = d, i, ci, nw, first_word
                st[PREV], st[FLAGS], st[PEND], st[PEND_AT], st[BI] = prev_text, prev_flags, pend, pend_at, bi
                st[WANT] = j - i
                return 1 if full else 2
            # -- settle the spaces between the previous word and this one
            expected = prev_text and not is_marker and (prev_flags & NO_WS_AFTER) == 0 and (first & NO_WS_BEFORE) == 0
            if pend == 0 and expected:
                if spans:
                    offs[nw, 0] = ci
                    offs[nw, 1] = ci
                ids[nw] = NO_WS
                nw += 1
            # the spaces (unless one is expected), then the unit's newlines: a marker per power of two, biggest first
            run, p, base = (0 if pend == 1 and expected else pend), pend_at, WS_BASE
            for _ in range(2):
                for q in range(N_POW - 1, -1, -1):
                    while run >= (1 << q):
                        if spans:
                            offs[nw, 0] = p
                            offs[nw, 1] = p + (1 << q)
                        ids[nw] = base + q
                        nw += 1
                        p += 1 << q
                        run -= 1 << q
                run, p, base = (e - ci if is_marker else 0), ci, NL_BASE
            pend = 0
            if i >= n:
                break
            # -- the unit itself
            if is_marker:  # the newlines (done above)
                prev_text = False
            else:
                if spans:
                    offs[nw, 0] = ci
                    offs[nw, 1] = e
                if hit < 0:
                    hit = _insert(buf, i, j, h, slot, tab, data, coff, cnt)
                    if 0 <= c < nsingle:
                        single[c] = hit
                ids[nw] = hit
                nw += 1
                prev_text = True
                prev_flags = last
            i = j
            ci = e
        nws[d] = nw - first_word
        d += 1
        if d < starts.shape[0] - 1:
            i, ci, first_word = starts[d], 0, nw
            prev_text, prev_flags, pend, pend_at, bi = False, 0, 0, 0, bstarts[d]
    st[NW] = nw
    return 0


@njit(cache=True, nogil=True)
def byte_starts(buf, cstarts, out):
    """Byte offsets in UTF-8 ``buf`` of the character offsets ``cstarts`` (sorted), into ``out``."""
    c = 0
    p = 0
    n = buf.shape[0]
    for d in range(cstarts.shape[0]):
        while c < cstarts[d] and p < n:
            p += 1
            while p < n and buf[p] & 0xC0 == 0x80:
                p += 1
            c += 1
        out[d] = p


@njit(cache=True, nogil=True)
def icu_input(buf, starts, cls, out, run_at, run_text, run_char):
    """What ICU sees of texts buf[starts[d]:starts[d+1]]: the letter runs that hold a no-space letter (Han, Kana,
    Thai, ...), their code points in ``out``, a newline after each. Run r starts at out[run_at[r]] and is
    characters run_char[r]... of text run_text[r]. Returns (length of out, runs); the arrays have room for the
    worst case."""
    p = 0
    r = 0
    for d in range(starts.shape[0] - 1):
        i = starts[d]
        e = starts[d + 1]
        ci = 0
        while i < e:
            c, L = utf8_char(buf, i, e)
            k = cls[c] & CLASS_MASK
            if k != LETTER and k != LETTER_NS:
                i += L
                ci += 1
                continue
            j = i  # the run: bytes i..j-1, characters ci..cj-1
            cj = ci
            ns = False
            while j < e:
                c, L = utf8_char(buf, j, e)
                k = cls[c] & CLASS_MASK
                if k != LETTER and k != LETTER_NS:
                    break
                ns = ns or k == LETTER_NS
                j += L
                cj += 1
            if ns:
                run_at[r] = p
                run_text[r] = d
                run_char[r] = ci
                q = i
                while q < j:
                    c, L = utf8_char(buf, q, j)
                    out[p] = c
                    p += 1
                    q += L
                out[p] = 10
                p += 1
                r += 1
            i = j
            ci = cj
    return p, r
