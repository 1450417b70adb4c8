"""The language model: a Llama-style decoder (RMSNorm, SwiGLU, RoPE, no biases) over T-FREE words or BPE tokens.

T-FREE mode (SPEC section 3): a word comes in as its sparse activation pattern, and its embedding is the *sum* of
the pattern's rows of a ``v x d`` table (``nn.EmbeddingBag`` over the CSR indices; no dense multi-hot input ever
exists). The untied ``d -> v`` head is trained with BCE-with-logits against the next word's pattern, positives
weighted by ``pos_weight``. BPE mode is the same body with a token embedding and a softmax head: the baseline the
paper's claim is measured against.

The loss never materialises the ``(B*T, v)`` multi-hot target: with ``p = pos_weight`` and ``sp = softplus``,

    BCE(x, y) = (1 - y) sp(x) + p y sp(-x)  =  sp(x) + y [(p - 1) sp(-x) - x]

so a dense ``sp(x)`` summed over all rows plus a gather at the pattern's rows gives exactly
``F.binary_cross_entropy_with_logits(x, multi_hot, pos_weight=p)`` (tests check it), in a fraction of the memory.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import TfreeError
from .overtok import AfterNext, OverEncoding

MODEL_FORMAT_VERSION = 1


@dataclass
class ModelConfig:
    """The shape of a model. ``mode`` is ``"tfree"`` (patterns in, ``v``-wide BCE head) or ``"bpe"`` (token ids in,
    softmax head). ``vocab_size`` is the codec's ``v`` in T-FREE mode and the tokenizer's vocabulary in BPE mode."""

    mode: str = "tfree"
    vocab_size: int = 8192
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    seq_len: int = 256        # training context: words (tfree) or tokens (bpe)
    ffn_hidden: int = 0       # SwiGLU width; 0 -> 8/3 n_embd rounded up to a multiple of 64
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    pos_weight: float = 100.0  # BCE weight of the ~0.6% positive rows (reference: 100-300; 100 beat 10 by 6.6%)
    # Over-Encoding (text/ngrams.py): hashed word n-gram tables added to the T-FREE word embedding; () = none
    oe_orders: tuple = ()
    oe_rows: int = 0           # rows per table (each slice's modulus is near this)
    oe_slices: int = 1         # tables per order, each n_embd // (orders * slices) wide
    oe_distinct: bool = True   # each slice its own hash and modulus (False: the paper's shared-modulus control)
    oe_unigram: bool = True    # False: the n-gram tables alone (ablation: the paper found it worse)
    od: bool = False           # Over-Decoding: a second head predicting the word after next
    # what the T-FREE head trains for (word_head.py): "bce" (each row on its own, the paper's recipe), "word" (the
    # softmax over dictionary words that decoding reads), "mix" (word + mix_bce * bce)
    objective: str = "bce"
    word_budget: int = 4096    # dictionary words scored exactly per step; past it, a sampled softmax (word_head.py)
    mix_bce: float = 0.1
    format_version: int = MODEL_FORMAT_VERSION

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in ("tfree", "bpe"):
            problems.append(f"mode must be 'tfree' or 'bpe', not {self.mode!r}")
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "seq_len", "ffn_hidden"):  # a file may say anything
            v = getattr(self, name)  # (ffn_hidden 0: the default width)
            if not (isinstance(v, int) and not isinstance(v, bool) and (name != "ffn_hidden") <= v < 1 << 31):
                problems.append(f"{name} must be an integer from {int(name != 'ffn_hidden')} to 2^31 - 1, not {v!r}")
        for name in ("rope_base", "norm_eps", "pos_weight"):
            if not (isinstance(v := getattr(self, name), (int, float)) and not isinstance(v, bool) and 0 < v < math.inf):
                problems.append(f"{name} must be a positive number, not {v!r}")
        if not problems and self.n_embd % self.n_head:
            problems.append(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        elif not problems and (self.n_embd // self.n_head) % 2:
            problems.append(f"head size {self.n_embd // self.n_head} must be even for RoPE")
        if not isinstance(self.oe_orders, (list, tuple)):  # a hostile model_config.json: a TypeError below
            problems.append(f"oe_orders must be a list of n-gram orders, not {self.oe_orders!r}")
        self.oe_orders = tuple(self.oe_orders) if isinstance(self.oe_orders, (list, tuple)) else ()
        if (self.oe_orders or self.od) and not self.tfree:
            problems.append("Over-Encoding and Over-Decoding need a T-FREE model")
        if self.oe_orders:
            s = len(self.oe_orders) * self.oe_slices
            if not all(isinstance(n, int) and 2 <= n <= 8 for n in self.oe_orders) or len(set(self.oe_orders)) != len(self.oe_orders):
                problems.append(f"oe_orders must be distinct n-gram orders in 2..8, not {list(self.oe_orders)}")
            if not isinstance(self.oe_rows, int) or not 2 <= self.oe_rows < 1 << 31:
                problems.append(f"oe_rows must be an integer >= 2, not {self.oe_rows!r}")
            if not isinstance(self.oe_slices, int) or not 1 <= s <= 64 or (isinstance(self.n_embd, int) and self.n_embd < s):
                problems.append(f"oe_slices {self.oe_slices!r}: need 1 <= orders x slices <= min(64, n_embd)")
        if self.objective not in OBJECTIVES:
            problems.append(f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        elif self.objective != "bce" and not self.tfree:
            problems.append(f"objective {self.objective!r} needs a T-FREE model")
        if not isinstance(self.word_budget, int) or self.word_budget < 2:
            problems.append(f"word_budget must be an integer >= 2, not {self.word_budget!r}")
        if not (isinstance(self.mix_bce, (int, float)) and math.isfinite(self.mix_bce) and self.mix_bce >= 0):
            problems.append(f"mix_bce must be a finite number >= 0, not {self.mix_bce!r}")
        if self.format_version != MODEL_FORMAT_VERSION:
            problems.append(f"format_version {self.format_version} is not supported (this tfree reads {MODEL_FORMAT_VERSION})")
        if problems:
            raise TfreeError("invalid model config: " + "; ".join(problems))
        if not self.ffn_hidden:
            self.ffn_hidden = 64 * math.ceil(8 * self.n_embd / 3 / 64)

    @property
    def tfree(self) -> bool:
        """Whether items are T-FREE words (patterns in, a v-wide BCE head) rather than BPE tokens. The one reading
        of ``mode``: the vocabulary that goes with it is generate/vocab.py's."""
        return self.mode == "tfree"

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "ModelConfig":
        if name not in PRESETS:
            raise TfreeError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
        return cls(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})

    def ngram_rows(self, keys, boundary):
        """``Patterns.oe_rows`` of a stream of items: each position's row in each n-gram table, from the items'
        ``word_key`` and where documents start (text/ngrams.py: the history rule). -> (n, S) int64 numpy."""
        from ..text.ngrams import ngram_rows  # noqa: PLC0415

        return ngram_rows(keys, boundary, self.oe_orders, self.oe_slices, self.oe_rows, self.oe_distinct)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        if d["objective"] == "bce":  # a BCE model's file is as before the word objective existed
            for name in ("objective", "word_budget", "mix_bce"):
                del d[name]
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise TfreeError(f"model config is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise TfreeError("model config must be a JSON object")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TfreeError(f"invalid model config: unknown fields {sorted(unknown)}")
        return cls(**d)


OBJECTIVES = ("bce", "word", "mix")

# From a few-minute CPU model to GPU sizes. Body sizes follow nanoGPT/GPT-2 conventions.
PRESETS = {
    "tiny": dict(n_layer=2, n_head=4, n_embd=128, seq_len=128),
    "small": dict(n_layer=4, n_head=4, n_embd=256, seq_len=256),
    "base": dict(n_layer=12, n_head=12, n_embd=768, seq_len=1024),
    "large": dict(n_layer=24, n_head=16, n_embd=1024, seq_len=2048),
}


@dataclass
class Patterns:
    """A (B, T) grid of words as CSR activation patterns, row-major: word i has rows
    ``indices[offsets[i]:offsets[i + 1]]``. A padding word has an empty pattern (its embedding is zero)."""

    indices: torch.Tensor  # (nnz,) int64, rows in [0, v)
    offsets: torch.Tensor  # (B*T + 1,) int64
    shape: tuple
    # Optional (B*T,) int64: then indices/offsets hold each *distinct* word once and position i is word words[i]
    # (the training loader's form: a batch embeds its distinct words once, then indexes them).
    words: torch.Tensor | None = None
    # Over-Encoding models: (B*T, S) int64, each position's row in each of the S n-gram tables (text/ngrams.py)
    oe_rows: torch.Tensor | None = None
    # Targets under the word objective: (B*T,) int64 dictionary ids of the words (-1: not in the dictionary)
    word_ids: torch.Tensor | None = None

    def to(self, device, non_blocking: bool = False) -> "Patterns":
        def move(t):
            return None if t is None else t.to(device, non_blocking=non_blocking)
        return Patterns(move(self.indices), move(self.offsets), self.shape, move(self.words), move(self.oe_rows),
                        move(self.word_ids))

    @classmethod
    def from_lists(cls, patterns, shape=None) -> "Patterns":
        """From a list of per-word row arrays (one row of B=1 unless ``shape`` is given)."""
        lengths = torch.tensor([len(p) for p in patterns], dtype=torch.int64)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        flat = [torch.as_tensor(p, dtype=torch.int64).reshape(-1) for p in patterns]
        indices = torch.cat(flat) if flat else torch.zeros(0, dtype=torch.int64)
        return cls(indices, offsets, tuple(shape) if shape else (1, len(patterns)))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        if x.dtype == self.weight.dtype:  # one fused op (it normalises bf16 in float32 too)
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # bf16 activations under autocast with a float32 gain: normalise in float32 (bf16 sums of squares lose
        # too much); F.rms_norm has no fused path for mixed dtypes
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_tables(head_dim: int, length: int, base: float, device=None):
    """(cos, sin), each (length, head_dim): the angles repeated over both halves, sin negated on the first half,
    so that ``apply_rope`` is two products and a sum."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    ang = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv)  # (length, hd/2)
    cos, sin = ang.cos(), ang.sin()
    return torch.cat([cos, cos], -1), torch.cat([-sin, sin], -1)


def apply_rope(x, cos, sin):
    # x: (B, T, ..., hd), cos/sin: (T, 1, .., hd). "Rotate half": (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin).
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return torch.addcmul(xf * cos, torch.cat([x2, x1], dim=-1), sin).type_as(x)


class KVCache:
    """Keys and values of the positions seen so far, for incremental decoding: ``model(x, kv_cache=cache)`` attends to
    everything cached, writes x's keys and values in place after them and advances ``cache.pos`` by x's length."""

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        hd = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, max_len, hd)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self._layers = list(zip(self.k.unbind(0), self.v.unbind(0)))  # per-layer views, made once
        self.max_len = max_len
        self.pos = 0

    def update(self, layer: int, start: int, k, v):
        """Write k, v (B, H, T, hd) at positions start..start+T-1; -> every key and value up to there."""
        ck, cv = self._layers[layer]
        end = start + k.shape[2]
        ck[:, :, start:end] = k
        cv[:, :, start:end] = v
        return ck[:, :, :end], cv[:, :, :end]  # (B, H, end, hd)

    def reset(self) -> None:
        self.pos = 0


class Attention(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.n_head, self.hd = c.n_head, c.n_embd // c.n_head
        self.qkv = nn.Linear(c.n_embd, 3 * c.n_embd, bias=False)
        self.proj = nn.Linear(c.n_embd, c.n_embd, bias=False)

    def forward(self, x, cos, sin, cache: KVCache | None, layer: int, start: int):
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, self.hd)
        q, k = apply_rope(qkv[:, :, :2], cos, sin).permute(2, 0, 3, 1, 4)  # queries and keys in one go: (B, H, T, hd)
        v = qkv[:, :, 2].transpose(1, 2)
        mask, causal = None, T > 1
        if cache is not None:
            if k.dtype != cache.k.dtype:
                k, v = k.to(cache.k.dtype), v.to(cache.k.dtype)
            k, v = cache.update(layer, start, k, v)
            if k.dtype != q.dtype:
                k, v = k.to(q.dtype), v.to(q.dtype)
            if start > 0:  # queries start..start+T-1 see every cached key and the causal part of their own block
                causal = False
                if T > 1:
                    mask = torch.arange(T, device=x.device)[:, None] + start >= torch.arange(start + T, device=x.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class SwiGLU(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.gate_up = nn.Linear(c.n_embd, 2 * c.ffn_hidden, bias=False)
        self.down = nn.Linear(c.ffn_hidden, c.n_embd, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.norm1, self.attn = RMSNorm(c.n_embd, c.norm_eps), Attention(c)
        self.norm2, self.mlp = RMSNorm(c.n_embd, c.norm_eps), SwiGLU(c)

    def forward(self, x, cos, sin, cache, layer, start):
        x = x + self.attn(self.norm1(x), cos, sin, cache, layer, start)
        return x + self.mlp(self.norm2(x))


class Model(nn.Module):
    """``logits, loss = model(inputs, targets, mask)``.

    T-FREE: ``inputs``/``targets`` are ``Patterns`` of shape (B, T) (targets: the next word of each position);
    ``logits`` (B, T, v) are per-row activation scores. BPE: ``inputs``/``targets`` are (B, T) int64 token ids
    (target -1 = ignore); logits (B, T, vocab). ``mask`` (B, T) bool marks the positions that count in the loss
    (default: all). With ``kv_cache`` the inputs continue the cached sequence (cached logits == uncached logits).
    ``last=True`` (generation) computes the logits of the last position only, (B, 1, V): the head is the widest
    matrix, and a step needs only the next item's scores.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        if c.tfree:
            self.embed = nn.EmbeddingBag(c.vocab_size, c.n_embd, mode="sum", include_last_offset=True)
        else:
            self.embed = nn.Embedding(c.vocab_size, c.n_embd)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.norm = RMSNorm(c.n_embd, c.norm_eps)
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)  # untied in both modes
        if c.od:
            self.head2 = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self._rope = (None, None)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))
        # Over-Encoding (overtok.py), made last, so that the rest draws the plain model's initial weights from the
        # same seed
        self.oe = OverEncoding(c) if c.oe_orders else None
        if c.objective != "bce":  # no random draws: the rest of the model starts as the BCE model does
            from .word_head import WordHead  # noqa: PLC0415

            self.word_head = WordHead(c.word_budget)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # -- parameters ----------------------------------------------------------------------------------------
    def num_params(self) -> dict:
        """Parameter counts split into the input embedding, the output head and the body (everything else)."""
        emb = self.embed.weight.numel()
        head = self.head.weight.numel()
        oe = sum(p.numel() for p in self.oe.parameters()) if self.oe is not None else 0
        od = self.head2.weight.numel() if self.config.od else 0
        total = sum(p.numel() for p in self.parameters())
        return {"embedding": emb, "head": head, "oe": oe, "od": od, "body": total - emb - head - oe - od,
                "total": total}

    def configure_optimizer(self, lr: float, weight_decay: float = 0.1, betas=(0.9, 0.95), device_type: str = "cpu",
                            table_lr_scale: float = 1.0):
        """AdamW; matrices (and the word embedding) decay, norms' gains and n-gram tables don't (nanoGPT; a rare
        n-gram's row would decay between its few updates). The n-gram tables' group learns at ``table_lr_scale``
        times ``lr`` (its ``lr_scale``, which a schedule multiplies in); sparse tables (``sparse_tables``) get
        SparseAdam instead of AdamW, in one ``optim.SplitAdam`` with the AdamW."""
        tables = list(self.oe.tables.parameters()) if self.oe is not None else []
        decay = [p for p in self.parameters() if p.dim() >= 2 and not any(p is t for t in tables)]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        table_group = {"params": tables, "lr": lr * table_lr_scale, "lr_scale": table_lr_scale}
        sparse = bool(tables) and self.oe.tables[0].sparse
        if tables and not sparse:
            groups.append({**table_group, "weight_decay": 0.0})
        dense = torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type == "cuda")
        if not sparse:
            return dense
        from .optim import SplitAdam  # noqa: PLC0415

        return SplitAdam(dense, torch.optim.SparseAdam([table_group], lr=lr, betas=betas))

    def sparse_tables(self, on: bool = True) -> "Model":
        """Give the n-gram tables sparse gradients (only the rows a batch reads), for ``configure_optimizer``'s
        SparseAdam: a dense AdamW step would read and write every row of a table of millions each step."""
        if self.oe is not None:
            self.oe.sparse(on)
        return self

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, dtype=None) -> KVCache:
        p = self.head.weight
        return KVCache(self.config, batch_size, max_len or self.config.seq_len, p.device, dtype or p.dtype)

    # -- forward -------------------------------------------------------------------------------------------
    def _rope_for(self, start: int, T: int, device):
        cos, sin = self._rope
        if cos is None or cos.shape[0] < start + T or cos.device != device:
            n = max(start + T, self.config.seq_len)
            # made as ordinary tensors even under torch.inference_mode() (generation): an inference tensor kept in
            # this cache would break every later forward pass with gradients (training after generating)
            with torch.inference_mode(False), torch.no_grad():
                cos, sin = rope_tables(self.config.n_embd // self.config.n_head, n, self.config.rope_base, device)
            self._rope = cos[:, None, None], sin[:, None, None]  # (n, 1, 1, hd): broadcast over (B, T, 2, H, hd)
            cos, sin = self._rope
        return cos[start:start + T], sin[start:start + T]

    def embed_inputs(self, inputs):
        if self.config.tfree:
            if not isinstance(inputs, Patterns):
                raise TypeError("a T-FREE model takes Patterns")
            B, T = inputs.shape
            e = self.embed(inputs.indices, inputs.offsets)
            e = (e if inputs.words is None else e[inputs.words]).view(B, T, -1)  # (B, T, d)
            return self.oe(e, inputs.oe_rows) if self.oe is not None else e
        return self.embed(inputs)  # (B, T, d)

    def trunk(self, inputs, kv_cache: KVCache | None = None, last: bool = False):
        """The final-norm hidden states the heads read: (B, T, d), or (B, 1, d) of the last position."""
        x = self.embed_inputs(inputs)
        B, T, _ = x.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if kv_cache is not None and start + T > kv_cache.max_len:
            raise TfreeError(f"KV cache holds {kv_cache.max_len} positions; {start + T} requested")
        cos, sin = self._rope_for(start, T, x.device)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, kv_cache, i, start)
        if kv_cache is not None:
            kv_cache.pos = start + T
        return self.norm(x[:, -1:] if last else x)

    def forward(self, inputs, targets=None, mask=None, kv_cache: KVCache | None = None, last: bool = False):
        """An Over-Decoding model (``od``) trains with ``targets`` an ``overtok.AfterNext``: the loss is then
        ``next + weight * after next`` (the second head, ``head2``), and ``self.loss_parts`` holds both (detached)."""
        if last and targets is not None:
            raise ValueError("last=True gives no loss: the loss needs every position's logits")
        h = self.trunk(inputs, kv_cache, last)
        objective = self.config.objective
        after = targets if isinstance(targets, AfterNext) else None
        nxt = after.next if after else targets
        if nxt is not None and objective == "word" and after is None:  # no (B, T, v) logits: the head's cost
            return None, self.word_head.loss(h, self.head.weight, nxt.word_ids, mask)
        logits = self.head(h)  # (B, T or 1, V)
        B, T = logits.shape[:2]
        if targets is None:
            return logits, None
        if self.config.tfree:
            if objective == "word":
                loss = self.word_head.loss(h, self.head.weight, nxt.word_ids, mask)
            else:
                loss = pattern_bce(logits, nxt, mask, self.config.pos_weight)
            if objective == "mix":
                loss = self.word_head.loss(h, self.head.weight, nxt.word_ids, mask) + self.config.mix_bce * loss
            if after is None:
                return logits, loss
            if not self.config.od:
                raise TfreeError("targets for the word after next given to a model without an Over-Decoding head "
                                 "(od=False)")
            loss2 = pattern_bce(self.head2(h), after.after, after.after_mask, self.config.pos_weight)
            self.loss_parts = (loss.detach(), loss2.detach())
            return logits, loss + after.weight * loss2
        if mask is not None:
            targets = targets.masked_fill(~mask, -1)
        return logits, F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(-1), ignore_index=-1)


