"""Issue 25, items 1 and 2: a run directory has one job at a time (`tfree train`, `tfree retok`), and CPU training
with a seed is bit-reproducible, run to run and across a SIGKILL and `--resume auto`."""
from __future__ import annotations

import fcntl
import json
import os
import random
import time

import pytest

from .conftest import TINY
from .harness import assert_kept, assert_refused, cli, snapshot, spawn

# Big enough that torch's CPU scatter-adds run on several threads (the embedding's backward: > 32k elements):
# before issue 25 two runs of this differed in the last bits from the first steps on.
REPRO = [*TINY, "--n-embd", "128", "--seq-len", "32", "--batch-size", "16", "--no-plot", "--sample-words", "0",
         "--seed", "0", "--save-every", "8"]
STEPS = 24


def _weights(run):
    return (run / "final" / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def small_v(text_file, tmp_path_factory):
    """The sample as shards of a small codec (v = 1024): a cheap head, so the steps are quick."""
    out = tmp_path_factory.mktemp("repro") / "shards"
    r = cli("encode", text_file, "-o", out, "-v", 1024, "-m", 4, "--split", "paragraphs", "--num-proc", 1, "-q")
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def uninterrupted(small_v):
    out = small_v.parent / "run"
    r = cli("train", small_v, "-o", out, "--max-steps", STEPS, *REPRO)
    assert r.exit_code == 0, r.output
    return out


def test_two_runs_with_a_seed_give_identical_weights(uninterrupted, small_v, tmp_path):
    r = cli("train", small_v, "-o", tmp_path / "again", "--max-steps", STEPS, *REPRO)
    assert r.exit_code == 0, r.output
    assert _weights(tmp_path / "again") == _weights(uninterrupted)
    import torch

    assert not torch.are_deterministic_algorithms_enabled()  # the run's setting did not leak into this process


def test_two_bce_runs_with_a_seed_give_identical_weights(small_v, tmp_path):
    """The same for `--objective bce` (the runs above train the default, the word objective): the BCE loss's
    index_put_ with accumulate was one of the two scatter-adds that made runs differ before issue 25."""
    runs = [tmp_path / name for name in ("a", "b")]
    for out in runs:
        r = cli("train", small_v, "-o", out, "--max-steps", 8, *REPRO, "--objective", "bce")
        assert r.exit_code == 0, r.output
    assert _weights(runs[0]) == _weights(runs[1])


def _log_steps(run) -> int:
    try:
        return sum(ln.endswith("}\n") for ln in open(run / "log.jsonl", encoding="utf-8"))
    except FileNotFoundError:
        return 0


@pytest.mark.slow  # a training run killed and resumed
@pytest.mark.parametrize("kill_at", [random.Random(25).randrange(9, STEPS - 3)])
def test_a_run_killed_at_a_random_step_resumes_to_the_same_bytes(uninterrupted, small_v, tmp_path, kill_at):
    """SIGKILL once the log holds ``kill_at`` steps (a checkpoint every 8), then --resume auto: the same bytes as
    the run never killed. While the first job runs, a second `tfree train` on its folder is refused at once."""
    out = tmp_path / "run"
    p = spawn("train", small_v, "-o", out, "--max-steps", STEPS, *REPRO)
    t_end = time.monotonic() + 120
    while _log_steps(out) < kill_at and p.poll() is None and time.monotonic() < t_end:
        time.sleep(0.005)
    assert p.poll() is None, "the run ended before it was killed: give it more work"
    for extra in ([], ["--resume", "auto"]):  # item 1: runs are locked (a fresh start, and a resume)
        assert_refused(cli("train", small_v, "-o", out, "--max-steps", STEPS, *REPRO, *extra),
                       "another tfree train is writing")
    p.kill()
    p.communicate()
    assert not (out / "final").exists(), "killed too late: the run had finished"
    assert any(d.startswith("step-") for d in os.listdir(out)), "killed before the first checkpoint"
    r = cli("train", small_v, "-o", out, "--max-steps", STEPS, *REPRO, "--resume", "auto")
    assert r.exit_code == 0, r.output
    assert "resumed from" in r.output
    assert _weights(out) == _weights(uninterrupted)
    steps = [json.loads(ln)["step"] for ln in open(out / "log.jsonl", encoding="utf-8")]
    assert steps[:-1] == list(range(1, STEPS + 1))  # every step once, in order, then the final record


def _hold(path):
    """Hold the lock a running job holds (another open file description: flock conflicts within a process too)."""
    path.mkdir(exist_ok=True)
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_retok_into_a_locked_run_is_refused(text_file, tmp_path):
    from .test_retok import GO  # noqa: PLC0415

    out = tmp_path / "out"
    fd = _hold(out)
    try:
        before = snapshot(tmp_path)
        assert_refused(cli("retok", tmp_path, text_file, "-o", out, *GO), "another tfree retok is writing")
        assert_kept(before, tmp_path)
        assert os.listdir(out) == []
    finally:
        os.close(fd)


def test_a_train_whose_lock_is_held_creates_nothing(text_file, tmp_path):
    fd = _hold(tmp_path / "run")
    try:
        assert_refused(cli("train", text_file, "-o", tmp_path / "run", "--max-steps", 2, *TINY), "another tfree train")
    finally:
        os.close(fd)
    assert os.listdir(tmp_path / "run") == []
