"""What lets a rerun of ``tfree encode`` trust a directory: a lock on it, and a record of every finished shard.

- **Lock**: the job holds an exclusive ``flock`` on the output directory itself (no lock file that could go stale:
  the kernel drops the lock when its process dies, however it dies), so a second run into the same directory
  refuses in one line, and a rerun after a crash simply takes it.
- **Record** (``.done.jsonl``): when a shard's two files are in place, the main process appends a line with
  their sizes and sha256. A rerun keeps a shard only if its files are byte for byte the ones recorded there (or in
  the manifest of a finished run) and pass the content checks; anything else is removed and encoded again, so a
  damaged or truncated shard is never carried into the manifest as good. A shard finished but not yet recorded
  when the job was killed is simply encoded again (identical bytes).
"""
from __future__ import annotations

import hashlib
import json
import os

from ..config import CodecConfig, TfreeError, atomic_write
from .lexicon import FORMAT_VERSION, LEXICON, lexicon_name
from .reader import MANIFEST, MANIFEST_SUM, check_manifest, check_shard_files, file_sha256, manifest_digest

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock
    fcntl = None

JOURNAL = ".done.jsonl"
STATS = ("words", "lexicon_words", "size", "sha256", "lexicon_size", "lexicon_sha256")


class DirLock:
    """An exclusive lock on ``out_dir`` (created if missing) for the life of the job (``job`` names it in the
    refusal: ``tfree encode``, ``tfree train``, ...). ``release(failed)`` drops it and, after a failure, removes the
    directories it created if they are still empty (a refused input leaves no trace). A second lock on a directory
    this process already holds is a no-op (``tfree retok`` locks its run, then trains in it)."""

    _held: set = set()  # real paths this process holds

    def __init__(self, out_dir: str, job: str = "tfree encode"):
        self.fd, self.key = None, None
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise TfreeError(f"{out_dir} exists and is not a directory")
        self.created, d = [], os.path.abspath(out_dir)
        while not os.path.exists(d):
            self.created.append(d)
            d = os.path.dirname(d)
        os.makedirs(out_dir, exist_ok=True)
        key = os.path.realpath(out_dir)
        if key in DirLock._held:
            self.created = []
            return
        self.fd = os.open(out_dir, os.O_RDONLY)
        self.key = key
        DirLock._held.add(key)
        if fcntl is None:
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release(True)
            raise TfreeError(f"{out_dir}: another {job} is writing to this directory; wait for it to end "
                             "(or stop it), then rerun") from None
        except OSError:  # a file system without locks (some network mounts): go on unlocked
            pass

    def __del__(self):  # a job that failed after its shards were encoded (a full disk while merging)
        self.release(False)

    def release(self, failed: bool) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            DirLock._held.discard(self.key)
        if failed:
            for d in self.created:  # deepest first
                try:
                    os.rmdir(d)
                except OSError:  # not empty (a resumable run's files) or not ours to remove
                    break
            self.created = []


def record(out_dir: str, file: str, stats: dict) -> None:
    """Append a finished shard's stats (sizes, sha256) to the record. A line cut short by a kill is ignored."""
    with open(os.path.join(out_dir, JOURNAL), "a", encoding="utf-8") as f:
        f.write(json.dumps({"file": file, **{k: stats[k] for k in STATS}}, sort_keys=True) + "\n")


