"""Shard directories written by engines that bring their own parallelism (Ray Data, Spark, Dask, ``datasets.map``,
a process pool): each task encodes one slice of the documents into one whole shard on its own (``write_part``:
its documents file and its lexicon file, as ``tfree encode`` writes them), and one last step (``finish_parts``)
merges the shard lexicons into ``lexicon.arrow`` and writes the dataset card (``hf``) and ``manifest.json``. Given
the same slices, the shard files and ``lexicon.arrow`` are byte-identical to ``tfree encode --docs-per-shard N``'s
(tested). A job that never reached ``finish_parts`` is indexed after the fact by ``tfree shards index`` (``index``).
"""
from __future__ import annotations

import os

from ..config import TfreeError, atomic_write
from .hf import write_card
from .docs import pack
from .lexicon import encode_documents, lexicon_name
from .reader import CODEC, MANIFEST, seal, shard_name
from ..codec import codec_for
from .rows import as_config
from .plan import input_digest
from .writer import SHARD_KEYS, _batches, _canonical, _fsync, manifest_totals, merge_lexicons, write_shard


def write_part(texts, out_dir: str, index: int, count: int, config, first_id: int) -> dict:
    """Encode ``texts`` (one document each, ids from ``first_id``) as shard ``index`` of ``count`` in ``out_dir``;
    returns its manifest entry (a small picklable dict: hand it to ``finish_parts``). ``config``: a CodecConfig,
    its dict or its JSON."""
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TfreeError(f"document {first_id + i} is {type(t).__name__}, not a string")
    if not 0 <= index < count:
        raise TfreeError(f"shard index {index} is not in 0..{count - 1}")
    config = as_config(config)
    os.makedirs(out_dir, exist_ok=True)
    file = shard_name(index, count)
    docs = pack(texts, f"part {index}", first_id)
    batch, lexicon, n_bytes, digest = encode_documents(codec_for(config), docs, _batches(docs))
    stats = write_shard(out_dir, file, batch, lexicon, config)
    return {"file": file, "documents": len(texts), "utf8_bytes": int(n_bytes.sum()), "first_id": int(first_id),
            "input_sha256": input_digest(digest, n_bytes), **stats}


def finish_parts(out_dir: str, entries, config) -> dict:
    """The merge step, once every part is written: ``codec.json``, ``lexicon.arrow``, ``README.md`` (the dataset
    card) and ``manifest.json`` (last). Refuses a set of parts with a gap, an overlap or a missing shard."""
    config = as_config(config)
    entries = sorted((dict(e) for e in entries), key=lambda e: e["file"])
    count = len(entries)
    next_id = 0
    for i, e in enumerate(entries):
        if e["file"] != shard_name(i, count):
            raise TfreeError(f"expected {shard_name(i, count)} among the parts, got {e['file']}")
        if e["first_id"] != next_id:
            raise TfreeError(f"{e['file']} starts at document {e['first_id']}, expected {next_id} (a gap or overlap)")
        next_id += e["documents"]
        for name in (e["file"], lexicon_name(e["file"])):
            _fsync(os.path.join(out_dir, name))
    config.save(os.path.join(out_dir, CODEC))
    lexicon = merge_lexicons(out_dir, [e["file"] for e in entries])
    shards = [{k: e[k] for k in SHARD_KEYS + ("input_sha256",)} for e in entries]
    manifest = seal({**manifest_totals(config.fingerprint(), shards, lexicon), "options": {}, "inputs": []})
    write_card(out_dir, shards)
    atomic_write(os.path.join(out_dir, MANIFEST), _canonical(manifest))
    return manifest
