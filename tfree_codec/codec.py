"""``Codec``: text -> words -> trigram activation patterns, the public face of the library."""
from __future__ import annotations

import functools
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .text import _reference, trigrams, words
from .config import CodecConfig, TfreeError, _icu_version


@dataclass(frozen=True, eq=False)
class Encoded:
    """One encoded text. ``patterns(i)`` (``indices[indptr[i]:indptr[i+1]]``) are word i's sorted active rows;
    ``offsets[i]`` is its (start, end) character span in the text (empty for ``<|no_ws|>``)."""

    text: str
    offsets: np.ndarray  # (n, 2) int64, character offsets
    ids: np.ndarray      # (n,) int32: marker id (< 16), else an internal word-cache id
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
        """Word i's rows (``i`` < 0 counts from the end, as for a list)."""
        n = len(self.ids)
        if not -n <= i < n:
            raise IndexError(f"word {i} out of range ({n} words)")
        i %= n
        return self.indices[self.indptr[i]:self.indptr[i + 1]]

    def __repr__(self) -> str:
        return f"Encoded(words={len(self)}, active={len(self.indices)}, chars={len(self.text)})"


# A word cache is dropped and started afresh past these sizes, so memory stays bounded on endless streams.
MAX_CACHED_WORDS = 1 << 20
MAX_CACHED_ROWS = 1 << 26
# Until this process has loaded the numba kernels, small inputs take the pure-Python reference path (same words,
# same patterns: tested). Loading the kernels costs half a second, and compiling them on the first run after install
# a few seconds, which `tfree inspect hello`, a prompt or `tfree stats` of a small file never wait for. The budget
# bounds what the slow path (~8 us a character) may cost a process before the kernels take over.
PYTHON_PATH_CHARS = 1 << 16
_python_budget = PYTHON_PATH_CHARS


def _not_one_string(items, fn: str, what: str) -> None:
    """A str is iterable too: ``encode_batch("abc")`` would encode the texts "a", "b" and "c"."""
    if isinstance(items, (str, bytes)):
        raise TypeError(f"{fn} takes a list of {what}, not a single {type(items).__name__}")


def _python_path(texts) -> bool:
    """Whether these texts take the pure-Python path (and spend its budget): the kernels are not loaded yet and
    the texts fit what is left of the budget."""
    global _python_budget
    if words.kernels_loaded():
        return False
    n = sum(map(len, texts))
    if n > _python_budget:
        return False
    _python_budget -= n
    return True


@functools.lru_cache(maxsize=8)
def codec_for(config: CodecConfig) -> "Codec":
    """One ``Codec`` per config and process, so its word caches stay warm across the calls of a job (a worker's
    shards, an engine's batches)."""
    return Codec(config)


def load_kernels() -> None:
    """Load the numba kernels now (compiling them on the first run after install), e.g. before timing: from here
    on every input takes them."""
    words.kernels()


