"""Hugging Face ``datasets`` on a shard directory (docs/shards.md, "Hugging Face datasets").

``tfree encode``, ``finish_parts`` and ``tfree shards index`` write a dataset card, ``README.md``, whose YAML
``configs`` name the documents files (``default``) and ``lexicon.arrow`` (``lexicon``), so that
``datasets.load_dataset(SHARD_DIR)`` reads rows of documents and never takes a lexicon file for one. The card
carries MARKER: only a README.md holding it is rewritten or removed by tfree; any other README.md is the user's
and is left alone (no card is written then).

A row read by ``datasets`` holds shard-lexicon ids; ``AddWords(SHARD_DIR)`` is a ``datasets.map`` function that
turns them into the words themselves (and dataset-lexicon ids, whose patterns ``ShardDataset.patterns()`` has).
"""
from __future__ import annotations

import os

import numpy as np

from ..config import TfreeError, atomic_write
from .lexicon import LEXICON, UINT16_WORDS
from .reader import ShardDataset

CARD = "README.md"
MARKER = "<!-- tfree-shards dataset card: written by tfree, which rewrites or removes it with the shards -->"


def card_text(shards: list[dict]) -> str:
    """The card of a directory whose manifest lists ``shards``: a pure function of their names and lexicon sizes
    (so ``tfree encode`` and ``finish_parts`` write the same bytes)."""
    # The widest word id type of any shard: datasets casts every file to the declared features, so a directory
    # mixing uint16 and uint32 shards (lexicons of 65,536 words or more) still loads as one table.
    ids = "uint32" if any(s["lexicon_words"] >= UINT16_WORDS for s in shards) else "uint16"
    files = "".join(f"    - {s['file']}\n" for s in shards)
    return f"""---
configs:
- config_name: default
  default: true
  data_files:
  - split: train
    path:
{files}- config_name: lexicon
  data_files:
  - split: train
    path: {LEXICON}
dataset_info:
- config_name: default
  features:
  - name: n_bytes
    dtype: uint32
  - name: words
    list: {ids}
- config_name: lexicon
  features:
  - name: word
    dtype: string
  - name: count
    dtype: uint64
tags:
- tfree
---
{MARKER}

# tfree shards

Documents encoded by [tfree](https://arxiv.org/abs/2406.19223) (shard format 2): each row is one document, its
UTF-8 byte count (`n_bytes`) and its word ids (`words`) into its shard's lexicon (`shard-….lexicon.arrow`).
`lexicon.arrow` (config `lexicon`) is the dataset's lexicon. To read the words:

```python
from datasets import load_dataset
from tfree_codec.shards.hf import AddWords
rows = load_dataset("path/to/this/directory", split="train")
rows = rows.map(AddWords("path/to/this/directory"), batched=True, with_indices=True)
```

or `tfree_codec.ShardDataset("path/to/this/directory")`; `manifest.json` lists every file with its sha256.
"""


def card_is_ours(path: str) -> bool:
    """Whether the file at ``path`` is a card tfree wrote (it holds MARKER)."""
    try:
        with open(path, "rb") as f:
            return MARKER.encode() in f.read(1 << 16)
    except OSError:
        return False


def write_card(out_dir: str, shards: list[dict]) -> bool:
    """Write (atomically) the card of ``shards`` unless a README.md of the user's is there; False then. An
    identical card is left untouched."""
    path = os.path.join(out_dir, CARD)
    data = card_text(shards).encode("utf-8")
    if os.path.exists(path):
        if not card_is_ours(path):
            return False
        with open(path, "rb") as f:
            if f.read() == data:
                return True
    atomic_write(path, data)
    return True


class AddWords:
    """A ``datasets.map(..., batched=True, with_indices=True)`` function for rows read from a shard directory by
    ``datasets``: replaces ``words`` (shard-lexicon ids) by the words themselves and adds ``word_ids`` (their
    dataset-lexicon ids: ``ShardDataset.patterns()`` holds their patterns) and ``id`` (the document's number).

    Row indices must be document ids, as ``load_dataset(SHARD_DIR)`` reads them (all shards, in order); for one
    shard's file (``Dataset.from_file``) pass ``shard`` (its number or file name). A row that does not match its
    document (rows shuffled or filtered first) is an error, not wrong words. Picklable (``num_proc``)."""

    def __init__(self, shard_dir, shard: int | str | None = None):
        self.shard_dir, self.shard = os.fspath(shard_dir), shard
        self._ds = None

    def __getstate__(self):
        return {**self.__dict__, "_ds": None}

    def _dataset(self):
        if self._ds is None:
            self._ds = ShardDataset(self.shard_dir)
            if isinstance(self.shard, str):
                files = [s["file"] for s in self._ds.shards]
                name = os.path.basename(self.shard)
                if name not in files:
                    raise TfreeError(f"{self.shard_dir}: no shard {name!r}")
                self.shard = files.index(name)
        return self._ds

    def __call__(self, batch, indices):
        ds = self._dataset()
        words, ids, doc_ids = [], [], []
        for row, i, n_bytes in zip(batch["words"], indices, batch["n_bytes"]):
            if self.shard is not None:
                k, r = self.shard, int(i)
                if not 0 <= r < ds.shards[k]["documents"]:
                    raise TfreeError(f"row {i} is past the end of {ds.shards[k]['file']}")
            else:
                k, r = ds.locate(int(i))
            f = ds.flat(k)
            local = np.asarray(row, np.int64)
            stored = f.word_ids[f.doc_offsets[r]:f.doc_offsets[r + 1]]
            if int(n_bytes) != int(f.n_bytes[r]) or not np.array_equal(local, stored):
                raise TfreeError(f"row {i} is not document {int(f.ids[r])} of {self.shard_dir} (were the rows "
                                 "shuffled or filtered, or is shard= missing for one shard's file?)")
            g = f.to_global[stored]
            ids.append(g.tolist())
            words.append([ds.lexicon_words[w] for w in ids[-1]])
            doc_ids.append(int(f.ids[r]))
        return {"words": words, "word_ids": ids, "id": doc_ids}
