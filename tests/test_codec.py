"""The Python API: CodecConfig, Codec, Encoded; pickling, batching, saving, and a light import."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tfree_codec
from tfree_codec import Codec, CodecConfig, TfreeError
from tfree_codec.text import words as words_module
from tfree_codec.assets import sample_text

codec = Codec()


def test_config_json_round_trip_and_fingerprint():
    cfg = CodecConfig(vocab_size=16384, num_activations=8, k_lower=1, seed=7)
    again = CodecConfig.from_json(cfg.to_json())
    assert again == cfg and again.fingerprint() == cfg.fingerprint()
    assert CodecConfig().fingerprint() != cfg.fingerprint()
    assert len(cfg.fingerprint()) == 16


@pytest.mark.parametrize("change, message", [
    ({"format_version": 99}, "format_version"),
    ({"vocab_size": 1000}, "power of two"),
    ({"num_activations": 0}, "num_activations"),
    ({"k_lower": 11}, "k_lower"),
    ({"hash": "md4"}, "hash"),
    ({"segmenter": "jieba"}, "segmenter"),
    ({"max_word_chars": 0}, "max_word_chars"),
    ({"unicode_tables": "u0"}, "unicode_tables"),
    ({"bogus": 1}, "unknown fields"),
])
def test_bad_configs_are_refused_in_one_line(change, message):
    d = {**CodecConfig().to_dict(), **change}
    with pytest.raises(TfreeError, match=message) as e:
        CodecConfig.from_dict(d)
    assert "\n" not in str(e.value)


def test_save_and_load(tmp_path):
    path = tmp_path / "codec.json"
    c = Codec(CodecConfig(seed=3))
    c.save(path)
    assert json.loads(path.read_text())["seed"] == 3
    assert Codec.from_file(path) == c
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]  # atomic write leaves no temp file
    plain = tmp_path / "plain"
    plain.write_text("")
    assert os.stat(path).st_mode & 0o777 == os.stat(plain).st_mode & 0o777  # as open() makes it, not owner-only


def test_loading_garbage_fails_cleanly(tmp_path):
    bad = tmp_path / "codec.json"
    bad.write_text("{not json")
    with pytest.raises(TfreeError, match="not valid JSON"):
        Codec.from_file(bad)
    with pytest.raises(TfreeError, match="cannot read"):
        Codec.from_file(tmp_path / "missing.json")


def test_encoded_words_offsets_and_patterns_line_up():
    text = "Hello, world!  It's 2024.\n"
    enc = codec.encode(text)
    assert enc.words == codec.split(text)
    assert len(enc) == len(enc.words) == len(enc.offsets) == len(enc.indptr) - 1
    for w, (s, e), i in zip(enc.words, enc.offsets.tolist(), enc.ids.tolist()):
        if i >= 16:
            assert text[s:e] == w
    idx, ptr = codec.encode_words(enc.words)
    assert np.array_equal(idx, enc.indptr) and np.array_equal(ptr, enc.indices)


@given(st.lists(st.text(max_size=40), max_size=12))
def test_encode_batch_equals_map_encode(texts):
    batch = codec.encode_batch(texts, num_threads=2)
    assert len(batch) == len(texts)
    for t, b in zip(texts, batch):
        single = codec.encode(t)
        assert b.words == single.words
        assert np.array_equal(b.indptr, single.indptr) and np.array_equal(b.indices, single.indices)
        assert np.array_equal(b.offsets, single.offsets)


def test_encode_batch_on_real_text_uses_threads_consistently(monkeypatch):
    monkeypatch.setattr(tfree_codec.codec, "CHUNK_TEXTS", 7)  # many chunks, shared out between the threads
    text = sample_text(200_000)
    parts = text.split("\n\n")
    batch = codec.encode_batch(parts, num_threads=2)
    assert [e.words for e in batch[:50]] == [codec.encode(p).words for p in parts[:50]]
    flat = np.concatenate([e.indices for e in batch])
    assert np.array_equal(flat, np.concatenate([codec.encode(p).indices for p in parts]))


def test_pickle_round_trip():
    c = Codec(CodecConfig(seed=5))
    c.encode("warm the cache")
    c2 = pickle.loads(pickle.dumps(c))
    assert c2 == c
    assert np.array_equal(c2.encode("same patterns").indices, c.encode("same patterns").indices)


def test_word_cache_is_bounded_and_results_do_not_depend_on_it(monkeypatch):
    from tfree_codec import codec as codec_module
    monkeypatch.setattr(codec_module, "MAX_CACHED_WORDS", 50)
    c = Codec()
    text = sample_text(30_000)
    first = c.encode(text)
    second = c.encode(text)  # the cache overflowed: a fresh one gives identical patterns
    assert np.array_equal(first.indices, second.indices)
    assert np.array_equal(first.indices, Codec().encode(text).indices)


def test_word_cache_is_kept_while_under_its_bounds_and_dropped_past_them(monkeypatch):
    from tfree_codec import codec as codec_module
    c = Codec()
    texts = [sample_text(200_000)[i:i + 20_000] for i in range(0, 200_000, 20_000)]
    c.encode_batch(texts, num_threads=1)
    cache = c._caches[0]
    n, rows = len(cache), cache.rows()
    assert n > 3000 and rows > 10 * n  # grown several times on the way
    c.encode_batch(texts, num_threads=1)
    assert c._caches == [cache] and len(cache) == n and cache.rows() == rows  # nothing new: nothing re-hashed
    monkeypatch.setattr(codec_module, "MAX_CACHED_ROWS", rows - 1)
    c.encode(texts[0])
    assert c._caches[0] is not cache and len(c._caches[0]) < n


def test_import_does_not_import_torch_or_click():
    code = "import sys, tfree_codec; tfree_codec.Codec().encode('x'); print(sorted(m for m in ('torch', 'click') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api():
    assert set(tfree_codec.__all__) >= {"Codec", "CodecConfig", "Encoded", "TfreeError", "split", "join"}
    with pytest.raises(TypeError):
        codec.encode(b"bytes are not text")


@given(st.text(max_size=300))
def test_short_text_python_path_equals_kernel_path(text):
    for c in (codec, Codec(CodecConfig(hash="aleph", vocab_size=32000))):
        slow = c._encode_python(text)
        cache = c._borrow()
        offsets, ids = cache.split(text, c.config.max_word_chars, c.config.segmenter)
        indptr, indices = c._gather(cache, ids)
        c._give_back(cache)
        assert slow.words == words_module.words_from_spans(text, offsets, ids)
        assert np.array_equal(slow.offsets, offsets)
        assert np.array_equal(slow.indptr, indptr) and np.array_equal(slow.indices, indices)


def test_a_short_first_encode_needs_no_numba():
    code = ("import sys, tfree_codec; e = tfree_codec.Codec().encode('hello world'); "
            "print(e.words, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['hello', 'world'] False"


MIXED = st.text(st.sampled_from("ab Zé\n\t.,3-'日本語の文章ですカタカナ한국어ไทย😀\u0301"), max_size=60)


@given(st.lists(st.one_of(st.text(max_size=40), MIXED), max_size=6))
def test_encoding_many_texts_at_once_equals_one_by_one(texts):
    texts += ["x" * 100 + " " * 70, "\n".join(["日本語の長い文章です"] * 5)]  # a word cut, space runs, ICU words
    n_words, spans, ids, indptr, indices = codec._encode_flat(texts)
    assert n_words.sum() == len(ids) == len(spans) == len(indptr) - 1
    first = 0
    for t, n in zip(texts, n_words.tolist()):
        one = codec.encode(t)
        w = slice(first, first + n)
        assert words_module.words_from_spans(t, spans[w], ids[w]) == one.words
        assert np.array_equal(spans[w], one.offsets)
        assert np.array_equal(indices[indptr[first]:indptr[first + n]], one.indices)
        assert np.array_equal(np.diff(indptr[first:first + n + 1]), np.diff(one.indptr))
        first += n


@given(st.lists(st.one_of(st.text(max_size=40), MIXED), max_size=6), st.lists(MIXED, max_size=3))
def test_lexicon_word_ids_are_codec_encode_words(first, second):
    lex = codec.lexicon()
    seen = []
    for texts in (first, second):  # ids stay stable from one add to the next
        n_words, ids = lex.add(texts)
        assert ids.dtype == np.uint32 and n_words.tolist() == [len(codec.encode(t)) for t in texts]
        vocab = lex.words()
        assert [vocab[i] for i in ids.tolist()] == [w for t in texts for w in codec.encode(t).words]
        seen += [w for t in texts for w in codec.encode(t).words]
    vocab = lex.words()
    assert vocab[:16] == list(tfree_codec.MARKERS) and len(set(vocab)) == len(vocab) == len(lex)
    import collections
    counts = collections.Counter(seen)
    assert lex.counts.tolist() == [counts[w] for w in vocab]
    indptr, indices = lex.patterns()
    assert np.array_equal(np.diff(indptr), np.diff(codec.encode_words(vocab)[0]))


def test_lexicon_refuses_bytes():
    with pytest.raises(TypeError):
        codec.lexicon().add([b"bytes"])
