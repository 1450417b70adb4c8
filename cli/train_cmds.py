"""``tfree train`` (T-FREE or the BPE baseline, 1 process or torchrun) and ``tfree eval`` (held-out bits per byte)."""
from __future__ import annotations

import json
import re

import click

from tfree_codec import TfreeError

from .common import TEXT, friendly, local_dir, show_progress

PRESETS = ["tiny", "small", "base", "large"]


_SIZE = re.compile(r"(?i)^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$")


def _size(ctx, param, value):
    """``8MB`` -> 8000000, ``64KiB`` -> 65536, ``1000`` -> 1000 (the same sizes `tfree encode` takes)."""
    if value is None:
        return None
    m = _SIZE.match(value)
    if not m:
        raise click.BadParameter(f"{value!r} is not a size (e.g. 8MB, 64KiB, 1000000)")
    return int(float(m.group(1)) * (1024 if m.group(3) else 1000) ** " kmgt".index(m.group(2).lower() or " "))


def _config_file(ctx, param, value):
    """--config FILE: its settings become this command's defaults, so that options typed on the line win."""
    if value is None:
        return None
    from tfree_codec.train.config_file import read_settings

    try:
        settings = read_settings(value)
    except TfreeError as e:  # one line naming the file, as any bad input
        raise click.ClickException(str(e)) from None
    names = {p.name for p in ctx.command.params}
    defaults, extra = {}, {}
    for k, v in settings.items():
        if k == "progress":  # whether that run's stderr was a terminal: this one decides for itself
            continue
        if k in ("compile", "plot"):  # --compile, --no-plot
            defaults["compile_" if k == "compile" else "no_plot"] = bool(v) if k == "compile" else not v
        elif k == "oe_orders":  # the option's own text form, "2,3"
            defaults[k] = ",".join(str(n) for n in v) if isinstance(v, (list, tuple)) else v
        elif k in ("max_bytes", "val_bytes") and isinstance(v, (int, float)):
            defaults[k] = str(int(v))
        elif k in names:
            defaults[k] = tuple(v) if k == "logger" and isinstance(v, (list, tuple)) else v
        else:  # settings without an option of their own (a tfree retok run's): they go to TrainConfig as they are
            extra[k] = v
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta["train.config_extra"] = extra
    return value


@click.command()
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False, callback=_config_file,
              help="settings from a YAML or JSON file (a run's train_config.json too); options given here win")
@click.argument("data", type=click.Path(exists=True))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), callback=local_dir,
              help="run directory")
@click.option("--preset", type=click.Choice(PRESETS), default="small", show_default=True, help="model size")
@click.option("--n-layer", type=int, help="override the preset's layers")
@click.option("--n-head", type=int, help="override the preset's heads")
@click.option("--n-embd", type=int, help="override the preset's width")
@click.option("--seq-len", type=int, help="context in words (T-FREE) or tokens (BPE)  [default: the preset's]")
@click.option("--batch-size", type=int, default=16, show_default=True, help="sequences per process and step")
@click.option("--grad-accum", type=int, default=1, show_default=True,
              help="batches whose gradients make one optimizer step (a step sees batch-size x N sequences per process)")
@click.option("--max-steps", type=int, help="optimizer steps")
@click.option("--max-bytes", callback=_size, help="or: train on about this much text (e.g. 8MB)")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--warmup", type=int, default=100, show_default=True, help="linear warmup steps (then cosine to lr/10)")
@click.option("--weight-decay", type=float, default=0.1, show_default=True)
@click.option("--grad-clip", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, help="random (and printed) unless given")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True,
              help="auto: bf16 autocast on GPUs that support it, float32 elsewhere")
@click.option("--eval-every", type=int, help="validation (bits per byte, a sample, plot.png) every N steps; 0: at the "
              "end  [default: about 10 times in runs of 1,000+ steps, else at the end]")
@click.option("--save-every", type=int, default=0, show_default=True, help="checkpoint every N steps (0: at the end)")
@click.option("--log-every", type=int, default=10, show_default=True)
@click.option("--keep-last", type=int, default=0, show_default=True,
              help="keep only the newest N step-NNNNNN/ checkpoints (0: all; final/ is always kept)")
@click.option("--val-bytes", callback=_size, default="64KB", show_default=True, help="held-out validation text")
@click.option("--resume", help="'auto' (the newest checkpoint in the run directory) or a checkpoint directory; "
              "the run's own settings are restored except those given again")
