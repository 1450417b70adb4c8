"""``tfree retok``: a trained BPE model becomes a T-FREE model (its body kept), then trains with the body frozen."""
from __future__ import annotations

import dataclasses
import os

import click

from tfree_codec import TfreeError

from .common import friendly, local_dir, show_progress
from .train_cmds import _size, _typed, check_length_and_logs

# What a retok run directory holds (tfree train's files, and the converted starting point init/).
RUN_FILES = {"init", "dictionary.arrow", "log.jsonl", "log.csv", "plot.png", "tensorboard", "final"}


@click.command()
@click.argument("bpe_run", type=click.Path(exists=True, file_okay=False))
@click.argument("shards", type=click.Path(exists=True))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), callback=local_dir,
              help="run directory")
@click.option("--init", "init", type=click.Choice(["mean", "sparse", "random"]), default="mean", show_default=True,
              help="word targets: mean of the BPE pieces' rows (ReTok), a sparse combination of single-piece words "
              "(tokensurgeon-like), or random rows")
@click.option("--head-target", type=click.Choice(["first", "mean"]), default="first", show_default=True,
              help="head rows fit the first piece's output row, or the init's own target")
@click.option("--head-fit", type=click.Choice(["sum", "mean"]), default="sum", show_default=True,
              help="head rows: their sum fits the target row, or their mean (what T-FREE's score reads) fits it, "
              "centred and scaled")
@click.option("--max-steps", type=int, help="optimizer steps in all (frozen, then unfrozen)")
@click.option("--max-bytes", callback=_size, help="or: train on about this much text in all (e.g. 2MB)")
@click.option("--unfreeze-after", type=int, help="train everything from this step on (default: the body stays frozen)")
@click.option("--unfreeze-lr", type=float, default=0.3, show_default=True,
              help="after unfreezing: a new warmup and cosine at --lr times this")
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--warmup", type=int, default=100, show_default=True)
@click.option("--weight-decay", type=float, default=0.1, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--seq-len", type=int, help="T-FREE words per sequence  [default: as many bytes as the source's]")
@click.option("--pos-weight", type=float, default=100.0, show_default=True, help="BCE weight of active rows")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="least squares word weight: count^alpha")
@click.option("--ridge", type=float, default=1e-3, show_default=True, help="ridge, relative to the mean Gram diagonal")
@click.option("--sparse-k", type=int, default=8, show_default=True, help="--init sparse: words combined per word")
@click.option("--seed", type=int, help="random (and printed) unless given")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True)
@click.option("--eval-every", type=int, help="validation every N steps (0: at the end)")
@click.option("--save-every", type=int, default=0, show_default=True, help="checkpoint every N steps (0: at the end)")
@click.option("--log-every", type=int, default=10, show_default=True)
@click.option("--keep-last", type=int, default=0, show_default=True, help="keep only the newest N step checkpoints")
@click.option("--val-bytes", callback=_size, default="64KB", show_default=True, help="held-out validation text")
@click.option("--resume", type=click.Choice(["auto"]), help="continue the run in OUT from its newest checkpoint")
@click.option("--sample-words", type=int, default=24, show_default=True,
              help="a greedy sample of this many words at each evaluation (0: none)")
