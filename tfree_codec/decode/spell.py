"""Spelling words that are not in the dictionary from predicted activations (beyond the T-FREE reference).

A word's pattern is the union of the rows of the trigrams of " word " (UTF-8 bytes). So a word can be read back
byte by byte: a beam of prefixes grows one byte at a time, and each new byte adds one trigram, scored by the mean
sigmoid over its m rows (~1 when the trigram is in the pattern, ~|P|/v when not). A beam's score is the sum of the
logs of those means; a prefix that is a whole number of characters may close with the trigram ending in a space,
which makes it a candidate word. The search stops when no open prefix can beat the best closed one (scores only
fall, by a margin), and candidates are ranked by the decoder's own score s(w), so they compare with dictionary
words and a word whose trigrams all occur in the true word ("ming" in "mining") loses to it.

Bytes come from an alphabet of characters (those of the dictionary's words, any script): a trie of their UTF-8
bytes, paired with the bytes of their lower-cased form, since case sharing makes a trigram's rows depend on both.
"""
from __future__ import annotations

import string

import numpy as np

from . import _score
from ..text._unicode import tables
from ..config import TfreeError
from .scorer import _trigram_rule, is_marker, sigmoid, words_code_points

_FLOOR = 1e-4   # a trigram mean below this counts as this (keeps one bad row from ending a beam under noise)
_MARGIN = 2.0   # search score (sum of log means) within which candidates are ranked by s(w); ~ one weak trigram
_MAX_RANKED = 64
_SPACE = 32
_SPACE_ARR = np.array([_SPACE], np.uint64)
_WIDEN = 4      # a spelling that leaves active rows unexplained is searched again with a beam this much wider
_MAX_BEAM = 64


