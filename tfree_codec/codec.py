"""``Codec``: text -> words -> trigram activation patterns, the public face of the library."""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import _kernels as K
from . import trigrams, words
from .config import CodecConfig, TfreeError, _icu_version


@dataclass(frozen=True, eq=False)
class Encoded:
    """One encoded text. ``patterns(i)`` (``indices[indptr[i]:indptr[i+1]]``) are word i's sorted active rows;
    ``offsets[i]`` is its (start, end) character span in the text (empty for ``<|no_ws|>``)."""

    text: str
    offsets: np.ndarray  # (n, 2) int64, character offsets
    ids: np.ndarray      # (n,) int32: marker id (< 16) or 16 + index of the word among this text's distinct words
    indptr: np.ndarray   # (n + 1,) int64
    indices: np.ndarray  # (nnz,) uint32
    _words: list = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def words(self) -> list[str]:
        # Built on first use: most training pipelines only need the patterns.
        if self._words is None:
            object.__setattr__(self, "_words", words.words_from_spans(self.text, self.offsets, self.ids))
        return self._words

    def patterns(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i]:self.indptr[i + 1]]

    def __repr__(self) -> str:
        return f"Encoded(words={len(self)}, active={len(self.indices)}, chars={len(self.text)})"


def default_num_threads() -> int:
    env = os.environ.get("TFREE_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise TfreeError(f"TFREE_NUM_THREADS must be an integer, not {env!r}") from None
    return os.cpu_count() or 1


class Codec:
    """A tokenizer-free text codec.

    >>> codec = Codec()
    >>> enc = codec.encode("Hello world")
    >>> enc.words
    ['Hello', 'world']
    >>> codec.join(enc.words)
    'Hello world'
    """

    def __init__(self, config: CodecConfig | None = None):
        if config is None:
            config = CodecConfig()
        if not isinstance(config, CodecConfig):
            raise TypeError(f"config must be a CodecConfig, not {type(config).__name__}")
        self.config = config
        c = config
        if c.segmenter == "icu" and c.segmenter_version != _icu_version():
            warnings.warn(f"codec was made with {c.segmenter_version} but {_icu_version()} is installed: "
                          "text in scripts without spaces may segment differently", stacklevel=2)
        self._hash_args = (c.vocab_size, c.num_activations, c.k_lower, c.hash, c.seed)
        self._markers = trigrams.marker_table(*self._hash_args)

    # -- identity -------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def fingerprint(self) -> str:
        return self.config.fingerprint()

    def __reduce__(self):  # pickle the config; tables are rebuilt in the worker (tiktoken#231)
        return (Codec, (self.config,))

    def __eq__(self, other) -> bool:
        return isinstance(other, Codec) and other.config == self.config

    def __hash__(self) -> int:
        return hash(self.config)

    def __repr__(self) -> str:
        c = self.config
        return f"Codec(v={c.vocab_size}, m={c.num_activations}, k_lower={c.k_lower}, hash={c.hash!r}, fingerprint={self.fingerprint()})"

    def save(self, path: str | os.PathLike) -> None:
        """Write ``codec.json`` (atomically)."""
        self.config.save(path)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Codec":
        return cls(CodecConfig.load(path))

    # -- words ----------------------------------------------------------------------------------------------
    def split(self, text: str) -> list[str]:
        """Lossless words of ``text``: ``codec.join(codec.split(text)) == text``."""
        return words.split(text, max_word_chars=self.config.max_word_chars, segmenter=self.config.segmenter)

    @staticmethod
    def join(word_list) -> str:
        return words.join(word_list)

    decode = join  # words -> text, for tiktoken/HF users

    # -- patterns -------------------------------------------------------------------------------------------
    def encode(self, text: str) -> Encoded:
        """Words, character offsets and the CSR activation patterns of ``text``."""
        cps, offsets, ids, distinct = words.split_spans(text, self.config.max_word_chars, self.config.segmenter)
        return Encoded(text, offsets, ids, *self._gather(cps, ids, distinct, text))

    def encode_batch(self, texts, *, num_threads: int | None = None) -> list[Encoded]:
        """``[encode(t) for t in texts]``, on ``num_threads`` threads (default: $TFREE_NUM_THREADS or all cores)."""
        texts = list(texts)
        n = num_threads or default_num_threads()
        if n <= 1 or len(texts) <= 1:
            return [self.encode(t) for t in texts]
        with ThreadPoolExecutor(min(n, len(texts))) as pool:
            return list(pool.map(self.encode, texts))

    def encode_words(self, word_list) -> tuple[np.ndarray, np.ndarray]:
        """CSR (indptr, indices) of the given words, each hashed as one word (markers as markers)."""
        word_list = list(word_list)
        ids = np.empty(len(word_list), np.int32)
        plain: dict[str, int] = {}
        for i, w in enumerate(word_list):
            m = words.MARKER_ID.get(w)
            if m is None:
                if not isinstance(w, str) or not w:
                    raise TfreeError(f"cannot encode word {w!r}: words are non-empty strings")
                m = K.N_MARKERS + plain.setdefault(w, len(plain))
            ids[i] = m
        joined = "".join(plain)
        cps = words.code_points(joined)
        lens = np.fromiter((len(w) for w in plain), np.int64, count=len(plain))
        ends = np.cumsum(lens)
        spans = np.stack([ends - lens, ends], axis=1) if len(plain) else np.zeros((0, 2), np.int64)
        return self._gather(cps, ids, spans, joined)

    def _gather(self, cps, ids, distinct, text):
        v, m, k, fam, seed = self._hash_args
        d_indptr, d_indices = trigrams.distinct_patterns(cps, distinct, lambda s, e: text[s:e], v, m, k, fam, seed)
        m_indptr, m_indices = self._markers
        tab_indptr = np.concatenate([m_indptr, m_indptr[-1] + d_indptr[1:]])
        tab_indices = np.concatenate([m_indices, d_indices])
        return K.gather_patterns(ids, tab_indptr, tab_indices)
