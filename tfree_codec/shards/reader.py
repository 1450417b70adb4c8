"""Reading shard directories written by ``tfree encode`` (format: docs/shards.md).

    ds = ShardDataset("out/")     # checks manifest, codec fingerprint and file sizes
    len(ds), ds.num_shards, ds.codec
    doc = ds[0]                   # doc.words, doc.indices[doc.indptr[i]:doc.indptr[i + 1]], doc.text()
    flat = ds.flat(0)             # zero-copy numpy over the memory-mapped shard, for training loaders
    ds.verify()                   # also re-hashes every shard (sha256)
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..codec import Codec
from ..config import CodecConfig, TfreeError
from ..text.words import join

FORMAT = "tfree-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CODEC = "codec.json"


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}.arrow"


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Document:
    """One document: ``indices[indptr[i]:indptr[i+1]]`` are word i's sorted rows; ``words`` None if not stored."""

    id: int
    n_bytes: int
    indptr: np.ndarray   # (n_words + 1,) int64, starts at 0
    indices: np.ndarray  # (nnz,) uint32
    words: list[str] | None

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def text(self) -> str:
        if self.words is None:
            raise TfreeError("these shards were written with --no-words: the text cannot be rebuilt")
        return join(self.words)


@dataclass(frozen=True, eq=False)
class FlatShard:
    """A shard's documents as flat CSR arrays, zero-copy over the memory-mapped file where Arrow allows.

    Document j's words are ``doc_offsets[j]:doc_offsets[j+1]``; word w's rows are
    ``indices[word_offsets[w]:word_offsets[w+1]]``. Offsets index these arrays as returned (they start at 0 for
    shards written by tfree). int32 when the shard is one Arrow record batch (zero-copy); a shard of several
    batches is concatenated once (a copy) with offsets rebased, int32 while they fit.
    """

    ids: np.ndarray           # (n_docs,) uint64
    n_bytes: np.ndarray       # (n_docs,) uint32, UTF-8 bytes of each document
    doc_offsets: np.ndarray   # (n_docs + 1,) int32/int64, document -> word offsets
    word_offsets: np.ndarray  # (n_words + 1,) int32/int64, word -> index offsets
    indices: np.ndarray       # (nnz,) uint32 activation rows

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_words(self) -> int:
        return int(self.doc_offsets[-1] - self.doc_offsets[0])


def _batch_csr(batch: pa.RecordBatch):
    """(doc_offsets, word_offsets, indices) of one batch, zero-copy; offsets absolute into the child arrays."""
    pat = batch.column("patterns")
    inner = pat.values
    return pat.offsets.to_numpy(), inner.offsets.to_numpy(), inner.values.to_numpy()


def _concat_csr(parts):
    """Concatenate per-batch CSR triples, rebasing offsets so the result starts at 0 (one copy)."""
    docs, words, rows = [], [], []
    w_base = i_base = 0
    for d, w, x in parts:
        w = w[d[0]:d[-1] + 1]
        docs.append(d[:-1] - d[0] + w_base)
        words.append(w[:-1] - w[0] + i_base)
        rows.append(x[w[0]:w[-1]])
        w_base += int(d[-1] - d[0])
        i_base += int(w[-1] - w[0])
    dtype = np.int32 if max(w_base, i_base) < 1 << 31 else np.int64
    docs.append(np.array([w_base]))
    words.append(np.array([i_base]))
    return (np.concatenate(docs).astype(dtype), np.concatenate(words).astype(dtype),
            np.concatenate(rows) if rows else np.zeros(0, np.uint32))