@click.option("--no-plot", is_flag=True, help="no OUT/plot.png")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@friendly
def retok(bpe_run, shards, out_dir, init, head_target, head_fit, alpha, ridge, sparse_k, seq_len, pos_weight, quiet,
          no_plot, **kw):
    """Convert BPE_RUN (a `tfree train --baseline bpe` run or checkpoint) into a T-FREE model over SHARDS' words:
    its body is kept, the embedding and head are fitted to the BPE model's rows (OUT/init/, an ordinary
    checkpoint), then the embedding, head and final norm train with the body frozen (all of it after
    --unfreeze-after). OUT/final/ works with tfree eval, generate and export."""
    from tfree_codec.model.checkpoint import read_model_config
    from tfree_codec.shards.resume import DirLock
    from tfree_codec.train import retok as rt
    from tfree_codec.train.checks import validate
    from tfree_codec.train.loop import TrainConfig
    from tfree_codec.train.loop import train as run_train
    from tfree_codec.train.settings import resume_settings

    rcfg = rt.RetokConfig(init=init, head_target=head_target, head_fit=head_fit, alpha=alpha, ridge=ridge,
                          sparse_k=sparse_k, seq_len=seq_len, pos_weight=pos_weight, seed=kw["seed"] or 0)
    out = os.path.abspath(out_dir)
    init_dir = os.path.join(out, rt.INIT_DIR)
    # objective bce: the conversion fits the head to the BPE model's rows, and ReTok's measurements are of BCE
    # training after it (docs/results.md); the word objective after a conversion is untried.
    cfg = TrainConfig.of(data=shards, out_dir=out, preset="tiny", init_from=init_dir, freeze_body=True,
                         progress=show_progress(quiet), plot=not no_plot, pos_weight=pos_weight, seq_len=seq_len,
                         objective="bce", **kw)
    cfg, _ = resume_settings(cfg, _typed() | {"init_from", "freeze_body"})
    check_length_and_logs(cfg)
    rcfg.check()
    validate(cfg)
    _check_out(out, cfg.resume)
    lock = DirLock(out, job="tfree retok")  # held through the training below (which takes it again: a no-op)
    ok = False
    try:
        src = rt.open_bpe(bpe_run)  # refused before anything is written: not a BPE run, no tokenizer, damaged
        if os.path.isdir(init_dir):
            _check_init(init_dir, rcfg)
        else:
            rt.build(src.path, shards, init_dir, rcfg, cfg.data.val_bytes, cfg.data.chunk_words, log=click.echo)
        m = read_model_config(init_dir)
        cfg = cfg.replace(n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd, seq_len=m.seq_len,
                          pos_weight=m.pos_weight)
        run_train(cfg, log=click.echo)
        ok = True
    finally:
        lock.release(failed=not ok)  # a refused run leaves no empty run directory


def _check_out(out: str, resume) -> None:
    """OUT is new, empty, or a retok run of ours (resumed only with --resume auto); anything else is refused."""
    if not os.path.lexists(out):
        return
    if not os.path.isdir(out):
        raise TfreeError(f"{out} exists and is not a directory: choose another -o")
    here = set(os.listdir(out))
    theirs = sorted(d for d in here - RUN_FILES if not d.startswith(("step-", ".tmp-", ".old-", ".retok-")))
    if theirs:
        raise TfreeError(f"{out} is not a tfree retok run ({', '.join(theirs[:3])}{', ...' if len(theirs) > 3 else ''}"
                         "): convert into a new or empty run directory")
    if not resume and (any(d.startswith("step-") for d in here) or "final" in here):
        raise TfreeError(f"{out} already holds a trained retok run: pass --resume auto to continue it, "
                         "or choose another -o")


def _check_init(init_dir: str, rcfg) -> None:
    """A converted starting point already in OUT is reused only if it was made with the same settings."""
    from tfree_codec.model import checkpoint as ckpt
    from tfree_codec.train import retok as rt

    ckpt.read_meta(init_dir)
    made = rt.read_record(init_dir)["settings"]
    want = dataclasses.asdict(rcfg)
    default = dataclasses.asdict(rt.RetokConfig())  # a setting added since the init was made: its default then
    diff = [f"--{k.replace('_', '-')} {made.get(k, default[k])!r} (asked {want[k]!r})" for k in want
            if k not in ("seed",) and not (k == "seq_len" and want[k] is None) and made.get(k, default[k]) != want[k]]
    if diff:
        raise TfreeError(f"{init_dir} was converted with {', '.join(diff)}: use the same options, or another -o")
