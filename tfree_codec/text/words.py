"""Text -> words and back, losslessly (SPEC section 1).

Letter runs are words; every digit, symbol, ``_`` and whitespace character is a word of its own. A single space
between two words is implicit where the T-FREE rules expect one; marker words say where they don't:
``<|ws|>`` (and ``<|2<-ws->|>``, ``<|4<-ws->|>``, ... for runs) is a space where none is expected, ``<|no_ws|>`` an
expected space that is missing, ``<|\\n|>`` (and ``<|2<-\\n->|>``, ...) newlines. User text that merely looks like a
marker splits into ``<``, ``|``, ... and so can never be mistaken for one.

Beyond the reference: runs of scripts written without spaces are segmented into words by ICU's dictionary-based
word break iterator, and letter runs longer than ``max_word_chars`` are cut into pieces.
The walk itself is ``_split.split_texts``; this module holds the parts that are not hot.
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from ._unicode import CLASS_MASK, LETTER_NS, NO_WS_AFTER, NO_WS_BEFORE, tables
from .markers import EOT, MARKER_ID, MARKER_TEXT, MARKERS, MARKERS_UTF8, MARKERS_UTF8_OFFSETS, N_MARKERS, N_POW, NL_BASE, NO_WS, NO_WS_ID, WS_BASE  # noqa: F401

_K = None


def kernels():
    """The numba kernels (``_split`` and ``_kernels`` as one namespace), imported on first use: importing numba and
    loading cached machine code takes most of a second, which a short text never needs (see ``Codec.encode``)."""
    global _K
    if _K is None:
        from types import SimpleNamespace

        from . import _kernels, _split
        _K = SimpleNamespace(**{k: getattr(m, k) for m in (_kernels, _split) for k in dir(m) if not k.startswith("_")})
    return _K


def kernels_loaded() -> bool:
    """Whether this process has asked for the kernels yet (``kernels()``)."""
    return _K is not None


_EMPTY = np.zeros(0, np.int64)
_local = threading.local()


def code_points(text: str) -> np.ndarray:
    """The code points of ``text`` as uint32 (lone surrogates included: any Python str is accepted)."""
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def grown(a: np.ndarray, need: int) -> np.ndarray:
    """``a`` if it holds ``need`` rows, else a copy with room for at least twice as many."""
    if len(a) >= need:
        return a
    b = np.empty((max(need, 2 * len(a)),) + a.shape[1:], a.dtype)
    b[:len(a)] = a
    return b


def readonly(buf: np.ndarray) -> np.ndarray:
    """``buf`` as a read-only view: numba compiles a kernel once per argument type, and a read-only and a writable
    array are two types (seconds of compiling on the first run for each)."""
    if not buf.flags.writeable:
        return buf
    view = buf.view()
    view.flags.writeable = False
    return view


def utf8_texts(texts: list[str]) -> tuple[np.ndarray, np.ndarray, bool]:
    """(UTF-8 bytes of all ``texts`` one after the other (lone surrogates as "surrogatepass" writes them), byte
    offsets (len + 1), whether all is ASCII): the kernels' input. One join and one encode, not one per text."""
    try:
        joined = "".join(texts)
    except TypeError:
        bad = next(t for t in texts if not isinstance(t, str))
        raise TypeError(f"expected str, got {type(bad).__name__}") from None
    buf = np.frombuffer(joined.encode("utf-8", "surrogatepass"), np.uint8)
    starts = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, texts), np.int64, count=len(texts)), out=starts[1:])
    ascii = joined.isascii()  # O(1): CPython keeps the flag
    if not ascii:  # character offsets -> byte offsets
        kernels().byte_starts(buf, starts, starts)
    return buf, starts, ascii


def _break_iterator():
    # ICU break iterators are stateful, so each thread keeps its own.
    bi = getattr(_local, "bi", None)
    if bi is None:
        import icu

        bi = _local.bi = icu.BreakIterator.createWordInstance(icu.Locale.getRoot())
    return bi


def icu_cuts(text: str) -> np.ndarray:
    """ICU's word boundaries in ``text`` as code point offsets (0 and len(text) included)."""
    bi = _break_iterator()
    bi.setText(text)
    cuts = np.fromiter(bi, np.int64)  # UTF-16 offsets
    if not text.isascii():
        astral = code_points(text) > 0xFFFF
        if astral.any():  # astral characters take two UTF-16 units: map back to code points
            u16_start = np.arange(len(astral)) + np.concatenate([[0], np.cumsum(astral)[:-1]])
            cuts = np.searchsorted(u16_start, cuts)
    return cuts


