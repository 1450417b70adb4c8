"""docs/shards.md's recipes for engines that bring their own parallelism, run as written: each task writes the
shard whose number it is given, reading its documents [k N, (k + 1) N) by global position, so the directory is
byte for byte `tfree encode --docs-per-shard N`'s whatever the engine's slicing. `datasets.map` with num_proc 2
and 3 (the engine's slices do not start at multiples of N) and Ray Data on a local ``ray.init``."""
import json
import os

import pytest
from click.testing import CliRunner

from tfree_cli.main import main
from tfree_codec import CodecConfig
from tfree_codec.assets import sample_text
from tfree_codec.shards.parts import finish_parts, write_part
from tfree_codec.shards.reader import ShardDataset

pytestmark = pytest.mark.slow  # worker processes (datasets num_proc, Ray) and tfree encode

N = 6  # documents per shard: 47 documents -> 8 shards, the last one short


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(texts, the directory `tfree encode --docs-per-shard N` wrote)."""
    tmp = tmp_path_factory.mktemp("ref")
    texts = [line for line in sample_text(6_000).splitlines() if line.strip()][:47]
    (tmp / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["encode", str(tmp / "in.txt"), "-o", str(tmp / "ref"), "--split", "lines",
                                  "--docs-per-shard", str(N), "--num-proc", "1", "-q"])
    assert r.exit_code == 0, r.output
    return texts, tmp / "ref"


def same_shards(a, b) -> None:
    """The shard files and lexicon.arrow of two directories are byte-identical (the manifests differ: no plan)."""
    names = sorted(f for f in os.listdir(a) if f.endswith(".arrow"))
    assert names == sorted(f for f in os.listdir(b) if f.endswith(".arrow")) and len(names) == 2 * 8 + 1
    for f in names:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def encode_shards(batch, ds, out_dir, count, cfg):
    # docs/shards.md: one row per shard number k; its documents by global position, whatever slice this worker got
    return {"entry": [json.dumps(write_part(ds[k * N:(k + 1) * N]["text"], out_dir, k, count, cfg, k * N))
                      for k in batch["shard"]]}


@pytest.mark.parametrize("num_proc", [2, 3])
def test_datasets_map_with_num_proc_equals_tfree_encode(reference, tmp_path, num_proc):
    datasets = pytest.importorskip("datasets")
    texts, ref = reference
    ds = datasets.Dataset.from_dict({"text": texts})
    count = -(-len(ds) // N)
    jobs = datasets.Dataset.from_dict({"shard": list(range(count))})
    cfg = CodecConfig().to_dict()
    made = jobs.map(encode_shards, batched=True, batch_size=1, num_proc=num_proc, remove_columns=["shard"],
                    fn_kwargs={"ds": ds, "out_dir": str(tmp_path / "out"), "count": count, "cfg": cfg})
    finish_parts(str(tmp_path / "out"), [json.loads(e) for e in made["entry"]], cfg)
    same_shards(ref, tmp_path / "out")
    assert [d.text() for d in ShardDataset(tmp_path / "out")] == texts


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ray.data's own settings, on import
def test_ray_data_equals_tfree_encode(reference, tmp_path):
    ray = pytest.importorskip("ray")
    datasets = pytest.importorskip("datasets")
    texts, ref = reference
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ds = datasets.Dataset.from_dict({"text": texts})
        count = -(-len(ds) // N)
        cfg, out = CodecConfig().to_dict(), str(tmp_path / "out")

        def part(row):  # docs/shards.md's Ray Data recipe: one row per shard number
            k = row["id"]
            return {"entry": json.dumps(write_part(ds[k * N:(k + 1) * N]["text"], out, k, count, cfg, k * N))}

        made = ray.data.range(count).map(part).take_all()
        finish_parts(out, [json.loads(r["entry"]) for r in made], cfg)
    finally:
        ray.shutdown()
    same_shards(ref, tmp_path / "out")
