"""Shard format 2: documents as word ids into lexicons (docs/shards.md).

A shard is two Arrow IPC stream files written by one process on its own: ``shard-….arrow`` holds one row per
document (``n_bytes``, ``words``: its word ids; document ids are the manifest's ``first_id`` + row, uint16 when the shard's lexicon has fewer than 65,536
words, else uint32) and ``shard-….lexicon.arrow`` the shard's lexicon (``word``, ``count``): the marker words
first (ids 0..15), then the shard's words in order of first appearance. ``merge`` folds the shard lexicons, in
shard order, into the dataset's ``lexicon.arrow`` (same columns): global ids, also by first appearance.

Activation patterns are not stored: a lexicon's patterns are hashed when it is loaded (hashing is deterministic
and the codec is fingerprinted), which costs well under a second per 100k words and keeps shards smaller than
their text. Everything read here is checked (``check_*``) before a kernel or a torch op sees it.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from ..codec import Codec, Lexicon
from ..config import TfreeError
from ..text.markers import MARKER_ID, MARKERS, MARKERS_UTF8, MARKERS_UTF8_OFFSETS, N_MARKERS
from ..text.words import WordCache
from .docs import Docs, pack

FORMAT = "tfree-shards"
FORMAT_VERSION = 2
LEXICON = "lexicon.arrow"
LEXICON_SCHEMA = pa.schema([pa.field("word", pa.string(), nullable=False),
                            pa.field("count", pa.uint64(), nullable=False)])
UINT16_WORDS = 1 << 16


def doc_schema(id_type: pa.DataType) -> pa.Schema:
    # No id column: a document's id is its shard's first_id + its row (8 bytes a document saved, 0.13x the text of
    # English cut into lines).
    return pa.schema([pa.field("n_bytes", pa.uint32(), nullable=False), pa.field("words", pa.list_(id_type), nullable=False)])


def lexicon_name(shard_file: str) -> str:
    return shard_file[:-len(".arrow")] + ".lexicon.arrow"


def _np(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A zero-copy Arrow array over a contiguous numpy array."""
    values = np.ascontiguousarray(values, type_.to_pandas_dtype())
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(values)])


def stream_buffer(batch: pa.RecordBatch, metadata: dict | None = None) -> pa.Buffer:
    """One record batch as an Arrow IPC stream, in memory (a buffer: writing and hashing it copy nothing)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema.with_metadata(metadata or {})) as w:
        w.write_batch(batch)
    return sink.getvalue()


def stream_bytes(batch: pa.RecordBatch, metadata: dict | None = None) -> bytes:
    """One record batch as the bytes of an Arrow IPC stream."""
    return stream_buffer(batch, metadata).to_pybytes()


# -- writing: documents -> (documents batch, lexicon batch) ----------------------------------------------------------
def encode_documents(codec: Codec, docs, batches=None, on_batch=None, hashed: bool = True):
    """(documents batch, lexicon batch, UTF-8 lengths, sha256 of the UTF-8 text one document after the other) of one
    shard. ``docs``: a ``Docs`` batch or a list of strings. ``batches`` are (lo, hi) ranges the documents are split
    in (bounded memory); ``on_batch()`` runs after each one. Without ``hashed`` the sha256 is of nothing."""
    if not isinstance(docs, Docs):
        docs = pack(list(docs))
    lex = Lexicon(codec)
    digest, n_words, ids = hashlib.sha256(), [], []
    for lo, hi in batches or [(0, len(docs))]:
        part = docs.slice(lo, hi)
        if hashed:
            digest.update(part.raw())
        nw, w = lex.add_utf8(part.data, part.offsets, ascii=part.ascii)
        n_words.append(nw)
        ids.append(w)
        if on_batch is not None:
            on_batch()
    n_bytes = docs.lengths()
    if len(n_bytes) and n_bytes.max() > 0xFFFFFFFF:
        raise TfreeError(f"a document of {int(n_bytes.max()):,} bytes is too large (n_bytes is uint32)")
    offsets = np.zeros(len(docs) + 1, np.int64)
    np.cumsum(np.concatenate(n_words) if n_words else np.zeros(0, np.int64), out=offsets[1:])
    if offsets[-1] >= 1 << 31:
        raise TfreeError(f"{int(offsets[-1]):,} words do not fit one shard (int32 offsets): use smaller shards")
    id_type = pa.uint16() if len(lex) < UINT16_WORDS else pa.uint32()
    flat = np.concatenate(ids) if ids else np.zeros(0, np.uint32)
    words = pa.ListArray.from_arrays(_np(offsets, pa.int32()), _np(flat, id_type))
    batch = pa.RecordBatch.from_arrays([_np(n_bytes, pa.uint32()), words], schema=doc_schema(id_type))
    return batch, lexicon_batch_utf8(*lex.utf8(), lex.counts), n_bytes, digest


def lexicon_batch(words: list[str], counts) -> pa.RecordBatch:
    packed = pack(words)
    return lexicon_batch_utf8(packed.data, packed.offsets, counts)


def lexicon_batch_utf8(data: np.ndarray, offsets: np.ndarray, counts) -> pa.RecordBatch:
    """The lexicon batch of the words data[offsets[w]:offsets[w+1]] (offsets from 0) and their counts."""
    if offsets[-1] >= 1 << 31:
        raise TfreeError("a lexicon over 2 GB of words does not fit one Arrow batch: use smaller shards")
    # from buffers: pa.array(list) would import pandas to look at the list, a second in a fresh process
    col = pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets.astype(np.int32)),
                                      pa.py_buffer(np.ascontiguousarray(data)))
    return pa.RecordBatch.from_arrays([col, _np(np.asarray(counts), pa.uint64())], schema=LEXICON_SCHEMA)


# -- reading and checking --------------------------------------------------------------------------------------------
_DTYPES = {pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.uint64(): np.uint64, pa.int32(): np.int32,
           pa.int64(): np.int64}


def array_numpy(a: pa.Array) -> np.ndarray:
    """A null-free numeric Arrow array as a zero-copy numpy view (its own ``to_numpy`` imports pandas, a second in
    a fresh process)."""
    dtype = np.dtype(_DTYPES[a.type])
    return np.frombuffer(a.buffers()[1], dtype, count=len(a), offset=a.offset * dtype.itemsize) if len(a) else \
        np.zeros(0, dtype)


def column_numpy(t: pa.Table, name: str) -> np.ndarray:
    """A numeric column as numpy, zero-copy when it is one chunk."""
    chunks = [array_numpy(c) for c in t.column(name).chunks]
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else np.zeros(0, np.uint64)


def list_numpy(a: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (len+1,) int32, values) of a list array, zero-copy; offsets index ``values`` as returned."""
    offsets = np.frombuffer(a.buffers()[1], np.int32, count=len(a) + 1, offset=a.offset * 4)
    return offsets, array_numpy(a.values)


