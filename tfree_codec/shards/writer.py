"""``encode_to_shards``: inputs -> a directory of Arrow shards, in parallel, resumable, byte-reproducible.

Two passes over the inputs. The plan pass reads every document once, checks it (UTF-8, not empty) and cuts the
stream into shards by document count or UTF-8 bytes, so shard i is a fixed range of the input that does not
depend on the number of processes. The encode pass streams the documents again (or, for inputs under
KEEP_BYTES, takes them from the plan pass); each missing shard is encoded
by this process or a spawned worker, written as ``.tmp-<pid>-<name>`` and renamed into place by whoever encoded
it (only small stats travel back, never arrays).

Directory protocol (docs/shards.md): ``codec.json`` first, then ``.plan.json``, then shards in any order, then
``manifest.json`` (last: its presence means complete), then ``.plan.json`` is removed. A rerun of the same
command resumes from whatever a kill left; nothing in any file depends on time, order of completion or workers.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import queue
import re
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from itertools import chain, islice

import numpy as np
import pyarrow as pa

from .rows import Scratch, _codec_for, batch_from_texts, schema
from ..config import CodecConfig, TfreeError, atomic_write
from .reader import CODEC, FORMAT, FORMAT_VERSION, MANIFEST, check_shard_file, count_words, shard_name
from .sources import SPLITS, expand_inputs, iter_documents

PLAN = ".plan.json"
TMP_PREFIX = ".tmp-"
DEFAULT_SHARD_BYTES = 2 << 20  # UTF-8 bytes of text per shard: ~75 MB on disk with v=8192, m=10
BATCH_DOCS = 4096               # record batch bounds: offsets stay far below int32 and arrays stay small
BATCH_CHARS = 512 << 10
KEEP_BYTES = 512 << 20          # inputs up to this size are read once: the plan pass keeps their documents
_SCRATCH = Scratch()  # one per process: a shard is written by one thread, batch after batch


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


def make_plan(files, read, config: CodecConfig, options: dict, docs_per_shard: int | None, shard_bytes: int | None,
              progress=None, keep: list | None = None) -> dict:
    """Read every document once (``read(path)`` yields them) and cut shards; raise TfreeError on bad or empty
    input before anything is written. The loop is per document, so it keeps to locals. The documents are
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
        j = -1
        for j, doc in enumerate(read(path)):
            data = _utf8(doc, f"{path}: document {j}")
            if not sources or sources[-1]["input"] != path:
                sources.append({"input": path, "start": j, "stop": j})
            n_docs += 1
            n_bytes += len(data)
            if keep is not None:
                if total + n_bytes <= KEEP_BYTES:
                    keep.append(doc)
                else:
                    keep.clear()
                    keep = None
            h.update(data)
            lengths.append(len(data))
            if n_docs == max_docs or n_bytes >= max_bytes:
                sources[-1]["stop"] = j + 1
                shards.append({"documents": n_docs, "utf8_bytes": n_bytes, "first_id": first, "sources": sources,
                               "input_sha256": _digest(h, lengths)})
                first, total = first + n_docs, total + n_bytes
                n_docs, n_bytes, h, lengths, sources = 0, 0, hashlib.sha256(), [], []
                if progress:
                    progress(total - shown, first - shown_docs)
                    shown, shown_docs = total, first
        if sources and sources[-1]["input"] == path:
            sources[-1]["stop"] = j + 1
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
class _Sink:
    """A file object that hashes on one background thread and writes on another, so batch k is hashed and
    written while batch k+1 is encoded (hashlib and file writes release the GIL; apart, neither waits for the
    other). Arrow hands over zero-copy views of the batch: ``drain()`` before the batch's buffers are reused."""

    def __init__(self, f):
        self.f, self.h, self.size, self.closed = f, hashlib.sha256(), 0, False
        self.error: BaseException | None = None
        self.queues: list[queue.Queue] = []
        self.threads = []
        for work in (self.h.update, self.f.write):
            q: queue.Queue = queue.Queue()
            self.queues.append(q)
            self.threads.append(threading.Thread(target=self._run, args=(q, work), daemon=True))
            self.threads[-1].start()

    def _run(self, q: queue.Queue, work) -> None:
        while (data := q.get()) is not None:
            try:
                if self.error is None:
                    work(data)
            except BaseException as e:  # noqa: BLE001 - handed to the encoding thread by drain()
                self.error = e
            finally:
                q.task_done()
        q.task_done()

    def write(self, data) -> int:
        self.size += len(data)
        for q in self.queues:
            q.put(data)
        return len(data)

    def drain(self) -> None:
        for q in self.queues:
            q.join()
        if self.error is not None:
            raise self.error

    def flush(self) -> None:
        self.drain()

    def close(self) -> None:  # the Arrow writer closes us; the file and threads are finished by finish()
        self.drain()

    def finish(self) -> None:
        for q in self.queues:
            q.put(None)
        for t in self.threads:
            t.join()
        if self.error is not None:
            raise self.error


