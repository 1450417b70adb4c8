"""Issue 25, item 8: the older minor items (the invalid-UTF-8 argument is in test_results.py)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tfree_codec import Codec, CodecConfig, TfreeError

from .harness import assert_refused, cli


def test_stats_of_a_directory_says_so(tmp_path):
    assert_refused(cli("stats", tmp_path), "directory")


def test_num_proc_beyond_the_cores_starts_no_more_workers_than_cores(text_file, tmp_path, monkeypatch):
    import tfree_codec.shards.writer as writer

    started = []
    real = writer.start_pool
    monkeypatch.setattr(writer, "start_pool", lambda n, config: started.append(n) or real(n, config))
    r = cli("encode", text_file, "-o", tmp_path / "s", "--num-proc", 64, "-q", "--split", "paragraphs",
            "--docs-per-shard", 50)
    assert r.exit_code == 0, r.output
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert started and max(started) <= cores - 1


def test_an_output_folder_inside_the_input_folder_reruns(text_file, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text(text_file.read_text())
    out = data / "shards"
    for _ in range(2):  # the rerun walks data/ again: its own shards are not inputs
        r = cli("encode", data, "-o", out, "--num-proc", 1)
        assert r.exit_code == 0, r.output
    assert "up to date" in r.stderr


def test_spell_below_nan_is_refused_before_the_prompt(finished_run):
    r = cli("generate", finished_run, "Emma", "--spell", "--spell-below", "nan", "-n", 2)
    assert_refused(r, "--spell-below")
    assert r.stdout == ""


def test_export_keeping_no_word_is_refused(finished_run, tmp_path):
    assert_refused(cli("export", finished_run, "-o", tmp_path / "x", "--min-count", 10**9), "--min-count", "keeps no word")
    assert not (tmp_path / "x").exists()


def test_quickstart_empty_prompt_is_refused_before_any_work(tmp_path):
    assert_refused(cli("quickstart", "-o", tmp_path / "qs", "--prompt", "", "--steps", 1), "prompt")
    assert not (tmp_path / "qs").exists()


def test_python_api_refuses_what_it_would_get_wrong(dictionary_file):
    from tfree_codec.decode.decoder import Decoder
    from tfree_codec.decode.dictionary import Dictionary

    codec = Codec(CodecConfig(vocab_size=1024, num_activations=4))
    with pytest.raises(TypeError, match="encode_batch"):
        codec.encode_batch("abc")  # a str is iterable: three texts "a", "b", "c"
    with pytest.raises(TypeError, match="join"):
        codec.join("abc")
    enc = codec.encode("It is a truth")
    assert list(enc.patterns(-1)) == list(enc.patterns(len(enc) - 1))
    with pytest.raises(IndexError):
        enc.patterns(len(enc))
    with pytest.raises(IndexError):
        enc.patterns(-len(enc) - 1)
    with pytest.raises(TfreeError, match="Dictionary"):
        Decoder(None)
    d = Dictionary.load(dictionary_file)
    for backend in ("numba", "torch"):
        dec = Decoder(d, backend=backend)
        out = dec.decode(np.zeros((0, 1024), np.float32), temperature=0)
        assert out.words == [] and len(out.ids) == 0
        assert len(dec.log_probs(np.zeros((0, 1024), np.float32), [])) == 0
        bad = np.zeros((2, 1024), np.float32)
        bad[1, 7] = np.nan
        with pytest.raises(TfreeError, match="NaN"):
            dec.decode(bad, temperature=0)
