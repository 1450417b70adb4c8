"""Hugging Face datasets on a shard directory, and shard directories made by others (issue 14, item 3):
the dataset card that makes ``load_dataset(SHARD_DIR)`` read the documents, ``AddWords``, the gate (load_dataset,
Dataset.from_file, streaming and a 2-worker DataLoader with the collate function all yield ShardDataset's words),
``tfree encode`` on its own directory with a card, ``tfree shards index``, and ``save_to_disk``/``datasets``
Arrow inputs."""
import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pytest

from conftest import cli
from tfree_codec import Codec, CodecConfig, TfreeError
from tfree_codec.assets import sample_text
from tfree_codec.shards import hf
from tfree_codec.shards.index import index_shards
from tfree_codec.shards.parts import finish_parts, write_part
from tfree_codec.shards.reader import ShardDataset
from tfree_codec.shards.sources import expand_inputs, iter_documents
from tfree_codec.shards import writer as shard_writer
from tfree_codec.shards.writer import SHARD_KEYS, encode_to_shards

CODEC = Codec()
TEXTS = [t for t in sample_text(6000).split("\n") if t.strip()][:45] + ["Grüße aus Köln: 3.14 €", "日本語の文章です。"]


def files(path):
    return {n: open(os.path.join(path, n), "rb").read() for n in sorted(os.listdir(path))}


def encode(tmp, out, texts=TEXTS, **kw):
    src = tmp / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    kw = {"split": "lines", "num_proc": 1, "docs_per_shard": 20, "progress": False, **kw}
    return encode_to_shards([str(src)], out, CODEC.config, **kw)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hf")
    encode(tmp, tmp / "out")
    return tmp / "out"


@pytest.fixture(scope="module")
def datasets():
    return pytest.importorskip("datasets")


def shard_words(out):
    return [d.words for d in ShardDataset(out)]


# -- the card ---------------------------------------------------------------------------------------------------------
def test_the_card_names_the_documents_files_and_carries_the_marker(shards, tmp_path):
    card = (shards / "README.md").read_text(encoding="utf-8")
    m = json.loads((shards / "manifest.json").read_text())
    assert hf.MARKER in card and hf.card_is_ours(str(shards / "README.md"))
    assert card == hf.card_text(m["shards"])
    yaml = card.split("---")[1]
    assert [line.strip()[2:] for line in yaml.splitlines() if line.strip().startswith("- shard-")] == \
        [s["file"] for s in m["shards"]]  # the documents files only, never a lexicon file
    assert "list: uint16" in yaml and "list: uint32" in hf.card_text([{**m["shards"][0], "lexicon_words": 1 << 16}])
    many = tmp_path / "many"  # the marker is found however many shards the card lists
    many.mkdir()
    hf.write_card(str(many), [{"file": f"shard-{i:05d}-of-05000.arrow", "lexicon_words": 99} for i in range(5000)])
    assert hf.card_is_ours(str(many / "README.md")) and os.path.getsize(many / "README.md") > 100_000
    (many / "README.md").write_text(card.replace(hf.MARKER + "\n", ""))  # without the marker it is the user's
    assert not hf.card_is_ours(str(many / "README.md")) and not hf.write_card(str(many), m["shards"])


def test_load_dataset_on_the_directory_yields_shard_dataset_words(shards, datasets, tmp_path):
    rows = datasets.load_dataset(str(shards), split="train", cache_dir=str(tmp_path / "cache"))
    assert rows.column_names == ["n_bytes", "words"] and rows.num_rows == len(TEXTS)
    got = rows.map(hf.AddWords(shards), batched=True, batch_size=7, with_indices=True)
    ds = ShardDataset(shards)
    assert got["words"] == shard_words(shards) and got["id"] == list(range(len(TEXTS)))
    assert got["word_ids"][5] == ds[5].word_ids.tolist() and CODEC.join(got["words"][-1]) == TEXTS[-1]
    lex = datasets.load_dataset(str(shards), "lexicon", split="train", cache_dir=str(tmp_path / "cache"))
    assert lex["word"] == ds.lexicon_words and lex["count"] == ds.lexicon_counts.tolist()
    with pytest.raises(TfreeError, match="shuffled or filtered"):
        rows.shuffle(seed=1).map(hf.AddWords(shards), batched=True, with_indices=True)
    with pytest.raises(TfreeError, match="past the end of the shard"):
        hf.AddWords(shards, shard=2)(rows[:3], [5, 6, 40])
    for bad in (3, "shard-00009-of-00009.arrow"):
        with pytest.raises(TfreeError, match="no shard"):
            hf.AddWords(shards, shard=bad)(rows[:1], [0])


