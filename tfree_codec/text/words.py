"""Text -> words and back, losslessly (SPEC section 1).

Letter runs are words; every digit, symbol, ``_`` and whitespace character is a word of its own. A single space
between two words is implicit where the T-FREE rules expect one; marker words say where they don't:
``<|ws|>`` (and ``<|2<-ws->|>``, ``<|4<-ws->|>``, ... for runs) is a space where none is expected, ``<|no_ws|>`` an
expected space that is missing, ``<|\\n|>`` (and ``<|2<-\\n->|>``, ...) newlines. User text that merely looks like a
marker splits into ``<``, ``|``, ... and so can never be mistaken for one.

Beyond the reference: runs of scripts written without spaces are segmented into words by ICU's dictionary-based
word break iterator, and letter runs longer than ``max_word_chars`` are cut into pieces.
The walk itself is ``_kernels.split_words``; this module holds the parts that are not hot.
"""
from __future__ import annotations

import threading

import numpy as np

from ._unicode import CLASS_MASK, LETTER_NS, NO_WS_AFTER, NO_WS_BEFORE, tables
from .markers import EOT, MARKER_ID, MARKER_TEXT, MARKERS, N_MARKERS, N_POW, NL_BASE, NO_WS, NO_WS_ID, WS_BASE  # noqa: F401

_K = None


def kernels():
    """The numba kernels, imported on first use: importing numba and loading cached machine code takes most of a
    second, which a short text never needs (see ``Codec.encode``)."""
    global _K
    if _K is None:
        from . import _kernels
        _K = _kernels
    return _K


_EMPTY = np.zeros(0, np.int64)
_local = threading.local()


def code_points(text: str) -> np.ndarray:
    """The code points of ``text`` as uint32 (lone surrogates included: any Python str is accepted)."""
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


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


def icu_breaks(text: str, cps: np.ndarray | None = None) -> np.ndarray:
    """ICU's word boundaries inside the runs of no-space letters of ``text``, as sorted code point offsets."""
    if text.isascii():  # the common case, answered without a pass over the code points
        return _EMPTY
    cps = code_points(text) if cps is None else cps
    return icu_breaks_many(cps, np.array([0, len(cps)], np.int64))[0]


