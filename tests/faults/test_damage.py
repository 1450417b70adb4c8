"""Issue 13, items 3 and 8 and the second gate: damaged dictionaries, checkpoints and compressed inputs are refused
in one line naming the file, or (where the damage changes nothing that is read) give the undamaged output."""
from __future__ import annotations

import bz2
import gzip
import lzma
import random
import shutil

import pytest

from .harness import assert_refused, cli, flip_bit, truncate

SEEDS = range(20)


def _dict_outputs(path):
    return [cli("dict", "info", path), cli("dict", "neighbours", path, "the", "-k", 3)]


@pytest.fixture(scope="module")
def dict_clean(dictionary_file):
    outs = _dict_outputs(dictionary_file)
    assert all(r.exit_code == 0 for r in outs), [r.output for r in outs]
    return [r.stdout.replace(str(dictionary_file), "PATH") for r in outs]


@pytest.mark.parametrize("seed", SEEDS)
def test_dictionary_bit_flip_is_refused_or_harmless(dictionary_file, dict_clean, tmp_path, seed):
    p = tmp_path / "dict.arrow"
    shutil.copy(dictionary_file, p)
    where = flip_bit(p, random.Random(seed))
    for r, clean in zip(_dict_outputs(p), dict_clean):
        if r.exit_code == 0:  # a flip in bytes nothing reads (padding, unused metadata)
            assert r.stdout.replace(str(p), "PATH") == clean, where
        else:
            assert_refused(r, p)


@pytest.mark.parametrize("frac", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_dictionary_is_refused(dictionary_file, tmp_path, frac):
    p = tmp_path / "dict.arrow"
    shutil.copy(dictionary_file, p)
    truncate(p, frac)
    for r in _dict_outputs(p):
        assert_refused(r, p)


GEN = ("-n", 4, "--seed", 0, "-t", 0, "--device", "cpu")


def _ckpt_outputs(ckpt, tmp_path, text_file):
    """Every command that reads a checkpoint: generate, eval, export."""
    return [cli("generate", ckpt, "Emma", *GEN), cli("eval", ckpt, text_file, "--device", "cpu", "-q"),
            cli("export", ckpt, "-o", tmp_path / "exported")]


@pytest.fixture(scope="module")
def ckpt_clean(finished_run, text_file, tmp_path_factory):
    outs = _ckpt_outputs(finished_run / "final", tmp_path_factory.mktemp("clean"), text_file)
    assert all(r.exit_code == 0 for r in outs), [r.output for r in outs]
    return [r.stdout for r in outs]


CKPT_FILES = ["model.safetensors", "model_config.json", "codec.json", "calibration.json", "dictionary.arrow", "checkpoint.json"]


@pytest.mark.parametrize("seed", SEEDS)
def test_checkpoint_bit_flip_is_refused_or_harmless(run_copy, ckpt_clean, text_file, tmp_path, seed):
    rng = random.Random(100 + seed)
    ckpt = run_copy / "final"
    name = rng.choice(CKPT_FILES)
    where = (name, *flip_bit(ckpt / name, rng))
    for r, clean in zip(_ckpt_outputs(ckpt, tmp_path, text_file), ckpt_clean):
        if r.exit_code == 0:  # e.g. a flip in checkpoint.json's indentation
            assert _same(r.stdout, clean), where
        else:
            assert_refused(r, ckpt)


def _same(out, clean):
    """Equal but for the checkpoint's own path in the text."""
    strip = lambda s: "\n".join(ln.split(":", 1)[-1] if "model " in ln or "exported" in ln else ln  # noqa: E731
                                for ln in s.splitlines())
    return strip(out) == strip(clean)


@pytest.mark.parametrize("name", CKPT_FILES)
def test_truncated_checkpoint_file_is_refused(run_copy, name):
    truncate(run_copy / "final" / name, 0.5)
    assert_refused(cli("generate", run_copy / "final", "Emma", *GEN), "final")


@pytest.mark.parametrize("ext, opener", [(".gz", gzip.open), (".xz", lzma.open), (".zst", None), (".bz2", bz2.open)])
def test_truncated_compressed_input_is_refused_naming_it(text_file, tmp_path, ext, opener):
    data = text_file.read_bytes() * 4
    p = tmp_path / f"input.txt{ext}"
    if opener is None:
        zstandard = pytest.importorskip("zstandard")
        p.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        with opener(p, "wb") as f:
            f.write(data)
    truncate(p, 0.5)
    out = tmp_path / "shards"
    assert_refused(cli("encode", p, "-o", out, "--num-proc", 1, "-q"), p.name)
    assert not out.exists() or not any(f.suffix == ".arrow" for f in out.rglob("*"))


def test_whole_zst_input_reads_like_the_plain_text(text_file, tmp_path):
    """The .zst reader that finds truncation still reads every frame of a whole file (two frames here)."""
    zstandard = pytest.importorskip("zstandard")
    from tfree_codec.shards.sources import iter_documents

    data = text_file.read_bytes()
    half = len(data) // 2
    p = tmp_path / "two-frames.txt.zst"
    c = zstandard.ZstdCompressor()
    p.write_bytes(c.compress(data[:half]) + c.compress(data[half:]))
    assert list(iter_documents(str(p))) == list(iter_documents(str(text_file)))
