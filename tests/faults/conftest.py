"""Shared, session-scoped material of the fault suite: a small text, a tiny finished run, a dictionary."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tfree_codec import Codec, CodecConfig
from tfree_codec.assets import sample_text
from tfree_codec.decode.dictionary import Dictionary

from conftest import tiny_flags

from .harness import cli, reap

TINY = tiny_flags(device="cpu")


@pytest.fixture(autouse=True)
def reap_children():
    """Whatever a test started and left running is killed when it ends (harness.spawn)."""
    yield
    reap()


@pytest.fixture(scope="session")
def material(tmp_path_factory):
    return tmp_path_factory.mktemp("material")


@pytest.fixture(scope="session")
def text_file(material):
    """About 20 kB of the bundled Austen sample."""
    p = material / "austen.txt"
    p.write_text(sample_text(20_000), encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def finished_run(material, text_file):
    """A tiny T-FREE run of 4 steps: step-000002/, step-000004/, final/, log.jsonl, dictionary.arrow."""
    out = material / "run"
    r = cli("train", text_file, "-o", out, "--max-steps", 4, "--save-every", 2, "--seed", 1, *TINY)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="session")
def bpe_run(material, text_file):
    """A tiny BPE baseline run (the source of tfree retok)."""
    out = material / "bpe"
    r = cli("train", text_file, "-o", out, "--max-steps", 2, "--baseline", "bpe", "--bpe-vocab", 300, "--seed", 1,
            "--sample-words", 0, *TINY)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    """A private copy of the finished run, to damage."""
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    return dst


@pytest.fixture(scope="session")
def dictionary_file(material):
    """A small dictionary (v = 1024) with a non-ASCII word among plain ones."""
    words = "the of and to a in that it was her she not be he his as had with for you Über naïve".split()
    d = Dictionary.from_counts(Codec(CodecConfig(vocab_size=1024, num_activations=4)),
                               {w: 50 - i for i, w in enumerate(words)})
    p = material / "dict.arrow"
    d.save(p)
    return p


@pytest.fixture
def tmpfs(tmp_path):
    """A mounted 256 kB tmpfs (a disk that fills up), or a skip where this process may not mount one."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder holding one user file that cannot be written to: chmod where we are not root (root ignores
    permissions), else a tmpfs remounted read-only."""
    d = tmp_path / "readonly"
    d.mkdir()
    if os.geteuid() != 0:
        (d / "mine.txt").write_text("keep\n")
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        (d / "mine.txt").write_text("keep\n")
        subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True, capture_output=True)
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)
