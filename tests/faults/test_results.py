"""Issue 25, item 5: no half-written or wrong result: options that would train something else than asked are
refused before work, a rerun restores what a finished encode lost, output never lands where a URL points, a
user's link is never pruned, and names read from files cannot forge output lines."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from .conftest import TINY
from .harness import assert_kept, assert_refused, cli, snapshot


def test_an_encode_rerun_restores_a_deleted_codec_json(text_file, tmp_path):
    out = tmp_path / "s"
    assert cli("encode", text_file, "-o", out, "--num-proc", 1, "-q").exit_code == 0
    codec = (out / "codec.json").read_bytes()
    (out / "codec.json").unlink()
    r = cli("encode", text_file, "-o", out, "--num-proc", 1, "-q")
    assert r.exit_code == 0, r.output
    assert (out / "codec.json").read_bytes() == codec
    assert cli("shards", "verify", out).exit_code == 0


def test_val_bytes_zero_is_refused_before_any_work(text_file, tmp_path):
    out = tmp_path / "run"
    assert_refused(cli("train", text_file, "-o", out, "--max-steps", 2, *TINY, "--val-bytes", 0), "--val-bytes")
    assert not out.exists()


def test_too_little_text_for_a_validation_slice_is_refused(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("Emma Woodhouse, handsome, clever, and rich.\n")
    out = tmp_path / "run"
    assert_refused(cli("train", small, "-o", out, "--max-steps", 2, *TINY), "validation", str(small))
    assert not out.exists()


def test_init_from_on_a_resumed_run_is_refused(run_copy, finished_run, text_file):
    """--init-from names where a new run starts; a run that resumes from its own checkpoint did not start there,
    and its checkpoints must not record that it did."""
    shutil.rmtree(run_copy / "final")
    before = snapshot(run_copy)
    r = cli("train", text_file, "-o", run_copy, "--max-steps", 6, "--seed", 1, *TINY, "--resume", "auto",
            "--init-from", finished_run)
    assert_refused(r, "init_from")
    assert_kept(before, run_copy)


def test_keep_last_leaves_a_users_link_alone(run_copy, text_file, tmp_path):
    shutil.rmtree(run_copy / "final")
    mine = tmp_path / "my-copy"
    shutil.copytree(run_copy / "step-000002", mine)
    os.symlink(mine, run_copy / "step-000001")  # a step name, but a link the user made
    r = cli("train", text_file, "-o", run_copy, "--max-steps", 6, "--save-every", 2, "--keep-last", 1, "--seed", 1,
            *TINY, "--resume", "auto", "--no-plot", "--sample-words", 0)
    assert r.exit_code == 0, r.output
    assert os.path.islink(run_copy / "step-000001") and (mine / "checkpoint.json").is_file()
    assert sorted(d for d in os.listdir(run_copy) if d.startswith("step-")) == ["step-000001", "step-000006"]


@pytest.mark.parametrize("command", ["train", "retok", "encode", "export", "dict build", "plot", "quickstart"])
def test_an_output_url_is_refused(command, finished_run, text_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"file://{tmp_path}/out"
    args = {"train": ["train", text_file, "-o", url, "--max-steps", 2, *TINY],
            "retok": ["retok", finished_run, text_file, "-o", url, "--max-steps", 1],
            "encode": ["encode", text_file, "-o", url], "export": ["export", finished_run, "-o", url],
            "dict build": ["dict", "build", text_file, "-o", url], "plot": ["plot", finished_run, "-o", url],
            "quickstart": ["quickstart", "-o", url]}[command]
    assert_refused(cli(*args), "URL")
    assert os.listdir(tmp_path) == []


def test_text_arguments_that_are_not_utf8_are_refused(finished_run, tmp_path):
    """Python keeps argv bytes that are not UTF-8 as lone surrogates; counted or hashed they are something else
    than what was typed (inspect reported 3 bytes for the one byte 0xff)."""
    bad = "caf\udce9"  # b"caf\xe9" (Latin-1) in argv
    assert_refused(cli("inspect", bad), "UTF-8", "0xe9")
    assert_refused(cli("generate", finished_run, bad, "-n", 1, "--device", "cpu"), "prompt", "UTF-8")
    assert_refused(cli("generate", finished_run, "Emma", "--stop", bad, "-n", 1, "--device", "cpu"), "--stop")
    assert_refused(cli("quickstart", "-o", tmp_path / "qs", "--prompt", bad), "--prompt")
    assert not (tmp_path / "qs").exists()


def test_shards_info_cannot_be_forged_by_a_source_name(text_file, tmp_path):
    from tfree_codec.shards.reader import seal

    out = tmp_path / "s"
    assert cli("encode", text_file, "-o", out, "--num-proc", 1, "-q").exit_code == 0
    m = json.loads((out / "manifest.json").read_text())
    m.pop("manifest_sha256")
    m["shards"][0]["sources"][0]["input"] = "x.txt\nshard-99999-of-99999.arrow  1 docs  (forged)"
    (out / "manifest.json").write_text(json.dumps(seal(m)))
    r = cli("shards", "info", out)
    lines = r.stdout.splitlines()
    assert r.exit_code == 0 and len(lines) == 3, r.output  # the summary, the codec, the one shard
    assert "forged" in lines[2] and "\\n" in lines[2]
