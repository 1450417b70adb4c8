"""Weights as ``model.safetensors``: portable (any safetensors reader, HF's included), no pickle, no code run on load.

The format is small enough to write here rather than depend on a package for it: an 8-byte little-endian header
length, a JSON header ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`` and the
tensors' raw little-endian bytes, back to back in header order. Tests read our files with the ``safetensors``
package where it is installed, and ours read its files.

Reading goes through the ``safetensors`` package where it is installed (the ``[train]`` extra brings it): it
memory-maps the file, so loading is a header parse and the weights are paged in as they are used (bench/weights.py).
Without it the file is read whole and checked here.
"""
from __future__ import annotations

import json
import os
import struct

import torch

from ..config import TfreeError

WEIGHTS_FILE = "model.safetensors"
_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}
_TORCH = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 << 20  # the reference reader's limit: a larger "header" is a damaged file


def save_weights(tensors: dict, path: str, metadata: dict | None = None) -> None:
    """Write ``{name: tensor}`` to ``path`` (CPU copies; the caller makes the write atomic)."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        if t.dtype not in _DTYPES:
            raise TfreeError(f"cannot store {name} of dtype {t.dtype} in safetensors")
        b = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)  # the tensors start 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


def load_weights_file(path: str) -> dict:
    """``{name: tensor}`` of a safetensors file, in the file's order; a damaged one is one TfreeError naming it."""
    try:
        from safetensors import SafetensorError, safe_open  # noqa: PLC0415
    except ImportError:
        return _read_whole(path)
    try:
        with safe_open(path, framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.offset_keys()}
    except FileNotFoundError as e:
        raise TfreeError(f"{path}: cannot read ({e.strerror or 'no such file'})") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise TfreeError(f"{path} is not a valid safetensors file ({why})") from None


def _read_whole(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TfreeError(f"{path}: cannot read ({e.strerror})") from None
    bad = f"{path} is not a valid safetensors file"
    if len(data) < 8:
        raise TfreeError(f"{bad} (truncated)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(_MAX_HEADER, len(data) - 8):
        raise TfreeError(f"{bad} (header length {n} does not fit the file)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (ValueError, RecursionError):  # RecursionError: a header of deeply nested brackets
        raise TfreeError(f"{bad} (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise TfreeError(f"{bad} (its header is not a JSON object)")
    header.pop("__metadata__", None)
    body = memoryview(data)[8 + n:]
    out, spans = {}, []
    for name, info in header.items():
        dtype, shape, (a, b) = _described(info, name, bad)
        numel = 1
        for s in shape:
            numel *= s
        if not (0 <= a <= b <= len(body)) or b - a != numel * torch.empty(0, dtype=dtype).element_size():
            raise TfreeError(f"{bad} (tensor {name!r}: its bytes do not fit its shape or the file)")
        flat = torch.frombuffer(bytearray(body[a:b]), dtype=torch.uint8) if b > a else torch.empty(0, dtype=torch.uint8)
        out[name] = flat.view(dtype).reshape(shape)
        spans.append((a, b, name))
    end = 0  # the tensors tile the data exactly, as the format requires: no overlap (two names, one weight), no gap
    for a, b, name in sorted(spans):
        if a != end:
            raise TfreeError(f"{bad} (tensor {name!r} {'overlaps another' if a < end else 'leaves a gap before it'})")
        end = b
    if end != len(body):
        raise TfreeError(f"{bad} ({len(body) - end} bytes after the last tensor)")
    return out


def _described(info, name: str, bad: str):
    """(dtype, shape, (begin, end)) of a header entry; integers only (JSON 1.5 or true is not an offset)."""
    def count(x):
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0
    try:
        dtype, shape, offsets = _TORCH[info["dtype"]], info["shape"], info["data_offsets"]
    except (KeyError, TypeError):
        raise TfreeError(f"{bad} (tensor {name!r} is described wrongly)") from None
    if not (isinstance(shape, list) and all(map(count, shape)) and isinstance(offsets, list) and len(offsets) == 2
            and all(map(count, offsets))):
        raise TfreeError(f"{bad} (tensor {name!r}: its shape and data_offsets must be lists of whole numbers)")
    return dtype, shape, tuple(offsets)


def has_weights(path: str) -> bool:
    return os.path.isfile(os.path.join(path, WEIGHTS_FILE))
