"""``Dictionary``: the words a decoder can produce, with their counts and activation patterns (SPEC section 4).

>>> d = Dictionary.from_texts(codec, ["the cat sat on the mat"], min_count=1)
>>> d.index("cat"), d.index("dog")         # -> (id, -1)
>>> d.extend(["dog"])                      # prompt words, at run time: only the new words are hashed
>>> d.save("dict.arrow"); Dictionary.load("dict.arrow", codec)

The marker words (``MARKERS``) always come first, with ids equal to the codec's marker ids; the other words
follow by falling count (ties by the word). Patterns are a CSR matrix: word i's sorted rows are
``indices[indptr[i]:indptr[i+1]]``. On disk: one Arrow IPC file (columns ``word``, ``count``, ``pattern``) whose
schema metadata holds the codec config, its fingerprint and a checksum, all checked on load.
"""
from __future__ import annotations

import collections
import hashlib
import os
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa

from ..codec import Codec
from ..config import CodecConfig, TfreeError, atomic_write
from ..text.words import MARKERS

FORMAT = "tfree-dictionary"
FORMAT_VERSION = 1
_READ_CHUNK = 1 << 20  # characters of a text file split at a time (cut at a newline): one split is one
# uninterruptible kernel call, and Ctrl-C must stop a build within a second on a loaded machine


def prior_features(counts) -> np.ndarray:
    """(W, 2) float64: log(count + 1) and [count == 0] of every word, what the calibrated prior weighs."""
    c = np.asarray(counts, np.float64)
    return np.stack([np.log1p(c), c == 0], 1)


def count_prior(counts, weight: float, zero_weight: float = 0.0) -> np.ndarray:
    """The calibrated word prior ``weight * log(count + 1) + zero_weight * [count == 0]`` (float32; train/evaluate's
    Calibration fits both). The second term prices the words a dictionary holds but its training text never showed
    (a continued model's source words, a word list's additions) apart from those seen once."""
    return (prior_features(counts) @ np.array([weight, zero_weight])).astype(np.float32)


