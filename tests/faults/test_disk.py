"""Issue 13, items 8 and 9: a full disk or a read-only output is one line, and leaves nothing half-written."""
from __future__ import annotations

import errno
import os

import pytest

from .conftest import TINY
from .harness import assert_kept, assert_no_leftovers, assert_refused, cli, snapshot


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
    out = tmpfs / "run"
    assert_refused(cli("train", text_file, "-o", out, "--max-steps", 2, *TINY))
    assert_no_leftovers(tmpfs)
    assert not (out / "final").exists() and not (out / "step-000002").exists()


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
