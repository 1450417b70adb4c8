"""T-FREE in the Hugging Face ``transformers`` stack: a causal LM's body (Llama, GPT-2, Mistral, Qwen, ... any
``AutoModel``) between T-FREE's embedding and head, trained with ``Trainer`` (and so with accelerate, FSDP or
DeepSpeed), saved with ``save_pretrained`` and generating through tfree's decoder. Needs ``pip install
'tfree-codec[hf]'``; docs/hf.md has the recipe.

    model = tfree_causal_lm(LlamaForCausalLM(LlamaConfig(...)), codec)   # or a config, or a GPT2LMHeadModel, ...
    trainer = Trainer(model=model, args=TrainingArguments(..., remove_unused_columns=False),
                      train_dataset=ShardDataset("shards/"), data_collator=TfreeCollator(codec, max_length=512))
    model.save_pretrained("out/"); model = TfreeForCausalLM.from_pretrained("out/")
    generate_text(model, Dictionary.from_shards("shards/"), "It is a truth", max_new_tokens=20)

The body keeps its own modules, names and weights; its token embedding becomes a ``TfreeEmbedding`` (same
parameter name, ``v`` rows) and its head a ``TfreeHead`` trained with the pattern BCE. A batch is a (B, T, R) grid
of pattern rows as ``input_ids`` (-1 after each word's rows), ``attention_mask`` (B, T) and ``labels`` (the same
grid: position t learns word t + 1's pattern, as HF causal LMs shift their labels).
"""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .codec import Codec
from .config import CodecConfig, TfreeError
from .decode.decoder import Decoder
from .decode.sampling import Sampling
from .model.batch import Collator, batch_encode
from .model.layers import TfreeEmbedding, TfreeHead
from .text.words import EOT

# transformers 5 calls the KV cache ``cache``, 4.x ``past_key_values``
_CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class TfreeConfig(PretrainedConfig):
    """The body's config (a dict with its ``model_type``), the codec's (``CodecConfig.to_dict()``) and the BCE's
    ``pos_weight``. ``hidden_size`` mirrors the body's (DeepSpeed's "auto" sizes read it)."""

    model_type = "tfree"

    def __init__(self, body=None, codec=None, pos_weight: float = 100.0, **kwargs):
        objective = kwargs.pop("objective", "bce")
        if objective != "bce":  # the word head scores a dictionary each step: tfree's own loop (model/word_head.py)
            raise TfreeError(f"the Hugging Face layers train the pattern BCE only, not objective {objective!r} "
                             "(the word objective is tfree train --objective word|mix)")
        for name in ("word_budget", "mix_bce"):  # a word-objective setting has nothing to act on here
            if name in kwargs:
                raise TfreeError(f"{name} belongs to the word objective; the Hugging Face layers train the pattern BCE")
        self.body = body.to_dict() if isinstance(body, PretrainedConfig) else dict(body or {})
        self.codec = codec.to_dict() if isinstance(codec, CodecConfig) else dict(codec or CodecConfig().to_dict())
        self.pos_weight = float(pos_weight)
        if "hidden_size" not in kwargs and self.body:
            kwargs["hidden_size"] = self.body_config().hidden_size
        kwargs.setdefault("tie_word_embeddings", False)  # the head is untied (transformers 4 ties by default)
        super().__init__(**kwargs)

    def body_config(self) -> PretrainedConfig:
        if "model_type" not in self.body:
            raise TfreeError("a TfreeConfig needs the body's config (with its model_type)")
        return AutoConfig.for_model(**self.body)


class TfreeForCausalLM(PreTrainedModel):
    """A causal LM body between ``TfreeEmbedding`` and ``TfreeHead``. ``forward(input_ids, attention_mask, labels)``
    as HF causal LMs (``input_ids``: the (B, T, R) grid of pattern rows), -> ``loss`` (the pattern BCE of the next
    word, over real words) and ``logits`` (B, T, v)."""

    config_class = TfreeConfig
    base_model_prefix = "body"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True  # the body's: its attention implementation is its config's too
    accepts_loss_kwargs = False  # the loss is a mean over the batch's words: Trainer scales accumulation itself

    def __init__(self, config: TfreeConfig, body: PreTrainedModel | None = None):
        super().__init__(config)
        body_config = config.body_config()
        self.body = body if body is not None else AutoModel.from_config(body_config)
        v, d = CodecConfig.from_dict(config.codec).vocab_size, body_config.hidden_size
        self.body.set_input_embeddings(TfreeEmbedding(v, d))
        self.head = TfreeHead(d, v, config.pos_weight)
        self._cache_arg = "cache" if "cache" in inspect.signature(self.body.forward).parameters else "past_key_values"
        self.post_init()

    @property
    def codec(self) -> Codec:
        return Codec(CodecConfig.from_dict(self.config.codec))

    def _init_weights(self, module):
        if isinstance(module, (TfreeEmbedding, TfreeHead)):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_input_embeddings(self):
        return self.body.get_input_embeddings()

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids=None, attention_mask=None, labels=None, position_ids=None, cache=None,
                use_cache: bool | None = None, past_key_values=None, return_dict: bool | None = None):
        """``cache`` (transformers 5) or ``past_key_values`` (4.x): the KV cache of the positions before."""
        if input_ids is None:
            raise TfreeError("TfreeForCausalLM takes input_ids: the (B, T, R) grid of the words' pattern rows")
        x = self.body.get_input_embeddings()(input_ids)
        kv = cache if cache is not None else past_key_values
        out = self.body(inputs_embeds=x, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=use_cache, **{self._cache_arg: kv})
        logits = self.head(out.last_hidden_state)
        loss = None
        if labels is not None:  # position t learns word t + 1; the last position has no target (no rows: no loss)
            nxt = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1, labels.shape[2]), -1)], dim=1)
            loss = self.head.loss(logits, nxt)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE: getattr(out, _CACHE, None)})


