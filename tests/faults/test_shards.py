"""Issue 13, the shard items: damaged shard directories (bit flips, truncations, malformed manifests) are refused in
one line naming the file by every command that reads them, or give the undamaged output; a resumed encode keeps
only shards whose sha256 matches its record; two encodes into one folder; Ctrl-C and SIGKILL of encode."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import time

import pytest

from tfree_codec.shards.reader import seal

from .conftest import TINY
from .harness import assert_no_leftovers, assert_refused, cli, flip_bit, spawn, truncate

SEEDS = range(20)
ENCODE = ("--split", "paragraphs", "--docs-per-shard", 25, "--num-proc", 1, "-q")


def _files(d):
    return {n: (d / n).read_bytes() for n in sorted(os.listdir(d))}


@pytest.fixture(scope="module")
def shard_dir(finished_run, text_file, tmp_path_factory):
    """Three shards of the sample, under the codec of the finished run (so `tfree eval` can read them)."""
    out = tmp_path_factory.mktemp("shards") / "s"
    r = cli("encode", text_file, "-o", out, "--codec", finished_run / "final" / "codec.json", *ENCODE)
    assert r.exit_code == 0, r.output
    assert sum(n.endswith(".lexicon.arrow") and n.startswith("shard-") for n in os.listdir(out)) >= 3
    return out


def _readers(d, finished_run, work):
    """Every command that reads a shard directory, as (name, result, what to compare when it succeeds)."""
    runs = [("info", cli("shards", "info", d)), ("verify", cli("shards", "verify", d)), ("cat", cli("shards", "cat", d))]
    dict_out = work / "d.arrow"
    runs.append(("dict", cli("dict", "build", d, "-o", dict_out, "-q")))
    runs.append(("eval", cli("eval", finished_run / "final", d, "--device", "cpu", "-q", "--json")))
    run = work / "run"
    runs.append(("train", cli("train", d, "-o", run, "--max-steps", 2, "--seed", 1, "--no-plot", *TINY)))
    out = []
    for name, r in runs:
        same = r.stdout.replace(str(d), "DIR")
        if name == "dict" and r.exit_code == 0:
            same = dict_out.read_bytes()
        elif name == "train" and r.exit_code == 0:
            same = (run / "final" / "model.safetensors").read_bytes()
        elif name == "eval" and r.exit_code == 0:
            same = {k: v for k, v in json.loads(r.stdout).items() if "second" not in k and "time" not in k}
        out.append((name, r, same))
    return out


@pytest.fixture(scope="module")
def clean_outputs(shard_dir, finished_run, tmp_path_factory):
    outs = _readers(shard_dir, finished_run, tmp_path_factory.mktemp("clean"))
    assert all(r.exit_code == 0 for _, r, _ in outs), [(n, r.output) for n, r, _ in outs if r.exit_code]
    return {name: same for name, _, same in outs}


def _damaged_copy(shard_dir, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(shard_dir, d)
    return d


def _kinds(d):
    names = sorted(os.listdir(d))
    return {"documents": [n for n in names if n.startswith("shard-") and not n.endswith(".lexicon.arrow")],
            "shard lexicon": [n for n in names if n.endswith(".lexicon.arrow") and n.startswith("shard-")],
            "lexicon.arrow": ["lexicon.arrow"], "manifest": ["manifest.json"]}


def _refused_or_same(outs, clean, damaged, where):
    for name, r, same in outs:
        if r.exit_code == 0:  # bytes nothing reads (Arrow padding), or a file this command does not read
            assert same == clean[name], (name, where)
        else:
            assert_refused(r, damaged)


@pytest.mark.parametrize("seed", SEEDS)
def test_shard_bit_flip_is_refused_or_harmless(shard_dir, clean_outputs, finished_run, tmp_path, seed):
    """The gate: a flipped bit in a documents file, a shard lexicon, lexicon.arrow or manifest.json, through
    shards info/verify/cat, dict build, eval and train."""
    rng = random.Random(1300 + seed)
    d = _damaged_copy(shard_dir, tmp_path)
    kind = sorted(_kinds(d))[seed % 4]  # five flips in each kind of file
    name = rng.choice(_kinds(d)[kind])
    where = (name, *flip_bit(d / name, rng))
    _refused_or_same(_readers(d, finished_run, tmp_path), clean_outputs, name, where)
    assert_no_leftovers(tmp_path)


@pytest.mark.parametrize("kind", ["documents", "shard lexicon", "lexicon.arrow", "manifest"])
def test_truncated_shard_file_is_refused(shard_dir, tmp_path, kind):
    d = _damaged_copy(shard_dir, tmp_path)
    name = _kinds(d)[kind][-1]
    truncate(d / name, 0.5)
    for args in (("shards", "info", d), ("shards", "cat", d), ("dict", "build", d, "-o", tmp_path / "x.arrow")):
        assert_refused(cli(*args), name)
    assert not (tmp_path / "x.arrow").exists()


def _rewrite_manifest(d, change, reseal=True):
    m = json.loads((d / "manifest.json").read_text())
    m.pop("manifest_sha256")
    m = change(m)
    (d / "manifest.json").write_text(json.dumps(seal(m) if reseal and isinstance(m, dict) else m))


MALFORMED = {
    "not an object": (lambda m: [m], True),
    "shards not a list": (lambda m: {**m, "shards": 5}, True),
    "a shard without its size": (lambda m: {**m, "shards": [{k: v for k, v in s.items() if k != "size"}
                                                             for s in m["shards"]]}, True),
    "a shard file outside the folder": (lambda m: {**m, "shards": [{**s, "file": "../x.arrow"} for s in m["shards"]]},
                                        True),
    "a count that is a string": (lambda m: {**m, "documents": str(m["documents"])}, True),
    "no checksum": (lambda m: m, False),
    "a changed source, checksum kept": (lambda m: {**m, "inputs": ["elsewhere.txt"]}, False),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifest_is_one_line(shard_dir, tmp_path, case):
    d = _damaged_copy(shard_dir, tmp_path)
    change, reseal = MALFORMED[case]
    if not reseal:  # keep the old checksum: it no longer matches (or is gone)
        m = json.loads((d / "manifest.json").read_text())
        old = m["manifest_sha256"]
        m = change({k: v for k, v in m.items() if k != "manifest_sha256"})
        (d / "manifest.json").write_text(json.dumps({**m, "manifest_sha256": old} if case != "no checksum" else m))
    else:
        _rewrite_manifest(d, change)
    for args in (("shards", "info", d), ("shards", "verify", d), ("dict", "build", d, "-o", tmp_path / "x.arrow"),
                 ("train", d, "-o", tmp_path / "run", "--max-steps", 1, *TINY)):
        assert_refused(cli(*args), "manifest.json")
    assert not (tmp_path / "run").exists() and not (tmp_path / "x.arrow").exists()


# -- encode: resume, lock, signals ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_input(text_file, tmp_path_factory):
    """About 2.4 MB of paragraphs: a two-process encode takes a few seconds (imports included)."""
    p = tmp_path_factory.mktemp("big") / "big.txt"
    p.write_text(text_file.read_text() * 120)
    return p


BIG = ("--split", "paragraphs", "--shard-bytes", "80kB", "-q")


@pytest.fixture(scope="module")
def big_clean(big_input, tmp_path_factory):
    out = tmp_path_factory.mktemp("big-clean") / "s"
    r = cli("encode", big_input, "-o", out, *BIG, "--num-proc", 1)
    assert r.exit_code == 0, r.output
    return _files(out)


def test_rerun_of_a_finished_encode_reencodes_a_damaged_shard(big_input, big_clean, tmp_path):
    out = tmp_path / "s"
    assert cli("encode", big_input, "-o", out, *BIG, "--num-proc", 1).exit_code == 0
    rng = random.Random(7)
    kinds = _kinds(out)
    flip_bit(out / kinds["documents"][3], rng)  # maybe a flip no content check sees: the sha256 does
    truncate(out / kinds["shard lexicon"][11], 0.5)
    r = cli("encode", big_input, "-o", out, *BIG, "--num-proc", 1)
    assert r.exit_code == 0, r.output
    assert "2 damaged shards re-encoded" in r.stderr, r.stderr
    assert _files(out) == big_clean
    assert cli("shards", "verify", out).exit_code == 0


def _encode_proc(big_input, out, num_proc=2):
    return spawn("encode", big_input, "-o", out, *BIG, "--num-proc", num_proc)


def _wait_for(cond, p, timeout=60):
    t_end = time.monotonic() + timeout
    while not cond() and p.poll() is None and time.monotonic() < t_end:
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before the moment the test waits for: give it more work"


def _journal_lines(out):
    try:
        return (out / ".done.jsonl").read_text().count("\n")
    except FileNotFoundError:
        return 0


# The moment is a seeded count of recorded shards (of about 30), not a delay: a delay that left the run unfinished
# on a slow machine let a faster encoder finish first.
RNG = random.Random(17)
KILL_AFTER = [RNG.randint(1, 8) for _ in range(2)]
INT_AFTER = [RNG.randint(1, 8) for _ in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("after", KILL_AFTER)
def test_sigkill_of_encode_leaves_nothing_holding_the_pipes_and_a_rerun_repairs(big_input, big_clean, tmp_path,
                                                                                after):
    """SIGKILL of the main process at a seeded moment: its workers and multiprocessing's resource tracker do not
    keep the caller's stdout/stderr open (``tfree encode ... | cat`` ends); then one finished shard is damaged
    and one truncated, and the rerun keeps neither: byte-identical to the clean run."""
    out = tmp_path / "s"
    p = _encode_proc(big_input, out)
    _wait_for(lambda: _journal_lines(out) >= after, p)
    p.kill()
    t0 = time.monotonic()
    p.communicate(timeout=10)  # EOF on both pipes: no process is left holding them
    assert time.monotonic() - t0 < 3.0
    if os.path.exists(out / "manifest.json"):
        pytest.fail("killed too late: the run had finished")
    done = [json.loads(ln)["file"] for ln in (out / ".done.jsonl").read_text().splitlines() if ln.endswith("}")]
    flip_bit(out / done[0], random.Random(after))
    if len(done) > 1:
        truncate(out / done[-1].replace(".arrow", ".lexicon.arrow"), 0.5)
    r = cli("encode", big_input, "-o", out, *BIG, "--num-proc", 1)
    assert r.exit_code == 0, r.output
    assert "damaged shard" in r.stderr and _files(out) == big_clean


@pytest.mark.slow
@pytest.mark.parametrize("after", INT_AFTER)
def test_sigint_stops_encode_and_its_workers_within_a_second(big_input, big_clean, tmp_path, after):
    out = tmp_path / "s"
    p = _encode_proc(big_input, out)
    _wait_for(lambda: _journal_lines(out) >= after, p)
    p.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    o, e = p.communicate(timeout=10)  # returns once every holder of the pipes is gone: workers included
    lag = time.monotonic() - t0
    if p.returncode == 0:
        pytest.fail("the run ended before the SIGINT: give it more work")
    assert "Traceback" not in e and p.returncode == 130, e
    assert [ln for ln in e.splitlines() if ln.strip()] == ["interrupted; rerun the same command to resume"]
    assert lag < 1.5, f"took {lag:.2f} s to stop"  # the promise is 1 s; a margin for a loaded machine
    assert_no_leftovers(tmp_path)
    r = cli("encode", big_input, "-o", out, *BIG, "--num-proc", 1)
    assert r.exit_code == 0, r.output
    assert _files(out) == big_clean


@pytest.mark.slow
def test_two_encodes_into_one_folder_the_second_refuses(big_input, big_clean, tmp_path):
    out = tmp_path / "s"
    p = _encode_proc(big_input, out, num_proc=1)
    _wait_for(lambda: (out / ".plan.json").exists(), p)
    before = {n: hashlib.sha256(b).hexdigest() for n, b in _files(out).items() if not n.startswith(".")}
    r = cli("encode", big_input, "-o", out, *BIG, "--num-proc", 1)
    assert_refused(r, "another tfree encode is writing")
    after = {n: hashlib.sha256(b).hexdigest() for n, b in _files(out).items() if n in before}
    assert after == before  # the refused run removed nothing
    o, e = p.communicate(timeout=60)
    assert p.returncode == 0, e
    assert _files(out) == big_clean


def test_a_refused_input_leaves_no_folder_and_no_lock(tmp_path):
    """The lock creates the output folder before the plan pass; an input refused there leaves no trace."""
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9\n")
    out = tmp_path / "deep" / "s"
    assert_refused(cli("encode", bad, "-o", out, "-q", "--num-proc", 1), "bad.txt")
    assert sorted(os.listdir(tmp_path)) == ["bad.txt"]


def _restream(path, change):
    """Rewrite an Arrow stream file with one value changed: a valid file of the same size, only its sha256 differs."""
    from tfree_codec.shards import lexicon

    t = lexicon.read_stream(str(path))
    batch = change(t.to_batches()[0])
    data = lexicon.stream_bytes(batch, {k.decode(): v.decode() for k, v in (t.schema.metadata or {}).items()})
    assert len(data) == path.stat().st_size
    path.write_bytes(data)


def _other_id(b):
    """A documents batch with one word id changed to another word of the shard's lexicon."""
    import pyarrow as pa

    w = b.column("words")
    vals = w.values.to_numpy().copy()
    vals[5] = 16 if vals[5] != 16 else 17
    words = pa.ListArray.from_arrays(w.offsets, pa.array(vals, w.type.value_type))
    return pa.RecordBatch.from_arrays([b.column(0), words], schema=b.schema)


