"""Stage 2, corpora -> shards: takes text, JSONL, Parquet or Arrow inputs (``sources``); hands on a directory of
Arrow shards in the row format of ``rows``, written by the resumable job in ``writer`` and read back by ``reader``
(``ShardDataset``) for training, dictionaries and other tools."""
from .reader import ShardDataset
from .rows import encode_record_batch
from .writer import encode_to_shards

__all__ = ["ShardDataset", "encode_record_batch", "encode_to_shards"]
