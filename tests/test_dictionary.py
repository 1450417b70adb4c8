"""The word dictionary: built from text, files or shards, merged, extended, saved and loaded, and its CLI."""
import collections
import os
import types

import numpy as np
import pytest

from tfree_codec import MARKERS, Codec, CodecConfig, TfreeError
from tfree_codec.decode import dictionary as D
from tfree_codec.assets import sample_text
from tfree_codec.decode.dictionary import Dictionary
from conftest import cli as run

TEXT = "the cat sat on the mat.\nThe dog sat on the log!\n\n\nthe end  of it\r\n"


@pytest.fixture(scope="module")
def sample(codec):
    return Dictionary.from_texts(codec, [sample_text(100_000)], min_count=2)


def test_markers_come_first_with_the_codecs_ids(codec, sample):
    assert sample.words[:len(MARKERS)] == list(MARKERS)
    enc = codec.encode("a\n\nb  c")
    markers = [(w, i) for w, i in zip(enc.words, enc.ids) if i < len(MARKERS)]
    assert markers and all(sample.index(w) == i for w, i in markers)


def test_words_ranked_by_count_then_word(codec):
    d = Dictionary.from_texts(codec, [TEXT])
    counts = collections.Counter(codec.split(TEXT))
    rest = d.words[len(MARKERS):]
    assert rest == sorted((w for w in counts if w not in MARKERS), key=lambda w: (-counts[w], w))
    assert [d.counts[d.index(w)] for w in rest] == [counts[w] for w in rest]
    assert d.counts[d.index("<|\n|>")] == counts["<|\n|>"]


def test_min_count_and_max_words(codec):
    d = Dictionary.from_texts(codec, [TEXT], min_count=2)
    assert set(d.words[len(MARKERS):]) == {"the", "sat", "on"}
    d = Dictionary.from_texts(codec, [TEXT], max_words=1)
    assert d.words[len(MARKERS):] == ["the"] and len(d) == len(MARKERS) + 1
    with pytest.raises(TfreeError, match="min_count"):
        Dictionary.from_texts(codec, [TEXT], min_count=0)


def test_patterns_are_the_codecs(codec, sample):
    indptr, indices = codec.encode_words(sample.words)
    assert np.array_equal(sample.indptr, indptr) and np.array_equal(sample.indices, indices)
    assert sample.indices.dtype == np.uint32 and sample.indptr.dtype == np.int64
    w = sample.index("Emma")
    assert np.array_equal(sample.pattern(w), codec.encode("Emma").patterns(0))


def test_index_of_an_unknown_word_is_minus_one(sample):
    assert sample.index("Emma") >= 0 and "Emma" in sample
    assert sample.index("qwertyuiop") == -1 and "qwertyuiop" not in sample


def test_files_are_read_in_pieces_without_changing_counts(codec, tmp_path, monkeypatch):
    text = sample_text(60_000) + "\n\n\n\nend\r\n\r\nx" + " tail" * 50
    f = tmp_path / "a.txt"
    f.write_bytes(text.encode())
    monkeypatch.setattr(D, "_READ_CHUNK", 997)  # many pieces, cut inside runs of newlines if it were naive
    from_file = Dictionary.from_files([f], codec)
    whole = Dictionary.from_texts(codec, [text])
    assert from_file.words == whole.words and np.array_equal(from_file.counts, whole.counts)


def test_documents_with_words_are_counted(codec):
    docs = [types.SimpleNamespace(words=["a", "b", "a"]), types.SimpleNamespace(words=["b", "a"])]
    d = Dictionary.from_texts(codec, [docs])
    assert d.words[len(MARKERS):] == ["a", "b"] and list(d.counts[len(MARKERS):]) == [3, 2]


def test_shard_directories_are_counted(codec, tmp_path):
    writer = pytest.importorskip("tfree_codec.shards.writer")
    f = tmp_path / "in.txt"
    f.write_text(TEXT * 3, encoding="utf-8")
    writer.encode_to_shards([str(f)], str(tmp_path / "shards"), codec.config, split="lines", num_proc=1,
                            progress=False)
    from_shards = Dictionary.from_files([tmp_path / "shards"])
    assert from_shards.fingerprint() == codec.fingerprint()
    assert {"the", "cat", "sat"} <= set(from_shards.words)
    assert from_shards.counts[from_shards.index("the")] == 3 * TEXT.count("the ")
    with pytest.raises(TfreeError, match="different codecs"):
        Dictionary.from_files([tmp_path / "shards"], Codec(CodecConfig(vocab_size=4096)))


def test_extend_adds_only_new_words(codec, sample):
    d = Dictionary(codec, sample.words, sample.counts, sample.indptr, sample.indices)
    n = len(d)
    ids = d.extend(["Emma", "zyzzyva", "zyzzyva", "qoph"])
    assert ids[0] == sample.index("Emma") and ids[1] == ids[2] == n and ids[3] == n + 1 and len(d) == n + 2
    indptr, indices = codec.encode_words(d.words)
    assert np.array_equal(d.indptr, indptr) and np.array_equal(d.indices, indices)
    for i in range(300):  # prompt words, one step at a time: storage grows geometrically
        d.extend([f"w{i}x"])
    assert len(d) == n + 302 and d.index("w299x") == n + 301
    assert np.array_equal(d.pattern(n + 301), codec.encode_words(["w299x"])[1])
    assert len(sample) == n  # the original is untouched


