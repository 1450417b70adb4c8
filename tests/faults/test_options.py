"""Issue 13, item 8: nonsense options, configs and data are refused in one line before any work starts."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tfree_codec import CodecConfig

from .conftest import TINY
from .harness import assert_refused, cli


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "-1"), ("--lr", "inf"), ("--batch-size", "0"),
                                         ("--max-steps", "-5"), ("--seq-len", "0"), ("--warmup", "-1"),
                                         ("--grad-clip", "nan"), ("--n-head", "3")])
def test_train_refuses_bad_options_before_any_work(text_file, tmp_path, flag, value):
    out = tmp_path / "run"
    r = cli("train", text_file, "-o", out, "--max-steps", 3, *TINY, flag, value)
    assert_refused(r, flag.lstrip("-").replace("-", "_") if flag == "--n-head" else flag)
    assert not out.exists()


@pytest.mark.parametrize("flags, word", [(["--od-weight", "-0.1"], "--od-weight"), (["--od-weight", "nan"], "--od-weight"),
                                         (["--od-anneal"], "--od-weight"),
                                         (["--od-weight", "0.1", "--baseline", "bpe"], "T-FREE")])
def test_train_refuses_bad_over_decoding_options_before_any_work(text_file, tmp_path, flags, word):
    out = tmp_path / "run"
    assert_refused(cli("train", text_file, "-o", out, "--max-steps", 3, *TINY, *flags), word)
    assert not out.exists()


@pytest.mark.parametrize("flags, word", [
    (["--oe-orders", "1,2", "--oe-rows", 100], "--oe-orders"), (["--oe-orders", "2,2", "--oe-rows", 100], "--oe-orders"),
    (["--oe-orders", "2,x", "--oe-rows", 100], "--oe-orders"), (["--oe-orders", "2,3"], "--oe-rows"),
    (["--oe-orders", "2,3", "--oe-rows", 1], "--oe-rows"), (["--oe-orders", "2,3", "--oe-rows", 2**40], "--oe-rows"),
    (["--oe-orders", "2,3", "--oe-rows", 100, "--oe-slices", 0], "--oe-slices"),
    (["--oe-orders", "2,3", "--oe-rows", 100, "--oe-slices", 17], "--oe-slices"),  # 2 x 17 slices of d = 32
    (["--oe-rows", 100], "--oe-orders"), (["--oe-no-unigram"], "--oe-orders"), (["--oe-lr-scale", 5], "--oe-orders"),
    (["--oe-orders", "2", "--oe-rows", 100, "--oe-lr-scale", 0], "--oe-lr-scale"),
    (["--oe-orders", "2", "--oe-rows", 100, "--baseline", "bpe"], "--baseline bpe")])
def test_train_refuses_bad_over_encoding_options_before_any_work(text_file, tmp_path, flags, word):
    out = tmp_path / "run"
    assert_refused(cli("train", text_file, "-o", out, "--max-steps", 3, *TINY, *flags), word)
    assert not out.exists()


def test_train_on_an_empty_file_is_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_refused(cli("train", empty, "-o", tmp_path / "run", "--max-steps", 3, *TINY), "empty")
    assert not (tmp_path / "run").exists()


def test_eval_of_an_empty_file_is_refused(finished_run, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_refused(cli("eval", finished_run / "final", empty, "--device", "cpu", "-q"), "empty")


def test_eval_batch_size_zero_is_refused(finished_run, text_file):
    assert_refused(cli("eval", finished_run / "final", text_file, "--batch-size", 0, "-q"), "--batch-size")


def test_generate_threads_negative_is_refused_before_the_prompt(finished_run):
    r = cli("generate", finished_run, "Emma", "--threads", -1, "-n", 3)
    assert_refused(r, "--threads")
    assert r.stdout == ""  # the prompt was not echoed first


def test_generate_draft_without_an_over_decoding_head_is_refused_before_the_prompt(finished_run):
    r = cli("generate", finished_run, "Emma", "--draft", "-n", 3)
    assert_refused(r, "--draft", "--od-weight")
    assert r.stdout == ""
    assert_refused(cli("generate", finished_run, "Emma", "--draft", "--spell", "-n", 3), "--draft", "--spell")


@pytest.mark.parametrize("change, word", [({"format_version": True}, "format_version"),
                                          ({"k_lower": True}, "k_lower"),
                                          ({"vocab_size": True}, "vocab_size"),
                                          ({"vocab_size": None}, "vocab_size"),
                                          ("drop vocab_size", "vocab_size"),
                                          ("drop segmenter", "segmenter")])
def test_codec_json_type_errors_and_missing_fields(text_file, tmp_path, change, word):
    d = CodecConfig(vocab_size=1024, num_activations=4).to_dict()
    if isinstance(change, str):
        del d[change.split()[1]]
    else:
        d.update(change)
    codec = tmp_path / "codec.json"
    codec.write_text(json.dumps(d))
    out = tmp_path / "d.arrow"
    assert_refused(cli("dict", "build", text_file, "-o", out, "--codec", codec, "-q"), word, "codec.json")
    assert not out.exists()


@pytest.mark.slow
def test_a_diverged_run_is_not_saved_as_final(text_file, tmp_path):
    out = tmp_path / "run"
    r = cli("train", text_file, "-o", out, "--max-steps", 40, *TINY, "--lr", "1e9", "--save-every", 50)
    assert_refused(r, "diverged")
    assert not out.exists()  # nothing saved for it, and a run stopped before its first checkpoint leaves nothing


@pytest.mark.slow
def test_a_reencoded_data_file_on_resume_is_refused(text_file, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text(text_file.read_text())
    out = tmp_path / "run"
    r = cli("train", data, "-o", out, "--max-steps", 2, "--save-every", 1, "--seed", 3, *TINY)
    assert r.exit_code == 0, r.output
    data.write_text(text_file.read_text()[:15_000] + " And then something else entirely was written here.")
    r = cli("train", data, "-o", out, "--max-steps", 4, "--resume", "auto", "--seed", 3, *TINY)
    assert_refused(r, str(data))
    assert not (out / "step-000003").exists()


def test_nan_check_sees_weights(finished_run):
    """The divergence check itself: a model with one nan weight is refused, a finite one passes."""
    from tfree_codec.config import TfreeError
    from tfree_codec.model.checkpoint import load_model
    from tfree_codec.train.checks import check_finite as _check_finite

    model, _, _ = load_model(str(finished_run / "final"))

    _check_finite(model, 4, 0.5)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = math.nan
    with pytest.raises(TfreeError, match="diverged at step 4"):
        _check_finite(model, 4, 0.5)


def test_progress_is_quiet_off_a_terminal_so_a_failure_is_one_line(finished_run, text_file, tmp_path):
    """No -q: the bars of eval and dict build stay off a non-terminal stderr, so an error is still one line."""
    bad = tmp_path / "bad.txt"
    bad.write_bytes(text_file.read_bytes()[:5000] + b"\xff\xfe not utf-8")
    assert_refused(cli("eval", finished_run / "final", bad, "--device", "cpu"), "UTF-8")
    assert_refused(cli("dict", "build", bad, "-o", tmp_path / "d.arrow"), "UTF-8")
    assert not (tmp_path / "d.arrow").exists()
