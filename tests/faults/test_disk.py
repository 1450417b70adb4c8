"""Issue 13, items 8 and 9: a full disk or a read-only output is one line, and leaves nothing half-written."""
from __future__ import annotations

import errno
import os

import pytest

from .conftest import TINY
from .harness import assert_kept, assert_no_leftovers, assert_refused, cli, snapshot, spawn


def _fill(mnt, leave=4096):
    """Fill the small disk up to ``leave`` free bytes with a file of the user's."""
    st = os.statvfs(mnt)
    with open(mnt / "filler.bin", "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))


def test_export_to_a_full_disk(finished_run, tmpfs):
    (tmpfs / "mine.txt").write_text("keep\n")
    before = snapshot(tmpfs)
    assert_refused(cli("export", finished_run / "final", "-o", tmpfs / "exported"))
    assert_kept(before, tmpfs)
    assert_no_leftovers(tmpfs)
    assert not (tmpfs / "exported").exists()


@pytest.mark.slow
def test_train_to_a_full_disk_saves_no_half_checkpoint(text_file, tmpfs):
    """The dictionary fits, plot.png or the checkpoint does not: one line naming the file, and the run folder
    goes with everything the job wrote in it (dictionary.arrow, log.jsonl), so the same command can be rerun."""
    out = tmpfs / "run"
    for plot in ([], ["--no-plot"]):
        assert_refused(cli("train", text_file, "-o", out, "--max-steps", 2, *TINY, *plot), "No space left", out)
        assert_no_leftovers(tmpfs)
        assert not out.exists()


def test_a_full_disk_while_logging_names_the_log(text_file, tmp_path, monkeypatch):
    """ENOSPC from an append names no file by itself; the run says log.jsonl, and removes what it wrote."""
    import builtins

    import tfree_codec.train.report as report

    class Full:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def write(self, data):
            _enospc()

    monkeypatch.setattr(report, "open", lambda p, mode="r", **k: Full() if "a" in mode else builtins.open(p, mode, **k),
                        raising=False)
    out = tmp_path / "run"
    assert_refused(cli("train", text_file, "-o", out, "--max-steps", 2, *TINY), "No space left", "log.jsonl")
    assert not out.exists()


def test_retok_to_a_full_disk_leaves_no_folder(bpe_run, text_file, tmp_path, monkeypatch):
    """The disk fills while the converted starting point (OUT/init/) is written: no empty OUT is left."""
    import tfree_codec.train.retok as rt

    from .test_retok import GO

    def full(src, shards, init_dir, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), init_dir)

    monkeypatch.setattr(rt, "build", full)
    out = tmp_path / "retok"
    assert_refused(cli("retok", bpe_run, text_file, "-o", out, *GO), "No space left", "init")
    assert os.listdir(tmp_path) == []


def test_dict_build_to_a_full_disk(text_file, tmpfs):
    _fill(tmpfs)
    before = snapshot(tmpfs)
    assert_refused(cli("dict", "build", text_file, "-o", tmpfs / "d.arrow", "-q"))
    assert_kept(before, tmpfs)
    assert_no_leftovers(tmpfs)
    assert not (tmpfs / "d.arrow").exists()


def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_simulated_full_disk_while_saving_a_checkpoint(finished_run, tmp_path, monkeypatch):
    """Where no tmpfs can be mounted: writing the weights fails as on a full disk, after writing part of the file."""
    import tfree_codec.model.checkpoint as ck

    real = ck.save_weights

    def half_then_full(sd, f, *a, **k):
        real(sd, f, *a, **k)
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)
        _enospc()

    monkeypatch.setattr(ck, "save_weights", half_then_full)
    assert_refused(cli("export", finished_run / "final", "-o", tmp_path / "exported"), "No space left")
    assert not (tmp_path / "exported").exists()
    assert_no_leftovers(tmp_path)


def test_simulated_full_disk_while_writing_a_dictionary(text_file, tmp_path, monkeypatch):
    import tfree_codec.config as config

    monkeypatch.setattr(config.os, "fsync", _enospc)
    assert_refused(cli("dict", "build", text_file, "-o", tmp_path / "d.arrow", "-q"), "No space left")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command", ["export", "train", "dict build", "quickstart"])
def test_read_only_output(command, finished_run, text_file, readonly_dir):
    before = snapshot(readonly_dir)
    args = {"export": ["export", finished_run / "final", "-o", readonly_dir / "out"],
            "train": ["train", text_file, "-o", readonly_dir / "run", "--max-steps", 2, *TINY],
            "dict build": ["dict", "build", text_file, "-o", readonly_dir / "d.arrow", "-q"],
            "quickstart": ["quickstart", "-o", readonly_dir / "qs", "--steps", 1]}[command]
    assert_refused(cli(*args))
    assert_kept(before, readonly_dir)
    assert sorted(os.listdir(readonly_dir)) == ["mine.txt"]


def _to_stdout_file(path, *args):
    """Run ``tfree ARGS > path``; -> (exit code, stderr)."""
    with open(path, "w") as f:
        p = spawn(*args, stdout=f)
        _, err = p.communicate(timeout=120)
    return p.returncode, err


def _one_line_about_stdout(code, err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and "No space left" in lines[0] and "stdout" in lines[0], (code, err)


def test_stdout_onto_a_full_disk_fails_loudly(text_file, tmpfs, tmp_path):
    """`tfree shards cat DIR > file` on a disk that fills: the write is cut short (a short write, not an error,
    which Python's buffered stdout passed over); the command says so and exits 1."""
    shards = tmp_path / "s"
    assert cli("encode", text_file, "-o", shards, "--num-proc", 1, "-q").exit_code == 0
    _fill(tmpfs, leave=8192)
    _one_line_about_stdout(*_to_stdout_file(tmpfs / "out.txt", "shards", "cat", shards))


def test_stdout_onto_dev_full_fails_loudly(text_file):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    _one_line_about_stdout(*_to_stdout_file("/dev/full", "inspect", "--json", "Emma Woodhouse, handsome" * 2000))