def read_stream(path: str) -> pa.Table:
    """An Arrow IPC stream file as a table over a memory map."""
    try:
        with pa.ipc.open_stream(pa.memory_map(path)) as reader:
            return reader.read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise TfreeError(f"{path}: not a readable Arrow IPC stream ({e})") from None


def read_lexicon(path: str) -> tuple[list[str], np.ndarray]:
    """(words, counts) of a lexicon file, checked (``check_lexicon``): TfreeError naming the file if damaged."""
    t = read_stream(path)
    if not t.schema.remove_metadata().equals(LEXICON_SCHEMA):
        raise TfreeError(f"{path}: not a tfree lexicon (unexpected columns)")
    try:
        words = t.column("word").to_pylist()
    except (pa.ArrowException, UnicodeDecodeError) as e:
        raise TfreeError(f"{path}: damaged lexicon ({e})") from None
    counts = column_numpy(t, "count")
    problem = check_lexicon(words)
    if problem:
        raise TfreeError(f"{path}: damaged lexicon ({problem})")
    return words, counts


def read_lexicon_utf8(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(UTF-8 bytes, offsets, counts) of a lexicon file's words, no Python string per word; checked as far as
    ``check_lexicon`` goes without interning the words (``Merger.add_file`` checks that they are distinct)."""
    t = read_stream(path)
    if not t.schema.remove_metadata().equals(LEXICON_SCHEMA):
        raise TfreeError(f"{path}: not a tfree lexicon (unexpected columns)")
    try:
        col = t.column("word").combine_chunks()
        col.validate(full=True)  # offsets in bounds, valid UTF-8
    except pa.ArrowException as e:
        raise TfreeError(f"{path}: damaged lexicon ({e})") from None
    _, offsets, data = col.buffers()
    offsets = np.frombuffer(offsets, np.int32, count=len(col) + 1, offset=col.offset * 4).astype(np.int64)
    data = np.frombuffer(data, np.uint8) if data is not None and data.size else np.zeros(0, np.uint8)
    n = len(MARKERS_UTF8)
    head = offsets[:N_MARKERS + 1] - offsets[0]
    if len(offsets) <= N_MARKERS or tuple(head.tolist()) != MARKERS_UTF8_OFFSETS or \
            data[offsets[0]:offsets[0] + n].tobytes() != MARKERS_UTF8:
        raise TfreeError(f"{path}: damaged lexicon (it does not start with the marker words)")
    starts, lens = offsets[N_MARKERS:-1], np.diff(offsets[N_MARKERS:])
    # a word that is a marker starts with "<" (which is a word of its own in text): look at those in Python
    odd = np.flatnonzero((lens == 0) | (data[np.minimum(starts, max(len(data) - 1, 0))] == ord("<")))
    if any(lens[i] == 0 or data[starts[i]:starts[i] + lens[i]].tobytes().decode() in MARKER_ID for i in odd.tolist()):
        raise TfreeError(f"{path}: damaged lexicon (empty or repeated words)")
    return data, offsets, column_numpy(t, "count")


def check_lexicon(words: list[str]) -> str | None:
    """What is wrong with a lexicon's words, or None: the markers first, then distinct non-empty non-markers."""
    if words[:N_MARKERS] != list(MARKERS):
        return "it does not start with the marker words"
    rest = words[N_MARKERS:]
    if not all(rest) or len(set(words)) != len(words):
        return "empty or repeated words"
    return None


def check_documents(t: pa.Table, entry: dict, n_lexicon: int) -> str | None:
    """What is wrong with a shard's documents table against its manifest/plan entry and lexicon size, or None."""
    names = [f.name for f in t.schema]
    if names != ["n_bytes", "words"] or not t.schema.remove_metadata().equals(doc_schema(t.schema.field("words").type.value_type)):
        return "unexpected schema"
    if t.schema.field("words").type.value_type not in (pa.uint16(), pa.uint32()):
        return "unexpected word id type"
    if t.num_rows != entry["documents"]:
        return f"{t.num_rows} documents, expected {entry['documents']}"
    try:
        for b in t.to_batches():
            b.validate(full=True)  # list offsets monotone and inside the ids
    except pa.ArrowException as e:
        return f"malformed arrays ({e})"
    if int(column_numpy(t, "n_bytes").sum(dtype=np.uint64)) != entry["utf8_bytes"]:
        return "UTF-8 byte count differs"
    n_words = 0
    for b in t.to_batches():
        offsets, values = list_numpy(b.column("words"))
        x = values[offsets[0]:offsets[-1]]
        if len(x) and int(x.max()) >= n_lexicon:
            return f"a word id is >= the lexicon's {n_lexicon} words"
        n_words += len(x)
    if "words" in entry and n_words != entry["words"]:
        return f"{n_words} words, expected {entry['words']}"
    return None


# -- merging shard lexicons ------------------------------------------------------------------------------------------
class Merger:
    """Shard lexicons folded, in order, into one: global ids by first appearance, counts summed; ``add`` returns
    the shard's local -> global id map. ``shards``: how many lexicons were folded."""

    def __init__(self):
        self._cache = WordCache()
        self._counts = np.zeros(N_MARKERS, np.int64)
        self.shards = 0

    def add(self, words: list[str], counts=None) -> np.ndarray:
        gids = np.concatenate([np.arange(N_MARKERS), self._cache.intern(words[N_MARKERS:])]).astype(np.int64)
        if counts is not None:
            self._count(gids, counts)
        return gids

    def add_file(self, path: str) -> np.ndarray:
        """``add`` of a shard lexicon file (``read_lexicon_utf8``), refused in one line if damaged."""
        return self._fold(*read_lexicon_utf8(path), path)

    def add_batch(self, batch: pa.RecordBatch) -> np.ndarray:
        """``add`` of a shard's lexicon batch as ``encode_documents`` made it (in memory: not read back)."""
        col = batch.column("word")
        _, offsets, data = col.buffers()
        offsets = np.frombuffer(offsets, np.int32, count=len(col) + 1, offset=col.offset * 4).astype(np.int64)
        return self._fold(np.frombuffer(data, np.uint8), offsets, array_numpy(batch.column("count")), "lexicon")

    def _fold(self, data: np.ndarray, offsets: np.ndarray, counts: np.ndarray, where: str) -> np.ndarray:
        gids = self._cache.intern_utf8(data, offsets[N_MARKERS:])
        if len(np.unique(gids)) != len(gids):
            raise TfreeError(f"{where}: damaged lexicon (empty or repeated words)")
        gids = np.concatenate([np.arange(N_MARKERS), gids]).astype(np.int64)
        self._count(gids, counts)
        self.shards += 1
        return gids

    def _count(self, gids: np.ndarray, counts) -> None:
        n = N_MARKERS + len(self._cache)
        if len(self._counts) < n:
            self._counts = np.concatenate([self._counts, np.zeros(n - len(self._counts), np.int64)])
        np.add.at(self._counts, gids, np.asarray(counts, np.int64))

    def __len__(self) -> int:
        return N_MARKERS + len(self._cache)

    def words(self) -> list[str]:
        return list(MARKERS) + self._cache.words()

    def utf8(self) -> tuple[np.ndarray, np.ndarray]:
        """``words()`` as (UTF-8 bytes, offsets from 0)."""
        return self._cache.utf8(markers=True)

    @property
    def counts(self) -> np.ndarray:
        return self._counts[:len(self)]
