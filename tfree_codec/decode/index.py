"""A dictionary's scorer and inverted index, built once and cached on disk, so that loading a 100k-word dictionary
does not pay the factorisation (about a second) at every start.

The cache is one ``.npz`` file per dictionary file, keyed by the checksum its metadata holds (verified by
``Dictionary.load``) and by the codec: ``$TFREE_CACHE/index`` (default ``$XDG_CACHE_HOME/tfree`` or
``~/.cache/tfree``). Not beside the dictionary: a checkpoint directory lists and checksums its files, and the
bundled model's may be read-only. Written atomically; read back only when its header names the same dictionary,
codec and format, its members pass the zip CRC, and every array that a kernel indexes with is in range (a kernel
that trusted a damaged index could read or write anywhere). Anything else, a missing directory or a read-only
disk included, means the index is built in memory as if there were no cache, never an error. Dictionaries built in
memory (no file checksum) are not cached. Words added later (``extend``) grow the scorer incrementally. The folder
keeps the KEEP indexes used last.
"""
from __future__ import annotations

import io
import json
import os
import re
import zipfile

import numpy as np

from ..config import atomic_write
from .dictionary import Dictionary
from .scorer import Scorer

FORMAT = "tfree-index"
VERSION = 1
KEEP = 8  # indexes kept in the cache folder
_NAME = re.compile(r"[0-9a-f]{40}-[0-9a-f]+-v[0-9]+\.npz")


def cache_dir() -> str:
    base = os.environ.get("TFREE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "tfree")
    return os.path.join(base, "index")


def cache_path(dictionary) -> str | None:
    """Where the index of a dictionary loaded from a file lives (None for one built in memory)."""
    if not dictionary.file_checksum:
        return None
    return os.path.join(cache_dir(), f"{dictionary.file_checksum[:40]}-{dictionary.fingerprint()}-v{VERSION}.npz")


def build_scorer(dictionary) -> Scorer:
    """The scorer (and index) of a dictionary's words: from the cache when it holds them, else built (and cached
    when the dictionary came from a file). Words past the file's go in incrementally."""
    n0 = dictionary.file_words if dictionary.file_checksum else 0
    path = cache_path(dictionary)
    sc = _load(path, dictionary, n0) if path else None
    if sc is None:
        sc = Scorer(dictionary.codec)
        if n0:
            _add(sc, dictionary, 0, n0)
            _save(path, dictionary, n0, sc)
    _add(sc, dictionary, len(sc), len(dictionary))
    return sc


def warm(path, codec=None) -> bool:
    """Build the index of the dictionary file at ``path`` into the cache now (``tfree dict build`` and ``tfree
    export`` call it after writing one), so that the first generation from it reads the index instead of building
    it. -> whether the cache holds it afterwards (False: no cache can be written here; nothing else changes)."""
    d = Dictionary.load(path, codec)
    build_scorer(d)
    return os.path.isfile(cache_path(d))


def _add(sc: Scorer, d, a: int, b: int) -> None:
    if b > a:
        base = int(d.indptr[a])
        sc.add(d.words[a:b], d.indptr[a:b + 1] - base, d.indices[base:int(d.indptr[b])])


def _header(d, n: int) -> dict:
    return {"format": FORMAT, "version": VERSION, "checksum": d.file_checksum, "fingerprint": d.fingerprint(),
            "words": n}


def _save(path: str, d, n: int, sc: Scorer) -> None:
    buf = io.BytesIO()
    np.savez(buf, header=np.array(json.dumps(_header(d, n))), **sc.state())
    try:
        atomic_write(path, buf.getvalue())
        _evict(os.path.dirname(path))
    except OSError:  # no cache (read-only home, full disk): the next start builds the index again
        pass


def _evict(folder: str) -> None:
    """Keep the KEEP most recently used indexes (reading one marks it used): a dictionary rebuilt or grown leaves
    its old index behind. Only this module's own files, by their names, in this module's own folder."""
    mine = [os.path.join(folder, f) for f in os.listdir(folder) if _NAME.fullmatch(f)]
    for f in sorted(mine, key=os.path.getmtime, reverse=True)[KEEP:]:
        os.unlink(f)


def _load(path: str, d, n: int) -> Scorer | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["header"])) != _header(d, n):
                return None
            arrays = {k: z[k] for k in z.files if k != "header"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    try:
        os.utime(path)  # used: kept by _evict
    except OSError:
        pass
    try:
        ok = _valid(arrays, n, d.config.vocab_size, d.config.num_activations)
    except (KeyError, ValueError, TypeError, IndexError):
        ok = False
    return Scorer.restore(d.codec, arrays) if ok else None


_DTYPES = {"trows": "int32", "eptr": "int64", "etid": "int32", "keys": "uint64", "key_ids": "int64", "order": "int64",
           "lcp": "int32", "sptr": "int64", "stid": "int32", "xptr": "int64", "xrow": "int32", "xval": "float32",
           "a": "float32", "c": "float32", "sizes": "int32", "kptr": "int64", "ktid": "int32", "tptr": "int64",
           "tpos": "int32", "scalars": "int64"}


def _valid(a: dict, n: int, v: int, m: int) -> bool:
    """The arrays a scorer is made of, with their types; every array a kernel indexes with, in range; every
    pointer array rising to its array's end."""
    if set(a) != set(_DTYPES) or any(str(a[k].dtype) != t for k, t in _DTYPES.items()):
        return False
    def ints(name, lo, hi, length=None):
        x = a[name]
        good = x.dtype.kind in "iu" and (length is None or len(x) == length)
        return good and (len(x) == 0 or (int(x.min()) >= lo and int(x.max()) < hi))

    def ptr(name, length, end):
        x = a[name]
        return x.dtype.kind == "i" and len(x) == length and x[0] == 0 and x[-1] == end and bool((np.diff(x) >= 0).all())

    trows, nt = a["trows"], len(a["trows"])
    ne = len(a["eptr"]) - 1
    maxd, factored = (int(x) for x in a["scalars"])
    if trows.ndim != 2 or trows.shape[1] != m or not ints("trows", 0, v):
        return False
    if not (ptr("eptr", ne + 1, len(a["etid"])) and ints("etid", 0, nt) and ints("stid", 0, nt + ne)
            and ptr("sptr", n + 1, len(a["stid"])) and ptr("xptr", n + 1, len(a["xrow"])) and ints("xrow", 0, v)
            and ptr("kptr", n + 1, len(a["ktid"])) and ints("ktid", 0, nt) and ptr("tptr", nt + 1, len(a["tpos"]))
            and ints("tpos", 0, n) and ints("lcp", 0, maxd + 1, n) and ints("sizes", 0, v + 1, n)
            and ints("key_ids", 0, nt, len(a["keys"])) and 0 <= factored <= n):
        return False
    order = a["order"]
    if not ints("order", 0, n, n) or not (np.bincount(order, minlength=n) == 1).all():
        return False
    depth = a["lcp"] + np.diff(a["sptr"])  # the trie kernels write partial sums up to this depth
    lens = (len(a["xval"]), len(a["a"]), len(a["c"]))
    return bool((depth <= maxd).all()) and lens == (len(a["xrow"]), n, n)