def tfree_causal_lm(model, codec: Codec | CodecConfig | None = None, pos_weight: float = 100.0) -> TfreeForCausalLM:
    """``model`` (a HF causal LM, e.g. ``LlamaForCausalLM`` or ``GPT2LMHeadModel``, or only its config) with
    T-FREE's embedding and head instead of its token embedding and LM head: its body is kept (weights and all),
    the new embedding and head have the codec's ``v`` rows. ``codec``: default ``Codec()``."""
    cfg = codec.config if isinstance(codec, Codec) else (codec or CodecConfig())
    if isinstance(model, PretrainedConfig):
        body, body_config = None, model.__class__.from_dict(model.to_dict())
    elif isinstance(model, PreTrainedModel):
        body, body_config = model.base_model, model.base_model.config
        if body is model:
            raise TfreeError(f"{type(model).__name__} has no separate body: give a causal LM (...ForCausalLM) or its config")
    else:
        raise TfreeError(f"tfree_causal_lm takes a transformers model or config, not {type(model).__name__}")
    # the body's token table becomes the T-FREE table (v rows), and nothing is tied to it any more
    body_config.vocab_size, body_config.tie_word_embeddings = cfg.vocab_size, False
    return TfreeForCausalLM(TfreeConfig(body=body_config, codec=cfg, pos_weight=pos_weight), body=body)


class TfreeCollator:
    """``data_collator`` for ``Trainer`` (or ``collate_fn`` for a DataLoader): rows (texts, word lists,
    ``ShardDataset`` documents, or dict rows with a ``text_key`` or "words" column) -> {"input_ids": (B, T, R)
    pattern rows, "attention_mask": (B, T), "labels": the same grid}. Each document is read as training reads it,
    between <|endoftext|> words, and cut to ``max_length`` words."""

    def __init__(self, codec, max_length: int | None = None, text_key: str = "text"):
        self.collate = Collator(codec, text_key=text_key, max_length=max_length, add_eot=True)

    def __call__(self, rows) -> dict:
        b = self.collate(rows)
        grid = b.padded(pad=-1)
        return {"input_ids": grid, "attention_mask": b.attention_mask.long(), "labels": grid}


# generate_text's defaults: greedy, 20 words (an HF model has no fitted calibration to sample from)
HF_SAMPLING = Sampling(temperature=0.0, top_p=None, max_new_tokens=20)


@torch.no_grad()
def generate_text(model: TfreeForCausalLM, dictionary, prompt: str, sampling: Sampling | None = None, *,
                  use_cache: bool = True, **options) -> str:
    """The continuation of ``prompt``, a word at a time: the model's logits of the next word, ranked against
    ``dictionary`` by tfree's ``Decoder``. ``sampling`` (decode.sampling.Sampling, as ``LanguageModel.generate``
    takes it), or its fields as keywords (``max_new_tokens=8, temperature=0.1, seed=3, stop=["\\n"],
    stop_at_eot=False``); the default is greedy, 20 words (``HF_SAMPLING``). A temperature draws from
    softmax(s / temperature) of the words' scores s in [0, 1] (0.05-0.1 is a useful range). The prompt's words join
    the dictionary. With ``use_cache`` each step reads only the new word (the body's KV cache); without, the whole
    context again."""
    s = dataclasses.replace(sampling or HF_SAMPLING, **options)
    if s.spell_below is not None:  # spelling needs the calibrated scorer of tfree's own checkpoints
        raise TfreeError("generate_text does not spell words (spell_below): draw from the dictionary")
    codec = model.codec
    if dictionary.fingerprint() != codec.fingerprint():
        raise TfreeError(f"the dictionary was built with codec {dictionary.fingerprint()}, the model's is {codec.fingerprint()}")
    if not isinstance(prompt, str) or not prompt:
        raise TfreeError("the prompt is empty")
    words = codec.split(prompt)
    new = [w for w in dict.fromkeys(words) if w not in dictionary]
    dictionary.extend(new, counts=np.ones(len(new), np.int64))
    rng = s.seed if isinstance(s.seed, np.random.Generator) else np.random.default_rng(s.seed)
    decoder, device = Decoder(dictionary), next(model.parameters()).device

    def rows(ws):  # words -> their (1, len, R) grid of pattern rows
        return batch_encode(codec, [ws]).padded(pad=-1).to(device)

    context, made, kv = [EOT, *words], [], {}
    step, before = rows(context), len(codec.join(words))
    was_training = model.training
    model.eval()
    try:
        for _ in range(s.max_new_tokens):
            out = model(input_ids=step, use_cache=use_cache, **kv)
            word = decoder.decode(out.logits[0, -1].float().cpu().numpy(), temperature=s.temperature, top_k=s.top_k,
                                  top_p=s.top_p, generator=rng).words[0]
            if s.stop_at_eot and word == EOT:
                break
            made.append(word)
            hits = [i for i in (codec.join(words + made)[before:].find(x) for x in s.stop) if i >= 0]
            if hits:  # the text up to the first stop string, as tfree generate cuts it
                return codec.join(words + made)[before:][:min(hits)]
            context.append(word)
            step = rows([word]) if use_cache else rows(context)
            kv = {"cache": getattr(out, _CACHE)} if use_cache else {}
    finally:
        model.train(was_training)
    return codec.join(words + made)[before:]


AutoConfig.register("tfree", TfreeConfig, exist_ok=True)
AutoModelForCausalLM.register(TfreeConfig, TfreeForCausalLM, exist_ok=True)
