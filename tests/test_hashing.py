"""Words -> activation patterns: m distinct rows per trigram, case sharing, golden vectors, determinism."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfree_codec import MARKERS, Codec, CodecConfig
from tfree_codec.text import _reference as R
from tfree_codec.text import trigrams
from tfree_codec.assets import sample_text

codec = Codec()

# Checked in: these pin the default ``tfree`` family (v=8192, m=10, k_lower=2, seed=0) across versions/machines.
GOLDEN = {
    "a": [4069, 4342, 4752, 5017, 5938, 6324, 6685, 6788, 6964, 7541],
    "<|endoftext|>": [383, 957, 1554, 2509, 5002, 5604, 6104, 6966, 7296, 8003],
    "Hello": [91, 165, 207, 480, 567, 799, 926, 1019, 1302, 1382, 1686, 1913, 2289, 2395, 2434, 2495, 2547, 2548, 2600,
              2779, 2967, 3060, 3114, 3131, 3196, 3220, 3295, 3913, 4115, 4159, 4360, 4431, 4680, 5069, 5156, 5337,
              5791, 5849, 6190, 6274, 6958, 6992, 7223, 7353, 7388, 7597, 7652, 7703, 7716, 8040],
}


def pattern(word, c=codec):
    return c.encode_words([word])[1].tolist()


@pytest.mark.parametrize("word", sorted(GOLDEN))
def test_tfree_golden_vectors(word):
    assert pattern(word) == GOLDEN[word]


def test_aleph_golden_vectors_from_the_spec():
    # SPEC section 2 / reference.md section 3 (v=32000, m=10, k=2)
    assert list(trigrams.aleph_trigram(b" He", 32000, 10, 2)) == [3605, 6000, 6940, 8764, 13910, 15616, 17701, 22257, 22896, 29430]
    assert list(trigrams.aleph_trigram(b" he", 32000, 10, 2)) == [711, 741, 2328, 3032, 3420, 8249, 9441, 21499, 22896, 29430]
    aleph = Codec(CodecConfig(vocab_size=32000, hash="aleph"))
    assert pattern("<|endoftext|>", aleph) == sorted([3660, 30793, 14822, 5862, 541, 29684, 15568, 23924, 5552, 26926])
    # a one-letter word has the single trigram " a " (whose bytes are not all case-shared letters... they are)
    a_row = trigrams.aleph_trigram(b" a ", 32000, 10, 2)
    assert pattern("a", aleph) == sorted(set(a_row))


def test_each_trigram_activates_exactly_m_distinct_rows():
    for m in (1, 4, 10, 16):
        c = Codec(CodecConfig(num_activations=m, k_lower=min(2, m)))
        assert len(pattern("a", c)) == m          # " a " is one trigram
        assert len(pattern("<|ws|>", c)) == m     # markers are hashed whole


def test_patterns_are_sorted_unique_uint32_in_range():
    enc = codec.encode(sample_text(20_000))
    assert enc.indices.dtype == np.uint32 and enc.indptr.dtype == np.int64
    assert enc.indices.max() < codec.vocab_size
    for i in range(len(enc)):
        p = enc.patterns(i)
        assert np.all(np.diff(p.astype(np.int64)) > 0)


def test_case_sharing_covers_every_cased_script():
    for upper, lower in [("Hello", "hello"), ("Ωμέγα", "ωμέγα"), ("Привет", "привет"), ("Äpfel", "äpfel")]:
        up, low = (" " + upper + " ").encode(), (" " + lower + " ").encode()
        assert len(up) == len(low)
        must_share = set()
        for j in range(len(up) - 2):
            lt = int.from_bytes(low[j:j + 3], "little")
            # an unchanged trigram shares all m rows, a case-changed one the first k_lower=2 of the lower form's
            must_share.update(trigrams.tfree_rows(lt, 10 if up[j:j + 3] == low[j:j + 3] else 2, 8192, 0))
        assert must_share <= set(pattern(upper)) & set(pattern(lower))
    no_share = Codec(CodecConfig(k_lower=0))
    assert len(set(pattern("Hello", no_share)) & set(pattern("hello", no_share))) < 40


def test_distinct_trigrams_of_real_text_never_share_their_whole_row_set():
    # SPEC section 2: a weak hash seeded m times gave thousands of identical row sets; this one must give none.
    text = sample_text(300_000)
    data = text.encode()
    tris = {data[j:j + 3] for j in range(len(data) - 2)}
    rows = {tuple(sorted(trigrams.tfree_rows(int.from_bytes(t, "little"), 10, 8192, 0))) for t in tris}
    assert len(rows) == len(tris)
    assert all(len(set(r)) == 10 for r in rows)


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=20))
def test_fast_hashing_equals_reference(words):
    words = [w for w in words if w not in MARKERS]
    indptr, indices = codec.encode_words(words)
    for i, w in enumerate(words):
        assert indices[indptr[i]:indptr[i + 1]].tolist() == R.word_pattern(w, 8192, 10, 2, 0)


def test_encode_words_handles_markers_and_rejects_empty_words():
    indptr, indices = codec.encode_words(["<|ws|>", "word", "<|ws|>"])
    assert indices[indptr[0]:indptr[1]].tolist() == indices[indptr[2]:indptr[3]].tolist()
    with pytest.raises(Exception, match="non-empty"):
        codec.encode_words([""])


def test_patterns_are_the_same_in_another_process_with_another_hash_seed():
    text = "Determinism: the same patterns on every machine, 日本語, Ωμέγα!"
    here = codec.encode(text).indices.tolist()
    code = ("import sys; from tfree_codec import Codec; "
            "print(Codec().encode(sys.argv[1]).indices.tolist())")
    for seed in ("1", "12345"):
        out = subprocess.run([sys.executable, "-c", code, text], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert out.stdout.strip() == str(here)


def test_seed_and_vocab_size_change_patterns():
    assert pattern("word") != pattern("word", Codec(CodecConfig(seed=1)))
    assert max(pattern("word", Codec(CodecConfig(vocab_size=16384)))) < 16384