def may_need_icu(buf: np.ndarray, cls: np.ndarray) -> bool:
    """Whether UTF-8 ``buf`` holds a letter of a no-space script. Nearly all of them take 3 or 4 bytes (the few
    2-byte ones share two lead bytes), so only the characters that start with such a byte (in European text: a few
    quotes and dashes) are decoded and looked up, with numpy, instead of compiling and running ``icu_input``."""
    lead = buf >= 0xE0
    for b in _ns_lead2():
        lead |= buf == b
    lead = np.flatnonzero(lead)
    if not len(lead):
        return False
    b = [buf[np.minimum(lead + k, len(buf) - 1)].astype(np.int64) for k in range(4)]
    two = ((b[0] & 0x1F) << 6) | (b[1] & 0x3F)
    three = ((b[0] & 0x0F) << 12) | ((b[1] & 0x3F) << 6) | (b[2] & 0x3F)
    four = ((b[0] & 0x07) << 18) | ((b[1] & 0x3F) << 12) | ((b[2] & 0x3F) << 6) | (b[3] & 0x3F)
    cps = np.minimum(np.where(b[0] < 0xE0, two, np.where(b[0] < 0xF0, three, four)), 0x10FFFF)
    return bool(((cls[cps] & CLASS_MASK) == LETTER_NS).any())


@functools.lru_cache(maxsize=1)
def _ns_lead2() -> tuple[int, ...]:
    """The lead bytes of the 2-byte characters that are no-space letters (U+02BC, some combining marks)."""
    low = np.flatnonzero((tables()[0][0x80:0x800] & CLASS_MASK) == LETTER_NS) + 0x80
    return tuple(sorted(set((0xC0 | (low >> 6)).tolist())))