class Speller:
    """Beam search over the characters of ``alphabet`` (words or characters; the dictionary's words by default
    in the decoder)."""

    def __init__(self, codec, alphabet=None):
        self.codec = codec
        c = codec.config
        self.v, self.m = c.vocab_size, c.num_activations
        self._rule = _trigram_rule(c)
        if self._rule is None:
            raise TfreeError(f"spelling does not support the {c.hash!r} hash")
        if alphabet is None:
            alphabet = string.ascii_letters + string.digits
        chars = sorted({ch for w in alphabet if not is_marker(w) for ch in w})
        if not chars:
            raise TfreeError("the spelling alphabet is empty")
        self._build_trie(chars)
        self._check(chars)

    def _build_trie(self, chars: list[str]) -> None:
        """Nodes of the byte trie; edges carry (byte, lower-case byte); a leaf ends a character."""
        lower = tables()[1]
        kids: list[dict] = [{}]
        for ch in chars:
            b = ch.encode("utf-8", "surrogatepass")
            lb = chr(lower[ord(ch)]).encode("utf-8", "surrogatepass")
            node = 0
            for x, lx in zip(b, lb):
                nxt = kids[node].get((x, lx))
                if nxt is None:
                    nxt = kids[node][(x, lx)] = len(kids)
                    kids.append({})
                node = nxt
        # per node: child bytes, lower bytes, child ids (numpy, for vectorised expansion)
        self._edges = [(np.array([e[0] for e in k], np.uint64), np.array([e[1] for e in k], np.uint64),
                        np.array(list(k.values()), np.int64)) for k in kids]
        self._leaf = np.array([not k for k in kids])

    def _check(self, chars: list[str]) -> None:
        """The trigram rule must reproduce the codec's patterns, or spelling would search the wrong rows."""
        probes = ["".join(chars[i % len(chars)] for i in range(j, j + 4)) for j in range(0, min(len(chars), 40), 4)]
        indptr, indices = self.codec.encode_words(probes)
        for i, w in enumerate(probes):
            if not np.array_equal(np.unique(self._rows_of(w)), indices[indptr[i]:indptr[i + 1]]):
                raise TfreeError("spelling's trigram rows do not match this codec's patterns (hash changed?)")

    def _rows_of(self, word: str) -> np.ndarray:
        cps, coff = words_code_points([word])
        _, keys = _score.word_keys(cps, coff, tables()[1], np.ones(1, bool))
        return self._rule(keys).ravel()

    # -- search ------------------------------------------------------------------------------------------------
    def spell(self, logits, *, beam: int = 8, max_bytes: int = 128):
        """The best spelling at each position of (B, v) or (v,) logits: list of (word, s(w)), or None where no
        candidate closed within max_bytes."""
        x = np.asarray(logits, np.float32)
        x = x[None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != self.v:
            raise TfreeError(f"logits must have shape (B, {self.v}), not {tuple(x.shape)}")
        sig = sigmoid(x)
        return [self.spell_sigmoid(sig[b], beam=beam, max_bytes=max_bytes) for b in range(len(sig))]

    def spell_sigmoid(self, sig: np.ndarray, *, beam: int = 8, max_bytes: int = 128):
        """(word, s(w)) for one position's (v,) sigmoids, or None. Scripts of 2-4 UTF-8 bytes per character have
        weak byte trigrams and many prefixes that fit equally well, so a spelling that leaves at least half a
        trigram's rows of the active ones (sigmoid > 1/2) unexplained is searched again with a wider beam."""
        if beam < 1:
            raise TfreeError(f"beam must be at least 1, not {beam}")
        active = sig > 0.5
        while True:
            got = self._search(sig, beam, max_bytes)
            if got is None or beam >= _MAX_BEAM:
                return got
            pattern = self.codec.encode_words([got[0]])[1]
            if active.sum() - active[pattern].sum() < self.m / 2:
                return got
            beam *= _WIDEN

    def _search(self, sig: np.ndarray, beam: int, max_bytes: int):
        # A beam: (byte 2 back, byte 1 back, their lower-case bytes, trie node, score, bytes so far).
        beams = [(None, _SPACE, None, _SPACE, 0, 0.0, b"")]
        done: list[tuple[float, bytes]] = []
        for _ in range(max_bytes):
            keys, src, closing = [], [], []
            for i, (b2, b1, l2, l1, node, _, _) in enumerate(beams):
                bytes_, lbytes, _ = self._edges[node]
                close = b2 is not None and node == 0  # at a character boundary: the word may end here
                if b2 is not None:
                    keys.append(_key(b2, b1, bytes_, l2, l1, lbytes))
                    if close:
                        keys.append(_key(b2, b1, _SPACE_ARR, l2, l1, _SPACE_ARR))
                src.append(np.full(len(bytes_) + close, i))
                closing.append(np.arange(len(bytes_) + close) == len(bytes_))
            src, closing = np.concatenate(src), np.concatenate(closing)
            score = np.array([b[5] for b in beams])[src]
            first = beams[0][0] is None  # the first byte has no trigram of its own yet: keep every first byte
            if not first:
                keys = np.concatenate(keys)
                rows = self._rule(keys)                                          # (n, m)
                score = score + np.log(np.maximum(sig[rows].mean(1), _FLOOR))
            done += [(float(score[j]), beams[src[j]][6]) for j in np.nonzero(closing)[0]]
            grow = np.nonzero(~closing)[0]
            if not first:
                grow = grow[np.argsort(-score[grow], kind="stable")[:beam]]
            edge = np.arange(len(src)) - np.searchsorted(src, src)       # edge number within its beam
            nxt_beams = []
            for j in grow:
                b2, b1, l2, l1, node, _, word = beams[src[j]]
                bytes_, lbytes, child = self._edges[node]
                e, nxt = edge[j], int(child[edge[j]])
                x = int(bytes_[e])
                nxt_beams.append((b1, x, l1, int(lbytes[e]), 0 if self._leaf[nxt] else nxt, float(score[j]),
                                  word + bytes((x,))))
            beams = nxt_beams
            best_done = max((sc for sc, _ in done), default=-np.inf)
            if not beams or (not first and max(b[5] for b in beams) < best_done - _MARGIN):
                break
        return self._rank(sig, done)

    def _rank(self, sig: np.ndarray, done):
        """The closed candidate with the best s(w) among those within _MARGIN of the best search score (a word
        whose trigrams are a subset of the true word's, "ming" for "mining", searches as well but ranks lower)."""
        if not done:
            return None
        done.sort(key=lambda sw: -sw[0])
        near = [w for sc, w in done[:_MAX_RANKED] if sc >= done[0][0] - _MARGIN]
        words = list(dict.fromkeys(w.decode("utf-8", "surrogatepass") for w in near))
        indptr, indices = self.codec.encode_words(words)
        sums = np.add.reduceat(sig[indices].astype(np.float64), indptr[:-1])
        n = np.diff(indptr)
        s = sums / n - (sig.sum(dtype=np.float64) - sums) / np.maximum(self.v - n, 1)
        best = int(np.argmax(s))
        return words[best], float(s[best])


def _key(b2, b1, x, l2, l1, lx) -> np.ndarray:
    """uint64 keys ``tri | ltri << 24`` of trigrams (b2, b1, x) with lower-case bytes (l2, l1, lx)."""
    tri = np.uint64(b2 | b1 << 8) | x << np.uint64(16)
    ltri = np.uint64(l2 | l1 << 8) | lx << np.uint64(16)
    return tri | ltri << np.uint64(24)


def spell(logits, codec, *, alphabet=None, beam: int = 8, max_bytes: int = 128):
    """Spell the word at each position of (B, v) or (v,) logits from the characters of ``alphabet`` (a
    Dictionary, words or characters; ASCII letters and digits by default). -> list of (word, s(w)) or None."""
    return Speller(codec, alphabet).spell(logits, beam=beam, max_bytes=max_bytes)
