"""Encode a Hugging Face dataset with ``datasets.map``: the same pure function Ray, Spark and Dask can call.

    pip install datasets && python examples/04_datasets_map.py
"""
from datasets import Dataset

from tfree_codec import CodecConfig
from tfree_codec.shards.rows import encode_record_batch
from tfree_codec.assets import sample_text

texts = [p for p in sample_text(50_000).split("\n\n") if p.strip()]
ds = Dataset.from_dict({"text": texts})
encoded = ds.map(encode_record_batch, batched=True, batch_size=256, remove_columns=["text"],
                 fn_kwargs={"config": CodecConfig().to_dict()})  # a dict: picklable, hashable by datasets
print(encoded)
print(encoded[0]["words"][:12])
