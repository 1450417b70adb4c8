"""Issue 13, items 1, 5 and 9: a command deletes only what it can prove it wrote, and leaves nothing half-written."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from tfree_codec.model.checkpoint import PARTIAL

from .conftest import TINY
from .harness import assert_kept, assert_no_leftovers, assert_refused, cli, snapshot


def _user_folder(root):
    """A folder of someone's own files, with a sub-folder."""
    root.mkdir(exist_ok=True)
    (root / "notes.txt").write_text("keep me\n")
    (root / "sub").mkdir()
    (root / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return root


def test_export_into_the_current_directory_deletes_nothing(finished_run, tmp_path, monkeypatch):
    user = _user_folder(tmp_path / "work")
    before = snapshot(user)
    monkeypatch.chdir(user)
    assert_refused(cli("export", finished_run / "final", "-o", "."))
    assert_kept(before, user)
    assert_no_leftovers(user)


def test_export_refuses_a_folder_of_user_files(finished_run, tmp_path):
    user = _user_folder(tmp_path / "out")
    before = snapshot(user)
    assert_refused(cli("export", finished_run / "final", "-o", user), "notes.txt")
    assert_kept(before, user)
    assert_no_leftovers(tmp_path)


def test_export_onto_the_run_it_reads_is_refused(run_copy):
    before = snapshot(run_copy)
    assert_refused(cli("export", run_copy, "-o", run_copy))
    assert_refused(cli("export", run_copy / "final", "-o", run_copy / "final"))
    assert_kept(before, run_copy)


def test_export_over_a_file_is_refused(finished_run, tmp_path):
    f = tmp_path / "model"
    f.write_text("not a folder\n")
    assert_refused(cli("export", finished_run / "final", "-o", f))
    assert f.read_text() == "not a folder\n"


def test_export_replaces_only_its_own_earlier_export(finished_run, tmp_path):
    out = tmp_path / "exported"
    r = cli("export", finished_run / "final", "-o", out)
    assert r.exit_code == 0, r.output
    r = cli("export", finished_run / "final", "-o", out, "--half")  # its own: replaced whole
    assert r.exit_code == 0, r.output
    assert json.load(open(out / "checkpoint.json"))["stored_dtype"] == "float16"
    assert_no_leftovers(tmp_path)
    (out / "README.md").write_text("my notes about this model\n")  # now it holds a file export did not write
    before = snapshot(out)
    assert_refused(cli("export", finished_run / "final", "-o", out), "README.md")
    assert_kept(before, out)


def test_resume_auto_of_a_finished_run_keeps_final_and_log(run_copy, text_file):
    for d in ("step-000002", "step-000004"):  # pruned step folders: only final/ is left
        shutil.rmtree(run_copy / d)
    before = snapshot(run_copy)
    r = cli("train", text_file, "-o", run_copy, "--max-steps", 6, "--resume", "auto", "--seed", 1, *TINY)
    assert_refused(r, "final")
    assert_kept(before, run_copy)
    assert snapshot(run_copy) == before  # nothing new either


def test_resume_cleans_only_its_own_temp_folders(run_copy, text_file):
    ours = run_copy / ".tmp-step-000006-abc123"  # a save killed before its rename: the marker proves it ours
    ours.mkdir()
    (ours / PARTIAL).write_text("123\n")
    (ours / "model.pt").write_bytes(b"\0" * 100)
    theirs = run_copy / ".tmp-step-notes"  # someone's folder that only looks like one
    theirs.mkdir()
    (theirs / "mine.txt").write_text("keep\n")
    r = cli("train", text_file, "-o", run_copy, "--max-steps", 6, "--resume", "auto", "--seed", 1, *TINY)
    assert r.exit_code == 0, r.output
    assert not ours.exists()
    assert (theirs / "mine.txt").read_text() == "keep\n"
    assert (run_copy / "step-000006").is_dir() and (run_copy / "final").is_dir()


def test_a_validation_error_leaves_no_run_directory(text_file, tmp_path):
    out = tmp_path / "run"
    assert_refused(cli("train", text_file, "-o", out, "--max-steps", 3, *TINY, "--n-head", "3"), "n_head")
    assert not out.exists()  # no dictionary.arrow, nothing


def test_quickstart_never_overwrites_a_users_sample(tmp_path):
    user = tmp_path / "qs"
    user.mkdir()
    (user / "sample.txt").write_text("my own sample, not Jane Austen\n")
    before = snapshot(user)
    assert_refused(cli("quickstart", "-o", user, "--steps", 1), "sample.txt")
    assert_kept(before, user)
    assert sorted(os.listdir(user)) == ["sample.txt"]


def test_a_new_run_refuses_a_folder_of_user_files(text_file, tmp_path):
    user = _user_folder(tmp_path / "work")
    (user / "log.jsonl").write_text('{"mine": 1}\n')
    before = snapshot(user)
    assert_refused(cli("train", text_file, "-o", user, "--max-steps", 2, *TINY), "notes.txt")
    assert_kept(before, user)
    assert sorted(os.listdir(user)) == ["log.jsonl", "notes.txt", "sub"]


def test_resume_after_a_log_line_cut_short(run_copy, text_file):
    """A disk that filled (or a kill) in the middle of a log.jsonl line: resume drops the broken line, no crash."""
    with open(run_copy / "log.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 0.12')
    shutil.rmtree(run_copy / "final")
    r = cli("train", text_file, "-o", run_copy, "--max-steps", 5, "--resume", "auto", "--seed", 1, *TINY)
    assert r.exit_code == 0, r.output
    lines = (run_copy / "log.jsonl").read_text().splitlines()
    assert all(json.loads(ln) for ln in lines) and '"loss": 0.12' not in "".join(lines)
    assert_no_leftovers(run_copy)