def test_streaming_yields_the_same_words(shards, datasets):
    rows = datasets.load_dataset(str(shards), split="train", streaming=True)
    got = [r["words"] for r in rows.map(hf.AddWords(shards), batched=True, batch_size=6, with_indices=True)]
    assert got == shard_words(shards)


def test_dataset_from_file_of_each_shard_yields_its_words(shards, datasets):
    before = files(shards)
    want, ds = shard_words(shards), ShardDataset(shards)
    got = []
    for k, s in enumerate(ds.shards):
        rows = datasets.Dataset.from_file(str(shards / s["file"]))
        # keep_in_memory: map would otherwise write its cache file beside the shard, into the shard directory
        got += rows.map(hf.AddWords(shards, s["file"] if k % 2 else k), batched=True, with_indices=True,
                        keep_in_memory=True)["words"]
    assert got == want and files(shards) == before


def test_mixed_id_widths_load_as_one_table(shards, datasets, tmp_path):
    d = tmp_path / "wide"
    shutil.copytree(shards, d)
    m = json.loads((d / "manifest.json").read_text())
    (d / "README.md").write_text(hf.card_text([{**m["shards"][0], "lexicon_words": 1 << 16}, *m["shards"][1:]]))
    rows = datasets.load_dataset(str(d), split="train", cache_dir=str(tmp_path / "cache"))
    assert str(rows.features["words"].feature.dtype) == "uint32"
    assert rows.map(hf.AddWords(d), batched=True, with_indices=True)["words"] == shard_words(shards)


def test_a_dataloader_with_two_workers_and_the_collator_yields_the_same_words(shards, datasets):
    torch = pytest.importorskip("torch")
    from tfree_codec.model.batch import Collator, batch_encode

    ds = ShardDataset(shards)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=Collator(ds.codec), num_workers=2)
    batches = list(loader)
    assert [w for b in batches for w in b.words] == shard_words(shards)
    want = batch_encode(CODEC, TEXTS[:8])  # the patterns too: those of the texts themselves
    assert torch.equal(batches[0].padded(), want.padded()) and torch.equal(batches[0].attention_mask, want.attention_mask)
    rows = datasets.load_dataset(str(shards), split="train", streaming=True)
    with pytest.raises(TfreeError, match="AddWords"):
        Collator(CODEC)([next(iter(rows))])
    mapped = rows.map(hf.AddWords(shards), batched=True, with_indices=True)
    got = [w for b in torch.utils.data.DataLoader(mapped, batch_size=8, collate_fn=Collator(CODEC)) for w in b.words]
    assert got == shard_words(shards)
    with pytest.raises(TfreeError, match="without streaming"):  # streamed into 2 workers: each counts rows from 0
        list(torch.utils.data.DataLoader(mapped, batch_size=8, collate_fn=Collator(CODEC), num_workers=2))