class ShardDataset:
    """A directory of shards: ``len``, iteration, ``ds[i]``, ``ds.flat(k)``, ``ds.codec``, ``ds.verify()``."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        mpath = os.path.join(self.path, MANIFEST)
        if not os.path.isdir(self.path):
            raise TfreeError(f"{self.path!r} is not a directory")
        if not os.path.isfile(mpath):
            raise TfreeError(f"{self.path}: no {MANIFEST} (not a shard directory, or its encode has not finished: "
                             "rerun the same tfree encode command)")
        try:
            with open(mpath, encoding="utf-8") as f:
                m = json.load(f)
        except (OSError, ValueError) as e:
            raise TfreeError(f"{mpath}: unreadable manifest ({e})") from None
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise TfreeError(f"{mpath}: not a {FORMAT} manifest")
        if m.get("format_version") != FORMAT_VERSION:
            raise TfreeError(f"{mpath}: format_version {m.get('format_version')!r} is not supported "
                             f"(this tfree reads {FORMAT_VERSION})")
        self.manifest = m
        self.config = CodecConfig.load(os.path.join(self.path, CODEC))
        if self.config.fingerprint() != m["codec_fingerprint"]:
            raise TfreeError(f"{self.path}: codec.json (fingerprint {self.config.fingerprint()}) does not match the "
                             f"manifest ({m['codec_fingerprint']})")
        self.shards = m["shards"]
        for s in self.shards:
            p = os.path.join(self.path, s["file"])
            if not os.path.isfile(p):
                raise TfreeError(f"{self.path}: shard {s['file']} is missing")
            if os.path.getsize(p) != s["size"]:
                raise TfreeError(f"{self.path}: shard {s['file']} is {os.path.getsize(p):,} bytes, "
                                 f"the manifest says {s['size']:,}")
        self.has_words = bool(m["options"]["words"])
        self._starts = np.cumsum([0] + [s["documents"] for s in self.shards])
        self._cache: OrderedDict = OrderedDict()  # (kind, k) -> open table or FlatShard, a few at a time

    def __getstate__(self):  # for DataLoader workers: ship the manifest, never the memory maps
        return {**self.__dict__, "_cache": OrderedDict()}

    def _cached(self, key, make):
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = self._cache[key] = make()
        while len(self._cache) > 8:
            self._cache.popitem(last=False)
        return value

    # -- sizes ------------------------------------------------------------------------------------------------
    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def num_words(self) -> int:
        return int(self.manifest["words"])

    @property
    def num_bytes(self) -> int:
        return int(self.manifest["utf8_bytes"])

    @functools.cached_property
    def codec(self) -> Codec:
        return Codec(self.config)

    def __repr__(self) -> str:
        return (f"ShardDataset({self.path!r}, documents={len(self):,}, words={self.num_words:,}, "
                f"shards={self.num_shards}, codec={self.config.fingerprint()})")

    # -- access -----------------------------------------------------------------------------------------------
    def shard_path(self, k: int) -> str:
        return os.path.join(self.path, self.shards[k]["file"])

    def table(self, k: int) -> pa.Table:
        """Shard k as an Arrow table over a memory map (no copy)."""
        if not 0 <= k < self.num_shards:
            raise IndexError(f"shard {k} out of range (0..{self.num_shards - 1})")
        return self._cached(("table", k), lambda: read_stream(self.shard_path(k)))

    def flat(self, k: int) -> FlatShard:
        """Shard k as flat CSR numpy arrays (see FlatShard) for training loaders."""
        return self._cached(("flat", k), lambda: self._flat(k))

    def _flat(self, k: int) -> FlatShard:
        t = self.table(k)
        batches = [b for b in t.to_batches() if b.num_rows]
        if len(batches) == 1:
            csr = _batch_csr(batches[0])
        else:
            csr = _concat_csr([_batch_csr(b) for b in batches])
        ids, n_bytes = t.column("id"), t.column("n_bytes")
        ids = ids.chunk(0).to_numpy() if ids.num_chunks == 1 else ids.to_numpy()
        n_bytes = n_bytes.chunk(0).to_numpy() if n_bytes.num_chunks == 1 else n_bytes.to_numpy()
        return FlatShard(ids, n_bytes, *csr)

    def locate(self, i: int) -> tuple[int, int]:
        """(shard, row) of document i."""
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"document {i} out of range ({n} documents)")
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        return k, i - int(self._starts[k])

    def __getitem__(self, i: int) -> Document:
        k, r = self.locate(int(i))
        f = self.flat(k)
        a, b = int(f.doc_offsets[r]), int(f.doc_offsets[r + 1])
        indptr = f.word_offsets[a:b + 1].astype(np.int64)
        indices = f.indices[indptr[0]:indptr[-1]]
        words = self.table(k).column("words")[r].as_py() if self.has_words else None
        return Document(int(f.ids[r]), int(f.n_bytes[r]), indptr - indptr[0], indices, words)

    def __iter__(self):
        for k in range(self.num_shards):
            for r in range(self.shards[k]["documents"]):
                yield self[int(self._starts[k]) + r]

    # -- integrity --------------------------------------------------------------------------------------------
    def verify(self, progress=None) -> dict:
        """Re-hash every shard and check its contents against the manifest; raise TfreeError naming each bad
        shard. ``progress(k)`` is called after each shard."""
        bad = []
        for k, s in enumerate(self.shards):
            try:
                problem = self._check_shard(k, s)
            except (TfreeError, pa.ArrowException, OSError) as e:
                problem = str(e)
            if problem:
                bad.append(f"{s['file']}: {problem}")
            if progress:
                progress(k)
        if bad:
            raise TfreeError(f"{len(bad)} of {self.num_shards} shards failed verification: " + "; ".join(bad))
        return {"shards": self.num_shards, "documents": len(self), "words": self.num_words, "utf8_bytes": self.num_bytes}

    def _check_shard(self, k: int, s: dict) -> str | None:
        if file_sha256(self.shard_path(k)) != s["sha256"]:
            return "sha256 mismatch (the file is corrupt or was modified)"
        return check_shard_file(self.shard_path(k), s, self.config.vocab_size, self.has_words)


def read_stream(path: str) -> pa.Table:
    """An Arrow IPC stream file as a table over a memory map."""
    try:
        with pa.ipc.open_stream(pa.memory_map(path)) as reader:
            return reader.read_all()
    except pa.ArrowInvalid as e:
        raise TfreeError(f"{path}: not a readable Arrow IPC stream ({e})") from None


def count_words(t: pa.Table) -> int:
    return sum(int(d[-1] - d[0]) for d, _, _ in map(_batch_csr, t.to_batches()) if len(d))


def check_shard_file(path: str, entry: dict, vocab_size: int, words: bool) -> str | None:
    """What is wrong with the shard at ``path`` against its manifest/plan entry, or None."""
    from .rows import schema

    try:
        t = read_stream(path)
    except TfreeError as e:
        return str(e).split(": ", 1)[-1]
    if not t.schema.equals(schema(words)):
        return "unexpected schema"
    if t.num_rows != entry["documents"]:
        return f"{t.num_rows} documents, expected {entry['documents']}"
    ids = t.column("id").to_numpy()
    if not np.array_equal(ids, np.arange(entry["first_id"], entry["first_id"] + len(ids), dtype=np.uint64)):
        return "document ids out of sequence"
    if int(t.column("n_bytes").to_numpy().sum(dtype=np.uint64)) != entry["utf8_bytes"]:
        return "UTF-8 byte count differs"
    for b in t.to_batches():
        x = _batch_csr(b)[2]
        if len(x) and int(x.max()) >= vocab_size:
            return f"a pattern row is >= vocab_size {vocab_size}"
    if "words" in entry and count_words(t) != entry["words"]:
        return f"{count_words(t)} words, expected {entry['words']}"
    return None
