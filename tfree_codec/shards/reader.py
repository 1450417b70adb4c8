"""Reading shard directories written by ``tfree encode`` (format 2: docs/shards.md).

    ds = ShardDataset("out/")     # checks manifest, codec fingerprint, file sizes and the dataset lexicon
    len(ds), ds.num_shards, ds.codec, ds.lexicon_words, ds.lexicon_counts
    doc = ds[0]                   # doc.word_ids, doc.words, doc.indices[doc.indptr[i]:doc.indptr[i + 1]], doc.text()
    flat = ds.flat(0)             # zero-copy numpy over the memory-mapped shard, for training loaders
    indptr, indices = ds.patterns()  # every lexicon word's pattern, hashed once on first use
    ds.verify()                   # also re-hashes every file (sha256)
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..codec import Codec
from ..config import CodecConfig, TfreeError, file_sha256
from ..text.words import join
from .lexicon import (FORMAT, FORMAT_VERSION, LEXICON, Merger, check_documents, column_numpy, lexicon_name,
                      list_numpy, read_lexicon, read_stream)

MANIFEST = "manifest.json"
CODEC = "codec.json"
MANIFEST_SUM = "manifest_sha256"  # the manifest's own checksum: every other key, as compact sorted JSON
__all__ = ["ShardDataset", "FlatShard", "Document", "read_stream", "FORMAT", "FORMAT_VERSION"]


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}.arrow"


def _check_sha256(path: str, expected: str) -> None:
    if file_sha256(path) != expected:
        raise TfreeError(f"{path}: sha256 mismatch (the file is corrupt or was modified)")


@dataclass(frozen=True, eq=False)
class Document:
    """One document: ``word_ids`` index the dataset lexicon; ``indices[indptr[i]:indptr[i+1]]`` are word i's rows."""

    id: int
    n_bytes: int
    word_ids: np.ndarray  # (n_words,) int64, ids into the dataset lexicon
    words: list[str]
    indptr: np.ndarray    # (n_words + 1,) int64, starts at 0
    indices: np.ndarray   # (nnz,) uint32

    def __len__(self) -> int:
        return len(self.word_ids)

    def text(self) -> str:
        return join(self.words)


@dataclass(frozen=True, eq=False)
class FlatShard:
    """A shard's documents as flat arrays, zero-copy over the memory-mapped file.

    Document j's words are ``word_ids[doc_offsets[j]:doc_offsets[j+1]]``: ids into the *shard's* lexicon (uint16
    or uint32); ``to_global[word_ids]`` are their ids into the dataset lexicon (``ShardDataset.patterns``)."""

    ids: np.ndarray          # (n_docs,) uint64: the shard's first_id + row (not stored)
    n_bytes: np.ndarray      # (n_docs,) uint32, UTF-8 bytes of each document
    doc_offsets: np.ndarray  # (n_docs + 1,) int32, document -> word offsets (from 0)
    word_ids: np.ndarray     # (n_words,) uint16/uint32, shard lexicon ids
    to_global: np.ndarray    # (shard lexicon size,) int64, shard id -> dataset id

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_words(self) -> int:
        return int(self.doc_offsets[-1])

    def global_ids(self) -> np.ndarray:
        """(n_words,) int64 dataset-lexicon ids of all words (one gather, a copy)."""
        return self.to_global[self.word_ids]


