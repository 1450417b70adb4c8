"""``encode_to_shards``: inputs -> a directory of Arrow shards, in parallel, resumable, byte-reproducible.

Two passes over the inputs. The plan pass (``plan.py``) reads every document once, checks it (UTF-8, not empty)
and cuts the stream into shards by document count or UTF-8 bytes, so shard i is a fixed range of the input that
does not depend on the number of processes. The encode pass streams the documents again (or, for inputs under
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

import dataclasses
import hashlib
import json
import os
import re
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pyarrow as pa

from ..codec import default_num_threads
from ..config import CodecConfig, TfreeError, atomic_write, plain_interrupts
from .hf import CARD, card_is_ours, write_card
from .docs import Docs, concat, pack
from .lexicon import (FORMAT, FORMAT_VERSION, LEXICON, Merger, encode_documents, lexicon_batch_utf8, lexicon_name,
                      stream_buffer, stream_bytes)
from .reader import CODEC, MANIFEST, seal
from .resume import JOURNAL, DirLock, drop_temporaries, kept_shard, record, records, reuse_manifest
from ..codec import codec_for
from .plan import auto_num_proc, input_digest, make_plan, usable_cores  # noqa: F401 (make_plan: the plan pass, tested here)
from .sources import SPLITS, expand_inputs, is_url, iter_batches
from .workers import start_pool, stop_pool, warm_up

PLAN = ".plan.json"
TMP_PREFIX = ".tmp-"
DEFAULT_SHARD_BYTES = 2 << 20  # UTF-8 bytes of text per shard: ~75 MB on disk with v=8192, m=10
BATCH_BYTES = 1 << 20           # text given to the kernels at a time (bounded memory)
KEEP_BYTES = 512 << 20          # inputs up to this size are read once: the plan pass keeps their documents


def _canonical(obj) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


# -- one shard (runs in a worker process, or inline with one process) ----------------------------------------------
def write_shard(out_dir: str, file: str, docs: pa.RecordBatch, lexicon: pa.RecordBatch, config: CodecConfig,
                sync: bool = False) -> dict:
    """Write a shard's two files (lexicon first, documents last), each as ``.tmp-<pid>-<name>`` renamed into place;
    returns the stats its manifest entry keeps. Durable later (every file is fsynced before the manifest), or now
    with ``sync``."""
    meta = {"tfree.format": FORMAT, "tfree.format_version": str(FORMAT_VERSION),
            "tfree.codec_fingerprint": config.fingerprint()}
    stats = {"words": int(len(docs.column("words").values)), "lexicon_words": lexicon.num_rows}
    for key, name, batch in (("lexicon_", lexicon_name(file), lexicon), ("", file, docs)):
        data = stream_buffer(batch, meta)
        tmp = os.path.join(out_dir, f"{TMP_PREFIX}{os.getpid()}-{name}")
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, os.path.join(out_dir, name))
        stats[key + "size"], stats[key + "sha256"] = data.size, hashlib.sha256(data).hexdigest()
    return stats


def encode_shard(out_dir: str, entry: dict, docs: Docs, config: CodecConfig, parent_pid: int | None = None,
                 on_batch=None, check: bool = True) -> dict:
    """Encode one planned shard and move its files into place; returns their stats.

    In a worker, ``parent_pid`` is the main process: if it dies (killed), the worker stops between batches
    instead of racing the rerun. ``on_batch()`` is called after each batch (the main process feeds its workers
    from there). ``check``: the documents were read again, so compare them with the plan's digest."""
    return write_shard(out_dir, entry["file"], *encode_shard_batches(docs, entry, config, parent_pid, on_batch, check),
                       config)


def encode_shard_batches(docs: Docs, entry: dict, config: CodecConfig, parent_pid: int | None = None, on_batch=None,
                         check: bool = True):
    """The (documents batch, lexicon batch) of one planned shard, not written yet."""
    if not isinstance(docs, Docs):
        docs = pack(list(docs))
    def between_batches():
        if parent_pid is not None and os.getppid() != parent_pid:
            os._exit(1)
        if on_batch is not None:
            on_batch()

    batch, lexicon, n_bytes, digest = encode_documents(codec_for(config), docs, _batches(docs), between_batches,
                                                       hashed=check)
    if len(docs) != entry["documents"] or (check and input_digest(digest, n_bytes) != entry["input_sha256"]):
        raise TfreeError(f"the input changed while encoding ({entry['file']} differs from the plan): rerun the command")
    return batch, lexicon


