"""``tfree generate`` (text from a checkpoint, streamed word by word) and ``tfree quickstart`` (the whole flow on
the bundled sample: encode, train, generate)."""
from __future__ import annotations

import dataclasses
import math
import os
import secrets
import sys

import click

from tfree_codec import TfreeError
from tfree_codec.decode.sampling import DEFAULT_MAX_NEW, DEFAULT_TEMPERATURE, DEFAULT_TOP_P

from .common import TEXT, friendly, local_dir, not_utf8, read_text, show_progress


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@click.command()
@click.argument("args", nargs=-1, metavar="[MODEL] [PROMPT|-]")
@click.option("--prompt-file", type=click.Path(dir_okay=False), help="read the prompt from this UTF-8 file")
@click.option("-n", "--max-new-tokens", type=int, default=DEFAULT_MAX_NEW, show_default=True,
              help="words to generate (tokens for a BPE model)")
@click.option("-t", "--temperature", type=float, default=DEFAULT_TEMPERATURE, show_default=True,
              help="0: greedy; 1: the model's calibrated distribution")
@click.option("--top-k", type=int, help="sample among the k likeliest words only")
@click.option("--top-p", type=float, default=DEFAULT_TOP_P, show_default=True, help="nucleus: the likeliest words up to this mass")
@click.option("--seed", type=int, help="random (and printed) unless given")
@click.option("--num-samples", type=int, default=1, show_default=True, help="continuations (sample i uses seed + i)")
@click.option("--stop", multiple=True, type=TEXT, help="stop before this string (repeatable)")
@click.option("--spell", is_flag=True, help="spell words the dictionary lacks when the model asks for one")
@click.option("--spell-below", type=float,
              help="with --spell: spell where even the best dictionary word scores below this, in the model's score "
              "[default: 0.5 (sigmoid_diff); 0.0 for a word-objective model (mean_logit: a mean logit)]")
@click.option("--ignore-eot", is_flag=True, help="go on past <|endoftext|> (the end of a document)")
@click.option("--no-cache", is_flag=True, help="re-read the whole context each step (slow; for checks)")
@click.option("--no-echo", is_flag=True, help="print only the continuation, not the prompt")
@click.option("--draft", is_flag=True, help="self-speculative: draft the word after next with the Over-Decoding head "
              "(a model trained with --od-weight) and verify it in the next pass; the same text when greedy")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--threads", type=int, default=1, show_default=True,
              help="CPU threads for the model (one word at a time: 1 is usually fastest; 0: torch's default)")
@click.option("--search", type=click.Choice(["pruned", "full"]), default="pruned", show_default=True,
              help="dictionary decode: score only the words that can matter, or every word (for checks)")
@friendly
def generate(args, prompt_file, max_new_tokens, temperature, top_k, top_p, seed, num_samples, stop, spell, spell_below,
             ignore_eot, no_cache, no_echo, draft, device, threads, search):
    """Continue a prompt with a trained model, streaming the text to stdout.

    MODEL is a run directory (its final/ checkpoint, else its newest), a checkpoint directory, or left out for the
    bundled model; PROMPT is text, or - for stdin (or --prompt-file). One argument is the prompt unless
    --prompt-file is given. Progress, the seed and the words/s go to stderr."""
    from tfree_codec.decode.sampling import Sampling
    from tfree_codec.generate import LanguageModel, timed, torch_threads
    from tfree_codec.generate.language_model import SPELL_BELOW
    from tfree_codec.generate.speculative import DraftStats

    model, prompt = _model_and_prompt(args, prompt_file)
    if num_samples < 1:
        raise TfreeError("--num-samples must be at least 1")
    if threads < 0:
        raise TfreeError(f"--threads must be at least 0 (0: torch's default), not {threads}")
    if spell_below is not None and not math.isfinite(spell_below):  # nan compares false: --spell would never spell
        raise TfreeError(f"--spell-below must be a finite number, not {spell_below}")
    seed = secrets.randbits(31) if seed is None else seed
    sampling = Sampling(temperature, top_k, top_p, seed, stop, max_new_tokens, not ignore_eot,
                        spell_below if spell else None)
    if draft and spell and not sampling.greedy:
        raise TfreeError("--draft samples from the dictionary alone: it does not combine with --spell (greedy does)")
    lm = LanguageModel.load(model, device)
    if lm.mode == "tfree":  # how the dictionary is read (a BPE head has no dictionary)
        lm.vocabulary.search = search
        if spell and spell_below is None:  # the threshold is in the units of the model's score
            sampling = dataclasses.replace(sampling, spell_below=SPELL_BELOW[lm.vocabulary.calibration.score])
    if draft and not getattr(lm.model.config, "od", False):
        raise TfreeError(f"--draft needs a model with an Over-Decoding head (trained with --od-weight); {lm.path} has none")
    p = lm.model.num_params()
    click.echo(f"model {lm.path}: {lm.mode}, {p['total'] / 1e6:.2f}M parameters, {lm.vocabulary.describe()}, "
               f"on {next(lm.model.parameters()).device}", err=True)
    unit = lm.vocabulary.unit
    for k in range(num_samples):
        if num_samples > 1:  # on stdout, between the samples, so that a file of them can be split again
            _out(f"--- sample {k + 1}/{num_samples} (seed {seed + k})\n")
        stats = DraftStats()
        pieces = lm.stream(prompt, dataclasses.replace(sampling, seed=seed + k), use_cache=not no_cache,
                           draft=stats if draft else False)
        if not no_echo:
            _out(prompt)
        with torch_threads(threads or None):
            r = timed(pieces, lambda piece: _out(piece.text))
        _out("\n")
        # the first word also reads the prompt and, once per process, compiles the kernels: the rate is the rest's
        steady = max(r["seconds"] - r["first_seconds"], 1e-9)
        rate = f"{(r['items'] - 1) / steady:.1f} {unit}/s after the first" if r["items"] > 1 else "-"
        click.echo(f"{r['items']} {unit}, {r['bytes']:,} bytes in {r['seconds']:.2f} s (first {unit[:-1]} after "
                   f"{r['first_seconds']:.2f} s): {rate} | seed {seed + k} | stopped: {r['finish']}", err=True)
        if draft:
            click.echo(f"drafts: {stats.accepted} of {stats.drafted} kept ({stats.rate:.1%} second-word acceptance)"
                       if stats.drafted else "drafts: none judged", err=True)


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), callback=local_dir,
              help="new checkpoint directory")