class Dictionary:
    """Words, counts and CSR patterns under one codec. Append-only: ``extend`` adds words at the end."""

    def __init__(self, codec: Codec, words: Iterable[str], counts=None, indptr=None, indices=None):
        words = list(words)
        if list(words[:len(MARKERS)]) != list(MARKERS):
            raise TfreeError("a dictionary starts with the marker words (use Dictionary.from_counts)")
        self.codec = codec
        self.words: list[str] = words
        self._index = {w: i for i, w in enumerate(words)}
        if len(self._index) != len(words):
            dup = next(w for w, c in collections.Counter(words).items() if c > 1)
            raise TfreeError(f"duplicate word in dictionary: {dup!r}")
        if indptr is None:
            indptr, indices = codec.encode_words(words)
        self._counts = np.asarray(counts if counts is not None else np.zeros(len(words)), np.int64).copy()
        self._indptr = np.asarray(indptr, np.int64).copy()
        self._indices = np.asarray(indices, np.uint32).copy()
        if len(self._counts) != len(words) or len(self._indptr) != len(words) + 1:
            raise TfreeError("dictionary arrays do not match the number of words")
        self._n = len(words)
        self._scorer = None  # built by decode.Decoder on first use, grown by extend
        # the checksum of the file this was loaded from and its words (the first ``file_words``; extend adds more):
        # what the on-disk index cache (index.py) is keyed by. None for a dictionary built in memory.
        self.file_checksum: str | None = None
        self.file_words = 0

    # -- access (views stay valid until the next extend) -------------------------------------------------------
    @property
    def counts(self) -> np.ndarray:
        return self._counts[:self._n]

    @property
    def indptr(self) -> np.ndarray:
        return self._indptr[:self._n + 1]

    @property
    def indices(self) -> np.ndarray:
        return self._indices[:self._indptr[self._n]]

    @property
    def config(self) -> CodecConfig:
        return self.codec.config

    def fingerprint(self) -> str:
        return self.codec.fingerprint()

    def __len__(self) -> int:
        return self._n

    def __contains__(self, word) -> bool:
        return word in self._index

    def __getitem__(self, i: int) -> str:
        return self.words[i]

    def __iter__(self):
        return iter(self.words)

    def __repr__(self) -> str:
        return f"Dictionary(words={len(self):,}, active={len(self.indices):,}, codec={self.fingerprint()})"

    def index(self, word: str) -> int:
        """The id of ``word``, or -1 if it is not in the dictionary."""
        return self._index.get(word, -1)

    def pattern(self, i: int) -> np.ndarray:
        return self._indices[self._indptr[i]:self._indptr[i + 1]]

    # -- building ----------------------------------------------------------------------------------------------
    @classmethod
    def from_counts(cls, codec: Codec, counts: Mapping[str, int], *, min_count: int = 1,
                    max_words: int | None = None) -> "Dictionary":
        """The marker words, then the words counted at least ``min_count`` times by falling count (ties by the
        word), at most ``max_words`` of them (markers not included)."""
        if min_count < 1:
            raise TfreeError(f"min_count must be at least 1, not {min_count}")
        if max_words is not None and max_words < 0:
            raise TfreeError(f"max_words must be non-negative, not {max_words}")
        markers = set(MARKERS)
        items = sorted(((c, w) for w, c in counts.items() if c >= min_count and w not in markers),
                       key=lambda cw: (-cw[0], cw[1]))
        if max_words is not None:
            items = items[:max_words]
        words = list(MARKERS) + [w for _, w in items]
        return cls(codec, words, [counts.get(w, 0) for w in MARKERS] + [c for c, _ in items])

    @classmethod
    def from_lexicon(cls, codec: Codec, words, counts, *, min_count: int = 1,
                     max_words: int | None = None) -> "Dictionary":
        """From a lexicon's words and counts (``Lexicon``, or a shard directory's ``lexicon.arrow``): no text is
        read, only the kept words are hashed."""
        words = list(words)
        counts = np.asarray(counts, np.int64)
        if len(counts) != len(words):
            raise TfreeError(f"a lexicon of {len(words)} words has {len(counts)} counts")
        return cls.from_counts(codec, dict(zip(words, counts.tolist())), min_count=min_count, max_words=max_words)

    @classmethod
    def from_shards(cls, path, **kw) -> "Dictionary":
        """From a shard directory's dataset lexicon (``tfree encode`` output), under the shards' codec."""
        ds = _open_shards(os.fspath(path))
        return cls.from_lexicon(ds.codec, ds.lexicon_words, ds.lexicon_counts, **kw)

    @classmethod
    def from_texts(cls, codec: Codec, texts_or_paths, *, min_count: int = 1, max_words: int | None = None,
                   progress: bool = False) -> "Dictionary":
        """Count the words of texts: ``str`` items are text, ``os.PathLike`` items are UTF-8 files (read in
        pieces) or shard directories (their ``words`` column)."""
        return cls.from_counts(codec, count_words(codec, texts_or_paths, progress=progress),
                               min_count=min_count, max_words=max_words)

    @classmethod
    def from_files(cls, paths, codec: Codec | None = None, **kw) -> "Dictionary":
        """From text files and shard directories (str or PathLike). Shards bring their codec; a given codec
        must match it."""
        paths = [os.fspath(p) for p in paths]
        for p in paths:
            if not os.path.exists(p):
                raise TfreeError(f"cannot read {p!r}: no such file or directory")
        shard_codecs = {_open_shards(p).config for p in paths if os.path.isdir(p)}
        if len(shard_codecs) > 1 or (shard_codecs and codec is not None and codec.config not in shard_codecs):
            raise TfreeError("the inputs were encoded with different codecs (shard codec.json vs the codec options)")
        if codec is None:
            codec = Codec(shard_codecs.pop()) if shard_codecs else Codec()
        import pathlib  # noqa: PLC0415

        return cls.from_texts(codec, [pathlib.Path(p) for p in paths], **kw)

    def merge(self, other: "Dictionary") -> "Dictionary":
        """A new dictionary with the words of both, counts summed, re-ranked by count."""
        self._check_codec(other.codec, "merge")
        counts = collections.Counter(dict(zip(self.words, self.counts.tolist())))
        counts.update(dict(zip(other.words, other.counts.tolist())))
        words = list(MARKERS) + sorted((w for w in counts if w not in set(MARKERS)), key=lambda w: (-counts[w], w))
        # patterns are copied from whichever side has the word: nothing is re-hashed
        src = [(self, self.index(w)) if w in self._index else (other, other.index(w)) for w in words]
        sizes = np.array([d._indptr[i + 1] - d._indptr[i] for d, i in src], np.int64)
        indptr = np.zeros(len(words) + 1, np.int64)
        np.cumsum(sizes, out=indptr[1:])
        indices = np.concatenate([d.pattern(i) for d, i in src]) if words else np.zeros(0, np.uint32)
        return Dictionary(self.codec, words, [counts[w] for w in words], indptr, indices)

    def extend(self, words: Iterable[str], counts=None) -> np.ndarray:
        """Add the words not yet present (count 0, or ``counts``) at the end; return the ids of all ``words``.
        Cheap: only new words are hashed and storage grows geometrically, so adding prompt words each step is fine."""
        words = list(words)
        new = list(dict.fromkeys(w for w in words if w not in self._index))
        if new:
            indptr, indices = self.codec.encode_words(new)
            n0, nnz0 = self._n, int(self._indptr[self._n])
            self._counts = _fit(self._counts, n0 + len(new))
            self._indptr = _fit(self._indptr, n0 + len(new) + 1)
            self._indices = _fit(self._indices, nnz0 + len(indices))
            self._counts[n0:n0 + len(new)] = 0
            self._indptr[n0 + 1:n0 + len(new) + 1] = nnz0 + indptr[1:]
            self._indices[nnz0:nnz0 + len(indices)] = indices
            for w in new:
                self._index[w] = len(self.words)
                self.words.append(w)
            self._n += len(new)
        ids = np.array([self._index[w] for w in words], np.int64)
        if counts is not None:
            np.add.at(self._counts, ids, np.asarray(counts, np.int64))
        return ids

    def _check_codec(self, codec: Codec, what: str) -> None:
        if codec.fingerprint() != self.fingerprint():
            raise TfreeError(f"cannot {what}: the dictionaries were built with different codecs "
                             f"({self.fingerprint()} vs {codec.fingerprint()})")

    # -- inspection --------------------------------------------------------------------------------------------
    def collisions(self) -> list[list[str]]:
        """Groups of words (>= 2) with identical patterns: no decoder can tell them apart."""
        keys = [self.pattern(i).tobytes() for i in range(len(self))]
        groups = collections.defaultdict(list)
        for w, k in zip(self.words, keys):
            groups[k].append(w)
        return [g for g in groups.values() if len(g) > 1]

    def neighbours(self, word: str, k: int = 10) -> list[tuple[str, int, float]]:
        """The k words whose patterns overlap ``word``'s most, by Jaccard similarity: (word, shared rows,
        jaccard). ``word`` need not be in the dictionary."""
        i = self.index(word)
        pat = self.pattern(i) if i >= 0 else self.codec.encode_words([word])[1]
        shared = _overlaps(self.indptr, self.indices, pat.astype(np.int64), self.config.vocab_size)
        sizes = np.diff(self.indptr)
        jac = shared / np.maximum(sizes + len(pat) - shared, 1)
        if i >= 0:
            jac[i] = -1
        top = np.argsort(-jac, kind="stable")[:k]
        return [(self.words[j], int(shared[j]), float(jac[j])) for j in top if jac[j] > 0]

    def info(self) -> dict:
        sizes = np.diff(self.indptr)
        return {"words": len(self), "markers": len(MARKERS), "active": int(len(self.indices)),
                "rows_per_word_mean": float(sizes.mean()), "rows_per_word_max": int(sizes.max()),
                "total_count": int(self.counts.sum()), "collisions": sum(len(g) - 1 for g in self.collisions()),
                "codec": self.config.to_dict(), "fingerprint": self.fingerprint()}

    # -- files -------------------------------------------------------------------------------------------------
    def _checksum(self) -> str:
        h = hashlib.sha256()
        for w in self.words:
            h.update(w.encode("utf-8", "surrogatepass") + b"\0")
        for a in (self.counts, self.indptr, self.indices):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write one Arrow IPC file, atomically."""
        raw = [w.encode("utf-8", "surrogatepass") for w in self.words]
        try:
            col = pa.array([r.decode("utf-8") for r in raw], pa.string())
        except UnicodeDecodeError:  # a lone surrogate: keep the bytes
            col = pa.array(raw, pa.binary())
        offsets = pa.array(self.indptr.astype(np.int32 if len(self.indices) < 1 << 31 else np.int64))
        pattern = (pa.ListArray if offsets.type == pa.int32() else pa.LargeListArray).from_arrays(
            offsets, pa.array(self.indices, pa.uint32()))
        meta = {"tfree.format": FORMAT, "tfree.format_version": str(FORMAT_VERSION),
                "tfree.codec": self.config.to_json(indent=None), "tfree.fingerprint": self.fingerprint(),
                "tfree.checksum": self._checksum()}
        table = pa.table({"word": col, "count": pa.array(self.counts, pa.int64()), "pattern": pattern})
        table = table.replace_schema_metadata(meta)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        atomic_write(path, sink.getvalue().to_pybytes())

    @classmethod
    def load(cls, path: str | os.PathLike, codec: Codec | None = None) -> "Dictionary":
        """Read a dictionary; with ``codec``, refuse one built with another codec."""
        path = os.fspath(path)
        try:
            with pa.memory_map(path) as src:
                table = pa.ipc.open_file(src).read_all()
            meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        except FileNotFoundError:
            raise TfreeError(f"cannot read dictionary {path!r}: no such file") from None
        except (OSError, pa.ArrowException, UnicodeDecodeError) as e:
            raise TfreeError(f"cannot read dictionary {path!r}: not a tfree dictionary file ({e})") from None
        if meta.get("tfree.format") != FORMAT:
            raise TfreeError(f"{path}: not a tfree dictionary file")
        if meta.get("tfree.format_version") != str(FORMAT_VERSION):
            raise TfreeError(f"{path}: dictionary format_version {meta.get('tfree.format_version')!r} is not "
                             f"supported (this tfree reads {FORMAT_VERSION})")
        try:
            config = CodecConfig.from_json(meta.get("tfree.codec", ""))
        except TfreeError as e:
            raise TfreeError(f"{path}: {e}") from None
        if config.fingerprint() != meta.get("tfree.fingerprint"):
            raise TfreeError(f"{path}: the stored codec config does not match its fingerprint (corrupt file?)")
        if codec is not None and codec.fingerprint() != config.fingerprint():
            raise TfreeError(f"{path} was built with codec {config.fingerprint()}, not this codec "
                             f"{codec.fingerprint()}: rebuild it with `tfree dict build`")
        try:
            table.validate(full=True)  # offsets in range, valid UTF-8: before any decoding reads them
            col = table.column("word").combine_chunks()
            words = ([b.decode("utf-8", "surrogatepass") for b in col.to_pylist()] if pa.types.is_binary(col.type)
                     else col.to_pylist())
            counts = table.column("count").to_numpy()
            pat = table.column("pattern").combine_chunks()
            indptr = pat.offsets.to_numpy().astype(np.int64)
            indices = pat.values.to_numpy()[indptr[0]:indptr[-1]]
            indptr -= indptr[0]
        except (KeyError, pa.ArrowException, AttributeError, UnicodeDecodeError, ValueError, SystemError) as e:
            raise TfreeError(f"{path}: missing or malformed dictionary columns (the file is corrupt: "
                             f"{str(e).splitlines()[0][:100] if str(e) else type(e).__name__})") from None
        _check_arrays(path, config.vocab_size, counts, indptr, indices)
        try:
            d = cls(codec or Codec(config), words, counts, indptr, indices)
        except TfreeError as e:
            raise TfreeError(f"{path}: {e} (the file is corrupt)") from None
        if d._checksum() != meta.get("tfree.checksum"):
            raise TfreeError(f"{path}: checksum mismatch (the file is corrupt)")
        d.file_checksum, d.file_words = meta["tfree.checksum"], len(d)
        return d


def _check_arrays(path: str, v: int, counts: np.ndarray, indptr: np.ndarray, indices: np.ndarray) -> None:
    """Refuse arrays no kernel may index with: rows >= v, offsets that fall or leave the rows, negative counts."""
    if counts.dtype.kind not in "iu" or (len(counts) and counts.min() < 0):
        raise TfreeError(f"{path}: negative or non-integer word counts (the file is corrupt)")
    if len(indptr) == 0 or indptr[0] != 0 or (np.diff(indptr) < 0).any() or indptr[-1] != len(indices):
        raise TfreeError(f"{path}: pattern offsets are not increasing within the rows (the file is corrupt)")
    if len(indices) and int(indices.max()) >= v:
        raise TfreeError(f"{path}: a pattern row is >= v = {v} (the file is corrupt)")


def _fit(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` with room for n items (doubling), contents kept."""
    if len(a) >= n:
        return a
    b = np.empty(max(n, 2 * len(a)), a.dtype)
    b[:len(a)] = a
    return b


