"""A slow, readable reference of splitting and ``tfree`` hashing, written independently of ``_kernels``.

The tests check that the fast path gives exactly these words and patterns (like tiktoken's ``_educational``).
Character classes come from the same shipped tables (they are data, not logic).
"""
from __future__ import annotations

from ._unicode import (CLASS_MASK, LETTER, LETTER_NS, NEWLINE, NO_WS_AFTER, NO_WS_BEFORE, SPACE, tables)
from .trigrams import tfree_rows
from .words import MARKERS, NO_WS

POWERS = [64, 32, 16, 8, 4, 2, 1]


def _cls(ch: str) -> int:
    return int(tables()[0][ord(ch)])


def _run_markers(n: int, kind: str) -> list[tuple[str, int]]:
    """A run of n spaces or newlines as (marker, length) pieces, biggest power of two first."""
    out = []
    for p in POWERS:
        while n >= p:
            name = ("<|ws|>" if kind == "ws" else "<|\n|>") if p == 1 else f"<|{p}<-{'ws' if kind == 'ws' else chr(10)}->|>"
            out.append((name, p))
            n -= p
    return out


def _atoms(text: str, breaks: set[int], max_chars: int) -> list[tuple[str, str, int]]:
    """(kind, text, start) atoms: 'space' runs, 'newline' runs and 'word's, in order."""
    atoms, i, n = [], 0, len(text)
    while i < n:
        k = _cls(text[i]) & CLASS_MASK
        j = i + 1
        if k in (SPACE, NEWLINE):
            while j < n and text[j] == text[i]:
                j += 1
            atoms.append(("space" if k == SPACE else "newline", text[i:j], i))
        elif k in (LETTER, LETTER_NS):
            while j < n and _cls(text[j]) & CLASS_MASK in (LETTER, LETTER_NS) and j not in breaks and j - i < max_chars:
                j += 1
            atoms.append(("word", text[i:j], i))
        else:
            atoms.append(("word", text[i:j], i))
        i = j
    return atoms


def icu_breaks(text: str) -> set[int]:
    """ICU's boundaries inside each letter run that holds a no-space letter, the run segmented on its own."""
    from .words import icu_cuts

    breaks, i, n = set(), 0, len(text)
    while i < n:
        j = i
        while j < n and _cls(text[j]) & CLASS_MASK in (LETTER, LETTER_NS):
            j += 1
        if any(_cls(c) & CLASS_MASK == LETTER_NS for c in text[i:j]):
            breaks.update(i + int(c) for c in icu_cuts(text[i:j]) if 0 < c < j - i)
        i = max(j, i + 1)
    return breaks


def space_expected(a: str, b: str) -> bool:
    """Whether a single space between text words a and b is implied (SPEC section 1 rules)."""
    return not (_cls(a[-1]) & NO_WS_AFTER) and not (_cls(b[0]) & NO_WS_BEFORE)


def split_with_offsets(text: str, max_word_chars: int = 32, segmenter: str = "icu") -> tuple[list[str], list[tuple[int, int]]]:
    """Words and their (start, end) character spans; a marker spans the whitespace it stands for."""
    breaks = icu_breaks(text) if segmenter == "icu" else set()
    words: list[str] = []
    spans: list[tuple[int, int]] = []

    def run(n: int, at: int, kind: str) -> None:
        for m, length in _run_markers(n, kind):
            words.append(m)
            spans.append((at, at + length))
            at += length

    prev = None       # previous emitted non-space atom: ("word", w) or ("marker", m), None at the start
    spaces, spaces_at = 0, 0
    for kind, s, at in _atoms(text, breaks, max_word_chars) + [("end", "", len(text))]:
        if kind == "space":
            spaces, spaces_at = len(s), at
            continue
        expected = prev is not None and prev[0] == "word" and kind == "word" and space_expected(prev[1], s)
        if spaces == 0 and expected:
            words.append(NO_WS)
            spans.append((at, at))
        elif spaces and not (spaces == 1 and expected):
            run(spaces, spaces_at, "ws")
        spaces = 0
        if kind == "newline":
            run(len(s), at, "nl")
            prev = ("marker", s)
        elif kind == "word":
            words.append(s)
            spans.append((at, at + len(s)))
            prev = ("word", s)
    return words, spans


def split(text: str, max_word_chars: int = 32, segmenter: str = "icu") -> list[str]:
    return split_with_offsets(text, max_word_chars, segmenter)[0]


def join(words: list[str]) -> str:
    text = {m: t for m, t in zip(MARKERS, ["", ""] + [" " * p for p in POWERS[::-1]] + ["\n" * p for p in POWERS[::-1]])}
    out, prev = [], None
    for w in words:
        if w in text:
            out.append(text[w])
            prev = None
        elif w:
            if prev is not None and space_expected(prev, w):
                out.append(" ")
            out.append(w)
            prev = w
    return "".join(out)


def word_pattern(word: str, v: int, m: int, k: int, seed: int) -> list[int]:
    """The ``tfree`` pattern of a (non-marker) word: union over its padded UTF-8 trigrams."""
    lower = tables()[1]
    padded = (" " + word + " ").encode("utf-8", "surrogatepass")
    low = (" " + "".join(chr(lower[ord(c)]) for c in word) + " ").encode("utf-8", "surrogatepass")
    rows: set[int] = set()
    for j in range(len(padded) - 2):
        tri = int.from_bytes(padded[j:j + 3], "little")
        ltri = int.from_bytes(low[j:j + 3], "little")
        shared = tfree_rows(ltri, k, v, seed) if k and ltri != tri else []
        rows.update(shared)
        rows.update(tfree_rows(tri, m - len(shared), v, seed, taken=tuple(shared)))
    return sorted(rows)