@click.option("--init-from", help="continue a trained model (a run directory or checkpoint) on DATA: its weights and "
              "shape, a fresh optimizer and schedule; T-FREE adds DATA's words to its dictionary, BPE keeps its tokenizer")
@click.option("--baseline", type=click.Choice(["bpe"]), help="train the BPE baseline (same body, softmax head)")
@click.option("--bpe-vocab", type=int, default=32000, show_default=True, help="BPE vocabulary of the baseline")
@click.option("--pos-weight", type=float, default=100.0, show_default=True, help="BCE weight of active rows")
@click.option("--objective", type=click.Choice(["word", "bce", "mix"]), default="word", show_default=True,
              help="what the T-FREE head trains for: the dictionary softmax decoding reads (word), each row on its "
              "own (bce, the paper's), or both (mix: word + --mix-bce x bce); docs/training.md")
@click.option("--word-budget", type=int, default=4096, show_default=True,
              help="dictionary words scored exactly per step; bigger dictionaries use a sampled softmax")
@click.option("--mix-bce", type=float, default=0.1, show_default=True, help="--objective mix: the BCE term's weight")
@click.option("--od-weight", type=float, default=0.0, show_default=True,
              help="Over-Decoding: a second head learns the word after next, its loss weighted W (0: none; ~0.1)")
@click.option("--od-anneal", is_flag=True, help="the --od-weight falls linearly to 0 over the run")
@click.option("--compile", "compile_", is_flag=True,
              help="torch.compile the model (faster steps after a one-time compile; CPUs need a C compiler)")
@click.option("--logger", type=click.Choice(["csv", "tensorboard", "wandb"]), multiple=True,
              help="also log to OUT/log.csv, OUT/tensorboard/ or Weights & Biases (beside log.jsonl; repeatable)")
@click.option("--no-plot", is_flag=True, help="no OUT/plot.png (drawn at each evaluation when matplotlib is installed)")
@click.option("--sample-words", type=int, default=24, show_default=True,
              help="a greedy sample of this many words at each evaluation (0: none)")
@click.option("--oe-orders", callback=lambda c, p, v: _orders(v), help="Over-Encoding: add hashed word n-gram "
              "tables of these orders to the input (e.g. 2,3; docs/training.md)")
@click.option("--oe-rows", type=int, default=0, help="rows per n-gram table (e.g. 262144)")
@click.option("--oe-slices", type=int, default=1, show_default=True, help="tables per n-gram order")
@click.option("--oe-lr-scale", type=float, default=1.0, show_default=True,
              help="the n-gram tables' learning rate, as a multiple of --lr")
@click.option("--oe-distinct-moduli/--oe-shared-moduli", "oe_distinct", default=True,
              help="each table its own hash and size (default), or the paper's shared-modulus control")
