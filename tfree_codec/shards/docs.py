"""Documents as packed UTF-8 (``Docs``): what the readers yield, the plan pass hashes and cuts into shards, and the
encoder splits into words.

A batch of documents travels as one uint8 array and its byte offsets, never as one Python string per document: at
50-byte lines, making, encoding, measuring and hashing a str per document cost more than splitting the text into
words. ``lines`` cuts a block of a text file into its non-blank lines without decoding it.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..config import TfreeError


class Docs(NamedTuple):
    """Document d is data[offsets[d]:offsets[d + 1]] (well-formed UTF-8); ``ascii``: all bytes are known to be
    ASCII. The offsets need not start at 0 (a slice of a batch shares its data)."""

    data: np.ndarray     # uint8
    offsets: np.ndarray  # int64, (n + 1,)
    ascii: bool = False

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def nbytes(self) -> int:
        return int(self.offsets[-1] - self.offsets[0])

    def lengths(self) -> np.ndarray:
        """UTF-8 bytes of each document."""
        return np.diff(self.offsets)

    def raw(self) -> np.ndarray:
        """The documents' bytes one after the other (a view)."""
        return self.data[self.offsets[0]:self.offsets[-1]]

    def slice(self, lo: int, hi: int) -> "Docs":
        """Documents lo..hi-1 (a view of the same data)."""
        return Docs(self.data, self.offsets[lo:hi + 1], self.ascii)

    def compact(self) -> "Docs":
        """The same documents in data of their own, offsets from 0 (what a worker process is sent)."""
        return Docs(self.raw().copy(), self.offsets - self.offsets[0], self.ascii)

    def texts(self) -> list[str]:
        """The documents as Python strings."""
        raw = self.raw()
        text = raw.tobytes().decode("utf-8")
        cuts = self.offsets - self.offsets[0]
        if len(text) != len(raw):  # character offsets: count the bytes that start a character
            chars = np.zeros(len(raw) + 1, np.int64)
            np.cumsum((raw & 0xC0) != 0x80, out=chars[1:])
            cuts = chars[cuts]
        cuts = cuts.tolist()
        return [text[a:b] for a, b in zip(cuts, cuts[1:])]


EMPTY = Docs(np.zeros(0, np.uint8), np.zeros(1, np.int64), True)


def pack(texts: list[str], where: str = "", first: int = 0) -> Docs:
    """``texts`` as Docs; a lone surrogate (not UTF-8) is one line naming ``where`` and the document (numbered
    from ``first``)."""
    try:
        data = [t.encode("utf-8") for t in texts]
    except UnicodeEncodeError:
        for j, t in enumerate(texts):
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:
                raise TfreeError(f"{where}: document {first + j}: text contains a lone surrogate (not valid UTF-8)") \
                    from None
        raise
    offsets = np.zeros(len(data) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, data), np.int64, count=len(data)), out=offsets[1:])
    joined = b"".join(data)
    return Docs(np.frombuffer(joined, np.uint8), offsets, joined.isascii())


def concat(parts: list[Docs]) -> Docs:
    """The documents of ``parts``, one batch after the other, in data of their own."""
    if not parts:
        return EMPTY
    if len(parts) == 1:
        return parts[0].compact()
    before = np.cumsum([0] + [p.nbytes() for p in parts])  # bytes of the parts before each
    offsets = np.concatenate([[0]] + [p.offsets[1:] - p.offsets[0] + before[k] for k, p in enumerate(parts)])
    return Docs(np.concatenate([p.raw() for p in parts]), offsets.astype(np.int64), all(p.ascii for p in parts))


