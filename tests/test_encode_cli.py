"""``tfree encode`` and ``tfree shards``: every input kind, errors, refusals, resume after SIGKILL."""
import gzip
import json
import lzma
import os
import random
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import cli
import zstandard

from tfree_codec import Codec
from tfree_codec.shards.writer import encode_to_shards
from tfree_codec.shards.reader import ShardDataset

DOCS = ["First document.", "Zweites Dokument: Grüße!", "third one\twith a tab", "日本語の文章です。", "pi is 3.14"]


def run(*args, input=None):
    return cli("encode", *map(str, args), "-q", "--num-proc", "1", input=input)


def texts_of(out):
    return [d.text() for d in ShardDataset(out)]


def dir_bytes(path):
    return {n: open(os.path.join(path, n), "rb").read() for n in sorted(os.listdir(path))}


def jsonl(docs, key="text"):
    return "".join(json.dumps({key: d, "meta": i}, ensure_ascii=False) + "\n" for i, d in enumerate(docs)).encode()


@pytest.mark.parametrize("name, make, extra", [
    ("docs.txt", lambda: "\n".join(DOCS).encode(), ["--split", "lines"]),
    ("docs.txt", lambda: "\n\n".join(d + "\nsame paragraph" for d in DOCS).encode(), ["--split", "paragraphs"]),
    ("docs.jsonl", lambda: jsonl(DOCS), []),
    ("docs.jsonl", lambda: jsonl(DOCS, "body"), ["--text-column", "body"]),
    ("docs.parquet", None, []),
    ("docs.arrow", None, []),
    ("docs.txt.gz", lambda: gzip.compress("\n".join(DOCS).encode()), ["--split", "lines"]),
    ("docs.txt.xz", lambda: lzma.compress("\n".join(DOCS).encode()), ["--split", "lines"]),
    ("docs.jsonl.zst", lambda: zstandard.ZstdCompressor().compress(jsonl(DOCS)), []),
])
def test_every_input_kind(tmp_path, name, make, extra):
    path = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(pa.table({"text": DOCS}), path)
    elif name.endswith(".arrow"):
        with pa.ipc.new_stream(path, pa.schema([("text", pa.string())])) as w:
            w.write_table(pa.table({"text": DOCS}))
    else:
        path.write_bytes(make())
    r = run(path, "-o", tmp_path / "out", *extra)
    assert r.exit_code == 0, r.output
    expected = [d + "\nsame paragraph" for d in DOCS] if "paragraphs" in extra else DOCS
    assert texts_of(tmp_path / "out") == expected


def test_whole_files_from_a_directory_and_a_glob(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for i, d in enumerate(DOCS):
        (tmp_path / "in" / ("sub" if i % 2 else "") / f"{i}.txt").write_text(d + "\n")
    (tmp_path / "in" / ".hidden").write_text("skipped")
    assert run(tmp_path / "in", "-o", tmp_path / "a").exit_code == 0
    assert sorted(texts_of(tmp_path / "a")) == sorted(d + "\n" for d in DOCS)
    assert run(tmp_path / "in" / "**" / "*.txt", "-o", tmp_path / "b").exit_code == 0
    assert sorted(texts_of(tmp_path / "b")) == sorted(d + "\n" for d in DOCS)


def test_stdin(tmp_path):
    r = run("-", "-o", tmp_path / "out", "--split", "lines", input="\n".join(DOCS).encode())
    assert r.exit_code == 0, r.output
    assert texts_of(tmp_path / "out") == DOCS
    assert "encoded 5 documents" in r.output


@pytest.mark.parametrize("data, message", [
    (b"", "empty input"), (b" \n\n \n", "empty input"), (b"ok\n\xff\xfe bad", "not valid UTF-8"),
])
def test_empty_and_invalid_input_fail_cleanly_writing_nothing(tmp_path, data, message):
    (tmp_path / "good.txt").write_text("a good file first\n")
    (tmp_path / "bad.txt").write_bytes(data)
    r = run(tmp_path / "bad.txt", "-o", tmp_path / "out", "--split", "lines")
    assert r.exit_code == 1 and message in r.output and r.output.count("\n") == 1
    r = run(tmp_path / "good.txt", tmp_path / "bad.txt", "-o", tmp_path / "out2", "--split", "lines")
    assert (r.exit_code == 1) == (message != "empty input")  # a valid file plus an empty one is fine
    assert not os.path.exists(tmp_path / "out")
    if r.exit_code:
        assert not os.path.exists(tmp_path / "out2")


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"text": "fine"}\n{"body": 1}\n')
    for args, message in [([tmp_path / "missing.txt"], "no such file"), ([tmp_path / "*.none"], "no files match"),
                          ([tmp_path / "x.jsonl"], "x.jsonl:2: no 'text' field")]:
        r = run(*args, "-o", tmp_path / "out")
        assert r.exit_code == 1 and message in r.output, r.output
    assert not os.path.exists(tmp_path / "out")


