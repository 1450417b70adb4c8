"""Encode text into Arrow shards, read them back zero-copy and embed the words the T-FREE way.

    python examples/02_shards_to_torch.py [OUT_DIR]

A word's embedding is the sum of the embedding rows of its pattern: ``nn.EmbeddingBag`` over the patterns of the
distinct words (from the dataset lexicon), then an index per occurrence; no dense multi-hot is ever built. Uses the bundled public-domain sample (Jane Austen).
"""
import os
import sys
import tempfile

import numpy as np
import torch

from tfree_codec import CodecConfig
from tfree_codec.assets import sample_text
from tfree_codec.shards.writer import encode_to_shards
from tfree_codec.shards.reader import ShardDataset
from tfree_codec.shards.corpus import gather_patterns

out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="tfree-example-")
src = os.path.join(out, "sample.txt")
with open(src, "w", encoding="utf-8") as f:
    f.write(sample_text(200_000))
summary = encode_to_shards([src], os.path.join(out, "shards"), CodecConfig(), split="paragraphs", num_proc=1,
                           progress=False)
print(f"{summary['documents']:,} documents, {summary['words']:,} words in {summary['shards']} shard(s)")

ds = ShardDataset(os.path.join(out, "shards"))
print(ds[0].text()[:80].replace("\n", " "), "...")  # shards keep the words: the exact text comes back
flat = ds.flat(0)  # numpy views over the memory-mapped shard: word ids into the shard's lexicon
n = int(flat.doc_offsets[8])  # the words of the first 8 documents
ids = flat.to_global[flat.word_ids[:n]]  # ids into the dataset lexicon
distinct, inverse = np.unique(ids, return_inverse=True)
indptr, indices = ds.patterns()  # each lexicon word's pattern, hashed once when the lexicon is loaded
lens, rows = gather_patterns(indptr, indices, distinct)
table = torch.nn.EmbeddingBag(ds.config.vocab_size, 64, mode="sum")
offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lens)[:-1]]).astype("int64"))
per_word = table(torch.from_numpy(rows.astype("int64")), offsets)  # each distinct word embedded once
embedded = per_word[torch.from_numpy(inverse.reshape(-1))]        # then indexed per occurrence
print("word embeddings:", tuple(embedded.shape), f"from {len(distinct)} distinct words")  # (words, 64)
