"""What a run shows: plot.png at each evaluation and at the end, log.csv (rebuilt on resume) and TensorBoard beside
log.jsonl, a greedy sample at each evaluation, `tfree plot` over a T-FREE and a BPE run, and one line (not a
failure) where matplotlib or tensorboard is missing."""
import csv
import json
import os
import shutil

import pytest

from conftest import cli as run, tiny_flags
from tfree_codec.train import report

TINY = tiny_flags(lr=None, log_every=2, seed=5)
PNG = b"\x89PNG\r\n\x1a\n"



def records(d):
    return [json.loads(ln) for ln in open(os.path.join(d, "log.jsonl"))]


@pytest.fixture(scope="module")
def shards(make_tiny_shards):
    return make_tiny_shards(seed=2)


@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    a, b = str(base / "tfree"), str(base / "bpe")
    r = run("train", shards, "-o", a, "--max-steps", 6, "--eval-every", 2, "--save-every", 2, "--logger", "csv",
            "--logger", "tensorboard", "--sample-words", 5, *TINY)
    assert r.exit_code == 0, r.output
    rb = run("train", shards, "-o", b, "--max-steps", 6, "--eval-every", 2, "--baseline", "bpe", "--bpe-vocab", 2000, *TINY)
    assert rb.exit_code == 0, rb.output
    return a, b, r.output + rb.output


def test_a_run_plots_logs_csv_and_samples_at_each_evaluation(runs):
    pytest.importorskip("matplotlib")
    a, _, out = runs
    assert open(os.path.join(a, "plot.png"), "rb").read(8) == PNG
    recs = records(a)
    evals = [r for r in recs if "val_bpb" in r]
    assert [r["step"] for r in evals] == [2, 4, 6] and evals[-1].get("final")
    assert all(isinstance(r["sample"], str) and r["sample"].strip() for r in evals)
    assert out.count("sample: ") == 6  # 3 of the T-FREE run, 3 of the BPE run
    rows = list(csv.DictReader(open(os.path.join(a, "log.csv"))))
    assert [int(r["step"]) for r in rows] == [r["step"] for r in recs]
    assert [float(r["val_bpb"]) for r in rows if r["val_bpb"]] == [r["val_bpb"] for r in evals]


def test_tensorboard_logs_or_says_it_is_missing(runs):
    a, _, out = runs
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert "tensorboard package is not installed" in out and not os.path.exists(os.path.join(a, "tensorboard"))
    else:
        assert os.listdir(os.path.join(a, "tensorboard"))


def test_the_csv_of_a_resumed_run_matches_its_json_log(runs, shards, tmp_path):
    a = str(tmp_path / "a")
    shutil.copytree(runs[0], a)
    shutil.rmtree(os.path.join(a, "final"))
    shutil.rmtree(os.path.join(a, "step-000006"))
    r = run("train", shards, "-o", a, "--resume", "auto", "--max-steps", 8, "-q")
    assert r.exit_code == 0, r.output
    recs = records(a)
    rows = list(csv.DictReader(open(os.path.join(a, "log.csv"))))
    assert [int(x["step"]) for x in rows] == [x["step"] for x in recs] and recs[-1]["step"] == 8


def test_the_bpe_baseline_reports_the_vocabulary_it_learnt(runs):
    import re

    from tfree_codec.model.checkpoint import load_tokenizer

    got = load_tokenizer(os.path.join(runs[1], "final", "tokenizer.json")).get_vocab_size()
    assert got < 2000  # 15 distinct words run out of merges long before
    assert re.search(rf"BPE tokenizer: {got:,} tokens learnt from the training text \(--bpe-vocab 2,000 asked\)", runs[2])


def test_tfree_plot_draws_tfree_and_bpe_runs_side_by_side(runs, tmp_path):
    pytest.importorskip("matplotlib")
    a, b, _ = runs
    assert any("val_bpb" in r for r in records(b))
    r = run("plot", a, b, "-o", tmp_path / "both.png", "--label", "T-FREE", "--label", "BPE")
    assert r.exit_code == 0, r.output
    assert open(tmp_path / "both.png", "rb").read(8) == PNG
    r = run("plot", a, tmp_path, "-o", tmp_path / "x.png")
    assert r.exit_code == 1 and "no log.jsonl" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_without_matplotlib_training_says_so_once_and_plot_fails_in_one_line(shards, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "_pyplot", lambda: None)
    out = str(tmp_path / "r")
    r = run("train", shards, "-o", out, "--max-steps", 4, "--eval-every", 2, "--sample-words", 0, *TINY)
    assert r.exit_code == 0, r.output
    assert r.output.count("matplotlib is not installed") == 1 and not os.path.exists(os.path.join(out, "plot.png"))
    assert "sample: " not in r.output
    r = run("plot", out, "-o", tmp_path / "p.png")
    assert r.exit_code == 1 and "needs matplotlib" in r.output
