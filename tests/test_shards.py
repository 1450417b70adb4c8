"""Shards as a library: the row format, encode_record_batch, writing, reading, verifying (docs/shards.md)."""
import collections
import hashlib
import json
import os
import pickle

import numpy as np
import pyarrow as pa
import pytest

from tfree_codec import MARKERS, Codec, CodecConfig, TfreeError
from tfree_codec.shards import lexicon
from tfree_codec.shards import writer as shard_writer
from tfree_codec.shards.docs import pack
from tfree_codec.shards.rows import encode_record_batch, encode_texts, schema
from tfree_codec.shards.reader import ShardDataset, seal

CODEC = Codec()
TEXTS = ["Hello world", "", "  two  spaces \n\n and\tnewlines\r\n", "Grüße aus Köln: 3.14 € 😀", "日本語の文章です。",
         "looks like a marker: <|ws|> <|endoftext|>", "x" * 100, "The end.\n"]


def dir_bytes(path):
    return {n: open(os.path.join(path, n), "rb").read() for n in sorted(os.listdir(path))}


def write_docs(path, texts):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(t.replace("\n", " ") for t in texts) + "\n")


def check_rows_match_codec(rows, texts, first_id=0):
    for j, (row, text) in enumerate(zip(rows, texts)):
        enc = CODEC.encode(text)
        assert row["id"] == first_id + j
        assert row["n_bytes"] == len(text.encode("utf-8"))
        assert row["words"] == enc.words
        assert row["patterns"] == [enc.patterns(i).tolist() for i in range(len(enc))]
        assert CODEC.join(row["words"]) == text


def test_batch_rows_equal_codec_encode():
    batch = encode_texts(CODEC, TEXTS, np.arange(5, 5 + len(TEXTS)))
    assert batch.schema.equals(schema(words=True))
    check_rows_match_codec(batch.to_pylist(), TEXTS, first_id=5)


def test_batch_without_words_has_no_words_column():
    batch = encode_texts(CODEC, TEXTS[:2], np.arange(2), words=False)
    assert batch.schema.names == ["id", "n_bytes", "patterns"]


def test_encode_record_batch_keeps_the_container_kind_and_ids():
    rb = pa.record_batch({"text": TEXTS, "id": list(range(100, 100 + len(TEXTS)))})
    out = encode_record_batch(rb, CodecConfig())
    assert isinstance(out, pa.RecordBatch)
    check_rows_match_codec(out.to_pylist(), TEXTS, first_id=100)
    table_out = encode_record_batch(pa.table({"body": TEXTS}), CodecConfig().to_json(), text_column="body")
    assert isinstance(table_out, pa.Table) and table_out.column("id").to_pylist() == list(range(len(TEXTS)))
    dict_out = encode_record_batch({"text": TEXTS}, CodecConfig().to_dict(), words=False)
    assert isinstance(dict_out, pa.Table) and "words" not in dict_out.schema.names
    assert pickle.loads(pickle.dumps(encode_record_batch)) is encode_record_batch


def test_encode_record_batch_rejects_bad_columns():
    with pytest.raises(TfreeError, match="no column 'text'"):
        encode_record_batch(pa.record_batch({"body": ["x"]}), CodecConfig())
    with pytest.raises(TfreeError, match="not a string"):
        encode_record_batch({"text": ["ok", None]}, CodecConfig())


def test_datasets_map_runs_encode_record_batch():
    datasets = pytest.importorskip("datasets")
    src = datasets.Dataset.from_dict({"text": TEXTS})
    out = src.map(encode_record_batch, batched=True, batch_size=3, fn_kwargs={"config": CodecConfig().to_dict()},
                  remove_columns=src.column_names)
    rows = out.to_list()
    assert [r["words"] for r in rows] == [CODEC.encode(t).words for t in TEXTS]
    # ids are positions within each batch of 3 unless the input has an id column
    assert [r["id"] for r in rows] == [0, 1, 2, 0, 1, 2, 0, 1]


