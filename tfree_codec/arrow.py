"""Documents -> Arrow record batches of activation patterns: the row format of shards (docs/shards.md).

One row per document: ``id`` (uint64), ``n_bytes`` (uint32, its UTF-8 bytes: the bits-per-byte denominator),
``patterns`` (``list<list<uint32>>``: word -> sorted rows) and, unless left out, ``words`` (``list<string>``).
Nested Arrow lists are already CSR, so batches are built straight from the codec's numpy arrays (no Python
lists) and read back as zero-copy numpy. ``encode_record_batch`` is the same transform as one pure, picklable
function for engines that bring their own parallelism (Ray, Spark, Dask, ``datasets.map``).
"""
from __future__ import annotations

import functools
import json
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
from numba import njit

from .codec import Codec
from .config import CodecConfig, TfreeError
from .words import MARKERS

PATTERNS_TYPE = pa.list_(pa.list_(pa.uint32()))
WORDS_TYPE = pa.list_(pa.string())
INT32_MAX = (1 << 31) - 1

_MARKER_BYTES = [m.encode("utf-8") for m in MARKERS]
MARKER_DATA = np.frombuffer(b"".join(_MARKER_BYTES), np.uint8)
MARKER_OFFSETS = np.cumsum([0] + [len(b) for b in _MARKER_BYTES]).astype(np.int64)


def schema(words: bool = True) -> pa.Schema:
    fields = [pa.field("id", pa.uint64(), nullable=False), pa.field("n_bytes", pa.uint32(), nullable=False),
              pa.field("patterns", PATTERNS_TYPE, nullable=False)]
    if words:
        fields.append(pa.field("words", WORDS_TYPE, nullable=False))
    return pa.schema(fields)


@njit(cache=True, nogil=True)
def _gather_words(u8, starts, ends, ids, marker_data, marker_offsets):
    """Arrow string buffers (int32 offsets, UTF-8 data) of the words u8[starts[i]:ends[i]], markers by id."""
    n = len(ids)
    n_markers = len(marker_offsets) - 1
    offsets = np.empty(n + 1, np.int64)
    offsets[0] = 0
    for i in range(n):
        if ids[i] < n_markers:
            size = marker_offsets[ids[i] + 1] - marker_offsets[ids[i]]
        else:
            size = ends[i] - starts[i]
        offsets[i + 1] = offsets[i] + size
    data = np.empty(offsets[n], np.uint8)
    for i in range(n):
        p = offsets[i]
        if ids[i] < n_markers:
            s = marker_offsets[ids[i]]
            for j in range(marker_offsets[ids[i] + 1] - s):
                data[p + j] = marker_data[s + j]
        else:
            s = starts[i]
            for j in range(ends[i] - s):
                data[p + j] = u8[s + j]
    return offsets, data


