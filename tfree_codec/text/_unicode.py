"""Per-code-point tables that drive word splitting and case sharing.

They ship as data (``assets/unicode.npz``) instead of being computed from the running Python, because
``unicodedata`` and ``regex`` change with their versions and a codec must split the same text the same way on
every machine. ``python -m tfree_codec.text._unicode`` regenerates them (and bumps ``TABLE_VERSION`` by hand).

Each code point gets one byte: a class in the low 3 bits, and two flags saying whether a space is *expected*
after / before a word that ends / starts with it (the T-FREE whitespace rules, SPEC section 1).
"""
from __future__ import annotations

import functools
import os

import numpy as np

TABLE_VERSION = "u1"
_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "unicode.npz")

# classes (low 3 bits)
OTHER = 0       # punctuation, symbols, controls, unassigned: one word per code point
LETTER = 1      # \w minus digits and "_", in scripts written with spaces
LETTER_NS = 2   # letters of scripts written without spaces (Han, Kana, Thai, Lao, Khmer, Myanmar): segmented
DIGIT = 3       # \d: one word per digit
SPACE = 4       # U+0020: implicit between words, else <|ws|> markers
NEWLINE = 5     # U+000A: <|\n|> markers
WHITESPACE = 6  # other White_Space (tab, CR, NBSP, ...): one word per code point
CLASS_MASK = 7
NO_WS_AFTER = 8    # no space is expected after a word ending in this code point
NO_WS_BEFORE = 16  # no space is expected before a word starting with this code point

# The reference's rules (reference.md section 1), extended: every whitespace character, not only " " and "\n",
# and the no-space scripts (so Japanese words need no <|no_ws|> between them).
_NWA_ASCII = "#$=-+*/'\"\\(<[]~^&@%_"
_NWB_ASCII = ".,:;?!=-+*/'\"\\)>]~^&@%_"
NS_SCRIPTS = ("Han", "Hiragana", "Katakana", "Thai", "Lao", "Khmer", "Myanmar")


@functools.lru_cache(maxsize=None)
def tables() -> tuple[np.ndarray, np.ndarray]:
    """(classes uint8[0x110000], lower uint32[0x110000]) from the shipped file."""
    with np.load(_PATH) as z:
        runs_start, runs_value = z["runs_start"], z["runs_value"]
        lower_from, lower_to = z["lower_from"], z["lower_to"]
    cls = np.repeat(runs_value, np.diff(np.append(runs_start, 0x110000))).astype(np.uint8)
    lower = np.arange(0x110000, dtype=np.uint32)
    lower[lower_from] = lower_to
    cls.setflags(write=False)
    lower.setflags(write=False)
    return cls, lower


def _generate() -> None:  # pragma: no cover - run by hand when the Unicode data should move
    import unicodedata

    import regex

    n = 0x110000
    chars = [chr(c) for c in range(n)]
    cls = np.zeros(n, dtype=np.uint8)

    def mark(pattern: str, value: int, flags_only: bool = False) -> None:
        rx = regex.compile(pattern)
        for c in range(n):
            if 0xD800 <= c < 0xE000:
                continue
            if rx.match(chars[c]):
                cls[c] = (cls[c] | value) if flags_only else value

    mark(r"[^\W\d_]", LETTER)
    ns = "".join(rf"\p{{scx={s}}}" for s in NS_SCRIPTS)
    mark(rf"(?=[{ns}])[^\W\d_]", LETTER_NS | NO_WS_AFTER | NO_WS_BEFORE)
    mark(rf"(?=[{ns}])[\W_]", NO_WS_AFTER | NO_WS_BEFORE, flags_only=True)
    mark(r"\d", DIGIT | NO_WS_BEFORE)
    mark(r"\p{White_Space}", WHITESPACE | NO_WS_AFTER | NO_WS_BEFORE)
    cls[0x20] = SPACE | NO_WS_AFTER | NO_WS_BEFORE
    cls[0x0A] = NEWLINE | NO_WS_AFTER | NO_WS_BEFORE
    for ch in _NWA_ASCII:
        cls[ord(ch)] |= NO_WS_AFTER
    for ch in _NWB_ASCII:
        cls[ord(ch)] |= NO_WS_BEFORE
    # Beyond ASCII, punctuation follows its Unicode category: dashes bind both ways, opening brackets and quotes
    # bind to what follows, closing ones and other punctuation (…, ¡, 、) to what precedes; the right single quote
    # is mostly an apostrophe (Emma’s). Fullwidth punctuation (，：（）) sits between CJK words with no space.
    for c in range(0x80, n):
        if cls[c] & CLASS_MASK != OTHER:
            continue
        cat = unicodedata.category(chars[c])
        if cat == "Pd" or c == 0x2019 or (cat[0] == "P" and unicodedata.east_asian_width(chars[c]) in "FW"):
            cls[c] |= NO_WS_AFTER | NO_WS_BEFORE
        elif cat in ("Ps", "Pi") or chars[c] in "¿¡":
            cls[c] |= NO_WS_AFTER
        elif cat in ("Pe", "Pf", "Po"):
            cls[c] |= NO_WS_BEFORE

    # Simple lowercase only where it keeps the UTF-8 length, so a word and its lower form have aligned trigrams.
    lf, lt = [], []
    for c in range(n):
        if 0xD800 <= c < 0xE000:
            continue
        low = chars[c].lower()
        if low != chars[c] and len(low) == 1 and len(low.encode()) == len(chars[c].encode()):
            lf.append(c)
            lt.append(ord(low))
    change = np.flatnonzero(np.diff(cls.astype(np.int16), prepend=-1))
    np.savez_compressed(_PATH, runs_start=change.astype(np.uint32), runs_value=cls[change],
                        lower_from=np.array(lf, np.uint32), lower_to=np.array(lt, np.uint32),
                        source=np.array(f"regex {regex.__version__}"))
    print(f"wrote {_PATH}: {len(change)} class runs, {len(lf)} lowercase pairs")


if __name__ == "__main__":  # pragma: no cover
    _generate()