def _batches(docs: Docs):
    """Batch bounds (lo, hi) of about BATCH_BYTES of text each (a bigger document gets one of its own): bounded
    memory, whatever the documents."""
    ends = docs.offsets[1:] - docs.offsets[0]
    lo, n = 0, len(docs)
    if not n:
        yield 0, 0
    while lo < n:
        done = int(ends[lo - 1]) if lo else 0
        hi = max(int(np.searchsorted(ends, done + BATCH_BYTES, side="left")) + 1, lo + 1)
        hi = min(hi, n)
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
        self.bar, self.docs, self.t0 = None, 0, time.perf_counter()
        if enabled:  # tqdm takes a tenth of a second to import: not for -q
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1000, dynamic_ncols=True,
                            leave=False)

    def update(self, n_bytes: int, n_docs: int) -> None:
        self.docs += n_docs
        if self.bar is not None:
            self.bar.update(n_bytes)
            self.bar.set_postfix_str(f"{self.docs / max(time.perf_counter() - self.t0, 1e-9):,.0f} docs/s", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass(frozen=True)
class EncodeOptions:
    """How ``encode_to_shards`` reads its inputs and cuts its shards (``tfree encode``'s options).

    ``num_proc`` processes encode: this one and ``num_proc - 1`` spawned workers (default: ``auto_num_proc``)."""

    split: str = "none"
    text_column: str = "text"
    fmt: str = "auto"
    num_proc: int | None = None
    overwrite: bool = False
    docs_per_shard: int | None = None
    shard_bytes: int | None = DEFAULT_SHARD_BYTES
    progress: bool = True

def _outside(files: list[str], out_dir: str) -> list[str]:
    """The inputs but any file inside the output directory: ``encode DIR -o DIR/shards`` would read its own
    shards on a rerun (another plan: refused)."""
    top = os.path.join(os.path.realpath(out_dir), "")
    kept = [f for f in files if f == "-" or is_url(f) or not os.path.realpath(f).startswith(top)]
    if not kept:
        raise TfreeError(f"every input is inside the output directory {out_dir}")
    return kept


@plain_interrupts()  # Ctrl-C inside a kernel is a KeyboardInterrupt, not numba's SystemError
def encode_to_shards(inputs, out_dir: str, config: CodecConfig, options: EncodeOptions | None = None, **kw) -> dict:
    """Encode ``inputs`` into Arrow shards under ``out_dir`` as ``options`` (or its fields as keywords:
    ``split="lines"``, ``num_proc=1``, ...) say; returns a summary. See the module docstring."""
    o = dataclasses.replace(options or EncodeOptions(), **kw)
    split, text_column, fmt, num_proc, overwrite = o.split, o.text_column, o.fmt, o.num_proc, o.overwrite
    docs_per_shard, shard_bytes, progress = o.docs_per_shard, o.shard_bytes, o.progress
    t0 = time.perf_counter()
    out_dir = os.fspath(out_dir)
    if split not in SPLITS:
        raise TfreeError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    cores = usable_cores()
    files = _outside(expand_inputs(inputs), out_dir)
    num_proc = min(num_proc or auto_num_proc(files, cores), cores)  # workers beyond the cores only wait for them
    if not overwrite:
        check_codec(out_dir, config)  # fail fast, before reading the input
    options = {"format": fmt, "split": split, "text_column": text_column}
    stdin = sys.stdin.buffer.read() if "-" in files else None  # read once, walked twice

    def read(path):
        return iter_batches(path, fmt=fmt, split=split, text_column=text_column, stdin=stdin)

    lock = DirLock(out_dir)  # a second run into out_dir stops here, in one line
    pool, encoded, damaged, merger = None, False, 0, Merger()
    bars: list[_Progress] = []
    # This process's kernels load (or, on the first run after install, compile) while the plan pass reads: numba's
    # loading and LLVM release the GIL much of the time, and the plan pass is mostly numpy and I/O.
    threading.Thread(target=warm_up, args=(config,), name="tfree-warm-up", daemon=True).start()
    try:
        if num_proc > 1 and not os.path.exists(os.path.join(out_dir, MANIFEST)):
            # Workers start now, so their imports and kernel loading overlap the plan pass.
            pool = start_pool(num_proc - 1, config)
        bars.append(_Progress(None, "plan", progress))
        kept: list[Docs] = []
        plan = make_plan(files, read, config, options, (docs_per_shard, shard_bytes), bars[-1].update, kept,
                             KEEP_BYTES)
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
            batches = iter(kept) if kept else chain.from_iterable(map(read, files))
            _encode_missing(out_dir, batches, entries, results, config,
                            (pool, workers, default_num_threads() if num_proc == 1 else 1, merger), bars[-1],
                            check=not kept)
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
        lexicon = merge_lexicons(out_dir, [e["file"] for e in entries], merger)
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


class _Stream:
    """The documents of a stream of ``Docs`` batches, taken shard by shard (in order; skipped ones are passed over)."""

    def __init__(self, batches):
        self.batches, self.cur, self.at, self.pos = iter(batches), None, 0, 0

    def take(self, first: int, n: int) -> Docs:
        """Documents first..first+n-1 of the stream (first >= where the last take ended)."""
        parts, skip = [], first - self.pos
        while skip or n:
            if self.cur is None or self.at == len(self.cur):
                self.cur, self.at = next(self.batches), 0
                continue
            k = min(skip, len(self.cur) - self.at)
            self.at, skip = self.at + k, skip - k
            k = min(n, len(self.cur) - self.at)
            if k:
                parts.append(self.cur.slice(self.at, self.at + k))
                self.at, n = self.at + k, n - k
        self.pos = first + sum(map(len, parts))
        return parts[0] if len(parts) == 1 else concat(parts)


def _encode_missing(out_dir, batches, entries, results, config, helpers: tuple, bar, check) -> None:
    """Second pass: stream the documents (kept from the plan pass, or read again) and encode every shard not
    in ``results``; ``helpers`` is (the worker pool or None, its workers, threads when there are none, the Merger
    that shards finished in order are folded into as they finish).

    Without workers, ``threads`` threads of this process each encode and write one shard at a time: the kernels,
    hashing, writing and fsync release the GIL. With workers, each worker holds one shard at a time; this process
    encodes the others itself and, between its record batches, hands a freed worker the next shard. So nobody
    waits on a queue and the run ends within about one shard of perfectly balanced. This process's shards are
    written (serialised, hashed, written, fsynced) by a thread while it encodes the next one."""
    pool, slots, threads, merger = helpers
    todo = iter(i for i in range(len(entries)) if i not in results)
    inflight: dict = {}
    stream = _Stream(batches)

    def take(i: int) -> Docs:
        return stream.take(entries[i]["first_id"], entries[i]["documents"])

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
            inflight[pool.submit(encode_shard, out_dir, entries[i], take(i).compact(), config, os.getpid(),
                                 check=check)] = i

    if not slots:
        def finish_and_fold(i: int, stats: dict, lexicon: pa.RecordBatch) -> None:
            finish(i, stats)
            if merger.shards == i:  # every shard before it is in
                merger.add_batch(lexicon)

        _encode_threads(out_dir, todo, take, finish_and_fold, entries, config, check, threads)
        return
    dispatch()
    with ThreadPoolExecutor(1) as sink:
        writing = None  # (shard, future) being written
        for i in todo:
            batch, lexicon = encode_shard_batches(take(i), entries[i], config, on_batch=dispatch if slots else None,
                                                  check=check)
            if writing is not None:
                finish(writing[0], writing[1].result())
            writing = (i, sink.submit(write_shard, out_dir, entries[i]["file"], batch, lexicon, config, True))
            dispatch()
        if writing is not None:
            finish(writing[0], writing[1].result())
    while inflight:
        wait(inflight, return_when=FIRST_COMPLETED)
        dispatch()


def _encode_threads(out_dir, todo, take, finish, entries, config, check, threads) -> None:
    """The shards ``todo``, each encoded and written by one of ``threads`` threads; at most ``threads + 1`` shards'
    documents are held at a time, and ``finish(shard, stats, lexicon batch)`` runs for each in order, on this
    thread, while the others work (it folds the lexicon into the merge: the merge step has little left to do)."""
    def one(i: int, docs: Docs):
        batch, lexicon = encode_shard_batches(docs, entries[i], config, check=check)
        return write_shard(out_dir, entries[i]["file"], batch, lexicon, config, True), lexicon

    def done(j: int, future) -> None:
        finish(j, *future.result())

    with ThreadPoolExecutor(threads, thread_name_prefix="tfree-encode") as pool:
        queue: list = []
        for i in todo:
            if len(queue) > threads:
                done(*queue.pop(0))
            queue.append((i, pool.submit(one, i, take(i))))
        for j, f in queue:
            done(j, f)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def merge_lexicons(out_dir: str, files: list[str], merger: Merger | None = None) -> dict:
    """The merge step: fold the shard lexicons (in shard order) into ``lexicon.arrow``; returns its stats.
    ``merger``: the first ``merger.shards`` of them are folded in already."""
    merger = merger or Merger()
    for f in files[merger.shards:]:
        merger.add_file(os.path.join(out_dir, lexicon_name(f)))
    data = stream_bytes(lexicon_batch_utf8(*merger.utf8(), merger.counts), {"tfree.format": FORMAT})
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
