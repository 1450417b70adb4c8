"""The plan pass of ``tfree encode``: every document read once, checked and cut into shards (``make_plan``), and the
default number of processes (``auto_num_proc``).

Shard i is a fixed range of the input that does not depend on the number of processes; its entry records the
documents, their UTF-8 bytes and a digest of them, so the encode pass (``writer``) can prove it encodes what was
planned.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from ..config import CodecConfig, TfreeError
from .lexicon import FORMAT, FORMAT_VERSION
from .reader import shard_name
from .sources import detect_format, is_url

PROC_BYTES = 512 << 20          # input per process of the default --num-proc (auto_num_proc)
COMPRESSED_RATIO = 4


def input_digest(h, lengths) -> str:
    """The input digest of a shard: sha256 of its documents' UTF-8, one after the other (fed to ``h`` already),
    then of their byte lengths as little-endian uint64 (so document boundaries count too)."""
    h.update(np.asarray(lengths, "<u8").tobytes())
    return h.hexdigest()


def make_plan(files, read, config: CodecConfig, options: dict, cut: tuple, progress=None, keep: list | None = None,
              keep_bytes: int = 0) -> dict:
    """Read every document once (``read(path)`` yields them in ``Docs`` batches) and cut shards (``cut``:
    (documents per shard or None, bytes per shard or None)); raise TfreeError on bad or empty input before anything
    is written. The batches are appended to ``keep`` while the input is under ``keep_bytes``; past that ``keep`` is
    emptied and left so."""
    docs_per_shard, shard_bytes = cut
    if docs_per_shard is not None and docs_per_shard < 1:
        raise TfreeError("--docs-per-shard must be at least 1")
    if docs_per_shard is None and (shard_bytes or 0) < 1:
        raise TfreeError("--shard-bytes must be at least 1")
    max_docs = docs_per_shard or 1 << 62
    max_bytes = shard_bytes if docs_per_shard is None else 1 << 62
    shards: list[dict] = []
    first, n_docs, n_bytes, h, lengths, sources = 0, 0, 0, hashlib.sha256(), [], []
    shown = shown_docs = total = 0  # bytes and documents reported to ``progress`` (once per shard, not per doc)
    for path in files:
        j0 = 0  # number (in its input) of the batch's first document
        for chunk in read(path):
            lens = chunk.lengths()
            if keep is not None:
                if total + n_bytes + int(lens.sum()) <= keep_bytes:
                    keep.append(chunk)
                else:
                    keep.clear()
                    keep = None
            pos = 0
            while pos < len(chunk):
                if not sources or sources[-1]["input"] != path:
                    sources.append({"input": path, "start": j0 + pos, "stop": j0 + pos})
                room = min(max_docs - n_docs, len(chunk) - pos)
                full = np.flatnonzero(n_bytes + np.cumsum(lens[pos:pos + room]) >= max_bytes)
                end = pos + (int(full[0]) + 1 if len(full) else room)
                h.update(chunk.slice(pos, end).raw())
                lengths.append(lens[pos:end])
                n_docs, n_bytes = n_docs + end - pos, n_bytes + int(lens[pos:end].sum())
                pos = end
                if n_docs == max_docs or n_bytes >= max_bytes:
                    sources[-1]["stop"] = j0 + end
                    shards.append({"documents": n_docs, "utf8_bytes": n_bytes, "first_id": first, "sources": sources,
                                   "input_sha256": input_digest(h, np.concatenate(lengths))})
                    first, total = first + n_docs, total + n_bytes
                    n_docs, n_bytes, h, lengths, sources = 0, 0, hashlib.sha256(), [], []
                    if progress:
                        progress(total - shown, first - shown_docs)
                        shown, shown_docs = total, first
            j0 += len(chunk)
        if sources and sources[-1]["input"] == path:
            sources[-1]["stop"] = j0
    if n_docs:
        shards.append({"documents": n_docs, "utf8_bytes": n_bytes, "first_id": first, "sources": sources,
                       "input_sha256": input_digest(h, np.concatenate(lengths))})
    if progress:
        progress(total + n_bytes - shown, first + n_docs - shown_docs)
    if not shards or not any(s["utf8_bytes"] for s in shards):
        raise TfreeError("the input holds no text (empty input)")
    for i, s in enumerate(shards):
        s["file"] = shard_name(i, len(shards))
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "codec_fingerprint": config.fingerprint(),
            "options": options, "inputs": list(files), "shards": shards}


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: a container or taskset may allow fewer than the
    machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def auto_num_proc(files: list[str], cores: int | None = None) -> int:
    """The default ``--num-proc``: one process per PROC_BYTES of input (its size on disk, compressed inputs
    counted at COMPRESSED_RATIO times theirs; stdin and URLs as one PROC_BYTES), at most one per core. One process
    already encodes on all cores (threads: the kernels, hashing and writing release the GIL) and keeps an input
    under 512 MB in memory; a worker costs about a second to start (interpreter, imports, kernels) and competes
    with this process's reading, which a smaller input does not repay."""
    total = 0
    for f in files:
        if f == "-" or is_url(f) or not os.path.isfile(f):
            total += PROC_BYTES
        else:
            total += os.path.getsize(f) * (COMPRESSED_RATIO if detect_format(f)[1] else 1)
    return max(1, min(cores or usable_cores(), total // PROC_BYTES))