@click.option("--oe-unigram/--oe-no-unigram", "oe_unigram", default=True,
              help="keep the word's own embedding (default), or the n-gram tables alone (an ablation)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@friendly
def train(data, out_dir, compile_, quiet, no_plot, **kw):
    """Train a T-FREE model (or, with --baseline bpe, its BPE baseline) on DATA, a shard directory from
    `tfree encode` (or a text file); checkpoints go to OUT/step-NNNNNN/ and OUT/final/.

    Several processes: torchrun --nproc_per_node N -m tfree_cli train DATA -o OUT ..."""
    from tfree_codec.train.init_from import settings as init_settings
    from tfree_codec.train.loop import TrainConfig
    from tfree_codec.train.loop import train as run_train

    kw["logger"] = tuple(kw["logger"])
    if kw["baseline"] and kw["objective"] != "bce" and "objective" in _typed():
        raise TfreeError(f"--objective {kw['objective']}: the word objective needs a T-FREE model, not --baseline bpe")
    extra = click.get_current_context().meta.get("train.config_extra", {})  # --config's settings with no option
    cfg = TrainConfig.of(data=data, out_dir=out_dir, compile=compile_, progress=show_progress(quiet), plot=not no_plot,
                         **kw, **extra)
    cfg, restored = _restore_settings(cfg)
    cfg = init_settings(cfg, _typed())
    check_length_and_logs(cfg)

    def log(msg):
        click.echo(msg)
        if restored and str(msg).startswith("resumed from"):  # said once the checkpoint is accepted
            click.echo("settings of the run restored: " + ", ".join(f"{k} {v}" for k, v in restored.items()))
    run_train(cfg, log=log)


def check_length_and_logs(cfg) -> None:
    """A run needs a length, and its logging counts are never negative (before any work)."""
    if cfg.optimiser.max_steps is None and cfg.optimiser.max_bytes is None:
        raise TfreeError("give --max-steps or --max-bytes")
    for name in ("keep_last", "sample_words"):
        if getattr(cfg.logging, name) < 0:
            raise TfreeError(f"--{name.replace('_', '-')} must be 0 or more, not {getattr(cfg.logging, name)}")


def _orders(value):
    """``2,3`` -> (2, 3); their range is checked with the other options (train/checks.py)."""
    try:
        return tuple(int(x) for x in value.split(",")) if value else ()
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list of n-gram orders (e.g. 2,3)") from None


def _restore_settings(cfg):
    """--resume: the run's saved settings for every option not typed again on this command line."""
    from tfree_codec.train.settings import resume_settings

    return resume_settings(cfg, _typed())


def _typed() -> set[str]:
    """The options typed on this command line (the others may come from a resumed run or an --init-from source)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.DEFAULT_MAP)  # or --config
    typed = {p.name for p in ctx.command.params if ctx.get_parameter_source(p.name) in given}
    typed |= set(ctx.meta.get("train.config_extra", {}))
    typed |= {"compile"} if "compile_" in typed else set()
    typed |= {"plot"} if "no_plot" in typed else set()
    return typed


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out_file", required=True, type=click.Path(dir_okay=False), callback=local_dir,
              help="PNG to write")
@click.option("--label", "labels", multiple=True, type=TEXT, help="legend name of each run, in order (default: its folder)")
@friendly
def plot(runs, out_file, labels):
    """Draw RUNS side by side: validation bits per byte against text seen (the figure T-FREE and BPE runs
    share) and each run's training loss, from their log.jsonl."""
    from tfree_codec.train.report import plot_runs

    if labels and len(labels) != len(runs):
        raise TfreeError(f"{len(labels)} --label for {len(runs)} runs")
    if plot_runs(runs, out_file, labels or None) is None:
        raise TfreeError("tfree plot needs matplotlib: pip install 'tfree-codec[plot]'")
    click.echo(f"wrote {out_file}")


@click.command(name="eval")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.argument("data", type=click.Path(exists=True))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
@click.option("--breakdown", is_flag=True, help="bits per byte by word class (frequency, numbers, punctuation, "
              "markers, unseen) of a T-FREE CHECKPOINT, beside a BPE model's given with --against")
@click.option("--against", type=click.Path(exists=True, file_okay=False),
              help="--breakdown: a BPE checkpoint, its tokens grouped by the T-FREE word they fall in")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@click.option("--search", type=click.Choice(["pruned", "full"]), default="pruned", show_default=True,
              help="T-FREE normalisers: only the words that hold mass (<= 1e-6 of it left out), or every word")
@friendly
def eval_(checkpoint, data, device, batch_size, as_json, breakdown, against, quiet, search):
    """Held-out bits per byte of CHECKPOINT (e.g. RUN/final) on DATA (shard directory or text file), with
    parameter counts and, for T-FREE, the dictionary's coverage and the unseen-word convention used."""
    from tfree_codec.generate.score import evaluate_checkpoint

    if against and not breakdown:
        raise TfreeError("--against goes with --breakdown")
    if breakdown:
        from tfree_codec.generate.breakdown import breakdown as run_breakdown
        from tfree_codec.generate.breakdown import format_table

        r = run_breakdown(checkpoint, data, against, device, batch_size)
        click.echo(json.dumps(r) if as_json else format_table(r))
        return

    r = evaluate_checkpoint(checkpoint, data, device, batch_size, progress=show_progress(quiet), search=search)
    if as_json:
        click.echo(json.dumps(r))
        return
    p = r["params"]
    click.echo(f"{r['mode']} model {checkpoint}: {p['total']:,} parameters = embedding {p['embedding']:,} + head "
               f"{p['head']:,} + body {p['body']:,}" + (f" + n-gram tables {p['oe']:,}" if p.get("oe") else "")
               + (f" + word-after-next head {p['od']:,}" if p.get("od") else ""))
    click.echo(f"bits per byte {r['bpb']:.4f} on {r['bytes'] / 1e3:,.1f} kB of {data}")
    if "dictionary_words" in r:  # T-FREE
        click.echo(f"dictionary {r['dictionary_words']:,} words covers {r['coverage_words']:.2%} of the words and "
                   f"{r['coverage_bytes']:.2%} of their bytes; unseen words carry {r['unseen_bits_share']:.1%} of the bits")
        click.echo(f"(with unseen words charged 256^-(bytes+1): {r['bpb_unk_bytes']:.4f} bits per byte)")
    click.echo(f"convention: {r['convention']}")