def target_rows(targets: Patterns):
    """For each active (word, row) pair of ``targets``, the flat word index it belongs to: (nnz,) int64."""
    n = targets.offsets.numel() - 1
    lengths = targets.offsets[1:] - targets.offsets[:-1]
    return torch.repeat_interleave(torch.arange(n, device=lengths.device), lengths, output_size=targets.indices.numel())


def pattern_bce(logits, targets: Patterns, mask=None, pos_weight: float = 100.0):
    """Mean BCE-with-logits (positives weighted by ``pos_weight``) of (B, T, v) logits against the multi-hot of
    ``targets``' patterns, over the positions where ``mask`` is true; the multi-hot is never built (module doc)."""
    B, T, v = logits.shape
    word = target_rows(targets)                                             # (nnz,) word of each active row
    m = torch.ones(B * T, device=logits.device) if mask is None else mask.reshape(-1).float()
    return _PatternBCE.apply(logits.view(B * T, v), word, targets.indices, m, float(pos_weight))


class _PatternBCE(torch.autograd.Function):
    """The loss and its gradient in a few passes over the (N, v) logits; autograd through softplus, a gather and
    a sum would make several more (N, v) temporaries, and this loss is most of a small model's step.

    d/dx = sigmoid(x) - y (1 + (p - 1) (1 - sigmoid(x)))  per element, times the row mask / (rows * v)."""

    @staticmethod
    def forward(ctx, x, word, rows, m, p):
        xf = x if x.dtype == torch.float64 else x.float()  # bf16 logits: the loss in float32
        xp = xf[word, rows]                                                 # (nnz,) logits at the positive rows
        per_pos = F.softplus(xf).sum(1)                                     # (N,) as if every row were negative
        per_pos = per_pos.index_add(0, word, (p - 1) * F.softplus(-xp) - xp)
        denom = m.sum().clamp(min=1) * x.shape[1]
        ctx.save_for_backward(x, word, rows, m, denom)
        ctx.p = p
        return (per_pos * m).sum() / denom

    @staticmethod
    def backward(ctx, g):
        x, word, rows, m, denom = ctx.saved_tensors
        scale = (g / denom) * m                                             # (N,) per-row factor
        grad = torch.sigmoid(x if x.dtype == torch.float64 else x.float())    # (N, v)
        sp = grad[word, rows]
        grad.mul_(scale[:, None])
        grad.index_put_((word, rows), -(1 + (ctx.p - 1) * (1 - sp)) * scale[word], accumulate=True)
        return grad.to(x.dtype), None, None, None, None


def multi_hot(targets: Patterns, v: int, dtype=torch.float32):
    """The dense (B*T, v) multi-hot of a pattern grid, built by a scatter on the patterns' device. Training doesn't
    need it (``pattern_bce``); it is here for checks and for tools that want the explicit target."""
    n = targets.offsets.numel() - 1
    out = torch.zeros(n, v, dtype=dtype, device=targets.indices.device)
    out[target_rows(targets), targets.indices] = 1
    return out