def records(out_dir: str) -> dict[str, dict]:
    """file -> its last recorded stats (lines that do not parse are skipped: their shards are encoded again)."""
    out: dict[str, dict] = {}
    try:
        with open(os.path.join(out_dir, JOURNAL), encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if isinstance(r, dict) and isinstance(r.get("file"), str):
                    out[r["file"]] = r
    except FileNotFoundError:
        pass
    return out


def _matches(path: str, size, sha256) -> bool:
    return os.path.isfile(path) and os.path.getsize(path) == size and file_sha256(path) == sha256


def kept_shard(out_dir: str, entry: dict, config: CodecConfig, rec: dict | None) -> tuple[dict | None, bool]:
    """(stats, damaged) of a shard a previous run finished: stats if both its files are the recorded ones (size,
    sha256) and pass the content checks, else None with its files removed; ``damaged``: files were there but
    did not match their record."""
    path = os.path.join(out_dir, entry["file"])
    lex_path = os.path.join(out_dir, lexicon_name(entry["file"]))
    if not os.path.exists(path):
        return None, False
    ok = False
    if rec is not None:
        try:
            ok = _matches(path, rec["size"], rec["sha256"]) and _matches(lex_path, rec["lexicon_size"],
                                                                         rec["lexicon_sha256"]) \
                and check_shard_files(path, lex_path, {**entry, "words": rec["words"],
                                                       "lexicon_words": rec["lexicon_words"]}, config) is None
        except (KeyError, TypeError):  # a damaged record line
            ok = False
    if ok:
        return {k: rec[k] for k in STATS}, False
    for p in (path, lex_path):
        if os.path.exists(p):
            os.remove(p)
    return None, rec is not None


def reuse_manifest(out_dir: str, data: bytes, plan_bytes: bytes, plan_name: str) -> str:
    """What to do with a directory whose ``manifest.json`` (``data``) a finished run wrote: "complete" when it is
    this plan's and every file is still the one it records (sha256: hashing is far cheaper than encoding), else
    "resume" (its shard entries go to the record, so the good shards are kept, the plan is written as
    ``plan_name``, and only then is the manifest removed: a kill in between leaves a resumable directory). A
    damaged manifest, another plan's, or another format's is refused in one line."""
    mpath = os.path.join(out_dir, MANIFEST)
    try:
        m = json.loads(data)
    except ValueError:
        m = None
    if not isinstance(m, dict):
        raise TfreeError(f"{mpath}: damaged manifest (not a JSON object); pass --overwrite to re-encode")
    if m.get("format_version") != FORMAT_VERSION:
        raise TfreeError(f"{out_dir} holds shards of format {m.get('format_version')!r} (this tfree writes "
                         f"{FORMAT_VERSION}): pass --overwrite to re-encode it")
    sealed = MANIFEST_SUM in m
    problem = "its manifest_sha256 does not match its contents" if sealed and m[MANIFEST_SUM] != manifest_digest(m) \
        else check_manifest(m)
    if problem:
        raise TfreeError(f"{mpath}: damaged manifest ({problem}); pass --overwrite to re-encode")
    if m.get("plan_sha256") != hashlib.sha256(plan_bytes).hexdigest():
        raise TfreeError(f"{out_dir} holds shards of other inputs or options; pass --overwrite to replace them")
    files = [(s["file"], s["size"], s["sha256"]) for s in m["shards"]]
    files += [(lexicon_name(s["file"]), s["lexicon_size"], s["lexicon_sha256"]) for s in m["shards"]]
    files.append((LEXICON, m["lexicon"]["size"], m["lexicon"]["sha256"]))
    if sealed and all(_matches(os.path.join(out_dir, n), size, h) for n, size, h in files):
        return "complete"
    # A file went missing or changed since (or the manifest predates its checksum): redo what does not match.
    for s in m["shards"]:
        record(out_dir, s["file"], s)
    atomic_write(os.path.join(out_dir, plan_name), plan_bytes)
    os.remove(mpath)
    return "resume"


def drop_temporaries(out_dir: str, prefix: str, pids) -> None:
    """Remove the temporary files of these processes (a job stopped mid-shard)."""
    mine = tuple(f"{prefix}{pid}-" for pid in pids)
    try:
        names = os.listdir(out_dir)
    except OSError:
        return
    for n in names:
        if n.startswith(mine):
            try:
                os.remove(os.path.join(out_dir, n))
            except OSError:
                pass
