"""``tfree inspect`` and ``tfree stats``: look at how text becomes words and patterns."""
from __future__ import annotations

import json
import os
import sys
import time

import click

from tfree_codec import Codec, CodecConfig, TfreeError
from tfree_codec.assets import sample_text

from .main import friendly, main


def codec_options(fn):
    """Codec flags shared by every command that makes patterns; ``--codec codec.json`` overrides them."""
    d = CodecConfig.__dataclass_fields__
    opts = [
        click.option("--codec", "codec_path", type=click.Path(dir_okay=False), help="codec.json to use (overrides the flags below)"),
        click.option("--vocab-size", "-v", type=int, default=d["vocab_size"].default, show_default=True, help="activation rows v"),
        click.option("--num-activations", "-m", type=int, default=d["num_activations"].default, show_default=True, help="rows per trigram m"),
        click.option("--k-lower", type=int, default=d["k_lower"].default, show_default=True, help="rows shared with the lower-cased trigram"),
        click.option("--hash", "hash_family", type=click.Choice(["tfree", "aleph"]), default="tfree", show_default=True),
        click.option("--seed-hash", type=int, default=0, show_default=True, help="seed of the tfree hash family"),
        click.option("--max-word-chars", type=int, default=d["max_word_chars"].default, show_default=True),
        click.option("--segmenter", type=click.Choice(["icu", "none"]), default="icu", show_default=True),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def make_codec(codec_path, vocab_size, num_activations, k_lower, hash_family, seed_hash, max_word_chars, segmenter) -> Codec:
    if codec_path:
        return Codec.from_file(codec_path)
    return Codec(CodecConfig(vocab_size=vocab_size, num_activations=num_activations, k_lower=k_lower,
                             hash=hash_family, seed=seed_hash, max_word_chars=max_word_chars, segmenter=segmenter))


def read_text(path: str) -> str:
    """A file's (or stdin's, for ``-``) text, strictly UTF-8."""
    data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    return data.decode("utf-8")


@main.command()
@click.argument("text", required=False)
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


@main.command()
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--sample", is_flag=True, help="also measure the bundled public-domain English sample (1.5 MB)")
@codec_options
@friendly
def stats(files, sample, **codec_kw):
    """Bytes, words, words per whitespace word, distinct words, the longest word and MB/s for each FILE."""
    if not files and not sample:
        raise TfreeError("give one or more FILEs (or - for stdin), or --sample")
    codec = make_codec(**codec_kw)
    codec.encode("warm up 日本")  # load the compiled kernels and ICU before the clock starts
    for path in files + (("<sample>",) if sample else ()):
        if path not in ("-", "<sample>") and not os.path.isfile(path):
            raise TfreeError(f"cannot read {path!r}: no such file")
        text = sample_text() if path == "<sample>" else read_text(path)
        if not text:
            raise TfreeError(f"{path}: empty input")
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
