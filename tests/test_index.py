"""The on-disk index cache (decode/index.py): written once for a dictionary file, read back at the next load, and
never trusted when damaged: a damaged, foreign or hostile cache is rebuilt, an unwritable one ignored."""
import io
import json
import os
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfree_codec import Codec
from tfree_codec.assets import sample_text
from tfree_codec.decode import index
from tfree_codec.decode.decoder import Decoder
from tfree_codec.decode.dictionary import Dictionary
from tfree_codec.decode.scorer import unique_rows


@pytest.fixture()
def saved(tmp_path, monkeypatch):
    monkeypatch.setenv("TFREE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "dict.arrow"
    Dictionary.from_texts(Codec(), [sample_text(20_000)]).save(path)
    return path


def logits(d, words):
    assert all(w in d for w in words)
    x = np.full((len(words), d.config.vocab_size), -6, np.float32)
    for j, w in enumerate(words):
        x[j, d.pattern(d.index(w))] = 6
    return x


def fresh_state(path):
    d = Dictionary.load(path, Codec())
    d.file_checksum = None  # as if built in memory: no cache involved
    return d, Decoder(d).scorer().state()


def test_the_cache_is_written_once_and_read_back(saved):
    d = Dictionary.load(saved, Codec())
    sc = Decoder(d).scorer()
    path = index.cache_path(d)
    assert os.path.exists(path)
    inode = os.stat(path).st_ino
    d2 = Dictionary.load(saved, Codec())
    sc2 = Decoder(d2).scorer()
    assert os.stat(path).st_ino == inode  # read, not written again
    for k, v in sc.state().items():
        assert np.array_equal(v, sc2.state()[k]), k
    assert Decoder(d2).decode(logits(d2, ["family", "the"]), temperature=0).words == ["family", "the"]


def test_words_added_after_loading_grow_the_cached_index(saved):
    d = Dictionary.load(saved, Codec())
    d.extend(["Quixotic"])
    dec = Decoder(d)
    assert dec.decode(logits(d, ["Quixotic", "family"]), temperature=0).words == ["Quixotic", "family"]
    assert len(dec.scorer()) == len(d)


def _rewrite(path, change):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def _header(a, **kw):
    a["header"] = np.array(json.dumps({**json.loads(str(a["header"])), **kw}))


DAMAGE = {
    "truncated": lambda p: open(p, "r+b").truncate(os.path.getsize(p) // 2),
    "garbage": lambda p: open(p, "wb").write(os.urandom(5000)),
    "flipped byte": lambda p: _flip(p),
    "empty": lambda p: open(p, "wb").close(),
    "another dictionary": lambda p: _rewrite(p, lambda a: _header(a, checksum="0" * 64)),
    "another format version": lambda p: _rewrite(p, lambda a: _header(a, version=99)),
    "row out of range": lambda p: _rewrite(p, lambda a: a.__setitem__("trows", a["trows"] + 10**6)),
    "posting out of range": lambda p: _rewrite(p, lambda a: a.__setitem__("tpos", a["tpos"] * 0 + 10**7)),
    "pointer falls": lambda p: _rewrite(p, lambda a: a.__setitem__("sptr", a["sptr"][::-1].copy())),
    "trie deeper than its stack": lambda p: _rewrite(p, lambda a: a.__setitem__("scalars", a["scalars"] * 0)),
    "order not a permutation": lambda p: _rewrite(p, lambda a: a.__setitem__("order", a["order"] * 0)),
    "wrong type": lambda p: _rewrite(p, lambda a: a.__setitem__("stid", a["stid"].astype(np.float64))),
    "missing array": lambda p: _rewrite(p, lambda a: a.pop("ktid")),
}


def _flip(path):
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("stid.npy")
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 200)
        b = f.read(1)
        f.seek(info.header_offset + 200)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cache_is_rebuilt_never_trusted(saved, damage):
    d = Dictionary.load(saved, Codec())
    Decoder(d).scorer()
    DAMAGE[damage](index.cache_path(d))
    d2 = Dictionary.load(saved, Codec())
    state = Decoder(d2).scorer().state()
    _, want = fresh_state(saved)
    for k, v in want.items():
        assert np.array_equal(v, state[k]), k
    assert Decoder(d2).decode(logits(d2, ["family"]), temperature=0).words == ["family"]


def test_an_unwritable_cache_is_no_error(saved, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TFREE_CACHE", str(blocker))  # a file where the cache directory should be
    d = Dictionary.load(saved, Codec())
    assert Decoder(d).decode(logits(d, ["family"]), temperature=0).words == ["family"]


def test_the_cache_keeps_the_indexes_used_last(tmp_path, monkeypatch):
    monkeypatch.setenv("TFREE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "index"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("not ours")  # nothing but the index files is touched
    paths = []
    for i in range(index.KEEP + 2):
        p = tmp_path / f"d{i}.arrow"
        Dictionary.from_texts(Codec(), [f"word{i} and more words"]).save(p)
        paths.append(p)
        Decoder(Dictionary.load(p, Codec())).scorer()
        os.utime(index.cache_path(Dictionary.load(p, Codec())), (1e9 + i, 1e9 + i))  # in order of use
    kept = sorted(f for f in os.listdir(folder) if f.endswith(".npz"))
    assert len(kept) == index.KEEP and (folder / "notes.txt").exists()
    assert not os.path.exists(index.cache_path(Dictionary.load(paths[0], Codec())))


def test_dictionaries_built_in_memory_are_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TFREE_CACHE", str(tmp_path / "cache"))
    d = Dictionary.from_texts(Codec(), ["a few words here"])
    Decoder(d).scorer()
    assert index.cache_path(d) is None and not (tmp_path / "cache").exists()


def test_warm_caches_a_dictionary_file_so_the_first_decoder_reads_it(saved):
    d = Dictionary.load(saved, Codec())
    assert not os.path.exists(index.cache_path(d))
    assert index.warm(saved, Codec()) is True
    inode = os.stat(index.cache_path(d)).st_ino
    Decoder(d).scorer()
    assert os.stat(index.cache_path(d)).st_ino == inode  # read, not built again


def test_warm_without_a_writable_cache_says_so(saved, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TFREE_CACHE", str(blocker))
    assert index.warm(saved, Codec()) is False


def test_dict_build_leaves_the_index_cached(tmp_path, monkeypatch):
    from conftest import cli

    monkeypatch.setenv("TFREE_CACHE", str(tmp_path / "cache"))
    text = tmp_path / "t.txt"
    text.write_text(sample_text(5_000), encoding="utf-8")
    res = cli("dict", "build", str(text), "-o", str(tmp_path / "d.arrow"))
    assert res.exit_code == 0, res.output
    assert os.path.exists(index.cache_path(Dictionary.load(tmp_path / "d.arrow")))


def test_export_leaves_the_index_cached(tmp_path, monkeypatch, tiny_run):
    from tfree_codec.generate import export

    run = tiny_run("tfree")
    monkeypatch.setenv("TFREE_CACHE", str(tmp_path / "cache"))
    out = export(run, str(tmp_path / "exported"))
    assert os.path.exists(index.cache_path(Dictionary.load(os.path.join(out, "dictionary.arrow"))))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40), st.integers(1, 6), st.integers(1, 50), st.integers(0, 2**31))
def test_unique_rows_is_numpys_unique_over_rows(n, j, hi, seed):
    a = np.random.default_rng(seed).integers(0, hi, (n, j)).astype(np.int64)
    want = np.unique(a, axis=0, return_inverse=True, return_counts=True)
    got = unique_rows(a)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[2], want[2])
    assert np.array_equal(got[1], want[1].reshape(-1))
