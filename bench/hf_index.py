"""Throughput of the Hugging Face route and of ``tfree shards index`` beside ``tfree encode`` and ``ShardDataset``.

    python bench/hf_index.py [--input ../shared/data/english_prose.txt.xz] [--mb 8]

The first --mb MB of the input (cut at a line) are encoded with --split lines on one process (timed); then, on
that directory: ``index_shards`` after the manifest and lexicon.arrow are removed (reads every shard in full and
rebuilds them: must give the same lexicon.arrow), ``ShardDataset`` words of every document, and the same words
through ``datasets.load_dataset(DIR)`` + ``.map(AddWords(DIR))`` (rows must be equal). MB/s are of UTF-8 text.
"""
from __future__ import annotations

import argparse
import lzma
import os
import shutil
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "english_prose.txt.xz"))
    ap.add_argument("--mb", type=float, default=8.0)
    args = ap.parse_args()

    from tfree_codec import CodecConfig
    from tfree_codec.shards.index import index_shards
    from tfree_codec.shards.reader import ShardDataset
    from tfree_codec.shards.writer import encode_to_shards

    scratch = tempfile.mkdtemp(prefix="tfree-hf-")
    try:
        opener = lzma.open if args.input.endswith(".xz") else open
        with opener(args.input, "rb") as f:
            data = f.read(int(args.mb * 1e6))
        data = data[:data.rfind(b"\n") + 1]
        src, out = os.path.join(scratch, "input.txt"), os.path.join(scratch, "shards")
        with open(src, "wb") as f:
            f.write(data)
        mb = len(data) / 1e6

        def timed(label, fn):
            t = time.perf_counter()
            r = fn()
            dt = time.perf_counter() - t
            print(f"{label:<44} {dt:7.2f} s  {mb / dt:7.2f} MB/s")
            return r

        print(f"{args.input}: {mb:.1f} MB, --split lines")
        timed("tfree encode (1 process)", lambda: encode_to_shards([src], out, CodecConfig(), split="lines",
                                                                   num_proc=1, progress=False))
        lexicon = open(os.path.join(out, "lexicon.arrow"), "rb").read()
        for name in ("manifest.json", "lexicon.arrow"):
            os.remove(os.path.join(out, name))
        timed("tfree shards index (rebuild, full check)", lambda: index_shards(out))
        assert open(os.path.join(out, "lexicon.arrow"), "rb").read() == lexicon
        ds = ShardDataset(out)

        def shard_words():
            out = []
            for k in range(ds.num_shards):
                f = ds.flat(k)
                words = [ds.lexicon_words[g] for g in f.global_ids().tolist()]
                offsets = f.doc_offsets.tolist()
                out += [words[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
            return out

        want = timed("ShardDataset words (flat, to_global)", shard_words)
        try:
            import datasets
        except ImportError:
            print("datasets is not installed: the Hugging Face route is not measured")
            return
        from tfree_codec.shards.hf import AddWords

        datasets.disable_progress_bars()
        cache = os.path.join(scratch, "cache")

        def hf_words():
            rows = datasets.load_dataset(out, split="train", cache_dir=cache)
            return rows.map(AddWords(out), batched=True, with_indices=True, keep_in_memory=True)["words"]

        got = timed("load_dataset(DIR) + map(AddWords) words", hf_words)
        assert got == want, "the datasets route gave other words"
        print(f"{len(ds):,} documents, {ds.num_shards} shards: same lexicon.arrow after index, same words both ways")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
