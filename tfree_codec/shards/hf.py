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
import sys
from itertools import chain

import numpy as np

from ..config import TfreeError, atomic_write
from .lexicon import LEXICON, UINT16_WORDS
from .reader import ShardDataset

CARD = "README.md"
# The marker is a YAML comment on the card's second line: found in its first bytes however many shards it lists.
MARKER = "# tfree-shards dataset card: written by tfree, which rewrites or removes it with the shards"


def card_text(shards: list[dict]) -> str:
    """The card of a directory whose manifest lists ``shards``: a pure function of their names and lexicon sizes
    (so ``tfree encode`` and ``finish_parts`` write the same bytes)."""
    # The widest word id type of any shard: datasets casts every file to the declared features, so a directory
    # mixing uint16 and uint32 shards (lexicons of 65,536 words or more) still loads as one table.
    ids = "uint32" if any(s["lexicon_words"] >= UINT16_WORDS for s in shards) else "uint16"
    files = "".join(f"    - {s['file']}\n" for s in shards)
    return f"""---
{MARKER}
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
            return MARKER.encode() in f.read(4096)
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
    shard's file (``Dataset.from_file``) pass ``shard`` (its number or file name). Each row's byte count and ids
    are checked against its document, which catches rows shuffled or filtered first (short rows at the start of
    shards can look alike, so map first, then shuffle). Picklable (``num_proc``)."""

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
            elif self.shard is not None and not 0 <= self.shard < self._ds.num_shards:
                raise TfreeError(f"{self.shard_dir}: no shard {self.shard} (it has {self._ds.num_shards})")
        return self._ds

    def __call__(self, batch, indices):
        loader = sys.modules.get("torch.utils.data")  # never imported here: only a DataLoader worker has it
        worker = loader.get_worker_info() if loader is not None else None
        if worker is not None and worker.num_workers > 1:
            # a streamed dataset in DataLoader workers: each worker numbers its own rows from 0
            raise TfreeError("AddWords in DataLoader workers sees each worker's row numbers, not document ids: map "
                             "load_dataset(DIR) without streaming (then any number of workers), or use num_workers=1")
        ds = self._dataset()
        idx = np.asarray(indices, np.int64)
        lens = np.fromiter(map(len, batch["words"]), np.int64, count=len(idx))
        local = np.fromiter(chain.from_iterable(batch["words"]), np.int64, count=int(lens.sum()))
        n_bytes = np.asarray(batch["n_bytes"], np.int64)
        starts = np.zeros(len(idx) + 1, np.int64)
        np.cumsum(lens, out=starts[1:])
        if self.shard is not None:
            ks, rows, limit = np.full(len(idx), self.shard), idx, ds.shards[self.shard]["documents"]
        else:
            ks, rows, limit = np.searchsorted(ds._starts, idx, side="right") - 1, idx, len(ds)
            rows = idx - ds._starts[np.clip(ks, 0, ds.num_shards - 1)]
        if len(idx) and (idx.min() < 0 or idx.max() >= limit):
            raise TfreeError(f"row {int(idx[(idx < 0) | (idx >= limit)][0])} is past the end of the "
                             f"{'shard' if self.shard is not None else 'directory'} ({limit} documents)")
        gids = np.empty(len(local), np.int64)
        bad = np.zeros(len(idx), bool)
        for k in np.unique(ks).tolist():  # rows of one shard at a time, vectorised
            sel = np.flatnonzero(ks == k)
            f = ds.flat(k)
            r = rows[sel]
            lo, hi = f.doc_offsets[r].astype(np.int64), f.doc_offsets[r + 1].astype(np.int64)
            bad[sel] = (hi - lo != lens[sel]) | (f.n_bytes[r] != n_bytes[sel])
            ok = sel[~bad[sel]]
            if not len(ok):
                continue
            n = lens[ok]
            src = np.repeat(f.doc_offsets[rows[ok]].astype(np.int64) - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
            dst = np.repeat(starts[ok] - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
            stored = f.word_ids[src].astype(np.int64)
            wrong = stored != local[dst]
            if wrong.any():
                bad[ok[np.searchsorted(np.cumsum(n), np.flatnonzero(wrong)[0], side="right")]] = True
            gids[dst] = f.to_global[stored]
        if bad.any():
            i = int(idx[np.flatnonzero(bad)[0]])
            raise TfreeError(f"row {i} does not match its document in {self.shard_dir} (were the rows shuffled or "
                             "filtered, or is shard= missing for one shard's file?)")
        lex, flat, bounds = ds.lexicon_words, gids.tolist(), starts.tolist()
        words = [lex[g] for g in flat]
        doc_ids = (idx + (ds.shards[self.shard]["first_id"] if self.shard is not None else 0)).tolist()
        return {"words": [words[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
                "word_ids": [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])], "id": doc_ids}
