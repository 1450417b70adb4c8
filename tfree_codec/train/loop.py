"""``tfree train``: one process or ``torchrun --nproc_per_node N`` (DDP), T-FREE or the BPE baseline, resumable.

The loop is nanoGPT's: AdamW, linear warmup then cosine decay to a tenth, gradient clipping, bf16 autocast where
the device supports it. Every rank walks the same seeded stream and takes its own slice of each global batch, so
the data cursor is one small dict that rank 0 saves. ``--resume auto`` restores weights, optimizer, step, RNG
states and cursor: on the CPU (deterministic kernels, settings.reproducible) the resumed run's weights are byte for
byte the uninterrupted run's.
"""
from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import time
from collections import Counter

import numpy as np
import torch

from ..model import checkpoint as ckpt
from ..config import TfreeError
from .data import Packer, PatternSource, TokenSource, train_bpe
from ..decode.calibration import Calibration
from ..decode.dictionary import Dictionary, prior_features
from ..shards.resume import DirLock
from . import init_from, report
from ..generate.bits import Reading
from ..generate.vocab import Tokens, Words
from ..model.checkpoint import DICT_FILE, TOKENIZER_FILE, load_tokenizer
from ..shards.corpus import Corpus, make_units, split_units
from ..model.device import autocast_for, resolve_device  # noqa: F401  (re-exported)
from ..model.overtok import AfterNext
from ..model.transformer import Model, ModelConfig
from ..text.words import EOT
from .checks import check_finite as _check_finite
from .checks import data_fingerprint as _data_fingerprint
from .checks import check_unfreeze, validate
from ..model.optim import clip_grad_norm
from .settings import settings_to_save
from .settings import (PLAIN, RESUME_FIXED, TrainConfig, body_frozen, init_dist, lr_at, lr_for,  # noqa: F401
                       model_config, od_weight_at, reproducible, resume_differences)  # (re-exported)

TRAINED_WHEN_FROZEN = ("embed.", "head.", "norm.")  # --freeze-body (tfree retok): the input, the output, final norm