def default_num_threads() -> int:
    env = os.environ.get("TFREE_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise TfreeError(f"TFREE_NUM_THREADS must be an integer, not {env!r}") from None
    return os.cpu_count() or 1


CHUNK_TEXTS = 1024
CHUNK_CHARS = 1 << 20


def _chunks(texts: list[str]):
    """Contiguous (lo, hi) ranges of at most CHUNK_TEXTS texts and about CHUNK_CHARS characters."""
    lo, size = 0, 0
    for i, t in enumerate(texts):
        size += len(t)
        if i + 1 - lo == CHUNK_TEXTS or size >= CHUNK_CHARS:
            yield lo, i + 1
            lo, size = i + 1, 0
    if lo < len(texts):
        yield lo, len(texts)


class Lexicon:
    """The distinct words of the texts given to ``add``, with their counts: the fast text -> word ids path.

    Word ids 0..15 are the marker words (``MARKERS``, the codec's marker ids); the other words follow in order of
    first appearance, so ids are a pure function of the texts added so far. ``add`` splits and interns (one kernel
    walk per batch of texts); nothing is hashed or copied per occurrence. Patterns are hashed once per distinct
    word, when asked for (``patterns``). Not thread-safe: one lexicon per thread.

    >>> lex = Codec().lexicon()
    >>> n_words, ids = lex.add(["the cat", "the end"])
    >>> [lex.words()[i] for i in ids]
    ['the', 'cat', 'the', 'end']
    """

    def __init__(self, codec: "Codec"):
        self.codec = codec
        self._cache = words.WordCache()
        self._counts = np.zeros(1 << 12, np.int64)

    def __len__(self) -> int:
        return words.N_MARKERS + len(self._cache)

    def add(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """(words per text (int64), word ids (uint32) of all ``texts`` one after the other); counts the words."""
        _not_one_string(texts, "encode_batch", "texts (use encode for one)")
        c = self.codec.config
        n_words, _, ids = self._cache.split_many(list(texts), c.max_word_chars, c.segmenter, spans=False)
        return n_words, self._count(ids)

    def add_utf8(self, buf: np.ndarray, starts: np.ndarray, *, ascii: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``add`` of the texts buf[starts[d]:starts[d+1]], given as well-formed UTF-8 (uint8 array, int64 byte
        offsets; ``ascii`` if all bytes are known to be ASCII): no Python string per text."""
        c = self.codec.config
        n_words, _, ids = self._cache.split_utf8(buf, starts, c.max_word_chars, c.segmenter, spans=False, ascii=ascii)
        return n_words, self._count(ids)

    def _count(self, ids: np.ndarray) -> np.ndarray:
        n = len(self)
        if len(self._counts) < n:
            grown = np.zeros(max(n, 2 * len(self._counts)), np.int64)
            grown[:len(self._counts)] = self._counts
            self._counts = grown
        self._counts[:n] += np.bincount(ids, minlength=n)
        return ids.view(np.uint32)

    @property
    def counts(self) -> np.ndarray:
        """(len,) int64: how often each word id occurred in the texts added."""
        return self._counts[:len(self)]

    def words(self) -> list[str]:
        """All words by id: the markers, then the text words in order of first appearance."""
        return list(words.MARKERS) + self._cache.words()

    def utf8(self) -> tuple[np.ndarray, np.ndarray]:
        """The words by id as (UTF-8 bytes, offsets (len + 1)), markers included: ``words()`` without a Python
        string per word."""
        return self._cache.utf8(markers=True)

    def patterns(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR (indptr, indices) of every word id's activation pattern."""
        return self.codec.encode_words(self.words())


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
        self._caches: list[words.WordCache] = []  # idle caches; a call borrows one, so threads never share
        self._lock = threading.Lock()

    def _borrow(self) -> words.WordCache:
        with self._lock:
            cache = self._caches.pop() if self._caches else None
        if cache is None or len(cache) > MAX_CACHED_WORDS or cache.rows() > MAX_CACHED_ROWS:
            cache = words.WordCache(*self._markers)
        return cache

    def _give_back(self, cache: words.WordCache) -> None:
        with self._lock:
            self._caches.append(cache)

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
        _not_one_string(word_list, "join", "words")
        return words.join(word_list)

    decode = join  # words -> text, for tiktoken/HF users

    def lexicon(self) -> Lexicon:
        """An empty ``Lexicon``: texts -> word ids, no patterns per occurrence (what ``tfree encode`` stores)."""
        return Lexicon(self)

    # -- patterns -------------------------------------------------------------------------------------------
    def encode(self, text: str) -> Encoded:
        """Words, character offsets and the CSR activation patterns of ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        if _python_path((text,)):
            return self._encode_python(text)
        cache = self._borrow()  # not a context manager: this is per document, and generators cost microseconds
        try:
            offsets, ids = cache.split(text, self.config.max_word_chars, self.config.segmenter)
            return Encoded(text, offsets, ids, *self._gather(cache, ids))
        finally:
            self._give_back(cache)

    def encode_batch(self, texts, *, num_threads: int | None = None) -> list[Encoded]:
        """``[encode(t) for t in texts]``, on ``num_threads`` threads (default: $TFREE_NUM_THREADS or all cores).

        Texts go through the kernels in chunks (a kernel call per chunk, not per text), so many short texts
        cost little more than one long one. The arrays of the results are views into their chunk's arrays
        (up to 1,024 texts or ~1M characters): keeping one result keeps its chunk's memory, so copy the arrays
        of the few you keep from a large batch."""
        _not_one_string(texts, "encode_batch", "texts (use encode for one)")
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"expected str, got {type(t).__name__}")
        if _python_path(texts):
            return [self._encode_python(t) for t in texts]  # a small input: no numba start-up (see encode)
        chunks = list(_chunks(texts))
        n = min(num_threads or default_num_threads(), len(chunks))
        if n <= 1:
            parts = [self._encode_chunk(texts[a:b]) for a, b in chunks]
        else:
            with ThreadPoolExecutor(n) as pool:
                parts = list(pool.map(lambda c: self._encode_chunk(texts[c[0]:c[1]]), chunks))
        return [e for part in parts for e in part]

    def _encode_chunk(self, texts: list[str]) -> list[Encoded]:
        n_words, spans, ids, indptr, indices = self._encode_flat(texts)
        first = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(n_words, out=first[1:])
        # every text's own indptr (n + 1 entries, from 0), all in one array: one numpy pass, not one per text
        doc = np.repeat(np.arange(len(texts)), n_words + 1)
        local = indptr[np.arange(len(doc)) - doc] - indptr[first[doc]]
        w, rows = first.tolist(), indptr[first].tolist()
        return [Encoded(t, spans[w[d]:w[d + 1]], ids[w[d]:w[d + 1]], local[w[d] + d:w[d + 1] + d + 1],
                        indices[rows[d]:rows[d + 1]]) for d, t in enumerate(texts)]

    def encode_words(self, word_list) -> tuple[np.ndarray, np.ndarray]:
        """CSR (indptr, indices) of the given words, each hashed as one word (markers as markers)."""
        _not_one_string(word_list, "encode_words", "words")
        word_list = list(word_list)
        plain = [w for w in word_list if w not in words.MARKER_ID]
        for w in plain:
            if not isinstance(w, str) or not w:
                raise TfreeError(f"cannot encode word {w!r}: words are non-empty strings")
        cache = self._borrow()
        try:
            plain_ids = iter(cache.intern(plain).tolist())
            ids = np.array([words.MARKER_ID[w] if w in words.MARKER_ID else next(plain_ids) for w in word_list], np.int32)
            return self._gather(cache, ids)
        finally:
            self._give_back(cache)

    def _encode_flat(self, texts: list[str], alloc=None):
        """Many texts at once: (words per text, (W, 2) character spans (each text's own), word ids, indptr,
        indices), the words of all texts one after the other. One gather for them all, into ``alloc(n)`` (a
        reusable uint32 buffer) when given: per-text output arrays would be fresh memory, whose page faults cost
        more here than the copy."""
        cache = self._borrow()
        try:
            n_words, spans, flat = cache.split_many(texts, self.config.max_word_chars, self.config.segmenter)
            return n_words, spans, flat, *self._gather(cache, flat, alloc)
        finally:
            self._give_back(cache)

    def _gather(self, cache: words.WordCache, ids: np.ndarray, alloc=None):
        """CSR (indptr, indices) of word ids, hashing the cache's new words first; ``indices`` is ``alloc(n)``
        when given."""
        trigrams.hash_unhashed(cache, *self._hash_args)
        K = words.kernels()
        indptr = np.empty(len(ids) + 1, np.int64)
        K.pattern_indptr(ids, cache.pptr, indptr)
        n = int(indptr[-1])
        indices = alloc(n) if alloc is not None else np.empty(n, np.uint32)
        K.gather(ids, cache.pptr, cache.pidx, indptr, indices)
        return indptr, indices

    def _encode_python(self, text: str) -> Encoded:
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        word_list, spans = _reference.split_with_offsets(text, self.config.max_word_chars, self.config.segmenter)
        v, m, k, fam, seed = self._hash_args
        distinct: dict[str, int] = {}
        ids = np.array([words.MARKER_ID[w] if w in words.MARKER_ID else words.N_MARKERS + distinct.setdefault(w, len(distinct))
                        for w in word_list], np.int32)
        m_indptr, m_indices = self._markers
        pats = [m_indices[m_indptr[i]:m_indptr[i + 1]].tolist() for i in range(words.N_MARKERS)]
        pats += [_reference.word_pattern(w, v, m, k, seed) if fam == "tfree" else trigrams.aleph_word_rows(w, v, m, k)
                 for w in distinct]
        lens = np.array([len(pats[i]) for i in ids.tolist()], np.int64)
        indptr = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(lens, out=indptr[1:])
        indices = np.fromiter((r for i in ids.tolist() for r in pats[i]), np.uint32, count=int(indptr[-1]))
        offsets = np.array(spans, np.int64).reshape(-1, 2)
        return Encoded(text, offsets, ids, indptr, indices, word_list)
