"""Stage 2, corpora -> shards: takes text, JSONL, Parquet or Arrow inputs (``sources``; ``datasets`` folders too);
hands on a directory of Arrow shards in format 2 (``lexicon``: documents as word ids into per-shard lexicons, merged
into the dataset's ``lexicon.arrow``), written by the resumable job in ``writer`` (or by other engines: ``parts``,
indexed after the fact by ``index``), with a dataset card for Hugging Face ``datasets`` (``hf``), and read back by
``reader`` (``ShardDataset``) for training, dictionaries and other tools. ``rows`` keeps the in-memory row
transform with patterns (``encode_record_batch``)."""
from .reader import ShardDataset
from .writer import encode_to_shards

__all__ = ["ShardDataset", "encode_record_batch", "encode_to_shards"]


def __getattr__(name: str):
    # rows defines numba kernels, so importing it imports numba (a third of a second): only when asked for. tfree
    # encode imports numba on a thread, while its plan pass reads (writer.encode_to_shards).
    if name == "encode_record_batch":
        from .rows import encode_record_batch

        return encode_record_batch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
