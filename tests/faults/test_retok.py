"""Issue 18: `tfree retok` refuses, in one line and before writing anything, a source that is not a BPE run, a
missing or damaged tokenizer, an output folder that is not ours, and nonsense options."""
from __future__ import annotations

import os
import random
import shutil

import pytest

from .conftest import TINY
from .harness import assert_kept, assert_no_leftovers, assert_refused, cli, flip_bit, snapshot

GO = ["--max-steps", 1, "--batch-size", 4, "--val-bytes", 400, "--device", "cpu", "-q", "--no-plot"]


@pytest.fixture
def bpe_copy(bpe_run, tmp_path):
    dst = tmp_path / "bpe"
    shutil.copytree(bpe_run / "final", dst)
    return dst


def test_a_tfree_run_is_not_a_source(finished_run, text_file, tmp_path):
    assert_refused(cli("retok", finished_run, text_file, "-o", tmp_path / "out", *GO), "not a --baseline bpe run")
    assert not (tmp_path / "out").exists()


def test_a_folder_without_a_checkpoint_is_not_a_source(text_file, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_refused(cli("retok", tmp_path / "empty", text_file, "-o", tmp_path / "out", *GO), "not a tfree run")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["flip", "missing"])
def test_a_damaged_or_missing_tokenizer_is_refused(bpe_copy, text_file, tmp_path, damage):
    tok = bpe_copy / "tokenizer.json"
    if damage == "flip":
        flip_bit(tok, random.Random(0))
    else:
        tok.unlink()
    before = snapshot(bpe_copy)
    assert_refused(cli("retok", bpe_copy, text_file, "-o", tmp_path / "out", *GO), "tokenizer.json")
    assert_kept(before, bpe_copy)
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_is_not_ours_is_refused(bpe_run, text_file, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    before = snapshot(out)
    assert_refused(cli("retok", bpe_run, text_file, "-o", out, *GO), "not a tfree retok run")
    assert_kept(before, out)
    assert sorted(os.listdir(out)) == ["thesis.tex"]
    assert_no_leftovers(tmp_path)


@pytest.mark.parametrize("flag, value", [("--unfreeze-after", "0"), ("--unfreeze-lr", "nan"), ("--ridge", "-1"),
                                         ("--alpha", "-2"), ("--sparse-k", "0"), ("--lr", "nan"),
                                         ("--batch-size", "0"), ("--seq-len", "0"), ("--init", "zero"),
                                         ("--sparse-k", "100000"), ("--unfreeze-after", "99")])  # GO: --max-steps 1
def test_bad_options_are_refused_before_any_work(bpe_run, text_file, tmp_path, flag, value):
    out = tmp_path / "out"
    assert_refused(cli("retok", bpe_run, text_file, "-o", out, *GO, flag, value), flag)
    assert not out.exists()


def test_no_length_is_refused(bpe_run, text_file, tmp_path):
    assert_refused(cli("retok", bpe_run, text_file, "-o", tmp_path / "out", "-q"), "--max-steps or --max-bytes")
    assert not (tmp_path / "out").exists()
