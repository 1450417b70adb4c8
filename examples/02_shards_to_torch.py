"""Encode text into Arrow shards, read them back zero-copy and embed the words the T-FREE way.

    python examples/02_shards_to_torch.py [OUT_DIR]

A word's embedding is the sum of the embedding rows of its pattern: ``nn.EmbeddingBag`` over the shard's flat CSR
arrays, with no dense multi-hot ever built. Uses the bundled public-domain sample (Jane Austen).
"""
import os
import sys
import tempfile

import torch

from tfree_codec import CodecConfig
from tfree_codec.assets import sample_text
from tfree_codec.shards.writer import encode_to_shards
from tfree_codec.shards.reader import ShardDataset

out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="tfree-example-")
src = os.path.join(out, "sample.txt")
with open(src, "w", encoding="utf-8") as f:
    f.write(sample_text(200_000))
summary = encode_to_shards([src], os.path.join(out, "shards"), CodecConfig(), split="paragraphs", num_proc=1,
                           progress=False)
print(f"{summary['documents']:,} documents, {summary['words']:,} words in {summary['shards']} shard(s)")

ds = ShardDataset(os.path.join(out, "shards"))
print(ds[0].text()[:80].replace("\n", " "), "...")  # shards keep the words: the exact text comes back
flat = ds.flat(0)  # numpy views over the memory-mapped shard
n = int(flat.doc_offsets[8])  # the words of the first 8 documents
table = torch.nn.EmbeddingBag(ds.config.vocab_size, 64, mode="sum")
rows = torch.from_numpy(flat.indices[: flat.word_offsets[n]].astype("int64"))
starts = torch.from_numpy(flat.word_offsets[:n].astype("int64"))
print("word embeddings:", tuple(table(rows, starts).shape))  # (words, 64)
