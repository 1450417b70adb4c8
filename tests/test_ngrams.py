"""Word n-gram keys and rows for Over-Encoding: stable, document-local, and the model starts as the plain one."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from tfree_codec.model.overtok import AfterNext
from tfree_codec.model.transformer import Model, ModelConfig, Patterns
from tfree_codec.text.ngrams import BOS_KEY, moduli, ngram_rows, ngram_rows_reference, word_key, word_keys


def test_word_key_is_fnv1a_finished_by_splitmix_and_agrees_with_the_batch_kernel():
    words = ["the", " cat", "", "é", "日本語", "<|endoftext|>", "\ud800"]
    assert [word_key(w) for w in words] == [int(k) for k in word_keys(words)]
    assert len({word_key("the"), word_key("The"), word_key(" the")}) == 3


def test_word_keys_are_the_same_in_another_process():
    # Python's hash() is salted per process; ours must not be
    code = "from tfree_codec.text.ngrams import word_key; print(word_key('hello'), word_key(' world'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.split()
    assert [int(x) for x in out] == [word_key("hello"), word_key(" world")]


def test_pinned_values_guard_against_any_change_of_the_hash():
    # changing these would silently scramble every trained over-encoding model's tables
    from tfree_codec.text.ngrams import _mix
    assert word_key("hello") == _mix(0xA430D84680AABD0B)  # FNV-1a 64 of b"hello", a published test vector
    assert _mix(0) == 0xE220A8397B1DCDAF  # splitmix64's first output from seed 0, also published
    rows = ngram_rows(word_keys(["a", "b", "c"]), np.array([True, False, False]), (2, 3), 2, 1000)
    assert rows.tolist() == PINNED_ROWS


PINNED_ROWS = [[344, 873, 633, 868], [537, 881, 962, 87], [261, 304, 636, 232]]  # from this version


@pytest.mark.parametrize("distinct", [True, False])
def test_kernel_matches_the_reference_on_random_streams(distinct):
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**63, 300).astype(np.uint64) * np.uint64(2)
    boundary = rng.random(300) < 0.1
    got = ngram_rows(keys, boundary, (2, 3, 4), 3, 977, distinct)
    assert got.tolist() == ngram_rows_reference(keys, boundary, (2, 3, 4), 3, 977, distinct).tolist()
    mods = moduli((2, 3, 4), 3, 977, distinct)
    assert ((got >= 0) & (got < np.array(mods))).all()


def test_ngrams_never_cross_a_document_boundary():
    keys = word_keys(["x", "y", "z", "a", "b"])
    # "a" starts a new document: its bigram is (BOS, a) whatever came before it
    one = ngram_rows(keys, np.array([True, False, False, True, False]), (2, 3), 1, 10**6)
    alone = ngram_rows(keys[3:], np.array([True, False]), (2, 3), 1, 10**6)
    assert one[3:].tolist() == alone.tolist()
    other_history = ngram_rows(word_keys(["q", "a", "b"]), np.array([True, True, False]), (2, 3), 1, 10**6)
    assert other_history[1:].tolist() == alone.tolist()
    # without the boundary the history shows
    joined = ngram_rows(keys, np.array([True, False, False, False, False]), (2, 3), 1, 10**6)
    assert joined[3].tolist() != alone[0].tolist()


def test_bos_is_what_a_missing_word_reads_as():
    keys = np.array([word_key("a")], dtype=np.uint64)
    with_bos = ngram_rows(np.array([BOS_KEY, word_key("a")], dtype=np.uint64), np.array([True, False]), (2,), 1, 999)
    assert ngram_rows(keys, np.array([True]), (2,), 1, 999)[0].tolist() == with_bos[1].tolist()


def test_shared_moduli_make_every_slice_of_an_order_read_the_same_row():
    keys = word_keys(list("abcdefgh"))
    rows = ngram_rows(keys, np.zeros(8, bool), (2,), 4, 5000, distinct=False)
    assert (rows == rows[:, :1]).all()
    distinct = ngram_rows(keys, np.zeros(8, bool), (2,), 4, 5000, distinct=True)
    assert not (distinct == distinct[:, :1]).all()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        ngram_rows(word_keys(["a"]), np.array([True, False]), (2,), 1, 10)
    with pytest.raises(ValueError):
        ngram_rows(word_keys(["a"]), np.array([True]), (1,), 1, 10)


def _inputs(cfg, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    pats = [torch.randint(0, cfg.vocab_size, (5,), generator=g) for _ in range(T)]
    p = Patterns.from_lists(pats)
    if cfg.oe_orders:
        keys = word_keys([f"w{int(x)}" for x in torch.randint(0, 4, (T,), generator=g)])
        bnd = np.zeros(T, bool)
        bnd[0] = True
        rows = ngram_rows(keys, bnd, cfg.oe_orders, cfg.oe_slices, cfg.oe_rows, cfg.oe_distinct)
        p.oe_rows = torch.from_numpy(rows)
    return p


def test_zero_projection_gives_the_plain_models_outputs_exactly():
    torch.manual_seed(0)
    plain = Model(ModelConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16, seq_len=8))
    oe_cfg = ModelConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16, seq_len=8, oe_orders=(2, 3), oe_rows=50,
                         oe_slices=2, od=True)
    oe = Model(oe_cfg)
    oe.load_state_dict(plain.state_dict(), strict=False)
    x = _inputs(oe_cfg)
    assert torch.equal(oe(x)[0], plain(x)[0])
    with torch.no_grad():
        oe.oe.proj.weight.normal_()
    assert not torch.allclose(oe(x)[0], plain(x)[0])


def test_od_loss_adds_the_weighted_next_next_term_and_keeps_both_parts():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16, seq_len=8, od=True)
    m = Model(cfg)
    x, y, y2 = _inputs(cfg, seed=1), _inputs(cfg, seed=2), _inputs(cfg, seed=3)
    _, base = m(x, y)
    _, both = m(x, AfterNext(y, y2, None, 0.25))
    assert torch.allclose(both, base + 0.25 * m.loss_parts[1])
    assert torch.equal(m.loss_parts[0], base.detach())


def test_config_round_trips_and_is_checked():
    cfg = ModelConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16, oe_orders=[2, 3], oe_rows=100, oe_slices=2)
    again = ModelConfig.from_json(cfg.to_json())
    assert again == cfg and again.oe_orders == (2, 3)
    from tfree_codec.config import TfreeError
    for bad in (dict(oe_orders=(1,), oe_rows=10), dict(oe_orders=(2,), oe_rows=0), dict(oe_orders=(2, 2), oe_rows=9),
                dict(mode="bpe", od=True), dict(oe_orders=(2,), oe_rows=9, oe_slices=99)):
        with pytest.raises(TfreeError):
            ModelConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16, **bad)


def test_a_model_that_over_encodes_refuses_inputs_without_rows():
    from tfree_codec.config import TfreeError
    cfg = ModelConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16, oe_orders=(2,), oe_rows=10)
    x = _inputs(cfg)
    x.oe_rows = None
    with pytest.raises(TfreeError, match="oe_rows"):
        Model(cfg)(x)
