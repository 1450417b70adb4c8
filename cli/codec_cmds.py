"""``tfree inspect`` and ``tfree stats``: look at how text becomes words and patterns."""
from __future__ import annotations

import json
import os
import time

import click

from tfree_codec import TfreeError
from tfree_codec.codec import PYTHON_PATH_CHARS, load_kernels
from tfree_codec.assets import sample_text

from .common import TEXT, codec_options, friendly, make_codec, read_text


@click.command()
@click.argument("text", required=False, type=TEXT)
@click.option("--json", "as_json", is_flag=True, help="one JSON object: words, offsets and patterns")
@codec_options
@friendly
def inspect(text, as_json, **codec_kw):
    """Show the words, character offsets and pattern sizes of TEXT (or of stdin, for - or nothing)."""
    if text is None or text == "-":
        text = read_text("-")
    codec = make_codec(**codec_kw)
    enc = codec.encode(text)
    if as_json:
        click.echo(json.dumps({"fingerprint": codec.fingerprint(), "words": enc.words, "offsets": enc.offsets.tolist(),
                               "patterns": [enc.patterns(i).tolist() for i in range(len(enc))]}, ensure_ascii=False))
        return
    click.echo(f"{len(enc)} words, {len(text.encode('utf-8', 'surrogatepass'))} bytes, codec {codec.fingerprint()}")
    for i, w in enumerate(enc.words):
        s, e = enc.offsets[i]
        click.echo(f"{i:>5}  {s:>6}:{e:<6} {len(enc.patterns(i)):>4} rows  {w!r}")


@click.command()
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--sample", is_flag=True, help="also measure the bundled public-domain English sample (1.5 MB)")
@codec_options
@friendly
def stats(files, sample, **codec_kw):
    """Bytes, words, words per whitespace word, distinct words, the longest word and MB/s for each FILE.

    Files under 64k characters take the pure-Python path (nothing to load or compile: their MB/s is its speed)."""
    if not files and not sample:
        raise TfreeError("give one or more FILEs (or - for stdin), or --sample")
    codec = make_codec(**codec_kw)
    for path in files + (("<sample>",) if sample else ()):
        if path not in ("-", "<sample>") and os.path.isdir(path):
            raise TfreeError(f"cannot read {path!r}: it is a directory (give the files in it)")
        if path not in ("-", "<sample>") and not os.path.isfile(path):
            raise TfreeError(f"cannot read {path!r}: no such file")
        text = sample_text() if path == "<sample>" else read_text(path)
        if not text:
            raise TfreeError(f"{path}: empty input")
        if len(text) > PYTHON_PATH_CHARS:  # the kernels' path: load them (and ICU) before the clock starts
            load_kernels()
            codec.encode("warm up 日本")
        t0 = time.perf_counter()
        enc = codec.encode(text)
        dt = time.perf_counter() - t0
        n_bytes = len(text.encode("utf-8", "surrogatepass"))
        ws = len(text.split()) or 1
        lens = enc.offsets[:, 1] - enc.offsets[:, 0]
        text_words = enc.ids >= 16
        longest = int(lens[text_words].max()) if text_words.any() else 0
        distinct = len(set(enc.words))
        click.echo(f"{path}: {n_bytes:,} bytes | {len(enc):,} words | {len(enc) / ws:.3f} words per whitespace word | "
                   f"{n_bytes / max(len(enc), 1):.2f} bytes/word | {distinct:,} distinct | longest {longest} chars | "
                   f"{n_bytes / 1e6 / dt:.1f} MB/s")
