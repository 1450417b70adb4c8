"""Text -> words: the T-FREE whitespace rules, losslessness for every string, segmentation of spaceless scripts."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfree_codec import MARKERS, Codec, CodecConfig, join, split
from tfree_codec.text import _reference as R
from tfree_codec.assets import sample_text
from tfree_codec.text.words import WordCache, words_from_spans

codec = Codec()


@pytest.mark.parametrize("text, words", [
    ("pi is 3.14", ["pi", "is", "<|ws|>", "3", ".", "1", "4"]),          # reference.md examples
    ("don't", ["don", "'", "t"]),
    ("U.S.A. x", ["U", ".", "<|no_ws|>", "S", ".", "<|no_ws|>", "A", ".", "x"]),
    ("Hello  world", ["Hello", "<|2<-ws->|>", "world"]),
    ("Hello world", ["Hello", "world"]),                                   # the one expected space is implicit
    (" edge ", ["<|ws|>", "edge", "<|ws|>"]),                              # spaces at the ends are explicit
    ("a\n\n\nb", ["a", "<|2<-\n->|>", "<|\n|>", "b"]),                     # runs merge into powers of two
    ("a" + " " * 7 + "b", ["a", "<|4<-ws->|>", "<|2<-ws->|>", "<|ws|>", "b"]),
    ("x_y", ["x", "_", "y"]),
    ("line\r\nnext\tcol", ["line", "\r", "<|\n|>", "next", "\t", "col"]),  # other whitespace: words, no spaces implied
    ("Emma’s “dear” friend—here", ["Emma", "’", "s", "“", "dear", "”", "friend", "—", "here"]),
    ("", []),
])
def test_split_examples(text, words):
    assert split(text) == words
    assert join(words) == text


def test_text_that_looks_like_a_marker_is_not_a_marker():
    for m in MARKERS:
        words = split(f"a {m} b")
        assert join(words) == f"a {m} b"
        assert words[1:3] == ["<", "|"]  # typed markers split into <, |, ... and can never forge one
        if m != "<|no_ws|>" and "\n" not in m:  # (those contain a real missing space / real newlines)
            assert m not in words
    assert split("<|endoftext|>") == ["<", "|", "<|no_ws|>", "endoftext", "<|no_ws|>", "|", ">"]


@given(st.text())
def test_split_is_lossless(text):
    assert join(split(text)) == text


@given(st.lists(st.sampled_from(MARKERS + ("<|", "|>", " ", "\n", "a", "1", ".", "'", "日本", "\r", "\t", "<", "|", ">"))))
def test_split_is_lossless_on_marker_lookalikes_and_whitespace(parts):
    text = "".join(parts)
    assert join(split(text)) == text


@given(st.text(st.characters(codec=None, exclude_categories=())))
def test_split_is_lossless_with_lone_surrogates_and_controls(text):
    assert join(split(text)) == text


@pytest.mark.parametrize("text", [
    "e\u0301 combining, \u0000 NUL, \u200d ZWJ, 👩‍👩‍👧 family, שלום עולם RTL, \U0001F600",
    "\ud800 lone \udfff surrogates",
    "tabs\tand\r\ncarriage\rreturns\x0b\x0c\x1c\x85\u2028\u2029\u00a0\u3000",
])
def test_split_is_lossless_on_hard_cases(text):
    assert join(split(text)) == text


@given(st.text())
def test_fast_split_equals_reference(text):
    assert split(text) == R.split(text)
    assert join(split(text)) == R.join(split(text))


def test_fast_split_equals_reference_on_prose():
    text = sample_text(100_000)
    assert split(text) == R.split(text)


def test_long_words_are_cut_and_joined_back():
    cfg = Codec(CodecConfig(max_word_chars=8))
    text = "Donaudampfschifffahrtsgesellschaft " + "x" * 1_000_000
    words = cfg.split(text)
    assert cfg.join(words) == text
    assert max(len(w) for w in words if w not in MARKERS) == 8
    assert words[:3] == ["Donaudam", "<|no_ws|>", "pfschiff"]


@pytest.mark.parametrize("text, expected", [
    ("日本語のテキストを分割します。", ["日本語", "の", "テキスト", "を", "分割", "し", "ます", "。"]),
    ("ภาษาไทยเป็นภาษาที่สวยงาม", ["ภาษา", "ไทย", "เป็น", "ภาษา", "ที่", "สวยงาม"]),
    ("中文分词测试", ["中文", "分词", "测试"]),
])
def test_scripts_without_spaces_are_segmented_by_icu(text, expected):
    assert split(text) == expected
    assert join(expected) == text


def test_no_markers_between_spaceless_scripts_and_latin():
    words = split("使用Apache服务器")
    assert words[:2] == ["使用", "Apache"] and len(words) >= 3
    assert not set(words) & set(MARKERS)


def test_segmenter_none_keeps_runs_whole_up_to_the_limit():
    c = Codec(CodecConfig(segmenter="none", max_word_chars=4))
    assert c.split("日本語のテキスト") == ["日本語の", "テキスト"]
    assert c.join(c.split("日本語のテキスト")) == "日本語のテキスト"


def test_astral_han_characters_keep_offsets_right():
    text = "𠀋𠀋漢字です abc"
    enc = codec.encode(text)
    assert [text[s:e] for s, e in enc.offsets.tolist()] == [w if w not in MARKERS else " " for w in enc.words]
    assert codec.join(enc.words) == text


# -- local splitting: ICU sees each run of no-space letters on its own ----------------------------------------------
SCRIPTS = st.text(st.sampled_from("ab Zé2.,-'\t日本語の文章ですカタカナ東京한국어가ไทยง่าย𠀋\u0301\u200b"), max_size=40)


def test_a_far_away_kanji_does_not_change_the_words_of_a_korean_manual():
    alone = split("Access2Base가 x")
    assert alone == ["Access", "2", "<|no_ws|>", "Base가", "x"]
    assert split("Access2Base가 x\n\n" + "a" * 1000 + "漢字")[:5] == alone


def _paragraph(text: str) -> str:
    return text.strip(" \n") or "x"  # spaces and newlines at its ends would merge with the separators


@given(SCRIPTS, SCRIPTS, SCRIPTS)
def test_a_paragraphs_words_do_not_depend_on_the_rest_of_the_document(before, para, after):
    para = _paragraph(para)
    doc = before + "\n\n" + para + "\n\n" + after
    start = len(before) + 2
    enc = codec.encode(doc)
    inside = [w for w, (s, e) in zip(enc.words, enc.offsets.tolist()) if start <= s and e <= start + len(para)
              and not (s == e and (s == start or s == start + len(para)))]
    assert inside == split(para)


@given(SCRIPTS)
def test_fast_splitting_equals_the_reference_on_mixed_scripts(text):
    assert split(text) == R.split(text)
    assert [w for t in codec.encode_batch([text, text[::-1]]) for w in t.words] == R.split(text) + R.split(text[::-1])


def test_texts_encoded_together_never_share_an_icu_run():
    texts = ["東京", "都に住んでいます", "漢", "字です", "Base", "가漢字"]
    assert [e.words for e in codec.encode_batch(texts, num_threads=1)] == [R.split(t) for t in texts]


# -- the UTF-8 walk (text/_split.py) against the reference, offsets included -----------------------------------------
ANY = st.text(st.characters(codec=None, exclude_categories=()))  # lone surrogates, controls, anything
LOOKALIKES = st.lists(st.sampled_from(MARKERS + ("<|", "|>", " ", "  ", "\n", "a", "Zé", "1", ".", "'", "日本", "\r",
                                                 "\t", "<", "|", ">", "\ud800", "\udfff", "😀", "ไทย"))).map("".join)


@given(st.one_of(ANY, LOOKALIKES, SCRIPTS), st.sampled_from([(32, "icu"), (3, "icu"), (1, "none"), (5, "none")]))
def test_the_utf8_walk_gives_the_references_words_and_offsets(text, options):
    max_chars, segmenter = options
    offsets, ids = WordCache().split(text, max_chars, segmenter)
    words, spans = R.split_with_offsets(text, max_chars, segmenter)
    assert words_from_spans(text, offsets, ids) == words
    assert offsets.tolist() == [list(s) for s in spans]


@given(st.lists(st.one_of(ANY, LOOKALIKES, SCRIPTS), max_size=8), st.lists(st.one_of(LOOKALIKES, SCRIPTS), max_size=4))
def test_word_ids_of_batches_are_the_references_words(first, second):
    lex = codec.lexicon()
    got, want = [], []
    for texts in (first, second):  # one lexicon across calls: ids stay put
        n_words, ids = lex.add(texts)
        vocab = lex.words()
        got += [vocab[i] for i in ids.tolist()]
        want += [w for t in texts for w in R.split(t)]
        assert n_words.tolist() == [len(R.split(t)) for t in texts]
    assert got == want


@given(st.lists(st.one_of(st.text(), SCRIPTS), max_size=8))
def test_utf8_input_gives_the_ids_of_str_input(texts):
    data = [t.encode("utf-8") for t in texts]
    starts = np.concatenate([[0], np.cumsum([len(b) for b in data])]).astype(np.int64)
    a, b = codec.lexicon(), codec.lexicon()
    n1, ids1 = a.add(texts)
    n2, ids2 = b.add_utf8(np.frombuffer(b"".join(data), np.uint8), starts, ascii=all(t.isascii() for t in texts))
    assert n1.tolist() == n2.tolist() and ids1.tolist() == ids2.tolist() and a.words() == b.words()
    assert a.utf8()[0].tobytes().decode() == "".join(a.words())


def _letters(i: int) -> str:
    """The i-th word over a-z (a, b, ..., z, aa, ab, ...)."""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s += chr(97 + r)
    return s


def test_the_walk_resumes_where_it_ran_out_of_room():
    # one word per character (its output outgrows the first guess many times) and thousands of distinct words
    # (the word cache grows and its table is rehashed mid-text), in one text and cut into many
    rng = np.random.default_rng(0)
    distinct = [_letters(i) for i in rng.permutation(5_000)]
    text = ".,;:" * 4_000 + " ".join(distinct) + "日本語の文章です" * 100
    assert split(text) == R.split(text)
    texts = [text[i:i + 997] for i in range(0, len(text), 997)]
    lex = codec.lexicon()
    n_words, ids = lex.add(texts)
    vocab = lex.words()
    assert [vocab[i] for i in ids.tolist()] == [w for t in texts for w in R.split(t)]
    cache = WordCache()
    assert len(vocab) > 4_000
    assert cache.intern(vocab[16:]).tolist() == list(range(16, len(vocab)))  # same words, same ids, in order


def test_the_icu_prefilter_finds_every_no_space_letter():
    from tfree_codec.text._unicode import CLASS_MASK, LETTER_NS, tables
    from tfree_codec.text.words import may_need_icu

    cls = tables()[0]
    is_ns = (cls & CLASS_MASK) == LETTER_NS
    ns = np.flatnonzero(is_ns)
    sample = list(ns[ns < 0x800]) + list(ns[::97]) + [ns[-1]]
    for c in sample:
        assert may_need_icu(np.frombuffer(f"ab{chr(c)}—x".encode(), np.uint8), cls), hex(c)
    others = [c for c in range(0x80, 0x110000, 89) if not is_ns[c] and not 0xD800 <= c < 0xE000]
    text = " ".join(map(chr, others)).encode()
    assert not may_need_icu(np.frombuffer(text, np.uint8), cls)