def test_changes_no_content_check_sees_are_refused_by_sha256(shard_dir, clean_outputs, finished_run, tmp_path):
    """A word id changed to another id inside the lexicon, and a shard-lexicon word changed to another word of the
    same length: valid files of the right size that would train silently on other text. The sha256 that the
    manifest records (checked on each file's first use) refuses them."""
    import pyarrow as pa

    def other_word(b):
        words = b.column("word").to_pylist()
        i = next(i for i, w in enumerate(words) if i >= 16 and w.isascii() and w.isalpha() and w.swapcase() not in words)
        words[i] = words[i].swapcase()
        return pa.RecordBatch.from_arrays([pa.array(words, pa.string()), b.column("count")], schema=b.schema)

    for name, change in (("shard-00001-of-00003.arrow", _other_id), ("shard-00000-of-00003.lexicon.arrow", other_word)):
        work = tmp_path / name
        work.mkdir()
        d = _damaged_copy(shard_dir, work)
        _restream(d / name, change)
        outs = _readers(d, finished_run, work)
        _refused_or_same(outs, clean_outputs, name, name)
        assert {n for n, r, _ in outs if r.exit_code} == {"verify", "cat", "eval", "train"}


@pytest.mark.parametrize("at", [0.2, 0.6])
def test_sigint_while_the_cli_starts_is_one_line(big_input, tmp_path, at):
    """Ctrl-C while Python still imports the CLI (before any command runs): one line, no KeyboardInterrupt
    traceback from inside an import, nothing written."""
    p = _encode_proc(big_input, tmp_path / "s")
    time.sleep(at)
    p.send_signal(signal.SIGINT)
    o, e = p.communicate(timeout=10)
    if p.returncode == 0:
        pytest.fail("the run ended before the SIGINT")
    assert "Traceback" not in e and p.returncode == 130, e
    lines = [ln for ln in e.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted"), e
    assert_no_leftovers(tmp_path)


def test_the_datasets_route_refuses_a_damaged_shard_when_words_are_added(shard_dir, tmp_path):
    """``datasets.load_dataset(DIR)`` reads the Arrow files as they are: it cannot see a word id changed inside
    the lexicon (docs/reliability.md: run `tfree shards verify` first). ``AddWords``, the map that turns its rows
    into words, reads each shard through tfree's checks (sha256 on first use) and refuses it, naming the file."""
    from tfree_codec.config import TfreeError
    from tfree_codec.shards import lexicon
    from tfree_codec.shards.hf import AddWords

    d = _damaged_copy(shard_dir, tmp_path)
    name = "shard-00001-of-00003.arrow"
    _restream(d / name, _other_id)
    rows = lexicon.read_stream(str(d / name)).to_pydict()  # what load_dataset yields for that shard's rows
    first = json.loads((d / "manifest.json").read_text())["shards"][1]["first_id"]
    with pytest.raises(TfreeError, match=name):
        AddWords(d)(rows, list(range(first, first + len(rows["words"]))))