def icu_breaks_many(cps: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ICU's boundaries inside the no-space letter runs of each text cps[starts[d]:starts[d+1]]: (offsets within
    their text, bstarts), text d's being breaks[bstarts[d]:bstarts[d+1]].

    ICU sees only the letter runs that hold a Han, Kana, Thai, Lao, Khmer or Myanmar letter, each on its own, so
    the words of a paragraph never depend on text elsewhere (whole-text ICU also cut ``Base가`` in a document
    that held a kanji far away). All texts go to ICU in one call, as one string in which every other code point
    is a newline and a newline separates the texts: ICU always breaks at a newline and its dictionaries stop
    there, so this is one call per run in effect (tested against ``_reference``, which does call ICU per run)
    while offsets stay put, and per-run or per-text calls cost more in Python than ICU spends segmenting.
    """
    n_texts = len(starts) - 1
    cls, _ = tables()
    K = kernels()
    if not K.has_ns(cps, cls):
        return _EMPTY, np.zeros(n_texts + 1, np.int64)
    mask = K.ns_mask(cps, cls, starts)
    lens = np.diff(starts)
    text_of = np.repeat(np.arange(n_texts), lens)
    spaced = np.full(len(cps) + n_texts, 10, np.uint32)  # text d starts at starts[d] + d: a newline after each
    spaced[np.arange(len(cps)) + text_of] = np.where(mask, cps, 10)
    cuts = icu_cuts(spaced.tobytes().decode("utf-32-le"))
    cuts = cuts[(cuts > 0) & (cuts < len(spaced))]
    d = text_of[np.minimum(cuts - np.searchsorted(starts[1:] + np.arange(n_texts), cuts, side="right"), len(cps) - 1)]
    pos = cuts - d  # back to offsets in cps
    keep = (pos > starts[d]) & (pos < starts[d + 1])
    keep[keep] &= mask[pos[keep] - 1] & mask[pos[keep]]
    d, pos = d[keep], pos[keep]
    bstarts = np.zeros(n_texts + 1, np.int64)
    np.cumsum(np.bincount(d, minlength=n_texts), out=bstarts[1:])
    return pos - starts[d], bstarts


class WordCache:
    """The distinct words seen so far (and, once a codec hashed them, their patterns): see ``_kernels``.

    Not thread-safe: a codec lends each thread its own.
    """

    def __init__(self, marker_indptr: np.ndarray | None = None, marker_indices: np.ndarray | None = None):
        self.tab = np.zeros(2 * 4096, np.uint64)
        self.chars = np.empty(1 << 15, np.uint32)
        self.coff = np.zeros(4096, np.int64)
        self.ascii = np.full(1 << 16, -1, np.int32)  # one-character words of the BMP, by code point
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
        return sum(getattr(self, a).nbytes for a in ("tab", "chars", "coff", "pptr", "pidx") if hasattr(self, a))

    def split(self, text: str, max_word_chars: int, segmenter: str):
        """(cps, offsets, ids) of ``text``; new words enter the cache unhashed."""
        cps = code_points(text)
        cls, _ = tables()
        breaks = icu_breaks(text, cps) if segmenter == "icu" else _EMPTY
        cap = len(cps) // 2 + 16  # about 4 characters a word in prose; the kernel grows it for odd text
        nw, offsets, ids, self.tab, self.chars, self.coff = kernels().split_words(
            cps, cls, breaks, max_word_chars, np.empty((cap, 2), np.int64), np.empty(cap, np.int32),
            self.tab, self.chars, self.coff, self.ascii, self.cnt)
        return cps, offsets[:nw], ids[:nw]

    def split_many(self, texts: list[str], max_word_chars: int, segmenter: str):
        """(words per text, (W, 2) spans (each text's own offsets), ids) of all ``texts``, one after the other."""
        joined = "".join(texts)
        cps = code_points(joined)
        lens = np.fromiter(map(len, texts), np.int64, count=len(texts))
        starts = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(lens, out=starts[1:])
        breaks, bstarts = _EMPTY, np.zeros(len(texts) + 1, np.int64)
        if segmenter == "icu" and not joined.isascii():  # ICU per run, never across texts
            breaks, bstarts = icu_breaks_many(cps, starts)
        cls, _ = tables()
        cap = len(cps) // 2 + 16 * len(texts) + 16
        nws = np.empty(len(texts), np.int64)
        nw, offsets, ids, self.tab, self.chars, self.coff = kernels().split_many(
            cps, starts, cls, breaks, bstarts, max_word_chars, np.empty((cap, 2), np.int64), np.empty(cap, np.int32),
            nws, self.tab, self.chars, self.coff, self.ascii, self.cnt)
        return nws, offsets[:nw], ids[:nw]

    def intern(self, cps: np.ndarray, spans: np.ndarray) -> np.ndarray:
        ids, self.tab, self.chars, self.coff = kernels().intern_spans(cps, spans, self.tab, self.chars, self.coff, self.ascii, self.cnt)
        return ids

    def unhashed_words(self) -> list[str]:
        return self.words(int(self.cnt[1]))

    def words(self, start: int = 0) -> list[str]:
        """The cached words from cache id ``start`` on (word id ``N_MARKERS + start``), in order of arrival."""
        nu = int(self.cnt[0])
        raw = self.chars[self.coff[start]:self.coff[nu]].tobytes().decode("utf-32-le", "surrogatepass")
        cuts = (self.coff[start:nu + 1] - self.coff[start]).tolist()
        return [raw[a:b] for a, b in zip(cuts, cuts[1:])]


def words_from_spans(text: str, offsets: np.ndarray, ids: np.ndarray) -> list[str]:
    n = N_MARKERS
    return [MARKERS[i] if i < n else text[s:e] for (s, e), i in zip(offsets.tolist(), ids.tolist())]


def split(text: str, *, max_word_chars: int = 32, segmenter: str = "icu") -> list[str]:
    """Split ``text`` into words; ``join(split(text)) == text`` for every str.

    >>> split("pi is 3.14")
    ['pi', 'is', '<|ws|>', '3', '.', '1', '4']
    """
    _, offsets, ids = WordCache().split(text, max_word_chars, segmenter)
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
