"""Documents as packed UTF-8 (shards/docs.py): the bytes readers against the Python-string readers they replace."""
import io

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfree_codec import TfreeError
from tfree_codec.shards import lexicon as lex_module
from tfree_codec.shards import sources
from tfree_codec.shards.docs import Docs, concat, lines, pack

# pieces that make lines blank or not: every kind of whitespace str.strip() removes, CR, and text
PIECES = st.lists(st.sampled_from(["\n", "\r", "\r\n", " ", "\t", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0",
                                   "\u1680", "\u2000", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
                                   "\u200b", "a", "Zé", "日本", "😀", "x y"]), max_size=40).map("".join)


def reference_lines(text: str) -> list[str]:
    """What ``--split lines`` has always meant, on Python strings."""
    return [p[:-1] if p[-1] == "\r" else p for p in text.split("\n") if p.strip()]


@given(st.one_of(PIECES, st.text()))
def test_lines_on_bytes_are_the_lines_of_the_string(text):
    docs = lines(text.encode("utf-8", "surrogatepass"))
    if any(0xD800 <= ord(c) < 0xE000 for c in text):
        return  # not UTF-8: the readers refuse it before this point
    assert docs.texts() == reference_lines(text)
    assert docs.lengths().tolist() == [len(t.encode()) for t in reference_lines(text)]


@given(PIECES, st.integers(1, 9))
def test_a_file_read_block_by_block_gives_the_string_readers_documents(text, block):
    data = text.encode()
    old = sources.BLOCK
    sources.BLOCK = block  # blocks cut lines (and characters) anywhere
    try:
        got = [t for b in sources._line_batches(io.BytesIO(data), "f") for t in b.texts()]
        want = list(sources._text_docs(io.BytesIO(data), "f", "lines"))
    finally:
        sources.BLOCK = old
    assert got == want == reference_lines(text)


def test_bad_utf8_is_one_line_naming_the_byte():
    with pytest.raises(TfreeError, match=r"f: input is not valid UTF-8 \(invalid start byte at byte 8\)"):
        list(sources._line_batches(io.BytesIO(b"ok\nfine\n\xff\n"), "f"))


@given(st.lists(st.lists(st.text(st.characters(exclude_categories=("Cs",)), max_size=5), max_size=4), max_size=4),
       st.data())
def test_packing_slicing_and_concatenating_keep_the_documents(groups, data):
    parts = [pack(g) for g in groups]
    parts = [p.slice(*sorted(data.draw(st.tuples(st.integers(0, len(p)), st.integers(0, len(p)))))) for p in parts]
    want = [t for p in parts for t in p.texts()]
    both = concat(parts)
    assert both.texts() == want and both.offsets[0] == 0 and len(both.data) == both.nbytes()
    assert both.ascii == all(t.isascii() for t in want) or not all(p.ascii for p in parts)


def test_pack_names_a_document_with_a_lone_surrogate():
    with pytest.raises(TfreeError, match="in.jsonl: document 7: text contains a lone surrogate"):
        pack(["fine", "bad \ud800"], "in.jsonl", 6)


@pytest.mark.parametrize("large", [False, True])
def test_arrow_string_columns_become_batches_without_a_copy(large):
    texts = ["Grüße", "", "日本語", "plain"]
    col = pa.array(texts, pa.large_string() if large else pa.string()).slice(1)  # an offset into the buffers
    docs = sources._arrow_docs(col, 8 if large else 4)
    assert docs.texts() == texts[1:] and not docs.ascii
    assert np.shares_memory(docs.data, np.frombuffer(col.buffers()[2], np.uint8))


def _lexicon_file(tmp_path, words):
    path = tmp_path / "x.lexicon.arrow"
    path.write_bytes(lex_module.stream_bytes(lex_module.lexicon_batch(words, np.ones(len(words), np.int64))))
    return str(path)


@pytest.mark.parametrize("rest, problem", [
    (["a", "b"], None),
    (["a", "<|ws|>"], "empty or repeated words"),
    (["a", ""], "empty or repeated words"),
    (["a", "b", "a"], "empty or repeated words"),
    (["<", "<a"], None),
])
def test_the_merge_checks_shard_lexicons_on_their_bytes(tmp_path, rest, problem):
    path = _lexicon_file(tmp_path, list(lex_module.MARKERS) + rest)
    merger = lex_module.Merger()
    if problem is None:
        assert merger.add_file(path).tolist() == list(range(16 + len(rest)))
        assert merger.words()[16:] == rest
        return
    with pytest.raises(TfreeError, match=problem):
        merger.add_file(path)


def test_a_lexicon_without_the_markers_first_is_refused(tmp_path):
    path = _lexicon_file(tmp_path, ["a"] + list(lex_module.MARKERS))
    with pytest.raises(TfreeError, match="does not start with the marker words"):
        lex_module.read_lexicon_utf8(path)


def test_docs_len_and_bytes():
    d = Docs(np.frombuffer(b"abcdef", np.uint8), np.array([1, 3, 6], np.int64), True)
    assert len(d) == 2 and d.nbytes() == 5 and d.texts() == ["bc", "def"] and d.compact().texts() == ["bc", "def"]


@given(st.one_of(st.binary(max_size=40), st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.lists(st.sampled_from([b"a", b"\xc3\xa9", b"\xe2\x80\x9c", b"\xf0\x9f\x98\x80", b"\xed\xa0\x80",
                                           b"\xe0\x80\xaf", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80", b"\xe2\x80",
                                           b"\xf0\x9f", b"\xff"]), max_size=12).map(b"".join)))
def test_the_numpy_utf8_check_agrees_with_pythons_decoder(data):
    from tfree_codec.shards.docs import sparse_utf8_ok

    for padded in (data + b"x" * 8 * len(data), b"x" * 8 * len(data) + data):  # sparse enough for it to answer
        try:
            padded.decode("utf-8")
            valid = True
        except UnicodeDecodeError:
            valid = False
        assert sparse_utf8_ok(np.frombuffer(padded, np.uint8)) is valid
