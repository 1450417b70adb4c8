"""``tfree retok BPE_RUN SHARDS -o RUN``: turn a trained ``--baseline bpe`` model into a T-FREE model (ReTok,
issue 18), so a user keeps the body they trained and gains T-FREE's small embedding and head.

1. The word list is the dictionary ``tfree train`` would build from SHARDS' training units (the same split, so the
   run that follows holds out the same validation slice). Each word's surface (the text it stands for after a
   letter: ``"the"`` -> ``" the"``, ``","`` -> ``","``) is split by the source's tokenizer into its BPE pieces.
2. Targets per word (``--init``): ``mean``, the mean of the pieces' rows (ReTok); ``sparse``, tokensurgeon's idea
   (a new token is a sparse combination of tokens both vocabularies share, found by orthogonal matching pursuit in
   a space where both exist, and the same weights are applied to the old model's rows): here the shared tokens are
   the words that are one BPE piece, and the space is the BPE model's own final hidden state after reading the
   word from ``<|endoftext|>``; ``random``, the model's ordinary initialisation of the embedding and head.
3. The T-FREE embedding ``E`` and head ``H`` solve a frequency-weighted ridge regression over the word-pattern
   matrix (retok_fit.py): the *summed* pattern rows of a word match its input target, since T-FREE's input is
   ``sum_{j in P(w)} E[j]``. For the head, the old model scores a next token ``t`` by the logit ``h . U[t]``; T-FREE
   scores word ``w`` from the logits ``h . H[j]`` of its rows: ``s(w) = mean sigmoid(x_P(w)) - mean sigmoid(x_rest)``,
   which for small logits is ``(1/4) (mean_{j in P(w)} x_j - mean_rest x) + const``: affine in the *mean* row logit
   ``h . mean_{j in P(w)} H[j]`` (the rest is nearly all rows, about the same for every word). The head rows fit,
   for every ``h`` at once, an old output row: with ``--head-target first`` the first piece's (the old model's
   probability of the next word starting is that of its first piece), with ``mean`` the init's own target (the
   mean of the pieces' output rows, or the sparse combination). ``--head-fit sum`` (default, ReTok's recipe
   carried over) fits the summed rows ``sum_{j in P(w)} H[j] ~= U_old[...]``; ``--head-fit mean`` fits what the
   score reads, ``mean_{j in P(w)} H[j] ~= c (U_old[...] - mean U_old)`` (the summed rows ``|P(w)|`` times it, so
   long words are not scored down), centred (the softmax's free shift) and scaled by ``c`` = 1 / the spread of the
   source's logits (row logits where a sigmoid is about linear). The dictionary softmax's temperature and count-
   prior weight are
   fitted on the validation slice as ``tfree train`` does, so ``tfree eval RUN/init`` measures the model at step 0.
4. The body (blocks) and the final norm are copied unchanged: the body uses RoPE (relative positions), so a
   sequence of words instead of ~1.3x as many tokens needs no position table to be re-learnt.

The result is RUN/init/, an ordinary checkpoint (plus ``retok.json``: how it was made, and its fit quality), from
which ``tfree train``'s loop continues with ``--init-from RUN/init`` and the body frozen (settings.py
``freeze_body``/``unfreeze_after``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from ..config import TfreeError
from ..decode.dictionary import Dictionary
from ..model import checkpoint as ckpt
from ..model.device import autocast_for
from ..model.transformer import Model, ModelConfig
from ..text.words import EOT, join
from . import init_from, retok_fit
from ..decode.calibration import Calibration
from ..generate.bits import Reading
from ..generate.vocab import Words
from ..model.checkpoint import DICT_FILE, TOKENIZER_FILE, load_tokenizer
from ..shards.corpus import Corpus, make_units, split_units

RETOK_FILE = "retok.json"
INIT_DIR = "init"
INITS = ("mean", "sparse", "random")
HEAD_TARGETS = ("first", "mean")
SPARSE_K_MAX = 64  # --sparse-k: words combined per word at most


@dataclass(frozen=True)
class RetokConfig:
    """How a T-FREE model is made from a BPE one (saved as retok.json in RUN/init/)."""

    init: str = "mean"
    head_target: str = "first"
    head_fit: str = "sum"     # "sum": summed head rows ~= U[t]; "mean": their mean ~= c (U[t] - mean U) (step 3)
    alpha: float = 1.0        # word weight count^alpha in the least squares (1: every occurrence counts once)
    ridge: float = 1e-3       # relative to the mean diagonal of A^T F A
    sparse_k: int = 8         # atoms per word (--init sparse)
    seq_len: int | None = None  # T-FREE words per sequence; None: as many bytes as the source's sequences
    pos_weight: float = 100.0
    seed: int = 0

    def check(self) -> None:
        if self.init not in INITS:
            raise TfreeError(f"--init must be one of {', '.join(INITS)}, not {self.init!r}")
        if self.head_fit not in ("sum", "mean"):
            raise TfreeError(f"--head-fit must be sum or mean, not {self.head_fit!r}")
        if self.head_target not in HEAD_TARGETS:
            raise TfreeError(f"--head-target must be one of {', '.join(HEAD_TARGETS)}, not {self.head_target!r}")
        for name, lo in (("alpha", 0.0), ("ridge", 1e-12)):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) >= lo):
                raise TfreeError(f"--{name} must be at least {lo:g}, not {getattr(self, name)!r}")
        if not 1 <= self.sparse_k <= SPARSE_K_MAX:  # more is not sparse, and each word's solve grows as k^3
            raise TfreeError(f"--sparse-k must be from 1 to {SPARSE_K_MAX}, not {self.sparse_k}")
        if self.seq_len is not None and self.seq_len < 1:
            raise TfreeError(f"--seq-len must be at least 1, not {self.seq_len}")
        if not self.pos_weight > 0:
            raise TfreeError(f"--pos-weight must be positive, not {self.pos_weight}")


@dataclass
class BpeSource:
    path: str
    config: ModelConfig
    model: Model
    tokenizer: object


def open_bpe(path: str) -> BpeSource:
    """A trained BPE run (or one of its checkpoints): every file checked against its sha256, refused in one line
    if it is not a BPE model or its tokenizer is missing or unreadable."""
    if not os.path.isdir(path):
        raise TfreeError(f"{path}: no such run or checkpoint directory")
    try:
        src = init_from.resolve(path)
    except TfreeError:
        raise TfreeError(f"{path}: not a tfree run or checkpoint (no final/, step-NNNNNN/ or "
                         "checkpoint.json)") from None
    ckpt.read_meta(src)
    config = ckpt.read_model_config(src)
    if config.tfree:
        raise TfreeError(f"{src} is a {config.mode} model, not a --baseline bpe run: tfree retok converts BPE models")
    tpath = os.path.join(src, TOKENIZER_FILE)
    if not os.path.isfile(tpath):
        raise TfreeError(f"{src}: no {TOKENIZER_FILE} (a BPE model cannot be converted without its tokenizer)")
    tok = load_tokenizer(tpath)
    if tok.get_vocab_size() != config.vocab_size or tok.token_to_id(EOT) is None:
        no_eot = "" if tok.token_to_id(EOT) is not None else f", no {EOT}"
        raise TfreeError(f"{tpath}: {tok.get_vocab_size():,} tokens{no_eot}, the model {config.vocab_size:,}: not "
                         "this model's tokenizer")
    model = Model(config)
    ckpt.load_weights(model, ckpt.read_state_dict(src), src)
    model.eval()
    return BpeSource(src, config, model, tok)


def surface(word: str) -> str:
    """The text a word stands for after a letter (its usual leading space included: BPE pieces carry it)."""
    return join(["x", word])[1:]


def word_pieces(tokenizer, words: list[str], max_pieces: int = 16) -> list[list[int]]:
    eot = tokenizer.token_to_id(EOT)
    enc = tokenizer.encode_batch([surface(w) for w in words], add_special_tokens=False)
    return [[eot] if w == EOT else e.ids[:max_pieces] for w, e in zip(words, enc)]


@torch.no_grad()
def hidden_after(model: Model, pieces: list[list[int]], eot: int, batch: int = 512) -> torch.Tensor:
    """(n, d): the BPE model's final (normed) hidden state after reading ``<|endoftext|>`` then each word's pieces."""
    out = torch.zeros(len(pieces), model.config.n_embd, dtype=torch.float64)
    got = {}
    hook = model.norm.register_forward_hook(lambda m, i, o: got.__setitem__("h", o))
    try:
        order = sorted(range(len(pieces)), key=lambda i: len(pieces[i]))
        for s in range(0, len(order), batch):
            ids = order[s:s + batch]
            T = max(1, max(len(pieces[i]) for i in ids)) + 1
            x = torch.full((len(ids), T), eot, dtype=torch.int64)  # padding after a word is never read (causal)
            for r, i in enumerate(ids):
                x[r, 1:1 + len(pieces[i])] = torch.tensor(pieces[i], dtype=torch.int64)
            model(x)
            last = torch.tensor([len(pieces[i]) for i in ids])
            out[ids] = got["h"][torch.arange(len(ids)), last].double()
    finally:
        hook.remove()
    return out


def targets(src: BpeSource, pieces: list[list[int]], cfg: RetokConfig, log=print) -> tuple[torch.Tensor, torch.Tensor]:
    """(input targets, head targets), each (n, d) float64 (module docstring, steps 2 and 3)."""
    emb, out = src.model.embed.weight.detach(), src.model.head.weight.detach()
    if cfg.init == "mean":
        t_in, t_out = retok_fit.mean_rows(pieces, emb), retok_fit.mean_rows(pieces, out)
    else:  # sparse: single-piece words are exact; the others are OMP combinations of them
        t_in, t_out = retok_fit.first_rows(pieces, emb), retok_fit.first_rows(pieces, out)
        single = [i for i, p in enumerate(pieces) if len(p) == 1]
        multi = [i for i, p in enumerate(pieces) if len(p) > 1]
        if single and multi:
            t0 = time.time()
            h = hidden_after(src.model, pieces, src.tokenizer.token_to_id(EOT))
            anchor_tok = torch.tensor([pieces[i][0] for i in single])
            idx, w = retok_fit.omp(h[multi], h[single], cfg.sparse_k)
            t_in[multi] = (w[:, :, None] * emb.double()[anchor_tok[idx]]).sum(1)
            t_out[multi] = (w[:, :, None] * out.double()[anchor_tok[idx]]).sum(1)
            log(f"sparse targets: {len(multi):,} multi-piece words as {cfg.sparse_k} of {len(single):,} single-piece "
                f"words ({time.time() - t0:.1f}s)")
    if cfg.head_target == "first":
        t_out = retok_fit.first_rows(pieces, out)
    if cfg.head_fit == "mean":
        t_out = t_out - out.double().mean(0)  # centred: softmax logits are shift-free, sigmoids are not
    return t_in, t_out


@torch.no_grad()
def logit_scale(src: BpeSource, corpus: Corpus, units, sample: int = 8) -> float:
    """1 / the spread (std over the vocabulary, centred per position) of the source's logits on a few training
    sequences: scaling the head targets by it keeps T-FREE's row logits where a sigmoid is still about linear."""
    sel = units.take(slice(0, min(sample, len(units))))
    eot = src.tokenizer.token_to_id(EOT)
    T = src.config.seq_len
    rows = []
    for d, a, b in zip(sel.doc.tolist(), sel.start.tolist(), sel.stop.tolist()):
        ids = [eot] + src.tokenizer.encode(corpus.text(d, a, b), add_special_tokens=False).ids[:T - 1]
        rows.append(src.model(torch.tensor([ids]))[0][0].double())
    z = torch.cat(rows) if rows else torch.zeros(1, 2, dtype=torch.float64)
    sd = float((z - z.mean(1, keepdim=True)).std())
    return 1.0 / sd if sd > 0 else 1.0


