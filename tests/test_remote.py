"""Inputs beyond local files: URLs go through fsspec (the [remote] extra), tested on its in-memory and local
filesystems: the same documents, the same shards, and one line when fsspec or a URL is missing."""
import json
import os
import sys

import pytest

from conftest import cli
from tfree_codec import CodecConfig
from tfree_codec.shards.sources import expand_inputs, iter_documents
from tfree_codec.shards.writer import encode_to_shards

fsspec = pytest.importorskip("fsspec")

DOCS = ["It is a truth universally acknowledged.", "Emma Woodhouse, handsome, clever, and rich.", "Très bien 日本語"]


@pytest.fixture()
def local(tmp_path):
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("\n".join(DOCS), encoding="utf-8")
    (d / "sub" / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS), encoding="utf-8")
    (d / ".hidden").write_text("not me")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": DOCS}), d / "c.parquet")
    return d


@pytest.fixture()
def memory(local):
    fs = fsspec.filesystem("memory")
    root = f"/corpus-{os.getpid()}-{id(local)}"
    for p in local.rglob("*"):
        if p.is_file():
            fs.pipe(f"{root}/{p.relative_to(local).as_posix()}", p.read_bytes())
    yield f"memory://{root}"
    fs.rm(root, recursive=True)


def test_urls_expand_like_local_paths_and_give_the_same_documents(local, memory):
    urls = expand_inputs([memory])
    files = expand_inputs([str(local)])
    assert [u.rsplit(os.path.basename(memory), 1)[1] for u in urls] == [f.rsplit("corpus", 1)[1] for f in files]
    for u, f in zip(urls, files):
        assert list(iter_documents(u, split="lines")) == list(iter_documents(f, split="lines"))
    assert expand_inputs([memory + "/*.parquet"]) == [memory + "/c.parquet"]
    uri = local.as_uri()  # file:///...
    assert [list(iter_documents(u, split="lines")) for u in expand_inputs([uri])] == \
        [list(iter_documents(f, split="lines")) for f in files]


def test_encoding_a_url_makes_the_shards_of_the_same_local_files(local, memory, tmp_path):
    cfg = CodecConfig(vocab_size=1024, num_activations=4)
    encode_to_shards([str(local)], str(tmp_path / "a"), cfg, split="lines", num_proc=1, progress=False)
    encode_to_shards([memory], str(tmp_path / "b"), cfg, split="lines", num_proc=1, progress=False)
    sums = [[s["sha256"] for s in json.load(open(tmp_path / d / "manifest.json"))["shards"]] for d in "ab"]
    assert sums[0] == sums[1] and sums[0]
    r = cli("encode", local.as_uri() + "/a.txt", "-o", str(tmp_path / "c"), "--num-proc", "1",
                                  "--split", "lines", "-q")
    assert r.exit_code == 0, r.output


def test_a_missing_url_or_fsspec_is_one_line(memory, monkeypatch, tmp_path):
    r = cli("encode", memory + "/nope.txt", "-o", str(tmp_path / "x"), "-q")
    assert r.exit_code == 1 and "no such file or directory" in r.output and "Traceback" not in r.output
    monkeypatch.setitem(sys.modules, "fsspec", None)  # as if not installed
    r = cli("encode", "s3://bucket/data.jsonl", "-o", str(tmp_path / "y"), "-q")
    assert r.exit_code == 1 and "needs fsspec" in r.output and "tfree-codec[remote]" in r.output