# -- the run ------------------------------------------------------------------------------------------------------
class Run:
    """Everything a training run holds: data, artifacts (dictionary or tokenizer), model, optimizer, cursor."""

    def __init__(self, cfg: TrainConfig, log=print):
        validate(cfg)
        self.cfg, self.log = cfg, log
        self.dist = init_dist(cfg.device)
        x = cfg.extras or PLAIN
        if x.freeze_body and self.dist.world > 1:  # DDP fixes the parameters that get gradients when it wraps
            raise TfreeError("a frozen body (tfree retok) trains in one process: run it without torchrun")
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self.autocast, self.dtype = autocast_for(self.device, cfg.dtype)
        reproducible(self.device)
        self.out = os.path.abspath(cfg.out_dir)
        self.resume_from = self._find_resume()
        if self.resume_from:
            ckpt.read_meta(self.resume_from)  # refuses a damaged checkpoint (sha256 of every file)
        state = ckpt.load_train_state(self.resume_from) if self.resume_from else None
        self._check_resume(state)
        self.init_src = init_from.open_source(cfg.init_from) if cfg.init_from and not state else None
        if self.init_src:
            init_from.check_shape(self.init_src, cfg)
        self.seed = int(state["seed"]) if state else self._agree(cfg.seed if cfg.seed is not None else secrets.randbits(31))

        self.corpus = Corpus.from_path(cfg.data.path)
        self.codec = self.corpus.codec
        if self.init_src:
            init_from.check_codec(self.init_src, self.codec, cfg.data.path)
        units = make_units(self.corpus, cfg.data.chunk_words)
        if not float(units.n_bytes.sum()):
            raise TfreeError(f"{cfg.data.path}: no text to train on (it is empty)")
        self.data_fingerprint = _data_fingerprint(units)
        if state and state.get("data_fingerprint", self.data_fingerprint) != self.data_fingerprint:
            raise TfreeError(f"{cfg.data.path} is not the data {self.resume_from} was trained on (re-encoded or changed "
                             "since): resume with the same data, or start a new run directory")
        self.train_units, self.val_units = split_units(units, cfg.data.val_bytes)
        if len(self.val_units) == 0:  # no validation bits per byte (nan), and no calibration fitted for decoding
            raise TfreeError(f"{cfg.data.path}: too little text to hold out a validation slice ({len(units)} unit of "
                             f"{cfg.data.chunk_words} words): give more text")
        if self.dist.main:
            os.makedirs(self.out, exist_ok=True)
            if cfg.resume:
                ckpt.clean_partial(self.out)  # temp folders of a save that was killed (only those marked ours)
        self._barrier()
        self.mode = cfg.mode
        self._prepare_artifacts()

        T = cfg.shape.seq_len or ModelConfig.from_preset(cfg.shape.preset).seq_len
        self.model_config = model_config(cfg, self.vocab_size, T, od=x.od_weight > 0)
        torch.manual_seed(self.seed)
        self.model = Model(self.model_config).to(self.device)
        if self.model_config.oe_orders:
            self.source.oe = self.model_config
            # sparse table gradients and SparseAdam; DDP over NCCL cannot all-reduce sparse gradients
            self.model.sparse_tables(not (self.dist.world > 1 and self.device.type == "cuda"))
        if self.model_config.objective != "bce":
            self._word_objective()
        if self.init_src:
            init_from.load_weights(self.model, self.init_src)
            self.log(init_from.describe(self.init_src))
        self.packer = Packer(self.source.lengths, self.train_units.last, self.train_units.n_bytes, T, self.seed)
        span = self.source.lengths.sum() + self.train_units.last.sum()
        self.bytes_per_item = float(self.train_units.n_bytes.sum()) / max(1, int(span))
        self.max_steps = self._max_steps()
        if x.freeze_body and x.unfreeze_after is not None:  # --max-bytes: the length is known only now
            check_unfreeze(x.unfreeze_after, self.max_steps)
        self.optimizer = self.model.configure_optimizer(cfg.optimiser.lr, cfg.optimiser.weight_decay,
                                                        device_type=self.device.type, table_lr_scale=x.oe_lr_scale)
        self.step, self.bytes_seen, self.items_seen = 0, 0.0, 0
        self.said_no_plot = False
        if state:
            self._restore(state)
        self.train_model = self.model
        if cfg.compile:
            self.train_model = torch.compile(self.model)
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: PLC0415

            self.train_model = DDP(self.train_model, device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None)

    # -- setup helpers ------------------------------------------------------------------------------------------
    def _find_resume(self) -> str | None:
        cfg = self.cfg
        existing = ckpt.latest_checkpoint(self.out)
        if cfg.resume is None:
            if existing or os.path.isdir(os.path.join(self.out, "final")):
                raise TfreeError(f"{self.out} already holds checkpoints: pass --resume auto to continue it, "
                                 "or choose another -o")
            # a new run writes log.jsonl and the dictionary here: only over those of a run that died early
            ours = {DICT_FILE, TOKENIZER_FILE, "log.jsonl"}
            if cfg.init_from and os.path.dirname(os.path.abspath(cfg.init_from)) == self.out:
                ours.add(os.path.basename(os.path.abspath(cfg.init_from)))  # tfree retok's starting point, RUN/init
            theirs = sorted(set(os.listdir(self.out)) - ours) if os.path.isdir(self.out) else []
            if theirs:
                raise TfreeError(f"{self.out} is not empty ({', '.join(theirs[:3])}{', ...' if len(theirs) > 3 else ''}"
                                 "): train into a new or empty run directory")
            return None
        if cfg.resume == "auto":
            if existing is None and os.path.isdir(os.path.join(self.out, "final")):
                # final/ keeps no optimizer state or data cursor: continuing from it would not be this run, and
                # starting fresh would overwrite the trained final/ and log.jsonl
                raise TfreeError(f"{self.out} holds a finished run (final/) and no step-NNNNNN/ checkpoint to resume "
                                 "from: it is complete; to train further, start a new run directory")
            if existing is None:
                self.log(f"--resume auto: no checkpoint in {self.out}, starting fresh")
            return existing
        return cfg.resume

    def _check_resume(self, state) -> None:
        if not state:
            return
        diff = resume_differences(state.get("train_config", {}), self.cfg.flat())
        if int(state.get("world_size", 1)) != self.dist.world:
            diff.append(f"processes {state.get('world_size')} -> {self.dist.world}")
        if diff:
            raise TfreeError(f"{self.resume_from} does not match this run ({'; '.join(diff)}): "
                             "resume with the same settings or start a new run directory")

    def _agree(self, value: int) -> int:
        """Rank 0's value on every rank (the seed must be one, or ranks would read different streams)."""
        if self.dist.world == 1:
            return value
        import torch.distributed as dist  # noqa: PLC0415

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return int(box[0])

    def _barrier(self) -> None:
        if self.dist.world > 1:
            import torch.distributed as dist  # noqa: PLC0415

            dist.barrier()

    def _prepare_artifacts(self) -> None:
        """The vocabulary: the dictionary (T-FREE) or the BPE tokenizer, built from the training units once by rank
        0 and saved in the run directory; a resumed run reads the saved one, so it is the same."""
        path = os.path.join(self.out, TOKENIZER_FILE if self.cfg.shape.baseline else DICT_FILE)
        if self.dist.main and not os.path.isfile(path):
            t0 = time.time()
            said = self._build_tokenizer(path) if self.cfg.shape.baseline else self._build_dictionary(path)
            if said:
                self.log(f"{said} ({time.time() - t0:.1f}s)")
        self._barrier()
        if self.cfg.shape.baseline:
            self.vocab = Tokens(load_tokenizer(path))
            self.vocab_size = self.vocab.tokenizer.get_vocab_size()
            self.source = TokenSource(self.corpus, self.train_units, self.vocab.tokenizer, self.vocab.eot_id)
        else:
            self.vocab = Words(Dictionary.load(path, self.codec))
            self.vocab_size = self.codec.vocab_size
            self.source = PatternSource(self.corpus, self.train_units)
        self.artifacts = {os.path.basename(path): path}

    def _word_objective(self) -> None:
        """The word objective scores the run's dictionary: the model gets its patterns and counts, the loader
        each target's dictionary id."""
        d = self.vocab.raw
        self.model.word_head.set_dictionary(d.indptr, d.indices, prior_features(d.counts))
        self.source.dict_ids = np.array([d.index(w) for w in self.corpus.lexicon_words], np.int64)

    def _build_dictionary(self, path: str) -> str:
        counts = Counter()
        u = self.train_units
        for d, a, b in zip(u.doc.tolist(), u.start.tolist(), u.stop.tolist()):
            counts.update(self.corpus.words(d, a, b))
        counts[EOT] += int(u.last.sum())
        (init_from.grown_dictionary(self.init_src, counts, self.codec) if self.init_src
         else Dictionary.from_counts(self.codec, counts)).save(path)
        return f"dictionary: {len(counts):,} words from the training text"

    def _build_tokenizer(self, path: str) -> str | None:
        if self.init_src:
            init_from.copy_tokenizer(self.init_src, path)  # the source's, as its users have it
            return None
        tok = train_bpe(self._unit_texts(self.train_units), self.cfg.shape.bpe_vocab)
        tok.save(path)
        got = tok.get_vocab_size()  # a small text runs out of merges before the size asked for
        return (f"BPE tokenizer: {got:,} tokens learnt from the training text"
                f"{f' (--bpe-vocab {self.cfg.shape.bpe_vocab:,} asked)' if got != self.cfg.shape.bpe_vocab else ''}")

    def _unit_texts(self, units):
        return (self.corpus.text(d, a, b) for d, a, b in zip(units.doc.tolist(), units.start.tolist(), units.stop.tolist()))

    def _max_steps(self) -> int:
        cfg = self.cfg
        o = cfg.optimiser
        if o.max_steps:
            return int(o.max_steps)
        if o.max_bytes:
            per_step = o.batch_size * o.grad_accum * self.dist.world * self.model_config.seq_len * self.bytes_per_item
            return max(1, math.ceil(o.max_bytes / per_step))
        raise TfreeError("give --max-steps or --max-bytes")

    def _restore(self, state: dict) -> None:
        ckpt.load_weights(self.model, ckpt.read_state_dict(self.resume_from), self.resume_from)
        if ckpt.read_model_config(self.resume_from) != self.model_config:
            raise TfreeError(f"{self.resume_from}: its model config differs from this run's")
        try:  # a train_state.pt that passes its sha256 but not this run (written by a bug, or by hand)
            self.optimizer.load_state_dict(state["optimizer"])
            self.packer.load_state_dict(state["cursor"])
            self.step, self.bytes_seen, self.items_seen = int(state["step"]), float(state["bytes_seen"]), int(state["items_seen"])
            self.vocab.calibration = Calibration.from_dict(state.get("calibration", {}))
            torch.set_rng_state(state["rng_cpu"])
            if self.device.type == "cuda" and "rng_cuda" in state:
                torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as e:
            raise TfreeError(f"{self.resume_from}: train_state.pt does not fit this run ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:100] if str(e) else ''})") from None
        self.log(f"resumed from {self.resume_from} at step {self.step}")

    def sample_prompt(self, n_words: int) -> list[str]:
        """The first ``n_words`` words of the first validation unit (none without a validation slice)."""
        if len(self.val_units) == 0:
            return []
        u = self.val_units
        d, a, b = int(u.doc[0]), int(u.start[0]), int(u.stop[0])
        return self.corpus.words(d, a, min(b, a + n_words))

    def sampling_vocabulary(self):
        """The vocabulary the samples of ``report.greedy_sample`` draw from: the run's, under its latest
        calibration, on a copy of the dictionary made once (a prompt's words join the copy, never the dictionary
        that evaluation reads)."""
        if getattr(self, "_sampling", None) is None:
            self._sampling = self.vocab.copy()
        self._sampling.calibration = self.vocab.calibration
        return self._sampling

    # -- the loop -------------------------------------------------------------------------------------------------
    def batch(self):
        """This rank's (inputs, targets) for the next global batch, and the global batch's bytes and items; with
        Over-Decoding the targets are (targets, targets2, mask2)."""
        T, B = self.model_config.seq_len, self.cfg.optimiser.batch_size
        wins, nbytes = self.packer.next_windows(B * self.dist.world)
        mine = wins[self.dist.rank * B:(self.dist.rank + 1) * B]
        if self.model_config.od:
            x, *y = self.source.batch(mine, T, od=True)
            return x.to(self.device), tuple(t.to(self.device) for t in y), nbytes, B * self.dist.world * T
        x, y = self.source.batch(mine, T)
        return x.to(self.device), y.to(self.device), nbytes, B * self.dist.world * T

    def train_step(self) -> float:
        lr = lr_for(self.step, self.cfg, self.max_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)  # the n-gram tables' group: --oe-lr-scale
        if self.cfg.extras and self.cfg.extras.freeze_body:  # frozen parameters get no gradient, so AdamW leaves them
            # (and their decay) alone
            frozen = body_frozen(self.cfg, self.step)
            for name, p in self.model.named_parameters():
                p.requires_grad_(not frozen or name.startswith(TRAINED_WHEN_FROZEN))
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        k, total, nbytes, nitems = self.cfg.optimiser.grad_accum, 0.0, 0, 0
        for i in range(k):  # --grad-accum: k batches' gradients, averaged, make one step (DDP syncs on the last)
            x, y, b, n = self.batch()
            if self.model_config.od:
                y = AfterNext(*y, od_weight_at(self.step, self.cfg, self.max_steps))
            quiet = self.train_model.no_sync() if self.dist.world > 1 and i < k - 1 else contextlib.nullcontext()
            with quiet:
                with self.autocast():
                    _, loss = self.train_model(x, y)
                (loss / k).backward()
            total, nbytes, nitems = total + loss.detach() / k, nbytes + b, nitems + n
        loss = total
        if self.cfg.optimiser.grad_clip:
            clip_grad_norm(self.model.parameters(), self.cfg.optimiser.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.bytes_seen += nbytes
        self.items_seen += nitems
        return loss.detach()

    def mean_over_ranks(self, t) -> float:
        if self.dist.world > 1:
            import torch.distributed as dist  # noqa: PLC0415

            t = t.clone()
            dist.all_reduce(t)
            t /= self.dist.world
        return float(t)

    def evaluate(self) -> dict:
        """Validation bits per byte (rank 0). T-FREE: the dictionary softmax's calibration is re-fitted on the same
        slice and kept as the run's (generate/vocab.py ``Words.validate``)."""
        self.model.eval()
        if len(self.val_units) == 0:
            return {}
        return self.vocab.validate(self.model, self.corpus, self.val_units, Reading(device=self.device,
                                                                                     autocast=self.autocast))

    def save(self, path: str, final: bool = False) -> None:
        state = None
        if not final:
            state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "cursor": self.packer.state_dict(),
                     "bytes_seen": float(self.bytes_seen), "items_seen": int(self.items_seen), "seed": self.seed,
                     "world_size": self.dist.world, "rng_cpu": torch.get_rng_state(),
                     "calibration": self.vocab.calibration.to_dict(), "train_config": self.cfg.flat(),
                     "data_fingerprint": self.data_fingerprint}
            if self.device.type == "cuda":
                state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        ckpt.save_checkpoint(path, self.model, self.codec, files=self.artifacts, train_state=state, step=self.step,
                             info={"bytes_seen": round(self.bytes_seen), "seed": self.seed,
                                   "params": self.model.num_params(), "chunk_words": self.cfg.data.chunk_words},
                             json_files={ckpt.SETTINGS_FILE: {**settings_to_save(self.cfg), "seed": self.seed},
                                         **self.vocab.checkpoint_json})
        if not final and self.cfg.logging.keep_last:
            ckpt.prune_checkpoints(self.out, self.cfg.logging.keep_last)


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def train(cfg: TrainConfig, log=print) -> dict:
    """Train (or resume) a run; returns a summary. Only rank 0 logs and writes, and holds an exclusive lock on the
    run directory for the whole job: a second job on the same directory is refused at once (shards.resume.DirLock)."""
    validate(cfg)  # before the lock creates the run directory
    out = os.path.abspath(cfg.out_dir)
    had = set(os.listdir(out)) if os.path.isdir(out) else set()
    lock = DirLock(out, job="tfree train") if int(os.environ.get("RANK", "0")) == 0 else None
    ok, deterministic = False, torch.are_deterministic_algorithms_enabled()
    try:
        summary = _train(cfg, log)
        ok = True
        return summary
    finally:
        torch.use_deterministic_algorithms(deterministic)  # Run turned it on for a CPU run: this process's again
        if lock is not None:
            if not ok:
                _drop_unfinished(out, had)
            lock.release(failed=not ok)  # a run refused before it wrote anything leaves no empty directory


