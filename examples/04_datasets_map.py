"""Encode a Hugging Face dataset into a v2 shard directory with ``datasets.map``: each batch becomes one whole
shard written by whichever process runs it (``write_part``), and one merge step finishes the directory
(``finish_parts``). Ray Data, Spark and Dask run the same two functions (docs/shards.md).

    pip install datasets && python examples/04_datasets_map.py [OUT_DIR]
"""
import json
import math
import sys
import tempfile

from datasets import Dataset

from tfree_codec import CodecConfig
from tfree_codec.assets import sample_text
from tfree_codec.shards.parts import finish_parts, write_part
from tfree_codec.shards.reader import ShardDataset

out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="tfree-example-")
texts = [p for p in sample_text(50_000).split("\n\n") if p.strip()]
ds = Dataset.from_dict({"text": texts})
per_shard = 32
count = math.ceil(len(ds) / per_shard)


def part(batch, indices, out_dir, config):
    # one batch -> one shard, ids from the batch's position in the dataset
    entry = write_part(batch["text"], out_dir, indices[0] // per_shard, count, config, indices[0])
    return {"entry": [json.dumps(entry)]}


made = ds.map(part, batched=True, batch_size=per_shard, with_indices=True, remove_columns=["text"],
              fn_kwargs={"out_dir": out, "config": CodecConfig().to_dict()})  # a dict: picklable, hashable
finish_parts(out, [json.loads(e) for e in made["entry"]], CodecConfig())
shards = ShardDataset(out)
print(f"num_rows: {len(shards)} in {shards.num_shards} shards, lexicon of {len(shards.lexicon_words):,} words")
print(shards[0].words[:12])
assert [d.text() for d in shards] == texts
