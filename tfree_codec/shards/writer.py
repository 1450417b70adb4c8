"""``encode_to_shards``: inputs -> a directory of Arrow shards, in parallel, resumable, byte-reproducible.

Two passes over the inputs. The plan pass reads every document once, checks it (UTF-8, not empty) and cuts the
stream into shards by document count or UTF-8 bytes, so shard i is a fixed range of the input that does not
depend on the number of processes. The encode pass streams the documents again (or, for inputs under
KEEP_BYTES, takes them from the plan pass); each missing shard is encoded
by this process or a spawned worker, written as ``.tmp-<pid>-<name>`` and renamed into place by whoever encoded
it (only small stats travel back, never arrays).

A shard is two files (format 2, ``lexicon.py``): its documents as word ids and its own lexicon, so it is usable on
its own. Directory protocol (docs/shards.md): ``codec.json`` first, then ``.plan.json``, then shards in any order
(each its lexicon file, then its documents file), then ``lexicon.arrow`` (the shard lexicons merged), then
``manifest.json`` (last: its presence means complete), then ``.plan.json`` is removed. A rerun of the same
command resumes from whatever a kill left; nothing in any file depends on time, order of completion or workers.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait
from itertools import chain, islice

import numpy as np
import pyarrow as pa

from ..config import CodecConfig, TfreeError, atomic_write, plain_interrupts
from .hf import CARD, card_is_ours, write_card
from .lexicon import (FORMAT, FORMAT_VERSION, LEXICON, Merger, encode_documents, lexicon_batch, lexicon_name,
                      read_lexicon, stream_bytes)
from .reader import CODEC, MANIFEST, seal, shard_name
from .resume import JOURNAL, DirLock, drop_temporaries, kept_shard, record, records, reuse_manifest
from .rows import _codec_for
from .sources import SPLITS, expand_inputs, is_url, iter_documents
from .workers import start_pool, stop_pool

PLAN = ".plan.json"
TMP_PREFIX = ".tmp-"
DEFAULT_SHARD_BYTES = 2 << 20  # UTF-8 bytes of text per shard: ~75 MB on disk with v=8192, m=10
BATCH_DOCS = 4096               # record batch bounds: offsets stay far below int32 and arrays stay small
BATCH_CHARS = 512 << 10
KEEP_BYTES = 512 << 20          # inputs up to this size are read once: the plan pass keeps their documents
PLAN_CHUNK = 4096               # documents the plan pass takes at a time


def _canonical(obj) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _utf8(doc: str, where: str) -> bytes:
    try:
        return doc.encode("utf-8")
    except UnicodeEncodeError:
        raise TfreeError(f"{where}: text contains a lone surrogate (not valid UTF-8)") from None


def _digest(h, lengths) -> str:
    """The input digest of a shard: sha256 of its documents' UTF-8, one after the other (fed to ``h`` already),
    then of their byte lengths as little-endian uint64 (so document boundaries count too)."""
    h.update(np.asarray(lengths, "<u8").tobytes())
    return h.hexdigest()


def _utf8_all(docs: list[str], path: str, j0: int) -> list[bytes]:
    try:
        return [d.encode("utf-8") for d in docs]
    except UnicodeEncodeError:
        for j, d in enumerate(docs):
            _utf8(d, f"{path}: document {j0 + j}")  # raises, naming the document
        raise


def make_plan(files, read, config: CodecConfig, options: dict, docs_per_shard: int | None, shard_bytes: int | None,
              progress=None, keep: list | None = None) -> dict:
    """Read every document once (``read(path)`` yields them) and cut shards; raise TfreeError on bad or empty
    input before anything is written. The documents are
    appended to ``keep`` while the input is under KEEP_BYTES; past that ``keep`` is emptied and left so."""
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
        docs, j0 = iter(read(path)), 0  # j0: number (in its input) of the chunk's first document
        # Documents go through in chunks, cut points found with numpy: a Python loop per document cost 40% of
        # a one-process run on English lines.
        while chunk := list(islice(docs, PLAN_CHUNK)):
            data = _utf8_all(chunk, path, j0)
            lens = np.fromiter(map(len, data), np.int64, count=len(data))
            if keep is not None:
                if total + n_bytes + int(lens.sum()) <= KEEP_BYTES:
                    keep.extend(chunk)
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
                h.update(b"".join(data[pos:end]))
                lengths += lens[pos:end].tolist()
                n_docs, n_bytes = n_docs + end - pos, n_bytes + int(lens[pos:end].sum())
                pos = end
                if n_docs == max_docs or n_bytes >= max_bytes:
                    sources[-1]["stop"] = j0 + end
                    shards.append({"documents": n_docs, "utf8_bytes": n_bytes, "first_id": first, "sources": sources,
                                   "input_sha256": _digest(h, lengths)})
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
                       "input_sha256": _digest(h, lengths)})
    if progress:
        progress(total + n_bytes - shown, first + n_docs - shown_docs)
    if not shards or not any(s["utf8_bytes"] for s in shards):
        raise TfreeError("the input holds no text (empty input)")
    for i, s in enumerate(shards):
        s["file"] = shard_name(i, len(shards))
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "codec_fingerprint": config.fingerprint(),
            "options": options, "inputs": list(files), "shards": shards}


# -- one shard (runs in a worker process, or inline with one process) ----------------------------------------------
def write_shard(out_dir: str, file: str, docs: pa.RecordBatch, lexicon: pa.RecordBatch, config: CodecConfig) -> dict:
    """Write a shard's two files (lexicon first, documents last), each as ``.tmp-<pid>-<name>`` renamed into place;
    returns the stats its manifest entry keeps. Durable later: every file is fsynced before the manifest."""
    meta = {"tfree.format": FORMAT, "tfree.format_version": str(FORMAT_VERSION),
            "tfree.codec_fingerprint": config.fingerprint()}
    stats = {"words": int(len(docs.column("words").values)), "lexicon_words": lexicon.num_rows}
    for key, name, batch in (("lexicon_", lexicon_name(file), lexicon), ("", file, docs)):
        data = stream_bytes(batch, meta)
        tmp = os.path.join(out_dir, f"{TMP_PREFIX}{os.getpid()}-{name}")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(out_dir, name))
        stats[key + "size"], stats[key + "sha256"] = len(data), hashlib.sha256(data).hexdigest()
    return stats


def encode_shard(out_dir: str, entry: dict, texts: list[str], config: CodecConfig, parent_pid: int | None = None,
                 on_batch=None) -> dict:
    """Encode one planned shard and move its files into place; returns their stats.

    In a worker, ``parent_pid`` is the main process: if it dies (killed), the worker stops between batches
    instead of racing the rerun. ``on_batch()`` is called after each batch (the main process feeds its workers
    from there)."""
    def between_batches():
        if parent_pid is not None and os.getppid() != parent_pid:
            os._exit(1)
        if on_batch is not None:
            on_batch()

    docs, lexicon, n_bytes, digest = encode_documents(_codec_for(config), texts, _batches(texts),
                                                      between_batches)
    if len(texts) != entry["documents"] or _digest(digest, n_bytes) != entry["input_sha256"]:
        raise TfreeError(f"the input changed while encoding ({entry['file']} differs from the plan): rerun the command")
    return write_shard(out_dir, entry["file"], docs, lexicon, config)


def _batches(texts):
    """Record batch bounds (lo, hi): a pure function of the shard's documents. A document of BATCH_CHARS or
    more gets a batch of its own; other batches end at BATCH_DOCS documents or once they reach BATCH_CHARS."""
    lens = np.fromiter(map(len, texts), np.int64, count=len(texts))
    lo, n = 0, len(texts)
    if not n:
        yield 0, 0
    while lo < n:
        window = lens[lo:lo + BATCH_DOCS]
        big = np.flatnonzero(window >= BATCH_CHARS)
        if len(big) and big[0] == 0:
            hi = lo + 1
        else:
            window = window[:big[0]] if len(big) else window
            full = np.flatnonzero(np.cumsum(window) >= BATCH_CHARS)
            hi = lo + (int(full[0]) + 1 if len(full) else len(window))
        yield lo, hi
        lo = hi


# -- the directory protocol ---------------------------------------------------------------------------------------
_SHARD_RE = re.compile(r"shard-\d{5}-of-\d{5}(\.lexicon)?\.arrow")


def _ours(name: str) -> bool:
    return name in (CODEC, MANIFEST, PLAN, LEXICON, JOURNAL) or name.startswith(TMP_PREFIX) or bool(_SHARD_RE.fullmatch(name))


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def check_codec(out_dir: str, config: CodecConfig) -> None:
    """Refuse (one line) a directory whose codec.json is another codec's."""
    path = os.path.join(out_dir, CODEC)
    if not os.path.isfile(path):
        return
    try:
        old = CodecConfig.load(path).fingerprint()
    except TfreeError:
        old = "unreadable"
    if old != config.fingerprint():
        raise TfreeError(f"{out_dir} was encoded with another codec (fingerprint {old}, this run "
                         f"{config.fingerprint()}); pass --overwrite to replace it")