def icu_breaks(buf: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ICU's boundaries inside the no-space letter runs of each text buf[starts[d]:starts[d+1]] (UTF-8): (character
    offsets within their text, bstarts), text d's being breaks[bstarts[d]:bstarts[d+1]].

    ICU sees only the letter runs that hold a Han, Kana, Thai, Lao, Khmer or Myanmar letter, each on its own, so
    the words of a paragraph never depend on text elsewhere (whole-text ICU also cut ``Base가`` in a document
    that held a kanji far away). All runs of all texts go to ICU in one call, a newline after each: ICU always
    breaks at a newline and its dictionaries stop there, so this is one call per run in effect (tested against
    ``_reference``, which does call ICU per run), and per-run calls cost more in Python than ICU spends
    segmenting. Only the runs: text with a few such letters among much else gives ICU little to walk.
    """
    K, cls = kernels(), tables()[0]
    if not may_need_icu(buf[starts[0]:starts[-1]], cls):
        return _EMPTY, np.zeros(len(starts), np.int64)
    # room for the worst case (every character in a run, a run per 2-byte letter); pages never written cost nothing
    size = int(starts[-1] - starts[0]) + len(starts)
    out, run_at, run_text, run_char = (np.empty(size, np.uint32), np.empty(size // 2 + 2, np.int64),
                                       np.empty(size // 2 + 1, np.int64), np.empty(size // 2 + 1, np.int64))
    n, runs = K.icu_input(buf, starts, cls, out, run_at, run_text, run_char)
    if not runs:
        return _EMPTY, np.zeros(len(starts), np.int64)
    out, run_at, run_text, run_char = out[:n], run_at[:runs + 1], run_text[:runs], run_char[:runs]
    run_at[runs] = n
    cuts = icu_cuts(out.tobytes().decode("utf-32-le"))
    r = np.searchsorted(run_at, cuts, side="right") - 1
    inside = (r < runs) & (cuts > run_at[np.minimum(r, runs)]) & (cuts < run_at[np.minimum(r + 1, runs)] - 1)
    r, cuts = r[inside], cuts[inside]
    bstarts = np.zeros(len(starts), np.int64)
    np.cumsum(np.bincount(run_text[r], minlength=len(starts) - 1), out=bstarts[1:])
    return run_char[r] + cuts - run_at[r], bstarts


def _shift(slots: int) -> np.uint64:
    """A table of ``slots`` slots (a power of two) puts hash h in slot (h * golden) >> _shift(slots)."""
    return np.uint64(64 - (slots.bit_length() - 1))


class WordCache:
    """The distinct words seen so far (and, once a codec hashed them, their patterns): see ``_kernels``.

    Not thread-safe: a codec lends each thread its own.
    """

    def __init__(self, marker_indptr: np.ndarray | None = None, marker_indices: np.ndarray | None = None):
        self.tab = np.zeros(2 * 4096, np.uint64)
        self.data = np.empty(1 << 15, np.uint8)
        self.coff = np.zeros(4096, np.int64)
        self.single = np.full(1 << 16, -1, np.int32)  # one-character words of the BMP, by code point
        self.cnt = np.zeros(2, np.int64)
        if marker_indptr is not None:
            self.pptr = np.zeros(4096, np.int64)
            self.pptr[:len(marker_indptr)] = marker_indptr
            self.pidx = np.empty(1 << 17, np.uint32)
            self.pidx[:len(marker_indices)] = marker_indices

    def __len__(self) -> int:
        return int(self.cnt[0])

    def rows(self) -> int:
        """Pattern rows stored for the hashed words (markers included). ``pptr`` is grown with room to spare, so
        only its first entries mean anything."""
        return int(self.pptr[N_MARKERS + self.cnt[1]]) if hasattr(self, "pptr") else 0

    def nbytes(self) -> int:
        return sum(getattr(self, a).nbytes for a in ("tab", "data", "coff", "pptr", "pidx") if hasattr(self, a))

    def reserve(self, words: int, nbytes: int) -> None:
        """Room for ``words`` more words of ``nbytes`` bytes in all, the table's load kept under a half."""
        u = int(self.cnt[0])
        self.coff = grown(self.coff, u + words + 1)
        self.data = grown(self.data, int(self.coff[u]) + nbytes)
        slots = len(self.tab) // 2
        if 2 * (u + words) > slots:
            while 2 * (u + words) > slots:
                slots *= 2
            new = np.zeros(2 * slots, np.uint64)
            if u:
                kernels().rehash(self.tab, new, _shift(slots))
            self.tab = new

    def split_utf8(self, buf: np.ndarray, starts: np.ndarray, max_word_chars: int, segmenter: str, *,
                   spans: bool = True, ascii: bool = False):
        """(words per text, (W, 2) character spans (each text's own; None unless ``spans``), ids) of the texts
        buf[starts[d]:starts[d+1]] (well-formed UTF-8), one after the other; new words enter the cache unhashed.
        ``ascii``: the caller knows the bytes are ASCII (no ICU pass)."""
        buf = readonly(buf)
        breaks, bstarts = _EMPTY, np.zeros(len(starts), np.int64)
        if segmenter == "icu" and not ascii:  # ICU per run, never across texts
            breaks, bstarts = icu_breaks(buf, starts)
        n = int(starts[-1] - starts[0])
        if not len(self):  # a table sized for the text: prose has a new word every 30-60 bytes at first
            self.reserve(n // 32, n // 8)
        cap = n // 3 + 8 * len(starts) + 16  # room for prose; grown for odd text
        return self._walk(buf, starts, breaks, bstarts, max_word_chars, False, spans, cap)

    def _walk(self, buf, starts, breaks, bstarts, max_chars: int, whole: bool, spans: bool, cap: int):
        """``_split.walk`` run to the end, growing the output and the cache whenever it stops for room."""
        nws = np.empty(len(starts) - 1, np.int64)
        offs = np.empty((cap, 2) if spans else (0, 2), np.int64)
        ids = np.empty(cap, np.int32)
        K, cls = kernels(), tables()[0]
        st = np.zeros(11, np.int64)  # the walk's state
        if len(starts) > 1:
            st[K.I], st[K.BI] = starts[0], bstarts[0]
        while why := K.walk(buf, starts, cls, breaks, bstarts, max_chars, whole, offs, ids, nws, self.tab,
                            _shift(len(self.tab) // 2), self.data, self.coff, self.single, self.cnt, st):
            if why == 1:  # out of room for words
                need = 2 * len(ids) + int(st[K.PEND] + st[K.WANT]) // 64 + 16
                ids = grown(ids, need)
                offs = grown(offs, need) if spans else offs
            else:  # out of room for a new word of st[WANT] bytes
                self.reserve(1, int(st[K.WANT]))
        nw = int(st[K.NW])
        return nws, (offs[:nw] if spans else None), ids[:nw]

    def split(self, text: str, max_word_chars: int, segmenter: str):
        """(character spans, ids) of ``text``; new words enter the cache unhashed."""
        _, offsets, ids = self.split_many([text], max_word_chars, segmenter)
        return offsets, ids

    def split_many(self, texts: list[str], max_word_chars: int, segmenter: str, *, spans: bool = True):
        """(words per text, (W, 2) spans (each text's own offsets; None unless ``spans``), ids) of all ``texts``,
        one after the other."""
        buf, starts, ascii = utf8_texts(texts)
        return self.split_utf8(buf, starts, max_word_chars, segmenter, spans=spans, ascii=ascii)

    def intern_utf8(self, buf: np.ndarray, woff: np.ndarray) -> np.ndarray:
        """Cache ids of the (non-empty) words buf[woff[w]:woff[w+1]], each taken whole (the walk's ``whole``)."""
        self.reserve(len(woff) - 1, int(woff[-1] - woff[0]))
        return self._walk(readonly(buf), woff, _EMPTY, np.zeros(len(woff), np.int64), 1, True, False, len(woff) + 16)[2]

    def intern(self, word_list: list[str]) -> np.ndarray:
        """Cache ids of the (non-empty) words."""
        data = [w.encode("utf-8", "surrogatepass") for w in word_list]
        woff = np.zeros(len(data) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, data), np.int64, count=len(data)), out=woff[1:])
        return self.intern_utf8(np.frombuffer(b"".join(data), np.uint8), woff)

    def unhashed_words(self) -> list[str]:
        return self.words(int(self.cnt[1]))

    def utf8(self, start: int = 0, *, markers: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(UTF-8 bytes, offsets from 0) of the cached words from cache id ``start`` on; with ``markers``, all the
        words by word id (the markers, then the cached words; a copy)."""
        nu = int(self.cnt[0])
        a = int(self.coff[start])
        data, woff = self.data[a:self.coff[nu]], self.coff[start:nu + 1] - a
        if not markers:
            return data, woff
        return (np.concatenate([np.frombuffer(MARKERS_UTF8, np.uint8), data]),
                np.concatenate([np.array(MARKERS_UTF8_OFFSETS, np.int64), woff[1:] + len(MARKERS_UTF8)]))

    def words(self, start: int = 0) -> list[str]:
        """The cached words from cache id ``start`` on (word id ``N_MARKERS + start``), in order of arrival."""
        data, woff = self.utf8(start)
        raw = data.tobytes().decode("utf-8", "surrogatepass")
        if len(raw) == len(data):
            cuts = woff.tolist()
        else:  # character offsets: count the bytes that start a character
            chars = np.zeros(len(data) + 1, np.int64)
            np.cumsum((data & 0xC0) != 0x80, out=chars[1:])
            cuts = chars[woff].tolist()
        return [raw[a:b] for a, b in zip(cuts, cuts[1:])]


def words_from_spans(text: str, offsets: np.ndarray, ids: np.ndarray) -> list[str]:
    n = N_MARKERS
    return [MARKERS[i] if i < n else text[s:e] for (s, e), i in zip(offsets.tolist(), ids.tolist())]


def split(text: str, *, max_word_chars: int = 32, segmenter: str = "icu") -> list[str]:
    """Split ``text`` into words; ``join(split(text)) == text`` for every str.

    >>> split("pi is 3.14")
    ['pi', 'is', '<|ws|>', '3', '.', '1', '4']
    """
    offsets, ids = WordCache().split(text, max_word_chars, segmenter)
    return words_from_spans(text, offsets, ids)


def join(words) -> str:
    """Inverse of ``split``: markers become their whitespace, and expected spaces come back.

    >>> join(['U', '.', '<|no_ws|>', 'S', '.', 'x'])
    'U.S. x'
    """
    cls = tables()[0]
    out: list[str] = []
    prev_text = False
    prev_flags = 0
    for w in words:
        m = MARKER_ID.get(w)
        if m is not None:
            out.append(MARKER_TEXT[m])
            prev_text = False
        elif w:
            if prev_text and not (prev_flags & NO_WS_AFTER) and not (cls[ord(w[0])] & NO_WS_BEFORE):
                out.append(" ")
            out.append(w)
            prev_text = True
            prev_flags = cls[ord(w[-1])]
    return "".join(out)