def encode_shard(out_dir: str, entry: dict, texts: list[str], config: CodecConfig, words: bool,
                 parent_pid: int | None = None, on_batch=None) -> dict:
    """Encode one planned shard and move it into place; returns its words, size and sha256.

    In a worker, ``parent_pid`` is the main process: if it dies (killed), the worker stops between record
    batches instead of racing the rerun. Temporary names carry the pid for the same reason. ``on_batch()`` is
    called after each record batch (the main process feeds its workers from there)."""
    codec = _codec_for(config)
    text_digest, lengths = hashlib.sha256(), []  # checked against the plan before the shard is renamed into place
    meta = {b"tfree.format": FORMAT.encode(), b"tfree.codec_fingerprint": config.fingerprint().encode()}
    final = os.path.join(out_dir, entry["file"])
    tmp = os.path.join(out_dir, f"{TMP_PREFIX}{os.getpid()}-{entry['file']}")
    n_words = 0
    with open(tmp, "wb") as f:
        sink = _Sink(f)
        try:
            with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), schema(words).with_metadata(meta)) as writer:
                for lo, hi in _batches(texts):
                    if parent_pid is not None and os.getppid() != parent_pid:
                        os.remove(tmp)
                        os._exit(1)
                    ids = np.arange(entry["first_id"] + lo, entry["first_id"] + hi, dtype=np.uint64)
                    # splitting overlaps the sink writing the last batch; drained before its buffers are reused
                    batch = batch_from_texts(codec, texts[lo:hi], ids, words, _SCRATCH, text_digest, sink.drain)
                    lengths.append(batch.column("n_bytes").to_numpy())
                    n_words += len(batch.column("patterns").values)
                    writer.write_batch(batch)
                    if on_batch is not None:
                        on_batch()
        finally:
            sink.finish()
    if len(texts) != entry["documents"] or _digest(text_digest, np.concatenate(lengths)) != entry["input_sha256"]:
        os.remove(tmp)
        raise TfreeError(f"the input changed while encoding ({entry['file']} differs from the plan): rerun the command")
    os.replace(tmp, final)  # durable later: every shard is fsynced before the manifest commits the directory
    return {"words": n_words, "size": sink.size, "sha256": sink.h.hexdigest()}


def _batches(texts):
    """Record batch bounds (lo, hi): a pure function of the shard's documents. A document of BATCH_CHARS or
    more gets a batch of its own, which then needs no copy of its rows."""
    lo, size = 0, 0
    for i, t in enumerate(texts):
        if len(t) >= BATCH_CHARS and i > lo:
            yield lo, i
            lo, size = i, 0
        size += len(t)
        if i + 1 - lo == BATCH_DOCS or size >= BATCH_CHARS:
            yield lo, i + 1
            lo, size = i + 1, 0
    if lo < len(texts) or not texts:
        yield lo, len(texts)


def existing_shard(out_dir: str, entry: dict, config: CodecConfig, words: bool) -> dict | None:
    """Stats of a shard a previous run finished, or None (and the file removed) if it does not check out."""
    from .reader import file_sha256, read_stream

    path = os.path.join(out_dir, entry["file"])
    if check_shard_file(path, entry, config.vocab_size, words) is not None:
        os.remove(path)
        return None
    return {"words": count_words(read_stream(path)), "size": os.path.getsize(path), "sha256": file_sha256(path)}


# -- the directory protocol ---------------------------------------------------------------------------------------
_SHARD_RE = re.compile(r"shard-\d{5}-of-\d{5}\.arrow")


def _ours(name: str) -> bool:
    return name in (CODEC, MANIFEST, PLAN) or name.startswith(TMP_PREFIX) or bool(_SHARD_RE.fullmatch(name))


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _sizes_match(out_dir: str, manifest: dict) -> bool:
    for s in manifest["shards"]:
        p = os.path.join(out_dir, s["file"])
        if not os.path.isfile(p) or os.path.getsize(p) != s["size"]:
            return False
    return True


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
    plan_id = hashlib.sha256(plan_bytes).hexdigest()
    state = "fresh"
    if not overwrite:
        check_codec(out_dir, config)
    if overwrite:
        for n in names:
            if _ours(n):
                os.remove(os.path.join(out_dir, n))
    elif names:
        foreign = [n for n in names if not _ours(n)]
        if foreign:
            raise TfreeError(f"{out_dir} is not empty and is not a tfree shard directory (it holds {foreign[0]!r}); "
                             "choose another directory or pass --overwrite")
        manifest = _read(os.path.join(out_dir, MANIFEST))
        if manifest is not None:
            try:
                done = json.loads(manifest).get("plan_sha256") == plan_id
            except ValueError:
                done = False
            if not done:
                raise TfreeError(f"{out_dir} holds shards of other inputs or options; pass --overwrite to replace them")
            state = "complete" if _sizes_match(out_dir, json.loads(manifest)) else "resume"
            if state == "resume":  # a shard went missing or changed size since: check them all, redo the bad ones
                os.remove(os.path.join(out_dir, MANIFEST))
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
    if state != "complete":
        os.makedirs(out_dir, exist_ok=True)
        if not os.path.exists(os.path.join(out_dir, CODEC)):
            config.save(os.path.join(out_dir, CODEC))
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


