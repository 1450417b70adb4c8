"""``tfree shards index DIR``: the manifest (and ``lexicon.arrow``, and the dataset card) made after the fact, from
whatever format-2 shards are in DIR: those of Ray, Spark or ``datasets.map`` tasks that called ``write_part`` but
never reached ``finish_parts``, or a directory whose manifest was lost.

Every shard is read and checked in full (both files, schema, codec fingerprint, word ids against its lexicon, and
each document's UTF-8 length against the text its words join to), then ``finish_parts`` does the rest, so the
result is byte-identical to what ``finish_parts`` would have written with the tasks' entries. Anything else in DIR
(a foreign file, a missing or damaged shard, an unfinished ``tfree encode``) is refused in one line.
"""
from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np
import pyarrow as pa

from ..config import CodecConfig, TfreeError
from ..text.words import join
from .hf import CARD, write_card
from .lexicon import LEXICON, check_documents, column_numpy, lexicon_name, list_numpy, read_lexicon, read_stream
from .parts import finish_parts
from .reader import CODEC, MANIFEST, MANIFEST_SUM, file_sha256, manifest_digest, shard_name
from .resume import JOURNAL
from .plan import input_digest
from .writer import PLAN, SHARD_KEYS, TMP_PREFIX

_DOCS = re.compile(r"shard-(\d{5})-of-(\d{5})\.arrow")
_LEX = re.compile(r"shard-(\d{5})-of-(\d{5})\.lexicon\.arrow")


def _codec(out_dir: str, config) -> CodecConfig:
    path = os.path.join(out_dir, CODEC)
    if os.path.isfile(path):
        found = CodecConfig.load(path)
        if config is not None and config.fingerprint() != found.fingerprint():
            raise TfreeError(f"{path} is codec {found.fingerprint()}, not the {config.fingerprint()} given")
        return found
    if config is None:
        raise TfreeError(f"{out_dir} has no {CODEC}: give the codec the shards were written with")
    return config


def shard_entry(out_dir: str, file: str, first_id: int, config: CodecConfig) -> dict:
    """The manifest entry of one shard found in ``out_dir``, as ``write_part`` returns it, after checking it in
    full; TfreeError naming the file if anything is wrong."""
    path, lex_path = os.path.join(out_dir, file), os.path.join(out_dir, lexicon_name(file))
    if not os.path.isfile(lex_path):
        raise TfreeError(f"{path}: its lexicon {lexicon_name(file)} is missing")
    words, _ = read_lexicon(lex_path)
    t = read_stream(path)
    fp = (t.schema.metadata or {}).get(b"tfree.codec_fingerprint", b"").decode()
    version = (t.schema.metadata or {}).get(b"tfree.format_version", b"").decode()
    if version != "2":
        raise TfreeError(f"{path}: not a format-2 tfree shard (format {version or '?'})")
    if fp != config.fingerprint():
        raise TfreeError(f"{path}: made with codec {fp or '?'}, not {config.fingerprint()}")
    if t.schema.names != ["n_bytes", "words"] or t.schema.field("n_bytes").type != pa.uint32():
        raise TfreeError(f"{path}: unexpected schema (not a format-2 tfree shard)")
    n_bytes = column_numpy(t, "n_bytes")
    entry = {"file": file, "documents": t.num_rows, "utf8_bytes": int(n_bytes.sum(dtype=np.uint64)),
             "first_id": first_id}
    problem = check_documents(t, entry, len(words))
    if problem:
        raise TfreeError(f"{path}: {problem}")
    h, n_words, row = hashlib.sha256(), 0, 0
    for b in t.to_batches():  # the text back, to check the byte counts and hash it as write_part did
        offsets, values = list_numpy(b.column("words"))
        ids = values.tolist()
        for j, lo in enumerate(offsets[:-1].tolist()):
            data = join([words[w] for w in ids[lo:offsets[j + 1]]]).encode("utf-8")
            if len(data) != int(n_bytes[row]):
                raise TfreeError(f"{path}: document {row} holds {len(data)} bytes of text, its n_bytes says "
                                 f"{int(n_bytes[row])}")
            h.update(data)
            row += 1
        n_words += int(offsets[-1] - offsets[0])
    return {**entry, "input_sha256": input_digest(h, n_bytes), "words": n_words, "lexicon_words": len(words),
            "size": os.path.getsize(path), "sha256": file_sha256(path), "lexicon_size": os.path.getsize(lex_path),
            "lexicon_sha256": file_sha256(lex_path)}