def test_engine_recipes_from_the_docs_work_without_the_engines():
    # Spark (mapInArrow) needs signed types; Dask hands pandas DataFrames (docs/shards.md)
    signed = pa.schema([("id", pa.int64()), ("n_bytes", pa.int64()),
                        ("patterns", pa.list_(pa.list_(pa.int32()))), ("words", pa.list_(pa.string()))])
    batches = [pa.record_batch({"id": [3, 4], "text": TEXTS[:2]})]
    out = [encode_record_batch(b, CodecConfig().to_dict()).cast(signed) for b in batches]
    assert out[0].column("id").to_pylist() == [3, 4] and out[0].schema.equals(signed)
    pd = pytest.importorskip("pandas")
    df = encode_record_batch(pa.Table.from_pandas(pd.DataFrame({"text": TEXTS}), preserve_index=False),
                             CodecConfig()).to_pandas()
    assert list(df.columns) == ["id", "n_bytes", "patterns", "words"] and list(df["words"][0]) == ["Hello", "world"]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("enc")
    texts = [f"Document {i}: " + " ".join(TEXTS[i % len(TEXTS)].split()) + f" ({'é' * (i % 3)})" for i in range(40)]
    write_docs(tmp / "in.txt", texts)
    out = tmp / "out"
    s = shard_writer.encode_to_shards([str(tmp / "in.txt")], out, CODEC.config, split="lines", num_proc=1,
                                      docs_per_shard=15, progress=False)
    return tmp, out, texts, s


def test_round_trip_shards_to_exact_text(encoded):
    _, out, texts, summary = encoded
    ds = ShardDataset(out)
    assert (len(ds), ds.num_shards, summary["shards"]) == (40, 3, 3)
    assert ds.codec == CODEC and ds.num_bytes == sum(len(t.encode()) for t in texts)
    assert [d.text() for d in ds] == texts
    doc = ds[-1]
    enc = CODEC.encode(texts[-1])
    assert doc.id == 39 and doc.words == enc.words and np.array_equal(doc.indptr, enc.indptr)
    assert np.array_equal(doc.indices, enc.indices)
    with pytest.raises(IndexError):
        ds[40]


def test_flat_is_a_zero_copy_view_of_the_shard(encoded):
    _, out, texts, _ = encoded
    ds = ShardDataset(out)
    f = ds.flat(1)
    assert f.word_ids.dtype == np.uint16 and not f.word_ids.flags.owndata  # a view of the memory map
    assert list(f.ids) == list(range(15, 30)) and len(f) == 15
    shard_words = lexicon.read_lexicon(str(out / "shard-00001-of-00003.lexicon.arrow"))[0]
    for j in range(len(f)):
        ids = f.word_ids[f.doc_offsets[j]:f.doc_offsets[j + 1]]
        assert [shard_words[i] for i in ids] == CODEC.encode(texts[15 + j]).words
        assert [ds.lexicon_words[g] for g in f.to_global[ids]] == CODEC.encode(texts[15 + j]).words
        assert f.n_bytes[j] == len(texts[15 + j].encode())
    indptr, indices = ds.patterns()
    assert np.array_equal(np.diff(indptr), np.diff(CODEC.encode_words(ds.lexicon_words)[0]))


def test_the_dataset_lexicon_is_the_shard_lexicons_merged(encoded):
    _, out, texts, _ = encoded
    ds = ShardDataset(out)
    seen = [w for t in texts for w in CODEC.encode(t).words]
    assert ds.lexicon_words[16:] == list(dict.fromkeys(w for w in seen if w not in MARKERS))
    counts = collections.Counter(seen)
    assert ds.lexicon_counts.tolist() == [counts[w] for w in ds.lexicon_words]
    from tfree_codec.decode.dictionary import Dictionary
    d = Dictionary.from_shards(out)
    assert d.words == Dictionary.from_texts(CODEC, texts).words and d.counts.tolist() == \
        Dictionary.from_texts(CODEC, texts).counts.tolist()


def test_shards_are_arrow_ipc_streams_that_hf_datasets_reads(encoded):
    _, out, texts, _ = encoded
    path = str(out / "shard-00000-of-00003.arrow")
    with pa.ipc.open_stream(pa.memory_map(path)) as r:
        assert r.read_all().num_rows == 15
    with pytest.raises(pa.ArrowInvalid):
        pa.ipc.open_file(path)  # the stream format, not the file/feather format
    datasets = pytest.importorskip("datasets")
    hf = datasets.Dataset.from_file(path)
    shard_words = lexicon.read_lexicon(str(out / "shard-00000-of-00003.lexicon.arrow"))[0]
    assert hf.num_rows == 15 and [shard_words[i] for i in hf[3]["words"]] == CODEC.encode(texts[3]).words