def prepare_dir(out_dir: str, plan_bytes: bytes, config: CodecConfig, overwrite: bool) -> str:
    """Make ``out_dir`` ready for ``plan_bytes``: "fresh", "resume" or "complete"; refuse (one line) a directory
    holding another codec's or another plan's shards unless ``overwrite``."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise TfreeError(f"{out_dir} exists and is not a directory")
    names = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    state = "fresh"
    if not overwrite:
        check_codec(out_dir, config)
    if overwrite:
        for n in names:
            if _ours(n) or (n == CARD and card_is_ours(os.path.join(out_dir, n))):
                os.remove(os.path.join(out_dir, n))
    elif names:
        foreign = [n for n in names if not _ours(n) and n != CARD]  # a README.md not ours is the user's: kept
        if foreign:
            raise TfreeError(f"{out_dir} is not empty and is not a tfree shard directory (it holds {foreign[0]!r}); "
                             "choose another directory or pass --overwrite")
        manifest = _read(os.path.join(out_dir, MANIFEST))
        if manifest is not None:
            state = reuse_manifest(out_dir, manifest, plan_bytes, PLAN)
        elif PLAN in names:
            if _read(os.path.join(out_dir, PLAN)) != plan_bytes:
                raise TfreeError(f"{out_dir} holds an unfinished encode of other inputs or options; rerun that "
                                 "command to finish it, or pass --overwrite to replace it")
            state = "resume"
        elif any(_SHARD_RE.fullmatch(n) for n in names):
            raise TfreeError(f"{out_dir} holds shards without a plan or manifest; pass --overwrite to replace them")
    for n in names:  # leftovers of a killed run
        if n.startswith(TMP_PREFIX) and os.path.exists(os.path.join(out_dir, n)):
            os.remove(os.path.join(out_dir, n))
    os.makedirs(out_dir, exist_ok=True)
    if not os.path.exists(os.path.join(out_dir, CODEC)):  # a finished directory whose codec.json was deleted too
        config.save(os.path.join(out_dir, CODEC))
    if state != "complete":
        atomic_write(os.path.join(out_dir, PLAN), plan_bytes)
    return state


# -- the whole job ----------------------------------------------------------------------------------------------
class _Progress:
    """tqdm over UTF-8 bytes (MB/s) with documents/s beside it."""

    def __init__(self, total: int, desc: str, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1000, disable=not enabled,
                        dynamic_ncols=True, leave=False)
        self.docs, self.t0 = 0, time.perf_counter()

    def update(self, n_bytes: int, n_docs: int) -> None:
        self.docs += n_docs
        self.bar.update(n_bytes)
        if not self.bar.disable:
            self.bar.set_postfix_str(f"{self.docs / max(time.perf_counter() - self.t0, 1e-9):,.0f} docs/s", refresh=False)

    def close(self) -> None:
        self.bar.close()


def _outside(files: list[str], out_dir: str) -> list[str]:
    """The inputs but any file inside the output directory: ``encode DIR -o DIR/shards`` would read its own
    shards on a rerun (another plan: refused)."""
    top = os.path.join(os.path.realpath(out_dir), "")
    kept = [f for f in files if f == "-" or is_url(f) or not os.path.realpath(f).startswith(top)]
    if not kept:
        raise TfreeError(f"every input is inside the output directory {out_dir}")
    return kept


@plain_interrupts()  # Ctrl-C inside a kernel is a KeyboardInterrupt, not numba's SystemError
def encode_to_shards(inputs, out_dir: str, config: CodecConfig, *, split: str = "none", text_column: str = "text",
                     fmt: str = "auto", num_proc: int | None = None, overwrite: bool = False,
                     docs_per_shard: int | None = None, shard_bytes: int | None = DEFAULT_SHARD_BYTES,
                     progress: bool = True) -> dict:
    """Encode ``inputs`` into Arrow shards under ``out_dir``; returns a summary. See the module docstring.

    ``num_proc`` processes encode (default: all cores): this one and ``num_proc - 1`` spawned workers."""
    t0 = time.perf_counter()
    out_dir = os.fspath(out_dir)
    if split not in SPLITS:
        raise TfreeError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    num_proc = min(num_proc or cores, cores)  # workers beyond the cores only wait for them (and cost memory)
    files = _outside(expand_inputs(inputs), out_dir)
    if not overwrite:
        check_codec(out_dir, config)  # fail fast, before reading the input
    options = {"format": fmt, "split": split, "text_column": text_column}
    stdin = sys.stdin.buffer.read() if "-" in files else None  # read once, walked twice

    def read(path):
        return iter_documents(path, fmt=fmt, split=split, text_column=text_column, stdin=stdin)

    lock = DirLock(out_dir)  # a second run into out_dir stops here, in one line
    pool, encoded, damaged = None, False, 0
    bars: list[_Progress] = []
    try:
        if num_proc > 1 and not os.path.exists(os.path.join(out_dir, MANIFEST)):
            # Workers start now, so their imports and kernel loading overlap the plan pass.
            pool = start_pool(num_proc - 1, config)
        bars.append(_Progress(None, "plan", progress))
        kept: list[str] = []
        plan = make_plan(files, read, config, options, docs_per_shard, shard_bytes, bars[-1].update, kept)
        bars[-1].close()
        plan_bytes = _canonical(plan)
        state = prepare_dir(out_dir, plan_bytes, config, overwrite)
        entries = plan["shards"]
        results: dict[int, dict] = {}
        if state == "complete":
            manifest = json.loads(_read(os.path.join(out_dir, MANIFEST)))
            results = dict(enumerate(manifest["shards"]))
        elif state == "resume":  # keep a shard only if its files are the ones recorded when it was finished
            done = records(out_dir)
            for i, e in enumerate(entries):
                r, bad = kept_shard(out_dir, e, config, done.get(e["file"]))
                damaged += bad
                if r is not None:
                    results[i] = r
        resumed = len(results)
        total = sum(e["utf8_bytes"] for i, e in enumerate(entries) if i not in results)
        bars.append(_Progress(total, "encode", progress and total > 0))
        todo = len(entries) - len(results)
        workers = min(num_proc, todo) - 1  # this process encodes too, while the workers start (imports, kernels)
        if workers > 0 and pool is None:
            pool = start_pool(workers, config)
        if todo:
            docs = iter(kept) if kept else chain.from_iterable(map(read, files))
            _encode_missing(out_dir, docs, entries, results, config, pool, workers, bars[-1])
        encoded = True
    finally:
        for bar in bars:
            bar.close()
        if not encoded:  # an error or Ctrl-C: stop the workers mid-shard, drop the files they were writing
            pids = stop_pool(pool, False) if pool is not None else []
            drop_temporaries(out_dir, TMP_PREFIX, [os.getpid(), *pids])
            lock.release(failed=True)
        elif pool is not None:
            stop_pool(pool, True)
    if state != "complete":
        lexicon = merge_lexicons(out_dir, [e["file"] for e in entries])
        manifest = _manifest(plan, plan_bytes, results, lexicon)
        for e in entries:
            _fsync(os.path.join(out_dir, e["file"]))
            _fsync(os.path.join(out_dir, lexicon_name(e["file"])))
        write_card(out_dir, manifest["shards"])
        atomic_write(os.path.join(out_dir, MANIFEST), _canonical(manifest))
    else:
        manifest = json.loads(_read(os.path.join(out_dir, MANIFEST)))
        write_card(out_dir, manifest["shards"])  # directories made before cards existed get one
    for name in (PLAN, JOURNAL):
        if os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))
    lock.release(failed=False)
    return {"out_dir": out_dir, "documents": manifest["documents"], "words": manifest["words"],
            "utf8_bytes": manifest["utf8_bytes"], "shards": len(entries), "resumed": resumed,
            "seconds": time.perf_counter() - t0, "up_to_date": state == "complete", "damaged": damaged}


def _encode_missing(out_dir, docs, entries, results, config, pool, slots, bar) -> None:
    """Second pass: stream the documents (kept from the plan pass, or read again) and encode every shard not
    in ``results``.

    Each worker holds one shard at a time; this process encodes the others itself and, between its record
    batches, hands a freed worker the next shard. So nobody waits on a queue and the run ends within about one
    shard of perfectly balanced."""
    todo = iter(i for i in range(len(entries)) if i not in results)
    inflight: dict = {}
    pos = 0  # documents of the stream consumed so far

    def take(i: int) -> list[str]:
        nonlocal pos
        first = entries[i]["first_id"]  # shards are taken in order; skip the documents of finished ones
        for _ in islice(docs, first - pos):
            pass
        pos = first + entries[i]["documents"]
        return list(islice(docs, entries[i]["documents"]))

    def finish(i: int, stats: dict) -> None:
        results[i] = stats
        record(out_dir, entries[i]["file"], stats)  # a rerun keeps the shard only if its files are these
        bar.update(entries[i]["utf8_bytes"], entries[i]["documents"])

    def dispatch() -> None:
        for f in [f for f in inflight if f.done()]:
            finish(inflight.pop(f), f.result())  # re-raises a worker's error here
        while len(inflight) < slots:
            i = next(todo, None)
            if i is None:
                return
            inflight[pool.submit(encode_shard, out_dir, entries[i], take(i), config, os.getpid())] = i

    dispatch()
    for i in todo:
        finish(i, encode_shard(out_dir, entries[i], take(i), config, on_batch=dispatch if slots else None))
        dispatch()
    while inflight:
        wait(inflight, return_when=FIRST_COMPLETED)
        dispatch()


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def merge_lexicons(out_dir: str, files: list[str]) -> dict:
    """The merge step: fold the shard lexicons (in shard order) into ``lexicon.arrow``; returns its stats."""
    merger = Merger()
    for f in files:
        merger.add(*read_lexicon(os.path.join(out_dir, lexicon_name(f))))
    data = stream_bytes(lexicon_batch(merger.words(), merger.counts), {"tfree.format": FORMAT})
    atomic_write(os.path.join(out_dir, LEXICON), data)
    return {"file": LEXICON, "words": len(merger), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


SHARD_KEYS = ("file", "documents", "words", "utf8_bytes", "first_id", "size", "sha256", "lexicon_words",
              "lexicon_size", "lexicon_sha256")


def _manifest(plan: dict, plan_bytes: bytes, results: dict, lexicon: dict) -> dict:
    keep = SHARD_KEYS + ("sources", "input_sha256")
    shards = [{k: {**e, **results[i]}[k] for k in keep} for i, e in enumerate(plan["shards"])]
    return seal({**manifest_totals(plan["codec_fingerprint"], shards, lexicon),
                 "plan_sha256": hashlib.sha256(plan_bytes).hexdigest(), "options": plan["options"],
                 "inputs": plan["inputs"]})


def manifest_totals(fingerprint: str, shards: list[dict], lexicon: dict) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "codec_fingerprint": fingerprint,
            "documents": sum(s["documents"] for s in shards), "words": sum(s["words"] for s in shards),
            "utf8_bytes": sum(s["utf8_bytes"] for s in shards), "lexicon": lexicon, "shards": shards}