def index_shards(out_dir, config: CodecConfig | None = None, progress=None) -> dict:
    """Build (or rebuild) ``out_dir``'s manifest from the shards in it; returns ``{"manifest", "up_to_date"}``.
    ``config``: the codec, needed only where ``codec.json`` is missing. A manifest that already says exactly
    what the shards hold is kept as it is (``tfree encode``'s plan and sources stay)."""
    out_dir = os.fspath(out_dir)
    if not os.path.isdir(out_dir):
        raise TfreeError(f"{out_dir!r} is not a directory")
    names = sorted(os.listdir(out_dir))
    unfinished = [n for n in names if n in (PLAN, JOURNAL) or n.startswith(TMP_PREFIX)]
    if unfinished:
        raise TfreeError(f"{out_dir} holds {unfinished[0]}: a tfree encode is running or was interrupted there; "
                         "rerun that command to finish it")
    foreign = [n for n in names if n not in (CODEC, MANIFEST, LEXICON, CARD) and not _DOCS.fullmatch(n)
               and not _LEX.fullmatch(n)]
    if foreign:
        why = (" (a datasets cache file: .map on Dataset.from_file writes one beside its input unless "
               "keep_in_memory=True)") if re.fullmatch(r"cache-.*\.arrow", foreign[0]) else ""
        raise TfreeError(f"{out_dir} holds {foreign[0]!r}, which is not a tfree shard file{why}; move it away first")
    docs = [n for n in names if _DOCS.fullmatch(n)]
    if not docs:
        raise TfreeError(f"{out_dir} holds no shards (shard-NNNNN-of-NNNNN.arrow)")
    count = int(_DOCS.fullmatch(docs[-1]).group(2))
    expected = [shard_name(i, count) for i in range(count)]
    for n in docs + [n for n in names if _LEX.fullmatch(n)]:
        if n.replace(".lexicon", "") not in expected:
            raise TfreeError(f"{out_dir} holds {n}, which is not one of {count} shards (shards of two runs?)")
    missing = [n for n in expected if n not in docs]
    if missing:
        raise TfreeError(f"{out_dir}: {missing[0]} is missing ({len(missing)} of {count} shards are)")
    config = _codec(out_dir, config)
    entries, first = [], 0
    for i, file in enumerate(expected):
        entries.append(shard_entry(out_dir, file, first, config))
        first += entries[-1]["documents"]
        if progress:
            progress(i)
    old = _old_manifest(out_dir)
    keys = SHARD_KEYS + ("input_sha256",)
    if (old is not None and old.get(MANIFEST_SUM) == manifest_digest(old)  # sealed: readers would refuse it else
            and old.get("codec_fingerprint") == config.fingerprint()
            and [{k: s.get(k) for k in keys} for s in old.get("shards", [])] == [{k: e[k] for k in keys} for e in entries]
            and os.path.isfile(os.path.join(out_dir, LEXICON))
            and file_sha256(os.path.join(out_dir, LEXICON)) == old.get("lexicon", {}).get("sha256")):
        write_card(out_dir, old["shards"])
        return {"manifest": old, "up_to_date": True}
    return {"manifest": finish_parts(out_dir, entries, config), "up_to_date": False}


def _old_manifest(out_dir: str) -> dict | None:
    try:
        with open(os.path.join(out_dir, MANIFEST), encoding="utf-8") as f:
            m = json.load(f)
        return m if isinstance(m, dict) else None
    except (OSError, ValueError):
        return None