def training_words(corpus: Corpus, val_bytes: int, chunk_words: int):
    """(the dictionary ``tfree train`` builds from these shards, training units, validation units)."""
    train_units, val_units = split_units(make_units(corpus, chunk_words), val_bytes)
    counts = Counter()
    for d, a, b in zip(train_units.doc.tolist(), train_units.start.tolist(), train_units.stop.tolist()):
        counts.update(corpus.words(d, a, b))
    counts[EOT] += int(train_units.last.sum())
    return Dictionary.from_counts(corpus.codec, counts), train_units, val_units


def words_seq_len(src: BpeSource, corpus: Corpus, units, sample: int = 200) -> int:
    """T-FREE words per sequence holding as many bytes as the source's sequences of tokens."""
    sel = units.take(slice(0, min(sample, len(units))))
    texts = [corpus.text(d, a, b) for d, a, b in zip(sel.doc.tolist(), sel.start.tolist(), sel.stop.tolist())]
    tokens = sum(len(e.ids) for e in src.tokenizer.encode_batch(texts, add_special_tokens=False))
    words = int((sel.stop - sel.start).sum())
    return max(1, round(src.config.seq_len * tokens / max(1, words)))


def calibrated(model: Model, corpus: Corpus, val_units, dictionary: Dictionary) -> tuple[Calibration, float]:
    """The dictionary softmax's calibration fitted on the validation slice (as ``tfree train`` does at each
    evaluation), and the slice's bits per byte under it."""
    if len(val_units) == 0:
        return Calibration(), float("nan")
    words = Words(dictionary)
    cpu = torch.device("cpu")
    r = words.validate(model, corpus, val_units, Reading(device=cpu, autocast=autocast_for(cpu, "float32")[0]))
    return words.calibration, r["val_bpb"]