def test_another_codec_is_refused_unless_overwrite(tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(DOCS))
    assert run(tmp_path / "in.txt", "-o", tmp_path / "out").exit_code == 0
    r = run(tmp_path / "in.txt", "-o", tmp_path / "out", "-m", "8")
    assert r.exit_code == 1 and "another codec" in r.output and "--overwrite" in r.output
    assert run(tmp_path / "in.txt", "-o", tmp_path / "out", "-m", "8", "--overwrite").exit_code == 0
    assert ShardDataset(tmp_path / "out").config.num_activations == 8


def test_other_inputs_are_refused_and_a_finished_run_is_up_to_date(tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(DOCS))
    (tmp_path / "codec.json").write_text(Codec().config.to_json())
    assert run(tmp_path / "in.txt", "-o", tmp_path / "out", "--codec", tmp_path / "codec.json").exit_code == 0
    before = dir_bytes(tmp_path / "out")
    r = run(tmp_path / "in.txt", "-o", tmp_path / "out")
    assert r.exit_code == 0 and "up to date" in r.output and dir_bytes(tmp_path / "out") == before
    r = run(tmp_path / "in.txt", "-o", tmp_path / "out", "--split", "lines")
    assert r.exit_code == 1 and "other inputs or options" in r.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.md").write_text("mine")
    r = run(tmp_path / "in.txt", "-o", tmp_path / "other")
    assert r.exit_code == 1 and "not a tfree shard directory" in r.output


def test_shards_info_and_verify(tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(DOCS))
    assert run(tmp_path / "in.txt", "-o", tmp_path / "out", "--split", "lines", "--docs-per-shard", "2").exit_code == 0
    r = cli("shards", "info", str(tmp_path / "out"))
    assert r.exit_code == 0 and "5 documents" in r.output and "3 shards" in r.output and "[2:4]" in r.output
    r = cli("shards", "verify", str(tmp_path / "out"))
    assert r.exit_code == 0 and "OK, 3 shards" in r.output
    p = tmp_path / "out" / "shard-00002-of-00003.arrow"
    data = bytearray(p.read_bytes())
    data[-40] ^= 0xFF
    p.write_bytes(bytes(data))
    r = cli("shards", "verify", str(tmp_path / "out"))
    assert r.exit_code == 1 and "shard-00002-of-00003.arrow: sha256 mismatch" in r.output


@pytest.mark.slow
def test_sigkill_then_rerun_gives_identical_files(tmp_path):
    rng = random.Random(0)
    words = "the quick brown fox jumps over lazy dogs while Grüße and 3.14 appear".split()
    # 100 shards: the kill lands while most are still to write, however fast encoding gets
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) for _ in range(10000)]
    (tmp_path / "in.txt").write_text("\n".join(lines))
    cmd = [sys.executable, "-c", "from tfree_cli.main import main; main()", "encode", str(tmp_path / "in.txt"),
           "--split", "lines", "--docs-per-shard", "100", "--num-proc", "2", "-q"]
    encode_to_shards([str(tmp_path / "in.txt")], tmp_path / "clean", Codec().config, split="lines",
                     docs_per_shard=100, num_proc=1, progress=False)
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    journal = out / ".done.jsonl"  # a shard counts as finished once its record line is written, after its files

    def finished() -> bool:
        return journal.is_file() and journal.read_text(encoding="utf-8").count("\n") >= 1
    while time.time() < deadline and not finished():
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(out / "manifest.json"), "killed too late: the run had finished"
    r = subprocess.run(cmd + ["-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stderr
    assert dir_bytes(out) == dir_bytes(tmp_path / "clean")


def test_shards_cat_writes_the_exact_text_back_in_order(tmp_path):
    docs = DOCS + ["  spaces  around ", "Access2Base가 and 漢字"]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    assert run(tmp_path / "in.jsonl", "-o", tmp_path / "out", "--docs-per-shard", "3").exit_code == 0
    r = cli("shards", "cat", str(tmp_path / "out"))
    assert r.exit_code == 0 and r.stdout_bytes == "".join(d + "\n" for d in docs).encode()
    r = cli("shards", "cat", str(tmp_path / "out"), "--sep", "\0")
    assert r.stdout_bytes.split(b"\0")[:-1] == [d.encode() for d in docs]
    r = cli("shards", "info", str(tmp_path / "out"))
    assert "format 2" in r.output and "x the text" in r.output
    r = cli("shards", "cat", str(tmp_path / "nowhere"))
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
