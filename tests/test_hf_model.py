"""T-FREE layers in Hugging Face models, for real on the CPU: the layers against their definitions, a tiny Llama
trained a few `Trainer` steps on shards, saved and loaded back (`save_pretrained` / `from_pretrained`), and
generating through tfree's decoder; a GPT-2 body likewise."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from tfree_codec import Codec, CodecConfig, Dictionary, batch_encode  # noqa: E402
from tfree_codec.decode.sampling import Sampling  # noqa: E402
from tfree_codec.hf_model import TfreeCollator, TfreeConfig, TfreeForCausalLM, generate_text, tfree_causal_lm  # noqa: E402
from tfree_codec.model.layers import TfreeEmbedding, TfreeHead  # noqa: E402
from tfree_codec.shards.reader import ShardDataset  # noqa: E402

CODEC = Codec(CodecConfig(vocab_size=1024, num_activations=4))  # make_tiny_shards' codec


def tiny_llama():
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=128))


def tiny_gpt2():
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=128,
                                                                bos_token_id=None, eos_token_id=None))


def test_the_layers_are_a_sum_of_rows_and_the_pattern_bce():
    torch.manual_seed(0)
    b = batch_encode(CODEC, ["the cat sat", "a dog ran on the mat"], padding=True)
    grid = b.padded(pad=-1)
    emb = TfreeEmbedding(1024, 8)
    want = torch.stack([torch.stack([emb.weight[r[r >= 0]].sum(0) for r in row]) for row in grid])
    assert torch.allclose(emb(grid), want, atol=1e-6) and torch.allclose(emb(b.patterns), want, atol=1e-6)
    assert not emb(grid)[0, 3:].any()  # padding words embed to zero
    head = TfreeHead(8, 1024, pos_weight=30.0)
    logits = head(torch.randn(2, grid.shape[1], 8))
    multi = torch.zeros(logits.shape)
    for i, row in enumerate(grid):
        for t, r in enumerate(row):
            multi[i, t, r[r >= 0]] = 1
    per = F.binary_cross_entropy_with_logits(logits, multi, pos_weight=torch.full((1024,), 30.0), reduction="none")
    real = b.attention_mask
    assert torch.allclose(head.loss(logits, grid), per[real].mean(), rtol=1e-5)


@pytest.fixture(scope="module")
def trained(make_tiny_shards, tmp_path_factory):
    """A tiny Llama with T-FREE layers after 4 Trainer steps on shards: (model, trainer, shard dir)."""
    shards = make_tiny_shards(seed=4)
    torch.manual_seed(0)
    model = tfree_causal_lm(tiny_llama(), CODEC)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path_factory.mktemp("trainer")), max_steps=4, per_device_train_batch_size=4,
        learning_rate=3e-3, warmup_steps=0, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=ShardDataset(shards),
                                   data_collator=TfreeCollator(CODEC, max_length=24))
    trainer.train()
    return model, trainer, shards


@pytest.mark.slow  # Trainer steps
def test_trainer_steps_on_shards_lower_the_loss(trained):
    model, trainer, _ = trained
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert model.config.model_type == "tfree" and model.body.config.vocab_size == 1024
    assert model.head.weight.data_ptr() != model.body.get_input_embeddings().weight.data_ptr()  # untied


@pytest.mark.slow
def test_save_pretrained_and_back(trained, tmp_path):
    model, _, _ = trained
    model.save_pretrained(tmp_path / "m")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert isinstance(back, TfreeForCausalLM) and back.codec.fingerprint() == CODEC.fingerprint()
    batch = TfreeCollator(CODEC)(["the cat sat on the mat", "a dog"])
    model.eval()
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        a, b = model(**batch), back(**batch)
    assert torch.equal(a.logits[real], b.logits[real]) and torch.equal(a.loss, b.loss)


@pytest.mark.slow
def test_generation_through_the_decoder(trained):
    model, _, shards = trained
    d = Dictionary.from_shards(shards)
    text = generate_text(model, d, "the cat", max_new_tokens=8, stop_at_eot=False)
    assert text == generate_text(model, d, "the cat", max_new_tokens=8, stop_at_eot=False, use_cache=False)
    assert text.strip() and set(CODEC.split(text)) <= set(d.words)
    sampled = generate_text(model, d, "the cat", max_new_tokens=8, temperature=0.1, seed=3, stop_at_eot=False)
    assert sampled == generate_text(model, d, "the cat", max_new_tokens=8, temperature=0.1, seed=3, stop_at_eot=False)
    # a Sampling as LanguageModel.generate takes it, and a stop string cuts the text where it first appears
    assert generate_text(model, d, "the cat", Sampling(temperature=0.1, top_p=None, seed=3, max_new_tokens=8,
                                                       stop_at_eot=False)) == sampled
    stop = CODEC.split(text)[2] if len(CODEC.split(text)) > 2 else text
    cut = generate_text(model, d, "the cat", max_new_tokens=8, stop_at_eot=False, stop=[stop])
    assert cut == text[:text.find(stop)] and stop not in cut


@pytest.mark.slow  # a few optimizer steps
def test_a_gpt2_body_trains_and_generates(make_tiny_shards):
    torch.manual_seed(0)
    gpt2 = tiny_gpt2()
    block = {k: v.clone() for k, v in gpt2.transformer.h.state_dict().items()}
    model = tfree_causal_lm(gpt2, CODEC)
    assert all(torch.equal(v, model.body.h.state_dict()[k]) for k, v in block.items())  # the body is kept
    assert model.body.wte.weight.shape == (1024, 32) and model.head.weight.shape == (1024, 32)
    batch = TfreeCollator(CODEC)(["the cat sat on the mat", "a dog ran"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(3):
        loss = model(**batch).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model(**batch).loss.item() < first
    d = Dictionary.from_texts(CODEC, ["the cat sat on the mat and a dog ran"])
    assert generate_text(model, d, "the dog", max_new_tokens=5, stop_at_eot=False) == \
        generate_text(model, d, "the dog", max_new_tokens=5, stop_at_eot=False, use_cache=False)


def test_bad_inputs_are_one_line():
    from tfree_codec import TfreeError

    with pytest.raises(TfreeError, match="takes a transformers model or config"):
        tfree_causal_lm("llama", CODEC)
    model = tfree_causal_lm(tiny_llama().config, CODEC)
    with pytest.raises(TfreeError, match="codec"):
        generate_text(model, Dictionary.from_texts(Codec(), ["a b"]), "a")
    assert np.isfinite(model(**TfreeCollator(CODEC)(["a b c"])).loss.item())
    with pytest.raises(TfreeError, match="does not spell"):
        generate_text(model, Dictionary.from_texts(CODEC, ["a b"]), "a", spell_below=0.5)
    # the word objective is tfree's own loop: its settings are refused by name, not dropped
    with pytest.raises(TfreeError, match="pattern BCE only, not objective 'word'"):
        TfreeConfig(body=tiny_llama().config, codec=CODEC.config, objective="word")
    with pytest.raises(TfreeError, match="word_budget belongs to the word objective"):
        TfreeConfig(body=tiny_llama().config, codec=CODEC.config, word_budget=64)