def build(source: str, shards: str, out: str, cfg: RetokConfig, val_bytes: int = 65536, chunk_words: int = 1024,
          log=print) -> dict:
    """Write the T-FREE checkpoint ``out`` (RUN/init) made from the BPE run ``source`` and the words of ``shards``;
    -> its retok.json record (settings, sizes, fit quality, validation bits per byte at step 0)."""
    cfg.check()
    src = open_bpe(source)
    corpus = Corpus.from_path(shards)
    t0 = time.time()
    dictionary, train_units, val_units = training_words(corpus, val_bytes, chunk_words)
    words, counts = list(dictionary.words), np.asarray(dictionary.counts, np.float64)
    pieces = word_pieces(src.tokenizer, words)
    has = np.array([len(p) > 0 for p in pieces])  # markers that stand for no text (<|no_ws|>) have no target
    seq_len = cfg.seq_len or words_seq_len(src, corpus, train_units)
    mc = dataclasses.replace(src.config, mode="tfree", vocab_size=corpus.codec.vocab_size, seq_len=seq_len,
                             pos_weight=cfg.pos_weight)
    torch.manual_seed(cfg.seed)
    model = Model(mc)
    body = {k: v for k, v in src.model.state_dict().items() if not k.startswith(("embed.", "head."))}
    model.load_state_dict(body, strict=False)
    record = {"source": src.path, "source_sha256": ckpt.read_meta(src.path, verify=False).get("files", {}),
              "shards": os.path.abspath(shards), "settings": dataclasses.asdict(cfg), "words": len(words),
              "pieces_per_word": float(np.average([len(p) for p in pieces], weights=counts)),
              "single_piece_share": float(np.average([len(p) == 1 for p in pieces], weights=counts))}
    if cfg.init != "random":
        t_in, t_out = targets(src, pieces, cfg, log)
        f = counts * has
        indptr, indices = dictionary.indptr, dictionary.indices
        # T-FREE scores a word by the *mean* sigmoid over its pattern, which for small logits is affine in the mean
        # row logit: the head fits mean_{j in P(w)} H[j] ~= c (U[t] - mean U), i.e. the summed rows |P(w)| times it
        if cfg.head_fit == "mean":
            record["head_scale"] = c = logit_scale(src, corpus, train_units)
            t_out = t_out * c * torch.from_numpy(np.diff(np.asarray(indptr, np.int64))).double()[:, None]
        e, h = retok_fit.solve(indptr, indices, f, [t_in, t_out], mc.vocab_size, cfg.alpha, cfg.ridge)
        with torch.no_grad():
            model.embed.weight.copy_(e.float())
            model.head.weight.copy_(h.float())
        record["fit_input"] = retok_fit.fit_quality(indptr, indices, e, t_in, counts, has)
        record["fit_head"] = retok_fit.fit_quality(indptr, indices, h, t_out, counts, has)
    log(f"retok: {len(words):,} words, {record['pieces_per_word']:.2f} BPE pieces per word occurrence; "
        f"{cfg.init} init ({time.time() - t0:.1f}s)")
    model.eval()
    cal, bpb = calibrated(model, corpus, val_units, dictionary)
    record["val_bpb_step0"] = bpb
    log(f"retok: step 0 validation bits per byte {bpb:.4f} (temperature {cal.temperature:.4f}, prior weight "
        f"{cal.prior_weight:.3f})")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".retok-", dir=os.path.dirname(os.path.abspath(out))) as tmp:
        dpath = os.path.join(tmp, DICT_FILE)
        dictionary.save(dpath)
        ckpt.save_checkpoint(out, model, corpus.codec, files={DICT_FILE: dpath}, step=0,
                             info={"bytes_seen": 0, "params": model.num_params(), "chunk_words": chunk_words},
                             json_files={RETOK_FILE: record, ckpt.CALIBRATION_FILE: cal.to_dict()})
    return record


def read_record(path: str) -> dict:
    """retok.json of a RUN/init checkpoint."""
    try:
        with open(os.path.join(path, RETOK_FILE), encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise TfreeError(f"{path}: no readable {RETOK_FILE} ({e}): not made by tfree retok") from None
    if not isinstance(d, dict) or not isinstance(d.get("settings"), dict):
        raise TfreeError(f"{path}/{RETOK_FILE}: not a tfree retok record")
    return d