def manifest_digest(m: dict) -> str:
    """sha256 of a manifest's keys but ``manifest_sha256``: it covers what no file check can (sources, options,
    recorded hashes), so one flipped bit anywhere in manifest.json is found on open."""
    body = json.dumps({k: v for k, v in m.items() if k != MANIFEST_SUM}, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()


def seal(m: dict) -> dict:
    """The manifest with its checksum (``manifest_sha256``) added: what writers save."""
    return {**m, MANIFEST_SUM: manifest_digest(m)}


def _count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


_SHARD_INTS = ("documents", "words", "utf8_bytes", "first_id", "size", "lexicon_words", "lexicon_size")


def check_manifest(m: dict) -> str | None:
    """What is wrong with a manifest's structure (the keys readers index with), or None."""
    shards, lex = m.get("shards"), m.get("lexicon")
    if not isinstance(m.get("codec_fingerprint"), str):
        return "no codec_fingerprint"
    if not isinstance(shards, list) or not shards or not all(isinstance(s, dict) for s in shards):
        return "no list of shards"
    if not isinstance(lex, dict) or lex.get("file") != LEXICON or not all(_count(lex.get(k)) for k in ("words", "size")) \
            or not isinstance(lex.get("sha256"), str):
        return "bad lexicon entry"
    first = 0
    for i, s in enumerate(shards):
        if s.get("file") != shard_name(i, len(shards)):
            return f"shard {i} is {s.get('file')!r}, expected {shard_name(i, len(shards))}"
        if not all(_count(s.get(k)) for k in _SHARD_INTS) or not all(isinstance(s.get(k), str)
                                                                     for k in ("sha256", "lexicon_sha256")):
            return f"bad entry for {s['file']}"
        if s["first_id"] != first:
            return f"{s['file']} starts at document {s['first_id']}, expected {first}"
        first += s["documents"]
    for key in ("documents", "words", "utf8_bytes"):
        if m.get(key) != sum(s[key] for s in shards):
            return f"{key} is not the sum over its shards"
    return None


def check_shard_files(path: str, lex_path: str, entry: dict, config: CodecConfig) -> str | None:
    """What is wrong with a shard's two files against its manifest/plan entry, or None."""
    try:
        words, _ = read_lexicon(lex_path) if os.path.isfile(lex_path) else (None, None)
        if words is None:
            return f"its lexicon {os.path.basename(lex_path)} is missing"
        if "lexicon_words" in entry and len(words) != entry["lexicon_words"]:
            return f"its lexicon has {len(words)} words, expected {entry['lexicon_words']}"
        t = read_stream(path)
    except TfreeError as e:
        return str(e)
    fp = (t.schema.metadata or {}).get(b"tfree.codec_fingerprint", b"").decode()
    if fp != config.fingerprint():
        return f"made with codec {fp or '?'}, not {config.fingerprint()}"
    return check_documents(t, entry, len(words))


def _load_manifest(path: str) -> dict:
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise TfreeError(f"{path!r} is not a directory")
    if not os.path.isfile(mpath):
        raise TfreeError(f"{path}: no {MANIFEST} (not a shard directory, or its encode has not finished: "
                         "rerun the same tfree encode command)")
    try:
        with open(mpath, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        raise TfreeError(f"{mpath}: unreadable manifest ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise TfreeError(f"{mpath}: not a {FORMAT} manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise TfreeError(f"{mpath}: shard format {m.get('format_version')!r}, this tfree reads {FORMAT_VERSION}: "
                         "re-encode it (the same tfree encode command with --overwrite)")
    if MANIFEST_SUM not in m:
        raise TfreeError(f"{mpath}: no {MANIFEST_SUM} (damaged, or written by an earlier tfree: rerun the tfree "
                         "encode command that made it)")
    if m[MANIFEST_SUM] != manifest_digest(m):
        raise TfreeError(f"{mpath}: damaged manifest (its {MANIFEST_SUM} does not match its contents)")
    problem = check_manifest(m)
    if problem:
        raise TfreeError(f"{mpath}: malformed manifest ({problem})")
    return m


class ShardDataset:
    """A directory of shards: ``len``, iteration, ``ds[i]``, ``ds.flat(k)``, ``ds.patterns()``, ``ds.verify()``."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        m = self.manifest = _load_manifest(self.path)
        self.config = CodecConfig.load(os.path.join(self.path, CODEC))
        if self.config.fingerprint() != m["codec_fingerprint"]:
            raise TfreeError(f"{self.path}: codec.json (fingerprint {self.config.fingerprint()}) does not match the "
                             f"manifest ({m['codec_fingerprint']})")
        self.shards = m["shards"]
        files = [(s["file"], s["size"]) for s in self.shards] + [(LEXICON, m["lexicon"]["size"])]
        files += [(lexicon_name(s["file"]), s["lexicon_size"]) for s in self.shards]
        for name, size in files:
            p = os.path.join(self.path, name)
            if not os.path.isfile(p):
                raise TfreeError(f"{self.path}: {name} is missing")
            if os.path.getsize(p) != size:
                raise TfreeError(f"{p} is {os.path.getsize(p):,} bytes, the manifest says {size:,}")
        lex_path = os.path.join(self.path, LEXICON)
        if file_sha256(lex_path) != m["lexicon"]["sha256"]:  # small, and everything is looked up in it
            raise TfreeError(f"{lex_path}: sha256 mismatch (the file is corrupt or was modified)")
        self.lexicon_words, self.lexicon_counts = read_lexicon(lex_path)
        if len(self.lexicon_words) != m["lexicon"]["words"]:
            raise TfreeError(f"{lex_path}: {len(self.lexicon_words)} words, the manifest says {m['lexicon']['words']}")
        self._starts = np.cumsum([0] + [s["documents"] for s in self.shards])
        self._cache: OrderedDict = OrderedDict()  # (kind, k) -> open table or FlatShard, a few at a time
        self._merger = None

    def __getstate__(self):  # for DataLoader workers: ship the manifest, never the memory maps
        return {**self.__dict__, "_cache": OrderedDict(), "_merger": None}

    def _cached(self, key, make):
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = self._cache[key] = make()
        while len(self._cache) > 8:
            self._cache.popitem(last=False)
        return value

    # -- sizes ------------------------------------------------------------------------------------------------
    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def num_words(self) -> int:
        return int(self.manifest["words"])

    @property
    def num_bytes(self) -> int:
        return int(self.manifest["utf8_bytes"])

    @functools.cached_property
    def codec(self) -> Codec:
        return Codec(self.config)

    def __repr__(self) -> str:
        return (f"ShardDataset({self.path!r}, documents={len(self):,}, words={self.num_words:,}, "
                f"lexicon={len(self.lexicon_words):,}, shards={self.num_shards}, codec={self.config.fingerprint()})")

    # -- the lexicon ------------------------------------------------------------------------------------------
    def patterns(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR (indptr, indices) of every dataset-lexicon word's pattern, hashed once (not stored: docs/shards.md)."""
        return self._cached(("patterns", 0), lambda: self.codec.encode_words(self.lexicon_words))

    def to_global(self, k: int) -> np.ndarray:
        """Shard k's lexicon ids -> dataset lexicon ids."""
        def make():
            if self._merger is None:
                self._merger = Merger()
                self._merger.add(self.lexicon_words)
            words = self.shard_lexicon(k)
            gids = self._merger.add(words)
            if len(self._merger) != len(self.lexicon_words):
                raise TfreeError(f"{self.lexicon_path(k)}: holds words that {LEXICON} does not (damaged directory)")
            return gids
        return self._cached(("map", k), make)

    def shard_lexicon(self, k: int) -> list[str]:
        """Shard k's lexicon words, its sha256 checked against the manifest on first use."""
        def make():
            path = self.lexicon_path(k)
            _check_sha256(path, self.shards[k]["lexicon_sha256"])
            return read_lexicon(path)[0]
        return self._cached(("lex", k), make)

    # -- access -----------------------------------------------------------------------------------------------
    def shard_path(self, k: int) -> str:
        return os.path.join(self.path, self.shards[k]["file"])

    def lexicon_path(self, k: int) -> str:
        return os.path.join(self.path, lexicon_name(self.shards[k]["file"]))

    def table(self, k: int) -> pa.Table:
        """Shard k's documents as an Arrow table over a memory map (no copy), checked on first use."""
        if not 0 <= k < self.num_shards:
            raise IndexError(f"shard {k} out of range (0..{self.num_shards - 1})")

        def make():
            # One sequential read of a few MB: it finds what no content check can (a flipped word id still
            # inside the lexicon), and the file is read for the table anyway.
            _check_sha256(self.shard_path(k), self.shards[k]["sha256"])
            t = read_stream(self.shard_path(k))
            problem = check_documents(t, self.shards[k], self.shards[k]["lexicon_words"])
            if problem:
                raise TfreeError(f"{self.shard_path(k)}: {problem}")
            return t
        return self._cached(("table", k), make)

    def flat(self, k: int) -> FlatShard:
        """Shard k as flat numpy arrays (see FlatShard) for training loaders."""
        return self._cached(("flat", k), lambda: self._flat(k))

    def _flat(self, k: int) -> FlatShard:
        t = self.table(k)
        to_global = self.to_global(k)
        if len(to_global) != self.shards[k]["lexicon_words"]:
            raise TfreeError(f"{self.lexicon_path(k)}: {len(to_global)} words, the manifest says "
                             f"{self.shards[k]['lexicon_words']}")
        batches = [b for b in t.to_batches() if b.num_rows]
        if len(batches) == 1:  # what tfree writes: zero-copy
            offsets, values = list_numpy(batches[0].column("words"))
            word_ids = values[offsets[0]:offsets[-1]]
            offsets = offsets - offsets[0] if offsets[0] else offsets
        else:
            w = pa.chunked_array([b.column("words") for b in batches], t.schema.field("words").type).combine_chunks() \
                if batches else pa.array([], t.schema.field("words").type)
            offsets, values = list_numpy(w)
            word_ids = values[offsets[0]:offsets[-1]]
            offsets = offsets - offsets[0]
        first = self.shards[k]["first_id"]
        return FlatShard(np.arange(first, first + t.num_rows, dtype=np.uint64), column_numpy(t, "n_bytes").astype(np.uint32, copy=False),
                         offsets, word_ids, to_global)

    def locate(self, i: int) -> tuple[int, int]:
        """(shard, row) of document i."""
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"document {i} out of range ({n} documents)")
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        return k, i - int(self._starts[k])

    def __getitem__(self, i: int) -> Document:
        k, r = self.locate(int(i))
        f = self.flat(k)
        gids = f.to_global[f.word_ids[f.doc_offsets[r]:f.doc_offsets[r + 1]]]
        indptr, indices = self.patterns()
        sizes = indptr[gids + 1] - indptr[gids]
        doc_ptr = np.zeros(len(gids) + 1, np.int64)
        np.cumsum(sizes, out=doc_ptr[1:])
        rows = np.concatenate([indices[indptr[g]:indptr[g + 1]] for g in gids.tolist()]) if len(gids) else \
            np.zeros(0, np.uint32)
        words = [self.lexicon_words[g] for g in gids.tolist()]
        return Document(int(f.ids[r]), int(f.n_bytes[r]), gids, words, doc_ptr, rows)

    def __iter__(self):
        for k in range(self.num_shards):
            for r in range(self.shards[k]["documents"]):
                yield self[int(self._starts[k]) + r]

    def texts(self, k: int):
        """The exact texts of shard k's documents, in order (``tfree shards cat``)."""
        f = self.flat(k)
        words = self.shard_lexicon(k)
        offsets = f.doc_offsets.tolist()
        ids = f.word_ids.tolist()
        for j in range(len(f)):
            yield join([words[w] for w in ids[offsets[j]:offsets[j + 1]]])

    # -- integrity --------------------------------------------------------------------------------------------
    def verify(self, progress=None) -> dict:
        """Re-hash every file and check its contents against the manifest; raise TfreeError naming each bad one.
        ``progress(k)`` is called after each shard."""
        bad = []
        lex = self.manifest["lexicon"]
        if file_sha256(os.path.join(self.path, LEXICON)) != lex["sha256"]:
            bad.append(f"{LEXICON}: sha256 mismatch (the file is corrupt or was modified)")
        for k, s in enumerate(self.shards):
            try:
                problem = self._check_shard(k, s)
            except (TfreeError, pa.ArrowException, OSError) as e:
                problem = str(e)
            if problem:
                bad.append(f"{s['file']}: {problem}")
            if progress:
                progress(k)
        if not bad:
            try:
                merged = Merger()
                for k in range(self.num_shards):
                    merged.add(*read_lexicon(self.lexicon_path(k)))
                if merged.words() != self.lexicon_words or not np.array_equal(merged.counts, self.lexicon_counts):
                    bad.append(f"{LEXICON}: differs from the merged shard lexicons")
            except TfreeError as e:
                bad.append(str(e))
        if bad:
            raise TfreeError(f"{len(bad)} problem(s) in {self.path}: " + "; ".join(bad))
        return {"shards": self.num_shards, "documents": len(self), "words": self.num_words,
                "utf8_bytes": self.num_bytes, "lexicon_words": len(self.lexicon_words)}

    def _check_shard(self, k: int, s: dict) -> str | None:
        if file_sha256(self.shard_path(k)) != s["sha256"]:
            return "sha256 mismatch (the file is corrupt or was modified)"
        if file_sha256(self.lexicon_path(k)) != s["lexicon_sha256"]:
            return (f"its lexicon {os.path.basename(self.lexicon_path(k))}: sha256 mismatch (the file is corrupt or "
                    "was modified)")
        return check_shard_files(self.shard_path(k), self.lexicon_path(k), s, self.config)