def _np(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A zero-copy Arrow array over a contiguous numpy array (``pa.array`` would import pandas to check)."""
    values = np.ascontiguousarray(values, type_.to_pandas_dtype())
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(values)])


def _offsets32(lengths: np.ndarray, what: str) -> np.ndarray:
    """Arrow int32 list offsets (n+1,) from lengths (n,); bounded batches keep them far from overflowing."""
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    if out[-1] > INT32_MAX:
        raise TfreeError(f"{what}: {out[-1]:,} values do not fit one Arrow batch (int32 offsets); "
                         "split the input into smaller documents")
    return out.astype(np.int32)


def batch_from_encoded(encs, texts, ids, words: bool = True) -> pa.RecordBatch:
    """One record batch from ``codec.encode`` results of ``texts`` (same order) and their document ids."""
    n = len(encs)
    n_words = np.fromiter((len(e) for e in encs), np.int64, count=n)
    nnz = np.fromiter((len(e.indices) for e in encs), np.int64, count=n)
    doc_offsets = _offsets32(n_words, "words in one batch")
    # word -> index offsets: each document's local indptr shifted by the indices of the documents before it
    ends = np.concatenate([e.indptr[1:] for e in encs]) if n else np.zeros(0, np.int64)
    word_offsets = np.zeros(len(ends) + 1, np.int64)
    word_offsets[1:] = ends + np.repeat(np.cumsum(nnz) - nnz, n_words)
    if word_offsets[-1] > INT32_MAX:
        raise TfreeError(f"{word_offsets[-1]:,} pattern rows do not fit one Arrow batch (int32 offsets)")
    indices = np.concatenate([e.indices for e in encs]) if n else np.zeros(0, np.uint32)
    inner = pa.ListArray.from_arrays(_np(word_offsets, pa.int32()), _np(indices, pa.uint32()))
    patterns = pa.ListArray.from_arrays(_np(doc_offsets, pa.int32()), inner)

    joined = "".join(texts)
    u8 = np.frombuffer(joined.encode("utf-8"), np.uint8)
    n_chars = np.fromiter((len(t) for t in texts), np.int64, count=n)
    if len(u8) == len(joined):  # ASCII: characters are bytes
        char_to_byte = None
        n_bytes = n_chars
    else:  # byte position of every character start (UTF-8 continuation bytes are 10xxxxxx)
        char_to_byte = np.append(np.flatnonzero((u8 & 0xC0) != 0x80), len(u8))
        char_starts = np.zeros(n + 1, np.int64)
        np.cumsum(n_chars, out=char_starts[1:])
        n_bytes = np.diff(char_to_byte[char_starts])
    if n and n_bytes.max() > 0xFFFFFFFF:
        raise TfreeError(f"a document of {int(n_bytes.max()):,} bytes is too large (n_bytes is uint32)")
    cols = [_np(np.asarray(ids, np.uint64), pa.uint64()), _np(n_bytes, pa.uint32()), patterns]
    if words:
        cols.append(_words_column(encs, n_words, n_chars, char_to_byte, u8, doc_offsets))
    return pa.RecordBatch.from_arrays(cols, schema=schema(words))


def _words_column(encs, n_words, n_chars, char_to_byte, u8, doc_offsets) -> pa.Array:
    n = len(encs)
    if n:
        spans = np.concatenate([e.offsets for e in encs]) + np.repeat(np.cumsum(n_chars) - n_chars, n_words)[:, None]
        word_ids = np.concatenate([e.ids for e in encs])
    else:
        spans, word_ids = np.zeros((0, 2), np.int64), np.zeros(0, np.int32)
    if char_to_byte is not None:
        spans = char_to_byte[spans]
    str_offsets, data = _gather_words(u8, np.ascontiguousarray(spans[:, 0]), np.ascontiguousarray(spans[:, 1]),
                                      word_ids, MARKER_DATA, MARKER_OFFSETS)
    if str_offsets[-1] > INT32_MAX:
        raise TfreeError(f"{str_offsets[-1]:,} bytes of words do not fit one Arrow batch (int32 offsets)")
    strings = pa.StringArray.from_buffers(len(word_ids), pa.py_buffer(str_offsets.astype(np.int32)), pa.py_buffer(data))
    return pa.ListArray.from_arrays(_np(doc_offsets, pa.int32()), strings)


def encode_texts(codec: Codec, texts: list[str], ids, words: bool = True) -> pa.RecordBatch:
    """Encode ``texts`` (one document each) into one record batch of the shard schema."""
    return batch_from_encoded([codec.encode(t) for t in texts], texts, ids, words)


# -- one pure function for distributed engines ------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _codec_for(config: CodecConfig) -> Codec:
    # One codec per process and config, so its word cache stays warm across the engine's batches.
    return Codec(config)


def as_config(config) -> CodecConfig:
    """A CodecConfig from a CodecConfig, a Codec, a dict or a JSON string (all picklable forms of a codec)."""
    if isinstance(config, CodecConfig):
        return config
    if isinstance(config, Codec):
        return config.config
    if isinstance(config, Mapping):
        return CodecConfig.from_dict(dict(config))
    if isinstance(config, (str, bytes)):
        return CodecConfig.from_json(config if isinstance(config, str) else config.decode())
    raise TypeError(f"config must be a CodecConfig, Codec, dict or JSON string, not {type(config).__name__}")


def _column(batch, name: str) -> list:
    if isinstance(batch, (pa.RecordBatch, pa.Table)):
        if name not in batch.schema.names:
            raise TfreeError(f"batch has no column {name!r} (columns: {', '.join(batch.schema.names)})")
        return batch.column(name).to_pylist()
    if isinstance(batch, Mapping):
        if name not in batch:
            raise TfreeError(f"batch has no column {name!r} (columns: {', '.join(map(str, batch))})")
        col = batch[name]
        return col.to_pylist() if hasattr(col, "to_pylist") else list(col)
    raise TypeError(f"batch must be a pyarrow RecordBatch or Table or a dict of columns, not {type(batch).__name__}")


def encode_record_batch(batch, config, text_column: str = "text", *, id_column: str = "id",
                        words: bool = True):
    """Encode the ``text_column`` of ``batch`` into rows of the shard schema (id, n_bytes, patterns[, words]).

    ``batch``: a pyarrow RecordBatch (-> RecordBatch), Table (-> Table) or a dict of columns, as
    ``datasets.map(batched=True)`` passes (-> Table). ``config``: a CodecConfig or its dict/JSON. Ids come from
    ``id_column`` when the batch has one, else they are the rows' positions in the batch. Pure and picklable:
    the result depends only on the arguments.

    >>> import pyarrow as pa
    >>> out = encode_record_batch(pa.record_batch({"text": ["Hello world"]}), CodecConfig())
    >>> out.column("words").to_pylist()
    [['Hello', 'world']]
    """
    texts = _column(batch, text_column)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TfreeError(f"row {i}: {text_column!r} is {type(t).__name__}, not a string")
    has_ids = id_column in (batch.schema.names if isinstance(batch, (pa.RecordBatch, pa.Table)) else batch)
    ids = np.asarray(_column(batch, id_column), np.uint64) if has_ids else np.arange(len(texts), dtype=np.uint64)
    out = encode_texts(_codec_for(as_config(config)), texts, ids, words)
    return out if isinstance(batch, pa.RecordBatch) else pa.Table.from_batches([out])


def config_json(config) -> str:
    """Canonical JSON of a codec config (what engines ship to workers)."""
    return json.dumps(as_config(config).to_dict(), sort_keys=True)