def sparse_utf8_ok(arr: np.ndarray) -> bool | None:
    """Whether ``arr`` is well-formed UTF-8 (as Python's strict decoder has it), checked with numpy on its non-ASCII
    bytes alone; None when they are more than an eighth of it (the decoder is faster then). Every lead byte must
    be followed by as many continuation bytes as it announces (in the ranges that exclude overlong forms,
    surrogates and code points past U+10FFFF), and those must be all the continuation bytes there are."""
    hi = np.flatnonzero(arr >= 0x80)
    if len(hi) * 8 > len(arr):
        return None
    if not len(hi):
        return True
    b = arr[hi]
    if ((b == 0xC0) | (b == 0xC1) | (b >= 0xF5)).any():
        return False
    lead = b >= 0xC0
    pos, lb = hi[lead], b[lead]
    need = (lb >= 0xC0).astype(np.int64) + (lb >= 0xE0) + (lb >= 0xF0)
    if int(need.sum()) != len(hi) - len(pos) or (pos + need >= len(arr)).any():
        return False
    for k in (1, 2, 3):
        c = arr[np.minimum(pos[need >= k] + k, len(arr) - 1)]
        if ((c < 0x80) | (c > 0xBF)).any():
            return False
    second = arr[np.minimum(pos + 1, len(arr) - 1)]
    bad = (((lb == 0xE0) & (second < 0xA0)) | ((lb == 0xED) & (second > 0x9F)) | ((lb == 0xF0) & (second < 0x90))
           | ((lb == 0xF4) & (second > 0x8F)))
    return not bad.any()


# Python's whitespace (str.isspace, what str.strip() removes) outside ASCII, as UTF-8: a line that starts with one of
# these (or with ASCII whitespace) may be blank and is looked at in Python; every other line holds a non-space.
_ASCII_SPACE = np.zeros(256, np.bool_)
_ASCII_SPACE[list(b"\t\x0b\x0c\r\x1c\x1d\x1e\x1f ")] = True
_WIDE_SPACES = [chr(c).encode("utf-8") for c in range(0x80, 0x3001) if chr(c).isspace()]


def _may_be_blank(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per line arr[starts[i]:ends[i]] (non-empty): whether it may be blank, i.e. its first character is whitespace
    and none of its next few bytes is ASCII but not whitespace (an indented line is seen to hold text here)."""
    n = len(arr)
    b = [arr[np.minimum(starts + k, n - 1)] for k in range(3)]
    maybe = _ASCII_SPACE[b[0]]
    for w in _WIDE_SPACES:
        hit = b[0] == w[0]
        for k in range(1, len(w)):
            hit &= b[k] == w[k]
        maybe |= hit
    idx = np.flatnonzero(maybe)
    for k in range(1, 9):
        c = arr[np.minimum(starts[idx] + k, ends[idx] - 1)]
        idx = idx[(c >= 0x80) | _ASCII_SPACE[c]]  # a byte within the line that is ASCII text: not blank
    out = np.zeros(len(starts), np.bool_)
    out[idx] = True
    return out


def lines(block, ascii: bool = False) -> Docs:
    """The non-blank lines of ``block`` (well-formed UTF-8 bytes), each without its "\\n" and a trailing "\\r": the
    documents of ``text.split("\\n")`` that hold more than whitespace (``str.strip``), as ``--split lines`` reads
    a file. The bytes are copied once, with the separators and blank lines left out."""
    arr = np.frombuffer(block, np.uint8)
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate([[0], nl + 1])
    ends = np.concatenate([nl, [len(arr)]])
    blank = ends == starts
    maybe = np.flatnonzero(~blank)
    maybe = maybe[_may_be_blank(arr, starts[maybe], ends[maybe])] if len(arr) else maybe
    for i in maybe.tolist():  # rare: lines of whitespace, or deeply indented ones
        blank[i] = not arr[starts[i]:ends[i]].tobytes().decode("utf-8").strip()
    keep = np.ones(len(arr), np.bool_)
    keep[nl] = False
    for i in np.flatnonzero(blank & (ends > starts)).tolist():
        keep[starts[i]:ends[i]] = False
    starts, ends = starts[~blank], ends[~blank]
    cr = ends[arr[ends - 1] == 13] - 1 if len(ends) else ends
    keep[cr] = False
    ends[arr[ends - 1] == 13] -= 1
    offsets = np.zeros(len(starts) + 1, np.int64)
    np.cumsum(ends - starts, out=offsets[1:])
    return Docs(arr if keep.all() else arr[keep], offsets, ascii)