# -- tfree encode and finish_parts with a card ------------------------------------------------------------------
@pytest.mark.slow  # four encodes through datasets: 10 s
def test_encode_accepts_its_own_directory_with_the_card(tmp_path, monkeypatch):
    out = tmp_path / "out"
    encode(tmp_path, out)
    whole = files(out)
    assert "README.md" in whole
    assert encode(tmp_path, out)["up_to_date"] and files(out) == whole
    os.remove(out / "shard-00001-of-00003.arrow")  # a shard lost since: the rerun redoes it beside the card
    s = encode(tmp_path, out)
    assert not s["up_to_date"] and s["resumed"] == 2 and files(out) == whole
    killed = tmp_path / "killed"  # killed between the card and the manifest: .plan.json and the card are there
    real = shard_writer.atomic_write

    def die_at_the_manifest(path, data):
        if os.path.basename(path) == "manifest.json":
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(shard_writer, "atomic_write", die_at_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        encode(tmp_path, killed)
    monkeypatch.undo()
    assert {".plan.json", "README.md"} <= set(os.listdir(killed)) and "manifest.json" not in os.listdir(killed)
    s = encode(tmp_path, killed)
    assert s["resumed"] == 3 and files(killed) == whole
    os.remove(out / "README.md")  # a directory from before cards gets one on an up-to-date rerun
    assert encode(tmp_path, out)["up_to_date"] and files(out) == whole
    encode(tmp_path, out, overwrite=True)
    assert files(out) == whole


def test_a_readme_of_the_users_is_never_touched(tmp_path):
    out = tmp_path / "out"
    encode(tmp_path, out)
    mine = b"---\nlicense: cc-by-4.0\n---\n# My corpus\n"
    (out / "README.md").write_bytes(mine)
    assert encode(tmp_path, out)["up_to_date"]
    encode(tmp_path, out, overwrite=True)
    assert (out / "README.md").read_bytes() == mine and ShardDataset(out).verify()["documents"] == len(TEXTS)
    (out / "notes.txt").write_text("x")
    with pytest.raises(TfreeError, match="notes.txt"):
        encode(tmp_path, out)


def test_finish_parts_writes_the_same_card(tmp_path):
    out = tmp_path / "out"
    encode(tmp_path, out)
    parts = tmp_path / "parts"
    entries = [write_part(TEXTS[i:i + 20], str(parts), i // 20, 3, CODEC.config, i) for i in range(0, len(TEXTS), 20)]
    finish_parts(str(parts), entries, CODEC.config)
    assert (parts / "README.md").read_bytes() == (out / "README.md").read_bytes()


# -- tfree shards index -----------------------------------------------------------------------------------------
def test_index_makes_the_manifest_of_parts_never_finished(tmp_path, datasets):
    parts = tmp_path / "parts"
    src = datasets.Dataset.from_dict({"text": TEXTS})

    def part(batch, indices):  # what a datasets.map job leaves when its last step never ran
        write_part(batch["text"], str(parts), indices[0] // 20, 3, CODEC.config.to_dict(), indices[0])
        return {"n": [len(batch["text"])]}

    src.map(part, batched=True, batch_size=20, with_indices=True, remove_columns=["text"])
    assert not (parts / "manifest.json").exists()
    with pytest.raises(TfreeError, match="no codec.json"):
        index_shards(parts)
    r = index_shards(parts, CODEC.config)
    assert not r["up_to_date"]
    ds = ShardDataset(parts)
    assert [d.text() for d in ds] == TEXTS and ds.verify()["documents"] == len(TEXTS)
    out = tmp_path / "out"
    encode(tmp_path, out)
    for name in ("lexicon.arrow", "README.md", "codec.json", *(s["file"] for s in ds.shards)):
        assert (parts / name).read_bytes() == (out / name).read_bytes()
    enc = json.loads((out / "manifest.json").read_text())["shards"]
    keys = SHARD_KEYS + ("input_sha256",)
    assert [{k: s[k] for k in keys} for s in ds.shards] == [{k: s[k] for k in keys} for s in enc]
    before = files(parts)
    assert index_shards(parts)["up_to_date"] and files(parts) == before


def test_index_keeps_an_encode_manifest_that_matches_and_rebuilds_a_lost_one(tmp_path):
    out = tmp_path / "out"
    encode(tmp_path, out)
    whole = files(out)
    assert index_shards(out)["up_to_date"] and files(out) == whole  # plan_sha256, sources kept
    os.remove(out / "manifest.json")
    os.remove(out / "lexicon.arrow")
    index_shards(out)
    assert [d.text() for d in ShardDataset(out)] == TEXTS and files(out)["lexicon.arrow"] == whole["lexicon.arrow"]


def test_index_refuses_foreign_damaged_missing_and_unfinished_in_one_line(shards, tmp_path):
    def copy(name):
        d = tmp_path / name
        shutil.copytree(shards, d)
        return d

    d = copy("foreign")
    (d / "notes.txt").write_text("x")
    with pytest.raises(TfreeError, match="notes.txt"):
        index_shards(d)
    os.remove(d / "notes.txt")
    (d / "cache-0123abcd.arrow").write_text("x")
    with pytest.raises(TfreeError, match="keep_in_memory=True"):
        index_shards(d)
    d = copy("missing")
    os.remove(d / "shard-00001-of-00003.arrow")
    with pytest.raises(TfreeError, match="shard-00001-of-00003.arrow is missing"):
        index_shards(d)
    d = copy("nolex")
    os.remove(d / "shard-00002-of-00003.lexicon.arrow")
    with pytest.raises(TfreeError, match="lexicon shard-00002-of-00003.lexicon.arrow is missing"):
        index_shards(d)
    d = copy("two-runs")
    shutil.copy(d / "shard-00000-of-00003.arrow", d / "shard-00000-of-00004.arrow")
    with pytest.raises(TfreeError, match="not one of"):
        index_shards(d)
    d = copy("unfinished")
    (d / ".plan.json").write_text("{}")
    with pytest.raises(TfreeError, match="interrupted"):
        index_shards(d)
    d = copy("codec")
    with pytest.raises(TfreeError, match="not the"):
        index_shards(d, CodecConfig(vocab_size=1024))
    d = copy("damaged")
    p = d / "shard-00001-of-00003.arrow"
    p.write_bytes(p.read_bytes()[:300])
    r = cli("shards", "index", str(d))
    assert r.exit_code == 1 and "shard-00001-of-00003.arrow" in r.output and len(r.output.strip().splitlines()) == 1
    d = copy("bytes")  # n_bytes that do not match the words' text: only a full check sees it
    t = pa.ipc.open_stream((d / "shard-00000-of-00003.arrow").read_bytes()).read_all()  # not a map: rewritten below
    meta = t.schema.metadata
    n = t.column("n_bytes").to_numpy().copy()
    n[3] += 1
    t = t.set_column(0, t.schema.field("n_bytes"), pa.array(n, pa.uint32())).replace_schema_metadata(meta)
    with pa.ipc.new_stream(str(d / "shard-00000-of-00003.arrow"), t.schema) as w:
        w.write_table(t)
    with pytest.raises(TfreeError, match="document 3 holds"):
        index_shards(d)


def test_tfree_shards_index_cli(shards, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(shards, d)
    for name in ("manifest.json", "codec.json", "lexicon.arrow", "README.md"):
        os.remove(d / name)
    r = cli("shards", "index", str(d), "-v", "1024")  # no codec.json: the flags say
    assert r.exit_code == 1 and "made with codec" in r.output and len(r.output.strip().splitlines()) == 1
    r = cli("shards", "index", str(d))  # the default codec, as tfree encode's
    assert r.exit_code == 0 and f"indexed, 3 shards, {len(TEXTS)} documents" in r.output, r.output
    r = cli("shards", "index", str(d))
    assert r.exit_code == 0 and "up to date" in r.output
    r = cli("shards", "index", str(d), "-v", "1024")
    assert r.exit_code == 1 and "codec.json is codec" in r.output


# -- datasets as inputs ----------------------------------------------------------------------------------------
def test_encode_reads_a_save_to_disk_folder(tmp_path, datasets):
    src = datasets.Dataset.from_dict({"text": TEXTS, "n": list(range(len(TEXTS)))}).shuffle(seed=3)
    src.save_to_disk(str(tmp_path / "saved"), num_shards=2)
    want = src["text"]
    found = expand_inputs([str(tmp_path / "saved")])
    assert [os.path.basename(p) for p in found] == ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    assert [d for p in found for d in iter_documents(p)] == want
    assert expand_inputs([str(tmp_path)]) == found  # found inside a directory walk too
    r = cli("encode", str(tmp_path / "saved"), "-o", str(tmp_path / "out"), "-q",
                                  "--num-proc", "1")
    assert r.exit_code == 0, r.output
    assert [d.text() for d in ShardDataset(tmp_path / "out")] == want
    datasets.DatasetDict({"train": src, "test": src}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(TfreeError, match="DatasetDict.*train, test"):
        expand_inputs([str(tmp_path / "dd")])
    state = tmp_path / "saved" / "state.json"
    state.write_text(state.read_text().replace("data-00001-of-00002", "../elsewhere"))
    with pytest.raises(TfreeError, match="unexpected data file name"):
        expand_inputs([str(tmp_path / "saved")])


def test_encode_reads_datasets_arrow_files_stream_and_file_formats(tmp_path, datasets):
    src = datasets.Dataset.from_dict({"text": TEXTS})
    stream = tmp_path / "cache.arrow"  # what datasets.map writes: IPC stream, many record batches
    src.map(lambda b: b, batched=True, cache_file_name=str(stream), writer_batch_size=7)
    with pa.ipc.open_stream(pa.memory_map(str(stream))) as r:
        assert len(list(r)) > 1
    assert list(iter_documents(str(stream))) == TEXTS
    assert datasets.Dataset.from_file(str(stream))["text"] == TEXTS
    table = pa.table({"text": TEXTS})
    with pa.ipc.new_file(str(tmp_path / "file.arrow"), table.schema) as w:  # the IPC file (feather v2) format
        for b in table.to_batches(max_chunksize=10):
            w.write_batch(b)
    assert list(iter_documents(str(tmp_path / "file.arrow"))) == TEXTS
    assert np.array_equal([len(t.encode()) for t in TEXTS],
                          [d.n_bytes for d in ShardDataset(_encoded(tmp_path, stream))])


def _encoded(tmp_path, path):
    out = tmp_path / "from-arrow"
    encode_to_shards([str(path)], out, CODEC.config, num_proc=1, progress=False)
    return out