def _overlaps(indptr, indices, rows, v):
    """Shared rows of every word with the row set ``rows``."""
    mark = np.zeros(v, bool)
    mark[rows] = True
    hit = mark[indices].astype(np.int64)
    return np.add.reduceat(np.append(hit, 0), indptr[:-1]) * (np.diff(indptr) > 0)


def _open_shards(path: str):
    try:
        from ..shards.reader import ShardDataset  # noqa: PLC0415
    except ImportError:  # pragma: no cover - shards are part of the package
        raise TfreeError(f"{path} is a directory, and this tfree cannot read shard directories") from None
    return ShardDataset(path)


def count_words(codec: Codec, texts_or_paths, *, progress: bool = False) -> collections.Counter:
    """Word counts of texts (``str``), UTF-8 files (``os.PathLike``) and shard directories (PathLike dirs, or
    any object whose documents have ``.words``)."""
    counts: collections.Counter = collections.Counter()
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(unit="B", unit_scale=True, desc="counting words", disable=None)  # None: quiet off a terminal
    for item in texts_or_paths:
        if isinstance(item, str):
            counts.update(codec.split(item))
            if bar is not None:
                bar.update(len(item.encode("utf-8", "surrogatepass")))
        elif isinstance(item, os.PathLike) and os.path.isdir(item):
            _count_shards(codec, _open_shards(os.fspath(item)), counts, bar)
        elif isinstance(item, os.PathLike):
            _count_file(codec, os.fspath(item), counts, bar)
        elif hasattr(item, "__iter__"):  # a dataset of documents with .words
            _count_shards(codec, item, counts, bar)
        else:
            raise TfreeError(f"cannot count words of {type(item).__name__} (expected str text, a path or shards)")
    if bar is not None:
        bar.close()
    return counts