def _worker_init() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C; finished shards stay valid


def _worker_pool(n: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)


def _warm_up(config: CodecConfig) -> None:
    # numba loads each kernel from its on-disk cache on the first call: make those calls before real work arrives
    from .rows import encode_texts

    encode_texts(_codec_for(config), ["Warm-up text, long enough for the kernels: Grüße, naïve café. " * 6], [0])


def encode_to_shards(inputs, out_dir: str, config: CodecConfig, *, split: str = "none", text_column: str = "text",
                     fmt: str = "auto", words: bool = True, num_proc: int | None = None, overwrite: bool = False,
                     docs_per_shard: int | None = None, shard_bytes: int | None = DEFAULT_SHARD_BYTES,
                     progress: bool = True) -> dict:
    """Encode ``inputs`` into Arrow shards under ``out_dir``; returns a summary. See the module docstring.

    ``num_proc`` processes encode (default: all cores): this one and ``num_proc - 1`` spawned workers."""
    t0 = time.perf_counter()
    out_dir = os.fspath(out_dir)
    if split not in SPLITS:
        raise TfreeError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    num_proc = num_proc or os.cpu_count() or 1
    files = expand_inputs(inputs)
    if not overwrite:
        check_codec(out_dir, config)  # fail fast, before reading the input
    options = {"format": fmt, "split": split, "text_column": text_column, "words": bool(words)}
    stdin = sys.stdin.buffer.read() if "-" in files else None  # read once, walked twice

    def read(path):
        return iter_documents(path, fmt=fmt, split=split, text_column=text_column, stdin=stdin)

    pool = None
    bars: list[_Progress] = []
    try:
        if num_proc > 1 and not os.path.exists(os.path.join(out_dir, MANIFEST)):
            # Workers start now, so their imports and kernel loading overlap the plan pass.
            pool = _worker_pool(num_proc - 1)
            for _ in range(num_proc - 1):
                pool.submit(_warm_up, config)
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
        elif state == "resume":
            for i, e in enumerate(entries):
                if os.path.exists(os.path.join(out_dir, e["file"])):
                    r = existing_shard(out_dir, e, config, words)
                    if r is not None:
                        results[i] = r
        resumed = len(results)
        total = sum(e["utf8_bytes"] for i, e in enumerate(entries) if i not in results)
        bars.append(_Progress(total, "encode", progress and total > 0))
        todo = len(entries) - len(results)
        workers = min(num_proc, todo) - 1  # this process encodes too, while the workers start (imports, kernels)
        if workers > 0 and pool is None:
            pool = _worker_pool(workers)
        if todo:
            docs = iter(kept) if kept else chain.from_iterable(map(read, files))
            _encode_missing(out_dir, docs, entries, results, config, words, pool, workers, bars[-1])
    finally:
        for bar in bars:
            bar.close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    manifest = _manifest(plan, plan_bytes, results)
    if state != "complete":
        for e in entries:
            _fsync(os.path.join(out_dir, e["file"]))
        atomic_write(os.path.join(out_dir, MANIFEST), _canonical(manifest))
    if os.path.exists(os.path.join(out_dir, PLAN)):
        os.remove(os.path.join(out_dir, PLAN))
    return {"out_dir": out_dir, "documents": manifest["documents"], "words": manifest["words"],
            "utf8_bytes": manifest["utf8_bytes"], "shards": len(entries), "resumed": resumed,
            "seconds": time.perf_counter() - t0, "up_to_date": state == "complete"}


def _encode_missing(out_dir, docs, entries, results, config, words, pool, slots, bar) -> None:
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
        bar.update(entries[i]["utf8_bytes"], entries[i]["documents"])

    def dispatch() -> None:
        for f in [f for f in inflight if f.done()]:
            finish(inflight.pop(f), f.result())  # re-raises a worker's error here
        while len(inflight) < slots:
            i = next(todo, None)
            if i is None:
                return
            inflight[pool.submit(encode_shard, out_dir, entries[i], take(i), config, words, os.getpid())] = i

    dispatch()
    for i in todo:
        finish(i, encode_shard(out_dir, entries[i], take(i), config, words, on_batch=dispatch if slots else None))
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


def _manifest(plan: dict, plan_bytes: bytes, results: dict) -> dict:
    keep = ("file", "documents", "words", "utf8_bytes", "first_id", "size", "sha256", "sources", "input_sha256")
    shards = [{k: {**e, **results[i]}[k] for k in keep} for i, e in enumerate(plan["shards"])]
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "codec_fingerprint": plan["codec_fingerprint"],
            "plan_sha256": hashlib.sha256(plan_bytes).hexdigest(), "options": plan["options"],
            "inputs": plan["inputs"], "documents": sum(s["documents"] for s in shards),
            "words": sum(s["words"] for s in shards), "utf8_bytes": sum(s["utf8_bytes"] for s in shards),
            "shards": shards}
