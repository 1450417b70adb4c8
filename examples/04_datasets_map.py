"""Encode a Hugging Face dataset into a v2 shard directory with ``datasets.map`` in two processes: the rows mapped
are the shard numbers, and shard k's process encodes documents [k * per_shard, (k + 1) * per_shard) into one whole
shard (``write_part``); one merge step finishes the directory (``finish_parts``). Numbered by global position, the
shards do not depend on how ``num_proc`` slices the work. Ray Data, Spark and Dask run the same two functions
(docs/shards.md).

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


def encode_shards(batch, ds, out_dir, config):
    # one row per shard number k: its documents by their global position in ds
    return {"entry": [json.dumps(write_part(ds[k * per_shard:(k + 1) * per_shard]["text"], out_dir, k, count, config,
                                            k * per_shard)) for k in batch["shard"]]}


if __name__ == "__main__":  # datasets starts its worker processes from here
    jobs = Dataset.from_dict({"shard": list(range(count))})
    made = jobs.map(encode_shards, batched=True, batch_size=1, num_proc=2, remove_columns=["shard"],
                    fn_kwargs={"ds": ds, "out_dir": out, "config": CodecConfig().to_dict()})  # config: plain data
    finish_parts(out, [json.loads(e) for e in made["entry"]], CodecConfig())
    shards = ShardDataset(out)
    print(f"num_rows: {len(shards)} in {shards.num_shards} shards, lexicon of {len(shards.lexicon_words):,} words")
    print(shards[0].words[:12])
    assert [d.text() for d in shards] == texts
