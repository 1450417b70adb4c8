"""Rough edges a new user met (issue 24): BPE text never shows U+FFFD for a character split across tokens,
checkpoints are readable by others as plain folders are, a barely trained model's temperature reads as "flat",
and several samples are told apart on stdout."""
import os
import stat

import pytest
from click.testing import CliRunner

from tfree_cli.main import main
from tfree_codec import Codec, CodecConfig
from tfree_codec.generate.vocab import Tokens
from tfree_codec.model.checkpoint import save_checkpoint
from tfree_codec.model.transformer import Model, ModelConfig
from tfree_codec.text.words import EOT
from tfree_codec.train.report import temperature_text

JAPANESE = "日本語のテキストです。東京は日本の首都です。"


def byte_level_bpe(vocab_size, corpus):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[EOT],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def text_reader(tok):
    """What generation turns a BPE model's picks into text with (Tokens.begin's reader): feed(id) -> text."""
    _, reader = Tokens(tok).begin("x")
    return lambda i: reader.feed(tok.id_to_token(i), i), reader.flush


# 262 and 290: merges that cross character boundaries, so a token ends inside a character for several tokens in a
# row (the old rule let U+FFFD out after 4 pending tokens); 300: whole characters and emoji split into bytes
@pytest.mark.parametrize("vocab", [262, 290, 300])
def test_bpe_text_never_shows_a_split_character(vocab):
    tok = byte_level_bpe(vocab, [JAPANESE] * 20 + ["hello world café"] * 10)
    text = "東京は日本の首都です。日本語のテキスト, café 🙂x"
    feed, flush = text_reader(tok)
    pieces = [feed(i) for i in tok.encode(text).ids] + [flush()]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)


def test_bpe_text_lets_invalid_bytes_out_and_drops_a_character_cut_at_the_end():
    tok = byte_level_bpe(300, ["hello world café 日本"] * 10)
    feed, _ = text_reader(tok)
    lone = tok.token_to_id("Ĺ")  # a continuation byte: never a character's start
    assert [feed(lone) for _ in range(4)] == ["", "", "", "\ufffd" * 4]  # held for 3 tokens, then let out
    ids = tok.encode("ab日").ids
    feed, flush = text_reader(tok)
    assert "".join(feed(i) for i in ids[:-1]) + flush() == "ab"


def test_checkpoints_get_the_permissions_of_a_plain_folder(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    model = Model(ModelConfig(vocab_size=1024, n_layer=1, n_head=2, n_embd=16, seq_len=8))
    path = save_checkpoint(str(tmp_path / "ckpt"), model, Codec(CodecConfig(vocab_size=1024, num_activations=4)))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777 & ~umask
    assert all(stat.S_IMODE(os.stat(os.path.join(path, f)).st_mode) == 0o666 & ~umask for f in os.listdir(path))


def test_a_flat_temperature_is_said_to_be_flat():
    assert temperature_text(0.0324) == "0.0324"
    assert temperature_text(963138.46) == "9.63e+05: flat, the scores do not tell words apart yet"


@pytest.mark.slow  # generates from the bundled model through the CLI
def test_several_samples_are_separated_on_stdout(one_thread):
    r = CliRunner().invoke(main, ["generate", "It is a truth", "-n", "3", "--num-samples", "2", "--seed", "5",
                                  "--device", "cpu"])
    assert r.exit_code == 0, r.output
    out = r.stdout.splitlines()
    assert out[0] == "--- sample 1/2 (seed 5)" and "--- sample 2/2 (seed 6)" in out
    assert sum(line.startswith("It is a truth") for line in out) == 2