def _count_file(codec: Codec, path: str, counts: collections.Counter, bar) -> None:
    with open(path, encoding="utf-8", newline="") as f:  # newline="": \r\n must reach the codec as written
        carry = ""
        while True:
            piece = f.read(_READ_CHUNK)
            text = carry + piece
            # Cut before the last run of newlines, so no word and no newline run is split across pieces.
            cut = text.rfind("\n") if piece else len(text)
            while 0 < cut < len(text) and text[cut - 1] == "\n":
                cut -= 1
            if cut <= 0 and piece:
                if len(text) < 4 * _READ_CHUNK:
                    carry = text
                    continue
                cut = len(text)  # one enormous line: cut anywhere
            counts.update(codec.split(text[:cut]))
            if bar is not None:
                bar.update(len(text[:cut].encode("utf-8", "surrogatepass")))
            carry = text[cut:]
            if not piece:
                break


def _count_shards(codec: Codec, ds, counts: collections.Counter, bar) -> None:
    config = getattr(ds, "config", None)
    if config is not None and config != codec.config:
        raise TfreeError(f"shards {getattr(ds, 'path', '')!r} were encoded with codec {config.fingerprint()}, "
                         f"not {codec.fingerprint()}")
    if hasattr(ds, "lexicon_words"):  # a shard directory: its lexicon already holds the counts
        counts.update(dict(zip(ds.lexicon_words, ds.lexicon_counts.tolist())))
        if bar is not None:
            bar.update(ds.num_bytes)
        return
    for doc in ds:
        counts.update(doc.words)
