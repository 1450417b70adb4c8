"""Documents -> Arrow record batches of activation patterns: the row format of shards (docs/shards.md).

One row per document: ``id`` (uint64), ``n_bytes`` (uint32, its UTF-8 bytes: the bits-per-byte denominator),
``patterns`` (``list<list<uint32>>``: word -> sorted rows) and, unless left out, ``words`` (``list<string>``).
Nested Arrow lists are already CSR, so batches are built straight from the codec's numpy arrays (no Python
lists) and read back as zero-copy numpy. ``encode_record_batch`` is the same transform as one pure, picklable
function for engines that bring their own parallelism (Ray, Spark, Dask, ``datasets.map``).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
from numba import njit

from ..codec import Codec, codec_for
from ..config import CodecConfig, TfreeError
from ..text.words import MARKERS

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
def _gather_words(u8, spans, ids, marker_data, marker_offsets):
    """Arrow string buffers (int64 offsets, UTF-8 data) of the words u8[spans[i,0]:spans[i,1]], markers by id."""
    n = len(ids)
    n_markers = len(marker_offsets) - 1
    offsets = np.empty(n + 1, np.int64)
    offsets[0] = 0
    for i in range(n):
        if ids[i] < n_markers:
            size = marker_offsets[ids[i] + 1] - marker_offsets[ids[i]]
        else:
            size = spans[i, 1] - spans[i, 0]
        offsets[i + 1] = offsets[i] + size
    data = np.empty(offsets[n], np.uint8)
    for i in range(n):
        p = offsets[i]
        if ids[i] < n_markers:
            s = marker_offsets[ids[i]]
            for j in range(marker_offsets[ids[i] + 1] - s):
                data[p + j] = marker_data[s + j]
        else:
            s = spans[i, 0]
            for j in range(spans[i, 1] - s):
                data[p + j] = u8[s + j]
    return offsets, data


@njit(cache=True, nogil=True)
def _char_to_byte(u8, pos):
    """Byte offsets in UTF-8 ``u8`` of the character offsets ``pos`` (any shape; one walk when sorted)."""
    flat = pos.ravel()
    out = np.empty(flat.shape, np.int64)
    c = 0
    b = 0
    for i in range(len(flat)):
        if flat[i] < c:  # not sorted: walk again from the start
            c = 0
            b = 0
        while c < flat[i]:
            b += 1
            while b < len(u8) and (u8[b] & 0xC0) == 0x80:  # skip continuation bytes 10xxxxxx
                b += 1
            c += 1
        out[i] = b
    return out.reshape(pos.shape)


def _np(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A zero-copy Arrow array over a contiguous numpy array (``pa.array`` would import pandas to check)."""
    values = np.ascontiguousarray(values, type_.to_pandas_dtype())
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(values)])


class Scratch:
    """Reusable buffers for a writer that is done with each batch before it builds the next: fresh large
    arrays cost page faults that are slower here than the copy into them."""

    def __init__(self):
        self.bufs: dict = {}

    def get(self, name: str, size: int, dtype) -> np.ndarray:
        """A buffer of ``size`` items (its contents: whatever was there), grown as needed."""
        buf = self.bufs.get(name)
        if buf is None or len(buf) < size:
            buf = self.bufs[name] = np.empty(max(size, 2 * len(buf) if buf is not None else 0), dtype)
        return buf[:size]


def _check32(total: int, what: str) -> None:
    if total > INT32_MAX:
        raise TfreeError(f"{total:,} {what} do not fit one Arrow batch (int32 offsets): split the input into "
                         "smaller documents")


def batch_from_texts(codec: Codec, texts: list[str], ids, words: bool = True, scratch: Scratch | None = None,
                     text_digest=None, before_reuse=None) -> pa.RecordBatch:
    """One record batch of ``texts`` (one document each) and their document ids.

    With ``scratch`` the batch borrows its buffers: use it before building the next one; ``before_reuse()`` is
    called once the texts are split, just before the buffers are overwritten (a writer drains its last batch
    there, so splitting overlaps the writing). ``text_digest`` (a hashlib object) is fed the batch's UTF-8 text,
    which is at hand here anyway."""
    def alloc(size: int) -> np.ndarray:
        if before_reuse is not None:
            before_reuse()
        return scratch.get("indices", size, np.uint32) if scratch is not None else np.empty(size, np.uint32)

    n = len(texts)
    n_words, spans, word_ids, indptr, indices = codec._encode_flat(texts, alloc)
    doc_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(n_words, out=doc_offsets[1:])
    _check32(len(word_ids), "words")
    _check32(len(indices), "pattern rows")
    inner = pa.ListArray.from_arrays(_np(indptr.astype(np.int32), pa.int32()), _np(indices, pa.uint32()))
    patterns = pa.ListArray.from_arrays(_np(doc_offsets, pa.int32()), inner)

    joined = "".join(texts)
    try:
        u8 = np.frombuffer(joined.encode("utf-8"), np.uint8)
    except UnicodeEncodeError:
        raise TfreeError("text contains a lone surrogate (not valid UTF-8)") from None
    if text_digest is not None:
        text_digest.update(u8)
    n_chars = np.fromiter(map(len, texts), np.int64, count=n)
    doc_chars = np.zeros(n + 1, np.int64)
    np.cumsum(n_chars, out=doc_chars[1:])
    ascii_only = len(u8) == len(joined)  # then characters are bytes
    n_bytes = n_chars if ascii_only else np.diff(_char_to_byte(u8, doc_chars))
    if n and n_bytes.max() > 0xFFFFFFFF:
        raise TfreeError(f"a document of {int(n_bytes.max()):,} bytes is too large (n_bytes is uint32)")
    cols = [_np(np.asarray(ids, np.uint64), pa.uint64()), _np(n_bytes, pa.uint32()), patterns]
    if words:
        if n > 1:  # each document's spans, shifted to offsets in the joined text
            spans = spans + np.repeat(doc_chars[:-1], n_words)[:, None]
        if not ascii_only:
            spans = _char_to_byte(u8, spans)
        str_offsets, data = _gather_words(u8, spans.reshape(-1, 2), word_ids, MARKER_DATA, MARKER_OFFSETS)
        _check32(int(str_offsets[-1]), "bytes of words")
        strings = pa.StringArray.from_buffers(len(str_offsets) - 1, pa.py_buffer(str_offsets.astype(np.int32)),
                                              pa.py_buffer(data))
        cols.append(pa.ListArray.from_arrays(_np(doc_offsets, pa.int32()), strings))
    return pa.RecordBatch.from_arrays(cols, schema=schema(words))


def encode_texts(codec: Codec, texts: list[str], ids, words: bool = True, scratch: Scratch | None = None) -> pa.RecordBatch:
    """Encode ``texts`` (one document each) into one record batch of the shard schema."""
    return batch_from_texts(codec, texts, ids, words, scratch)


# -- one pure function for distributed engines ------------------------------------------------------------------
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
    out = encode_texts(codec_for(as_config(config)), texts, ids, words)
    return out if isinstance(batch, pa.RecordBatch) else pa.Table.from_batches([out])
