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

from . import _kernels as K
from ._unicode import NO_WS_AFTER, NO_WS_BEFORE, tables

EOT = "<|endoftext|>"
NO_WS = "<|no_ws|>"
MARKERS: tuple[str, ...] = (
    EOT,
    NO_WS,
    *("<|ws|>" if q == 0 else f"<|{1 << q}<-ws->|>" for q in range(K.N_POW)),
    *("<|\n|>" if q == 0 else f"<|{1 << q}<-\n->|>" for q in range(K.N_POW)),
)
MARKER_TEXT: tuple[str, ...] = ("", "", *(" " * (1 << q) for q in range(K.N_POW)), *("\n" * (1 << q) for q in range(K.N_POW)))
MARKER_ID = {w: i for i, w in enumerate(MARKERS)}
assert len(MARKERS) == K.N_MARKERS

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


def icu_breaks(text: str, cps: np.ndarray) -> np.ndarray:
    """Word boundaries that ICU finds inside letter runs of no-space scripts, as sorted code point offsets."""
    cls, _ = tables()
    runs = K.ns_runs(cps, cls)
    if len(runs) == 0:
        return _EMPTY
    bi = _break_iterator()
    out: list[int] = []
    for s, e in runs.tolist():
        sub = text[s:e]
        bi.setText(sub)
        cuts = list(bi)  # UTF-16 offsets, ending with len(sub) in UTF-16 units
        if cps[s:e].max() > 0xFFFF:  # astral characters take two UTF-16 units: map back to code points
            to_cp = np.full(2 * (e - s) + 1, -1, np.int64)
            u16 = np.concatenate([[0], np.cumsum(1 + (cps[s:e] > 0xFFFF))])
            to_cp[u16] = np.arange(len(u16))
            cuts = [int(to_cp[c]) for c in cuts]
        out.extend(s + c for c in cuts if 0 < c < e - s)
    return np.asarray(out, dtype=np.int64)


def split_spans(text: str, max_word_chars: int, segmenter: str):
    """(cps, offsets, ids, distinct) for ``text``: the raw output of the splitting kernel."""
    cps = code_points(text)
    cls, _ = tables()
    breaks = icu_breaks(text, cps) if segmenter == "icu" else _EMPTY
    offsets, ids, distinct = K.split_words(cps, cls, breaks, max_word_chars)
    return cps, offsets, ids, distinct


def words_from_spans(text: str, offsets: np.ndarray, ids: np.ndarray) -> list[str]:
    n = K.N_MARKERS
    return [MARKERS[i] if i < n else text[s:e] for (s, e), i in zip(offsets.tolist(), ids.tolist())]


def split(text: str, *, max_word_chars: int = 32, segmenter: str = "icu") -> list[str]:
    """Split ``text`` into words; ``join(split(text)) == text`` for every str.

    >>> split("pi is 3.14")
    ['pi', 'is', '<|ws|>', '3', '.', '1', '4']
    """
    _, offsets, ids, _ = split_spans(text, max_word_chars, segmenter)
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