@click.option("--min-count", type=int, default=1, show_default=True,
              help="T-FREE: keep the dictionary words seen at least this often in training")
@click.option("--half", is_flag=True, help="store the weights as float16 (half the size; loaded as float32)")
@friendly
def export(checkpoint, out_dir, min_count, half):
    """Copy CHECKPOINT (or a run directory's final/) for generation only: no optimizer state, optionally a smaller
    dictionary or float16 weights. The result loads like any checkpoint (tfree generate, tfree eval)."""
    from tfree_codec.generate import export as export_checkpoint

    path = export_checkpoint(checkpoint, out_dir, min_count=min_count, half=half)
    size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    click.echo(f"exported {path}: {size / 1e6:.1f} MB", err=True)


def _model_and_prompt(args, prompt_file):
    if len(args) > 2:
        raise TfreeError(f"expected [MODEL] [PROMPT], got {len(args)} arguments (quote the prompt)")
    if prompt_file is not None:
        if len(args) > 1:
            raise TfreeError("give the prompt as an argument or with --prompt-file, not both")
        return (args[0] if args else None), read_text(prompt_file)
    if not args:
        raise TfreeError("no prompt: give one as an argument, - for stdin, or --prompt-file")
    model, prompt = (None, args[0]) if len(args) == 1 else args
    if not_utf8(prompt):  # the model is a path (any bytes); the prompt is text
        raise TfreeError(f"the prompt {not_utf8(prompt)}")
    if prompt == "-":
        prompt = read_text("-")
    if not prompt:
        raise TfreeError("the prompt is empty")
    return model, prompt


@click.command()
@click.option("-o", "--out", "out_dir", default="tfree-quickstart", show_default=True, type=click.Path(file_okay=False),
              callback=local_dir,
              help="where the sample, shards and run go")
@click.option("--steps", type=int, default=None, help="training steps  [default: about a minute and a half on 2 cores]")
@click.option("--prompt", default=None, type=TEXT, help="prompt of the closing sample")
@click.option("--seed", type=int, default=0, show_default=True, help="training and sampling seed")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="cpu", show_default=True)
@click.option("--overwrite", is_flag=True, help="replace an earlier quickstart in OUT")
@friendly
def quickstart(out_dir, steps, prompt, seed, device, overwrite):
    """Encode the bundled public-domain sample, train a tiny T-FREE model on it and generate from it: the whole
    flow in one command, in a few minutes on a laptop CPU. Says where everything went."""
    from . import quickstart as qs

    kw = {k: v for k, v in (("steps", steps), ("prompt", prompt)) if v is not None}
    r = qs.run(out_dir, seed=seed, device=device, overwrite=overwrite, log=lambda m: click.echo(m, err=True),
               write=_out, progress=show_progress(False), **kw)
    click.echo("", err=True)
    click.echo(f"sample text: {r['sample']}\nshards:      {r['shards']}\nrun:         {r['run']}\n"
               f"checkpoint:  {r['checkpoint']}  (validation {r['val_bpb']:.3f} bits per byte)", err=True)
    for name, what in (("log.jsonl", "loss and bits per byte, a line per logged step"),
                       ("plot.png", "validation bits per byte and loss against text seen")):
        if os.path.isfile(os.path.join(r["run"], name)):
            click.echo(f"{name + ':':<12} {os.path.join(r['run'], name)}  ({what})", err=True)
    click.echo(f"next: tfree generate {os.path.relpath(r['run'])} \"Emma\"  |  tfree generate \"It is a truth\" "
               "(the bundled model, trained longer)", err=True)