def test_manifest_records_counts_sources_and_hashes(encoded):
    tmp, out, texts, _ = encoded
    m = json.load(open(out / "manifest.json"))
    assert m["format"] == "tfree-shards" and m["codec_fingerprint"] == CODEC.fingerprint()
    assert [s["documents"] for s in m["shards"]] == [15, 15, 10] and m["documents"] == 40
    assert m["shards"][1]["sources"] == [{"input": str(tmp / "in.txt"), "start": 15, "stop": 30}]
    for s in m["shards"]:
        data = open(out / s["file"], "rb").read()
        assert s["sha256"] == hashlib.sha256(data).hexdigest() and s["size"] == len(data)
        lex = open(out / s["file"].replace(".arrow", ".lexicon.arrow"), "rb").read()
        assert s["lexicon_sha256"] == hashlib.sha256(lex).hexdigest() and s["lexicon_size"] == len(lex)
    assert m["format_version"] == 2 and m["lexicon"]["file"] == "lexicon.arrow"
    assert m["lexicon"]["sha256"] == hashlib.sha256(open(out / "lexicon.arrow", "rb").read()).hexdigest()
    assert not os.path.exists(out / ".plan.json")


def test_verify_detects_a_corrupted_shard(encoded, tmp_path):
    _, out, _, _ = encoded
    copy = tmp_path / "copy"
    copy.mkdir()
    for n, b in dir_bytes(out).items():
        (copy / n).write_bytes(b)
    assert ShardDataset(copy).verify()["documents"] == 40
    p = copy / "shard-00001-of-00003.arrow"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(TfreeError, match=r"1 problem\(s\) in .*: shard-00001-of-00003.arrow: sha256"):
        ShardDataset(copy).verify()
    p.write_bytes(bytes(data[:-100]))
    with pytest.raises(TfreeError, match="the manifest says"):
        ShardDataset(copy)


def test_output_does_not_depend_on_the_number_of_processes(encoded, tmp_path):
    tmp, out, _, _ = encoded
    shard_writer.encode_to_shards([str(tmp / "in.txt")], tmp_path / "two", CODEC.config, split="lines",
                                  num_proc=2, docs_per_shard=15, progress=False)
    assert dir_bytes(tmp_path / "two") == dir_bytes(out)


def test_inputs_too_large_to_keep_are_read_twice_with_the_same_result(encoded, tmp_path, monkeypatch):
    tmp, out, _, _ = encoded
    monkeypatch.setattr(shard_writer, "KEEP_BYTES", 100)  # the plan pass gives up keeping documents mid-way
    reads = []
    real = shard_writer.iter_batches
    monkeypatch.setattr(shard_writer, "iter_batches", lambda *a, **k: (reads.append(a[0]), real(*a, **k))[1])
    shard_writer.encode_to_shards([str(tmp / "in.txt")], tmp_path / "big", CODEC.config, split="lines",
                                  num_proc=1, docs_per_shard=15, progress=False)
    assert len(reads) == 2  # plan pass, encode pass
    assert dir_bytes(tmp_path / "big") == dir_bytes(out)


