"""Inputs -> documents: files, directories, globs and stdin; plain text, JSONL, Parquet and Arrow; gz/xz/zst.

Every reader is strict UTF-8 and deterministic: the same inputs always give the same documents in the same
order, which is what lets shard boundaries be planned once and a killed run be resumed.
"""
from __future__ import annotations

import codecs
import glob
import gzip
import io
import json
import lzma
import os
import re
import sys
from collections.abc import Iterator
from itertools import islice

import numpy as np

from ..config import TfreeError
from .docs import Docs, lines, pack, sparse_utf8_ok

COMPRESSED = {".gz": "gzip", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
FORMATS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
           ".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".ipc": "arrow", ".feather": "arrow"}
SPLITS = ("none", "lines", "paragraphs")
# A paragraph ends at a line break followed by one or more blank (whitespace-only) lines. Both splitters cut at
# "\n" (a regex that starts with a literal is several times faster) and a piece's trailing "\r" is dropped after.
_SPLITTERS = {"lines": lambda text: text.split("\n"), "paragraphs": re.compile(r"\n(?:[ \t\f\v\r]*\n)+").split}
BLOCK = 1 << 24  # bytes read at a time when splitting plain text
CHUNK = 4096     # documents packed at a time from readers that make Python strings (JSONL, paragraphs)


def expand_inputs(inputs) -> list[str]:
    """Files named by ``inputs``: files as given, directories walked recursively (sorted, hidden entries
    skipped; a ``datasets`` ``save_to_disk`` folder gives its Arrow files), globs expanded (sorted), ``-`` for
    stdin, URLs (``s3://``, ``gs://``, ``hf://``, ``https://``, ...) through fsspec the same way. Duplicates are
    kept once, in first-seen order."""
    out: list[str] = []
    seen: set[str] = set()  # a list scan per file would be quadratic in a folder of many files
    for spec in inputs:
        if is_url(spec):
            found = expand_url(spec)
        elif spec == "-" or os.path.isfile(spec):
            found = [spec]
        elif os.path.isdir(spec):
            found = _walk(spec)
            if not found:
                raise TfreeError(f"directory {spec!r} holds no files")
        elif glob.has_magic(spec):
            found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not found:
                raise TfreeError(f"no files match {spec!r}")
        else:
            raise TfreeError(f"cannot read {spec!r}: no such file or directory")
        for p in found:
            if p not in seen:
                seen.add(p)
                out.append(p)
    if not out:
        raise TfreeError("no inputs given")
    return out


def _walk(top: str) -> list[str]:
    """Every non-hidden file below ``top`` in sorted order, except that a ``save_to_disk`` folder stands for its
    Arrow files, in the order its state.json lists them."""
    keyed = []
    for root, dirs, files in os.walk(top):
        saved = saved_dataset_files(root)
        if saved is not None:
            dirs[:] = []
            keyed += [((os.path.join(root, ""), i), p) for i, p in enumerate(saved)]
        else:
            keyed += [((os.path.join(root, f), 0), os.path.join(root, f)) for f in files if not f.startswith(".")]
    return [p for _, p in sorted(keyed)]


def saved_dataset_files(folder: str) -> list[str] | None:
    """The data files of a Hugging Face ``Dataset.save_to_disk`` folder (state.json + dataset_info.json + Arrow
    IPC stream files), in order; None if ``folder`` is not one. A saved ``DatasetDict`` is refused: which split
    to encode is the user's choice."""
    state = os.path.join(folder, "state.json")
    if os.path.isfile(os.path.join(folder, "dataset_dict.json")):
        try:
            with open(os.path.join(folder, "dataset_dict.json"), encoding="utf-8") as f:
                splits = ", ".join(map(str, json.load(f).get("splits", [])))
        except (OSError, ValueError, AttributeError):
            splits = "?"
        raise TfreeError(f"{folder} is a saved DatasetDict (splits {splits}): give one split's folder, "
                         f"e.g. {os.path.join(folder, splits.split(', ')[0])}")
    if not (os.path.isfile(state) and os.path.isfile(os.path.join(folder, "dataset_info.json"))):
        return None
    try:
        with open(state, encoding="utf-8") as f:
            names = [d["filename"] for d in json.load(f)["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TfreeError(f"{state}: not a readable datasets state.json ({type(e).__name__}: {e})") from None
    for n in names:
        if not isinstance(n, str) or os.path.basename(n) != n or n.startswith("."):
            raise TfreeError(f"{state}: unexpected data file name {n!r}")
        if not os.path.isfile(os.path.join(folder, n)):
            raise TfreeError(f"{state} lists {n}, which is missing")
    return [os.path.join(folder, n) for n in names]


# -- remote inputs (fsspec, the optional [remote] extra) ----------------------------------------------------------
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(spec: str) -> bool:
    return bool(_URL.match(spec))


def _filesystem(url: str):
    """(fsspec filesystem, path within it) of ``url``; one line when fsspec or the scheme's package is missing."""
    try:
        import fsspec  # noqa: PLC0415
    except ImportError:
        raise TfreeError(f"{url}: reading URLs needs fsspec (pip install 'tfree-codec[remote]')") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:  # e.g. s3fs or gcsfs not installed, an unknown scheme
        raise TfreeError(f"{url}: {str(e).splitlines()[0]}") from None


def expand_url(url: str) -> list[str]:
    """The files a URL names: itself, every non-hidden file below it (a directory), or a glob's matches; sorted."""
    fs, path = _filesystem(url)
    try:
        if glob.has_magic(path):
            found = [p for p in fs.glob(path) if fs.isfile(p)]
        elif fs.isdir(path):
            found = [p for p in fs.find(path) if not any(part.startswith(".") for part in p[len(path):].split("/"))]
        elif fs.exists(path):
            return [url]
        else:
            raise TfreeError(f"cannot read {url!r}: no such file or directory")
    except OSError as e:
        raise TfreeError(f"cannot read {url!r}: {e.strerror or e}") from None
    except TfreeError:
        raise
    except Exception as e:  # noqa: BLE001 - a remote file system's own errors (httpx's ConnectError with no network)
        raise TfreeError(f"cannot read {url!r}: {_remote_error(e)}") from None
    if not found:
        raise TfreeError(f"no files match {url!r}")
    return [fs.unstrip_protocol(p) for p in sorted(found)]


def open_url(url: str):
    """A binary file object over the bytes at ``url`` (fsspec)."""
    fs, path = _filesystem(url)
    try:
        return fs.open(path, "rb")
    except Exception as e:  # noqa: BLE001 - as in expand_url
        raise TfreeError(f"cannot read {url!r}: {_remote_error(e)}") from None


def _remote_error(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'no details'}"


def detect_format(path: str, fmt: str = "auto") -> tuple[str, str | None]:
    """(format, compression) of ``path`` from its extensions; ``fmt`` other than "auto" forces the format."""
    root, ext = os.path.splitext(path.lower())
    comp = COMPRESSED.get(ext)
    if comp:
        ext = os.path.splitext(root)[1]
    if fmt != "auto":
        return fmt, comp
    return FORMATS.get(ext, "text"), comp


def open_binary(path: str, comp: str | None, stdin: bytes | None = None):
    """A binary file object over the (decompressed) bytes of ``path`` (``-``: ``stdin``, or the real stdin)."""
    if path == "-":
        raw = io.BytesIO(stdin) if stdin is not None else sys.stdin.buffer
    elif is_url(path):
        raw = open_url(path)
    else:
        raw = open(path, "rb")
    if comp == "gzip":
        return gzip.GzipFile(fileobj=raw)
    if comp == "xz":
        return lzma.LZMAFile(raw)
    if comp == "zstd":
        import zstandard

        # buffered, so that JSONL can iterate its lines
        return io.BufferedReader(_ZstdReader(raw, zstandard))
    return raw


class _ZstdReader(io.RawIOBase):
    """Every frame of a .zst stream, in order; a stream that ends inside a frame raises EOFError (zstandard's own
    stream_reader just stops there, which would half-encode a truncated file)."""

    def __init__(self, raw, zstandard):
        self._raw, self._z, self._obj, self._left, self._started = raw, zstandard, None, b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._left:
            chunk = self._raw.read(1 << 16)
            if not chunk:
                if self._obj is not None and not self._obj.eof:
                    raise EOFError("compressed stream ended before the end of its frame (truncated file?)")
                return 0
            while chunk:
                if self._obj is None or self._obj.eof:
                    self._obj = self._z.ZstdDecompressor().decompressobj()
                self._left += self._obj.decompress(chunk)
                chunk = self._obj.unused_data if self._obj.eof else b""
        n = min(len(b), len(self._left))
        b[:n], self._left = self._left[:n], self._left[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _decode_error(path: str, e: UnicodeError, base: int = 0) -> TfreeError:
    where = f" at byte {base + e.start}" if isinstance(e, UnicodeDecodeError) else ""
    return TfreeError(f"{path}: input is not valid UTF-8 ({e.reason}{where})")


def _text_docs(f, path: str, split: str) -> Iterator[str]:
    """The documents of a plain text file as Python strings: how ``--split paragraphs`` reads, and the reference
    that ``_line_batches`` (lines on the bytes) is tested against."""
    if split == "none":
        try:
            text = f.read().decode("utf-8")
        except UnicodeDecodeError as e:
            raise _decode_error(path, e) from None
        if text:
            yield text
        return
    cut = _SPLITTERS[split]
    dec = codecs.getincrementaldecoder("utf-8")("strict")
    carry, pos = "", 0
    while True:
        block = f.read(BLOCK)
        final = not block
        try:
            text = carry + dec.decode(block, final=final)
        except UnicodeDecodeError as e:
            raise _decode_error(path, e, pos) from None
        pos += len(block)
        if final:
            yield from _documents(cut(text), len(text))
            return
        # Past the last non-blank character a separator may still grow with the next block: carry that tail.
        # Separators are all whitespace, so none crosses ``solid`` and splitting text[:solid] is exact.
        solid = len(text.rstrip())
        pieces = cut(text[:solid])
        yield from _documents(pieces, len(pieces) - 1)
        carry = pieces[-1] + text[solid:]


def _documents(pieces: list[str], n: int) -> list[str]:
    """The first n pieces without a trailing \r (CRLF files), skipping blank ones."""
    return [p[:-1] if p[-1] == "\r" else p for p in pieces[:n] if p.strip()]


def _check_utf8(data, path: str, base: int, ascii: bool = False) -> bool:
    """Whether ``data`` (bytes or a memoryview) is ASCII (``ascii``: known to be); TfreeError (naming the byte) if it
    is not UTF-8."""
    if ascii or (isinstance(data, bytes) and data.isascii()):
        return True
    if sparse_utf8_ok(np.frombuffer(data, np.uint8)):
        return False
    try:
        codecs.utf_8_decode(data, "strict", True)
    except UnicodeDecodeError as e:
        raise _decode_error(path, e, base) from None
    return False


def _line_batches(f, path: str) -> Iterator[Docs]:
    """``--split lines`` of a plain text file, block by block, on the bytes: a block ends after its last "\\n" (never
    inside a character), the rest is carried to the next."""
    carry, pos = b"", 0
    while True:
        block = f.read(BLOCK)
        data = carry + block if carry else block
        if block:
            cut = data.rfind(b"\n") + 1
            if not cut:  # a line longer than a block: read on
                carry = data
                continue
            head, carry = memoryview(data)[:cut], data[cut:]  # no copy of the block
        else:
            head = memoryview(data)
        ascii = _check_utf8(head, path, pos, data.isascii())  # (a superset's ASCII check is a fast one)
        pos += len(head)
        yield lines(head, ascii)
        if not block:
            return


def _whole(f, path: str) -> Iterator[Docs]:
    data = f.read()
    ascii = _check_utf8(data, path, 0)
    if data:
        yield Docs(np.frombuffer(data, np.uint8), np.array([0, len(data)], np.int64), ascii)


def _packed(texts: Iterator[str], path: str) -> Iterator[Docs]:
    """Documents made as Python strings, packed CHUNK at a time."""
    first = 0
    while chunk := list(islice(texts, CHUNK)):
        yield pack(chunk, path, first)
        first += len(chunk)


def _jsonl_docs(f, path: str, text_column: str) -> Iterator[str]:
    for n, line in enumerate(f, 1):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TfreeError(f"{path}:{n}: input is not valid UTF-8 ({e.reason})") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise TfreeError(f"{path}:{n}: not valid JSON ({e})") from None
        if not isinstance(obj, dict) or text_column not in obj:
            raise TfreeError(f"{path}:{n}: no {text_column!r} field (use --text-column)")
        text = obj[text_column]
        if not isinstance(text, str):
            raise TfreeError(f"{path}:{n}: {text_column!r} is {type(text).__name__}, not a string")
        yield text


def _arrow_batches(source, path: str, fmt: str, text_column: str) -> Iterator[Docs]:
    """Documents of a Parquet or Arrow (IPC stream or file) input; ``source`` is a pyarrow NativeFile. A string
    column is packed UTF-8 already: its buffers become the batch, uncopied (checked first: Arrow does not promise
    valid UTF-8)."""
    import pyarrow as pa

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            batches = pq.ParquetFile(source).iter_batches(batch_size=4096)
        else:
            try:
                batches = pa.ipc.open_stream(source)
            except pa.ArrowInvalid:  # not a stream: try the file (feather v2) format
                source.seek(0)
                reader = pa.ipc.open_file(source)
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        row = 0
        for b in batches:
            if text_column not in b.schema.names:
                raise TfreeError(f"{path}: no column {text_column!r} (columns: {', '.join(b.schema.names)}; "
                                 "use --text-column)")
            col = b.column(text_column)
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                raise TfreeError(f"{path}: column {text_column!r} is {col.type}, not a string")
            if col.null_count:
                first = col.is_null().to_pylist().index(True)
                raise TfreeError(f"{path}: column {text_column!r} is null at row {row + first}")
            try:
                col.validate(full=True)
            except pa.ArrowInvalid as e:
                raise TfreeError(f"{path}: column {text_column!r} near row {row}: not valid UTF-8 ({e})") from None
            yield _arrow_docs(col, 8 if pa.types.is_large_string(col.type) else 4)
            row += len(col)
    except (pa.ArrowInvalid, pa.ArrowException) as e:
        raise TfreeError(f"{path}: cannot read as {fmt}: {e}") from None


def _arrow_docs(col, width: int) -> Docs:
    """A string array's documents (``width``: bytes per offset), over its own buffers."""
    _, offsets, data = col.buffers()
    offsets = np.frombuffer(offsets, f"<i{width}", count=len(col) + 1, offset=col.offset * width).astype(np.int64)
    data = np.frombuffer(data, np.uint8) if data is not None and data.size else np.zeros(0, np.uint8)
    raw = data[offsets[0]:offsets[-1]]
    return Docs(data, offsets, bool(raw.size == 0 or raw.max() < 0x80))


def iter_batches(path: str, *, fmt: str = "auto", split: str = "none", text_column: str = "text",
                 stdin: bytes | None = None) -> Iterator[Docs]:
    """The documents of one input, in order, as batches of packed UTF-8 (``docs.Docs``). ``split`` applies to plain
    text: ``none`` (the whole file is one document), ``lines`` or ``paragraphs`` (blank-line separated);
    whitespace-only pieces are skipped. ``stdin``: the bytes to read for ``-`` (a job that walks its input twice
    reads stdin once)."""
    if split not in SPLITS:
        raise TfreeError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    fmt, comp = detect_format(path, fmt)
    try:
        if fmt in ("parquet", "arrow"):
            import pyarrow as pa

            if comp or path == "-" or is_url(path):
                with open_binary(path, comp, stdin) as f:
                    source = pa.BufferReader(f.read())
            else:
                source = pa.memory_map(path)
            with source:
                yield from _arrow_batches(source, path, fmt, text_column)
        elif fmt in ("text", "jsonl"):
            with open_binary(path, comp, stdin) as f:
                if fmt == "jsonl":
                    yield from _packed(_jsonl_docs(f, path, text_column), path)
                elif split == "lines":
                    yield from _line_batches(f, path)
                elif split == "none":
                    yield from _whole(f, path)
                else:
                    yield from _packed(_text_docs(f, path, split), path)
        else:
            raise TfreeError(f"unknown input format {fmt!r}")
    except (EOFError, lzma.LZMAError, gzip.BadGzipFile) as e:
        raise TfreeError(f"{path}: corrupt compressed input ({e})") from None
    except OSError as e:
        raise TfreeError(f"cannot read {path!r}: {e.strerror or e}") from None
    except Exception as e:
        if type(e).__name__ == "ZstdError":
            raise TfreeError(f"{path}: corrupt compressed input ({e})") from None
        raise


def iter_documents(path: str, *, fmt: str = "auto", split: str = "none", text_column: str = "text",
                   stdin: bytes | None = None) -> Iterator[str]:
    """``iter_batches`` one document (a str) at a time."""
    for batch in iter_batches(path, fmt=fmt, split=split, text_column=text_column, stdin=stdin):
        yield from batch.texts()