def test_merge_sums_counts_and_reranks(codec):
    a = Dictionary.from_texts(codec, ["x x y"])
    b = Dictionary.from_texts(codec, ["y y z"])
    m = a.merge(b)
    assert m.words[len(MARKERS):] == ["y", "x", "z"]
    assert list(m.counts[len(MARKERS):]) == [3, 2, 1]
    indptr, indices = codec.encode_words(m.words)
    assert np.array_equal(m.indptr, indptr) and np.array_equal(m.indices, indices)
    with pytest.raises(TfreeError, match="different codecs"):
        a.merge(Dictionary.from_texts(Codec(CodecConfig(seed=1)), ["x"]))


def test_save_load_round_trip(codec, sample, tmp_path):
    p = tmp_path / "d.arrow"
    sample.save(p)
    back = Dictionary.load(p, codec)
    assert back.words == sample.words and np.array_equal(back.counts, sample.counts)
    assert np.array_equal(back.indptr, sample.indptr) and np.array_equal(back.indices, sample.indices)
    assert Dictionary.load(p).fingerprint() == codec.fingerprint()  # the codec comes with the file
    assert [f for f in os.listdir(tmp_path)] == ["d.arrow"]  # no temporary files left behind


def test_odd_words_survive_save_and_load(codec, tmp_path):
    d = Dictionary(codec, list(MARKERS) + ["\x00", "\ud800", "<|ws|>x", "日本"])
    d.save(tmp_path / "d.arrow")
    assert Dictionary.load(tmp_path / "d.arrow").words == d.words


def test_load_refuses_another_codec(codec, sample, tmp_path):
    sample.save(tmp_path / "d.arrow")
    with pytest.raises(TfreeError, match="built with codec .* not this codec"):
        Dictionary.load(tmp_path / "d.arrow", Codec(CodecConfig(num_activations=8)))


def test_load_refuses_damaged_files(codec, sample, tmp_path):
    p = tmp_path / "d.arrow"
    sample.save(p)
    data = p.read_bytes()
    (tmp_path / "cut.arrow").write_bytes(data[:len(data) // 2])
    (tmp_path / "junk.arrow").write_bytes(b"not arrow at all")
    flipped = bytearray(data)
    i = data.index("Emma".encode())
    flipped[i] = ord("X")  # the word column changes: the checksum must catch it
    (tmp_path / "flip.arrow").write_bytes(bytes(flipped))
    for name, msg in [("cut.arrow", "not a tfree dictionary"), ("junk.arrow", "not a tfree dictionary"),
                      ("flip.arrow", "checksum"), ("missing.arrow", "no such file")]:
        with pytest.raises(TfreeError, match=msg) as e:
            Dictionary.load(tmp_path / name)
        assert "\n" not in str(e.value)


def test_neighbours_show_morphology(codec):
    d = Dictionary.from_texts(codec, ["walk walked walking walks talk house mouse horse"])
    near = [w for w, _, _ in d.neighbours("walk", 3)]
    assert near[0] in ("walks", "walked") and set(near) <= {"walks", "walked", "walking", "talk"}
    assert d.neighbours("walker", 1)[0][0] in ("walk", "walked", "walks")  # works for unseen words too
    w, shared, jac = d.neighbours("walked", 1)[0]
    assert 0 < jac < 1 and shared > 0


def test_collisions_are_reported(codec):
    # with every row shared with the lower-case trigram, case variants have identical patterns
    folded = Codec(CodecConfig(k_lower=10))
    d = Dictionary.from_texts(folded, ["Hello hello HELLO world"])
    assert sorted(map(sorted, d.collisions())) == [["HELLO", "Hello", "hello"]]
    assert d.info()["collisions"] == 2
    assert Dictionary.from_texts(codec, ["Hello hello HELLO world"]).collisions() == []


# -- CLI -----------------------------------------------------------------------------------------------------------

def test_cli_build_info_neighbours(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text(TEXT + "walking walked walks\n", encoding="utf-8")
    out = tmp_path / "d.arrow"
    r = run("dict", "build", f, "-o", out, "--min-count", "1", "-q")
    assert r.exit_code == 0, r.output
    assert "words" in r.output and out.exists()
    r = run("dict", "info", out)
    assert r.exit_code == 0 and "markers" in r.output and "v=8192" in r.output
    r = run("dict", "info", out, "--json")
    assert r.exit_code == 0 and '"words"' in r.output
    r = run("dict", "neighbours", out, "walk", "-k", "2")
    assert r.exit_code == 0 and "not in the dictionary" in r.output and "walk" in r.output.splitlines()[1]
    r = run("dict", "build", f, "-o", tmp_path / "small.arrow", "-v", "4096", "--max-words", "3", "-q")
    assert r.exit_code == 0 and Dictionary.load(tmp_path / "small.arrow").config.vocab_size == 4096


def test_cli_fails_cleanly(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text(TEXT, encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe bad utf8")
    cases = [("dict", "build", tmp_path / "none.txt", "-o", tmp_path / "o.arrow"),
             ("dict", "build", tmp_path / "bad.txt", "-o", tmp_path / "o.arrow", "-q"),
             ("dict", "build", f, "-o", tmp_path / "o.arrow", "--min-count", "0", "-q"),
             ("dict", "info", f),
             ("dict", "neighbours", tmp_path / "none.arrow", "x"),
             ("dict", "build", f, "-o", tmp_path / "o.arrow", "-v", "1000", "-q")]
    for args in cases:
        r = run(*args)
        assert r.exit_code == 1, (args, r.output)
        assert r.output.startswith("Error: ") and r.output.count("\n") == 1, (args, r.output)
    assert not (tmp_path / "o.arrow").exists()  # nothing half-written