def _train(cfg: TrainConfig, log) -> dict:
    from tqdm import tqdm  # noqa: PLC0415

    run = Run(cfg, log if int(os.environ.get("RANK", "0")) == 0 else (lambda *a, **k: None))
    main = run.dist.main
    say = run.log
    p = run.model.num_params()
    unit = run.vocab.unit
    od_head = f", word-after-next head {p['od'] / 1e6:.2f}M" if p.get("od") else ""
    per_step = cfg.optimiser.batch_size * cfg.optimiser.grad_accum * run.dist.world  # sequences per optimizer step
    say(f"{run.mode} model: {p['total'] / 1e6:.2f}M parameters (embedding {p['embedding'] / 1e6:.2f}M, head "
        f"{p['head'] / 1e6:.2f}M, body {p['body'] / 1e6:.2f}M{_oe_part(p)}{od_head}) | seed {run.seed} | device {run.device} {run.dtype} | "
        f"{run.dist.world} process(es) | {run.max_steps} steps of {per_step}x{run.model_config.seq_len} {unit} "
        f"(~{run.max_steps * per_step * run.model_config.seq_len * run.bytes_per_item / 1e6:.1f} MB)")
    if main:
        report.truncate_log(os.path.join(run.out, report.LOG_FILE), run.step)
    settings = {**settings_to_save(cfg), "seed": run.seed}  # W&B's config of the run, as train_config.json holds it
    loggers = report.Loggers(run.out, cfg.logging.logger, run.step, say, settings) if main else None
    log = cfg.logging
    eval_every = log.eval_every if log.eval_every is not None else (run.max_steps // 10 if run.max_steps >= 1000 else 0)
    bar = tqdm(total=run.max_steps, initial=run.step, disable=None if main and log.progress else True, unit="step",
               dynamic_ncols=True, leave=False)
    t_last, b_last, i_last, busy = time.perf_counter(), run.bytes_seen, run.items_seen, 0.0
    record, loss = {}, None
    while run.step < run.max_steps:
        loss = run.train_step()
        bar.update(1)
        s = run.step
        is_log = s % max(1, cfg.logging.log_every) == 0 or s == run.max_steps
        record = {}
        if is_log:
            now = time.perf_counter()
            dt = max(now - t_last - busy, 1e-9)
            record = {"step": s, "loss": run.mean_over_ranks(loss), "lr": lr_for(s - 1, cfg, run.max_steps),
                      f"{unit}_per_s": (run.items_seen - i_last) / dt, "bytes_per_s": (run.bytes_seen - b_last) / dt,
                      "bytes_seen": round(run.bytes_seen)}
            if run.model_config.od:  # both parts of the loss: the next word's, and the word after next's
                record.update(loss_next=run.mean_over_ranks(run.model.loss_parts[0]),
                              loss_od=run.mean_over_ranks(run.model.loss_parts[1]),
                              od_weight=od_weight_at(s - 1, cfg, run.max_steps))
            t_last, b_last, i_last, busy = now, run.bytes_seen, run.items_seen, 0.0
        if "loss" in record and not math.isfinite(record["loss"]):
            _check_finite(run.model, run.step, record["loss"])
        t0 = time.perf_counter()
        if main and eval_every and s % eval_every == 0 and s < run.max_steps:
            record.update({"step": s, "bytes_seen": round(run.bytes_seen), **run.evaluate()})
            record.update(_show(run, cfg, say))
        if main and cfg.logging.save_every and s % cfg.logging.save_every == 0 and s < run.max_steps:
            _check_finite(run.model, run.step, loss)
            run.save(ckpt.step_dir(run.out, s))
        busy += time.perf_counter() - t0
        if main and record:
            line = f"step {s}"
            if "loss" in record:
                line += f" | loss {record['loss']:.4f}" + (f" (next {record['loss_next']:.4f}, after next "
                                                           f"{record['loss_od']:.4f})" if "loss_od" in record else "")
                line += (f" | {_fmt_rate(record[f'{unit}_per_s'])} {unit}/s | "
                         f"{record['bytes_per_s'] / 1e6:.3f} MB/s")
            if "val_bpb" in record:
                line += f" | val bpb {record['val_bpb']:.3f}"
            with bar.external_write_mode():  # through the caller's log (quickstart: stderr), the bar kept intact
                say(line)
            loggers.write(record)  # log.jsonl, and log.csv / tensorboard
            if "val_bpb" in record:
                _plot(run, cfg, say)
    bar.close()
    summary = {"steps": run.step, "bytes_seen": round(run.bytes_seen), "params": p, "seed": run.seed, "mode": run.mode}
    if main:
        _check_finite(run.model, run.step, loss)
        final = run.evaluate()
        summary.update(final)
        if final:
            final_record = {"step": run.step, "bytes_seen": round(run.bytes_seen), "final": True, **final, **_show(run, cfg, say)}
            loggers.write(final_record)
            _plot(run, cfg, say)
            extra = (f" (temperature {report.temperature_text(final['temperature'])}, prior weight {final['prior_weight']:.3f}, p_unk "
                     f"{final['p_unk']:.4f}; plain score: {final['val_bpb_plain']:.4f})") if "temperature" in final else ""
            say(f"final | step {run.step} | {run.bytes_seen / 1e6:.2f} MB seen | val bpb {final['val_bpb']:.4f}{extra}")
        run.save(ckpt.step_dir(run.out, run.step))
        run.save(os.path.join(run.out, "final"), final=True)
        say(f"saved {os.path.join(run.out, 'final')}")
        loggers.close()
    run._barrier()
    return summary


def _drop_unfinished(out: str, had: set) -> None:
    """A run that stopped (a full disk, an error, Ctrl-C) before its first checkpoint leaves nothing: the files
    this job created (dictionary, logs, plot) go, so a rerun starts clean; files that were there before stay."""
    if ckpt.latest_checkpoint(out) or os.path.exists(os.path.join(out, "final")) or not os.path.isdir(out):
        return
    for name in sorted({DICT_FILE, TOKENIZER_FILE, *report.RUN_FILES} - had):
        p = os.path.join(out, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.lexists(p):
            os.unlink(p)


def _oe_part(p: dict) -> str:
    return f", n-gram tables {p['oe'] / 1e6:.2f}M" if p.get("oe") else ""


def _show(run: Run, cfg: TrainConfig, say) -> dict:
    """A greedy sample of the model at an evaluation, printed and logged."""
    if not cfg.logging.sample_words:
        return {}
    text = report.greedy_sample(run, cfg.logging.sample_words)
    say(f"sample: {text!r}")
    return {"sample": text}


def _plot(run: Run, cfg: TrainConfig, say) -> None:
    if cfg.logging.plot and report.plot_runs([run.out], os.path.join(run.out, report.PLOT_FILE)) is None and \
            not run.said_no_plot:
        say("matplotlib is not installed (pip install 'tfree-codec[plot]'): no plot.png")
        run.said_no_plot = True