def test_resume_reuses_valid_shards_and_replaces_bad_ones(encoded, tmp_path, monkeypatch):
    tmp, out, _, _ = encoded
    kw = dict(split="lines", num_proc=1, docs_per_shard=15, progress=False)
    real, calls = shard_writer.encode_shard_batches, []

    def interrupted(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(shard_writer, "encode_shard_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        shard_writer.encode_to_shards([str(tmp / "in.txt")], tmp_path / "r", CODEC.config, **kw)
    r = tmp_path / "r"
    assert sorted(os.listdir(r)) == [".done.jsonl", ".plan.json", "codec.json", "shard-00000-of-00003.arrow",
                                     "shard-00000-of-00003.lexicon.arrow", "shard-00001-of-00003.arrow",
                                     "shard-00001-of-00003.lexicon.arrow"]
    (r / "shard-00001-of-00003.arrow").write_bytes(b"not arrow")  # a damaged shard is encoded again
    (r / ".tmp-123-shard-00002-of-00003.arrow").write_bytes(b"partial")  # leftovers are removed
    monkeypatch.setattr(shard_writer, "encode_shard_batches", real)
    s = shard_writer.encode_to_shards([str(tmp / "in.txt")], r, CODEC.config, **kw)
    assert s["resumed"] == 1 and dir_bytes(r) == dir_bytes(out)


def test_a_format_1_directory_gets_one_line_saying_how_to_re_encode(encoded, tmp_path):
    _, out, _, _ = encoded
    for n, b in dir_bytes(out).items():
        (tmp_path / n).write_bytes(b)
    m = json.load(open(tmp_path / "manifest.json"))
    (tmp_path / "manifest.json").write_text(json.dumps({**m, "format_version": 1}))
    with pytest.raises(TfreeError, match="shard format 1, this tfree reads 2: re-encode it"):
        ShardDataset(tmp_path)


def _copy(src, dst):
    dst.mkdir()
    for n, b in dir_bytes(src).items():
        (dst / n).write_bytes(b)
    return dst


def _rewrite_shard(path, change):
    """Rewrite a shard's documents (a valid Arrow stream with wrong contents) and fix the manifest's size."""
    t = lexicon.read_stream(str(path))
    batch = change(t.to_batches()[0])
    data = lexicon.stream_bytes(batch, {k.decode(): v.decode() for k, v in t.schema.metadata.items()})
    path.write_bytes(data)
    m = json.load(open(path.parent / "manifest.json"))
    for s in m["shards"]:
        if s["file"] == path.name:
            s["size"], s["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (path.parent / "manifest.json").write_text(json.dumps(seal(m)))


def test_word_ids_past_the_lexicon_are_one_line_before_any_kernel(encoded, tmp_path):
    _, out, _, _ = encoded
    d = _copy(out, tmp_path / "bad")

    def big_id(b):
        w = b.column("words")
        vals = w.values.to_numpy().copy()
        vals[3] = 60000
        words = pa.ListArray.from_arrays(w.offsets, pa.array(vals, w.type.value_type))
        return pa.RecordBatch.from_arrays([b.column(0), words], schema=b.schema)

    _rewrite_shard(d / "shard-00001-of-00003.arrow", big_id)
    ds = ShardDataset(d)
    with pytest.raises(TfreeError, match=r"shard-00001-of-00003.arrow: a word id is >= the lexicon's"):
        ds[20]
    with pytest.raises(TfreeError, match="word id is >="):
        ds.verify()


def test_a_damaged_lexicon_is_one_line_naming_it(encoded, tmp_path):
    _, out, _, _ = encoded
    d = _copy(out, tmp_path / "bad")
    p = d / "lexicon.arrow"
    p.write_bytes(p.read_bytes()[:-9] + b"\0" * 9)
    with pytest.raises(TfreeError, match="lexicon.arrow"):
        ShardDataset(d)


def test_opening_an_unfinished_directory_says_so(tmp_path):
    (tmp_path / "codec.json").write_text(CODEC.config.to_json())
    with pytest.raises(TfreeError, match="no manifest.json"):
        ShardDataset(tmp_path)


def test_a_finished_directory_missing_a_shard_is_repaired_by_a_rerun(encoded, tmp_path):
    tmp, out, _, _ = encoded
    kw = dict(split="lines", num_proc=1, docs_per_shard=15, progress=False)
    r = tmp_path / "r"
    shard_writer.encode_to_shards([str(tmp / "in.txt")], r, CODEC.config, **kw)
    assert shard_writer.encode_to_shards([str(tmp / "in.txt")], r, CODEC.config, **kw)["up_to_date"]
    os.remove(r / "shard-00001-of-00003.arrow")
    s = shard_writer.encode_to_shards([str(tmp / "in.txt")], r, CODEC.config, **kw)
    assert not s["up_to_date"] and s["resumed"] == 2 and dir_bytes(r) == dir_bytes(out)


def test_input_that_changed_since_the_plan_is_refused(tmp_path):
    write_docs(tmp_path / "in.txt", ["one", "two"])
    plan = shard_writer.make_plan([str(tmp_path / "in.txt")], lambda p: iter([pack(["one", "two"])]), CODEC.config, {},
                                  (None, 1 << 20))
    entry = plan["shards"][0]
    with pytest.raises(TfreeError, match="input changed while encoding"):
        shard_writer.encode_shard(str(tmp_path), entry, ["one", "twp"], CODEC.config)
    assert sorted(os.listdir(tmp_path)) == ["in.txt"]
    shard_writer.encode_shard(str(tmp_path), entry, ["one", "two"], CODEC.config)
    assert os.path.exists(tmp_path / entry["file"])


def _same_files(a, b):
    """The shard files and lexicon.arrow of two directories are byte-identical (manifests differ: no plan)."""
    fa, fb = dir_bytes(a), dir_bytes(b)
    keep = lambda names: sorted(n for n in names if n.endswith(".arrow"))  # noqa: E731
    assert keep(fa) == keep(fb) and all(fa[n] == fb[n] for n in keep(fa))


def test_parts_written_by_a_process_pool_equal_tfree_encode(encoded, tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    from tfree_codec.shards.parts import finish_parts, write_part

    _, out, texts, _ = encoded
    slices = [(texts[i:i + 15], str(tmp_path / "p"), i // 15, 3, CODEC.config.to_dict(), i) for i in range(0, 40, 15)]
    with ProcessPoolExecutor(2) as pool:
        entries = list(pool.map(write_part, *zip(*slices)))
    finish_parts(str(tmp_path / "p"), entries[::-1], CODEC.config)
    _same_files(out, tmp_path / "p")
    ds = ShardDataset(tmp_path / "p")
    assert [d.text() for d in ds] == texts and ds.verify()["documents"] == 40
    with pytest.raises(TfreeError, match="gap or overlap"):
        finish_parts(str(tmp_path / "p"), [entries[0], {**entries[1], "first_id": 14}, entries[2]], CODEC.config)


def test_datasets_map_writes_v2_parts(encoded, tmp_path):
    datasets = pytest.importorskip("datasets")
    from tfree_codec.shards.parts import finish_parts, write_part

    _, out, texts, _ = encoded
    src = datasets.Dataset.from_dict({"text": texts})

    def part(batch, indices, out_dir, config):
        e = write_part(batch["text"], out_dir, indices[0] // 15, 3, config, indices[0])
        return {"entry": [json.dumps(e)]}

    made = src.map(part, batched=True, batch_size=15, with_indices=True, remove_columns=["text"],
                   fn_kwargs={"out_dir": str(tmp_path / "hf"), "config": CODEC.config.to_dict()})
    finish_parts(str(tmp_path / "hf"), [json.loads(e) for e in made["entry"]], CODEC.config)
    _same_files(out, tmp_path / "hf")


def _naive_cuts(lengths, max_docs, max_bytes):
    """Shard sizes by the rule, one document at a time (what make_plan computes in chunks)."""
    out, n, b = [], 0, 0
    for x in lengths:
        n, b = n + 1, b + x
        if n == max_docs or b >= max_bytes:
            out.append(n)
            n, b = 0, 0
    return out + ([n] if n else [])


@pytest.mark.parametrize("seed", range(20))
def test_plan_cuts_in_chunks_equal_the_per_document_rule(seed, monkeypatch):
    import random

    rng = random.Random(seed)
    k = rng.choice([1, 3, 7, 4096])  # documents per batch the reader yields
    files = {f"f{i}": ["é" * rng.randint(0, 20) for _ in range(rng.randint(0, 25))] for i in range(rng.randint(1, 3))}
    files["last"] = ["x"]
    dps, sb = rng.choice([(None, 1), (None, 15), (None, 60), (2, None), (5, None)])
    plan = shard_writer.make_plan(list(files), lambda p: (pack(files[p][i:i + k]) for i in range(0, len(files[p]), k)),
                                  CODEC.config, {}, (dps, sb))
    lengths = [len(d.encode()) for p in files for d in files[p]]
    assert [s["documents"] for s in plan["shards"]] == _naive_cuts(lengths, dps or 1 << 62, sb or 1 << 62)
    assert sum(s["stop"] - s["start"] for sh in plan["shards"] for s in sh["sources"]) == len(lengths)


@pytest.mark.parametrize("seed", range(10))
def test_record_batches_follow_their_rule(seed, monkeypatch):
    import random

    rng = random.Random(seed)
    monkeypatch.setattr(shard_writer, "BATCH_BYTES", 20)
    texts = ["x" * rng.choice([0, 1, 5, 25]) for _ in range(rng.randint(0, 30))]
    bounds = list(shard_writer._batches(pack(texts)))
    assert bounds[0][0] == 0 and bounds[-1][1] == len(texts) and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    for lo, hi in bounds:
        assert hi > lo or not texts
        assert hi == len(texts) or sum(map(len, texts[lo:hi])) >= 20  # a batch ends once it reaches BATCH_BYTES
        assert sum(map(len, texts[lo:hi - 1])) < 20  # and not later


def test_the_default_number_of_processes_follows_the_input_size(tmp_path, monkeypatch):
    from tfree_codec.shards import plan

    monkeypatch.setattr(plan, "PROC_BYTES", 1000)
    small, big, packed = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt.gz"
    small.write_bytes(b"x" * 999)
    big.write_bytes(b"x" * 3500)
    packed.write_bytes(b"x" * 500)  # counted at COMPRESSED_RATIO times its size
    assert plan.auto_num_proc([str(small)], cores=8) == 1  # never fewer than one
    assert plan.auto_num_proc([str(big)], cores=8) == 3
    assert plan.auto_num_proc([str(big)], cores=2) == 2  # never more than the cores
    assert plan.auto_num_proc([str(packed)], cores=8) == 2
    assert plan.auto_num_proc(["-", "s3://bucket/x.txt"], cores=8) == 2  # unknown sizes: one process's worth each
