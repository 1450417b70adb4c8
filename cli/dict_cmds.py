"""``tfree dict build|info|neighbours``: the word dictionary a decoder ranks (tfree_codec.decode.dictionary)."""
from __future__ import annotations

import json
import os
import time

import click

from tfree_codec import TfreeError

from .common import TEXT, codec_options, friendly, local_dir, make_codec, show_progress


@click.group("dict")
def dict_group() -> None:
    """Build and inspect word dictionaries (words, counts and activation patterns)."""


def _codec_given(codec_kw: dict) -> bool:
    """Whether any codec flag differs from its default (shard inputs bring their own codec)."""
    ctx = click.get_current_context()
    return any(ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT for k in codec_kw)


@dict_group.command("build")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False), callback=local_dir,
              help="dictionary file (.arrow)")
@click.option("--min-count", type=int, default=1, show_default=True, help="keep words seen at least this often")
@click.option("--max-words", type=int, default=None, help="keep at most this many words (marker words come extra)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@codec_options
@friendly
def build(inputs, out_path, min_count, max_words, quiet, **codec_kw):
    """Count the words of INPUTS (UTF-8 text files, or shard directories from `tfree encode`) and write the
    dictionary: the marker words, then the words by falling count."""
    from tfree_codec.decode.dictionary import Dictionary
    from tfree_codec.decode.index import warm

    for p in inputs:
        if not os.path.exists(p):
            raise TfreeError(f"cannot read {p!r}: no such file or directory")
    codec = make_codec(**codec_kw) if _codec_given(codec_kw) or not any(os.path.isdir(p) for p in inputs) else None
    t0 = time.perf_counter()
    d = Dictionary.from_files(inputs, codec, min_count=min_count, max_words=max_words, progress=show_progress(quiet))
    d.save(out_path)
    warm(out_path, d.codec)  # the decoder's index, cached now: the first generation from it starts at once
    click.echo(f"{out_path}: {len(d):,} words ({len(d.indices):,} active rows), codec {d.fingerprint()}, "
               f"{time.perf_counter() - t0:.1f} s")


@dict_group.command("info")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
@click.option("--top", type=int, default=10, show_default=True, help="show the most frequent words")
@friendly
def info(path, as_json, top):
    """Sizes, codec, pattern statistics and collisions (words with identical patterns) of a dictionary."""
    from tfree_codec.decode.dictionary import Dictionary

    d = Dictionary.load(path)
    i = d.info()
    if as_json:
        click.echo(json.dumps(i, ensure_ascii=False))
        return
    c = d.config
    click.echo(f"{path}: {i['words']:,} words ({i['markers']} markers), {os.path.getsize(path):,} bytes")
    click.echo(f"codec {i['fingerprint']}: v={c.vocab_size} m={c.num_activations} k_lower={c.k_lower} hash={c.hash}")
    click.echo(f"active rows: {i['active']:,} ({i['rows_per_word_mean']:.1f} per word, max {i['rows_per_word_max']})")
    click.echo(f"counted words: {i['total_count']:,}; collisions: {i['collisions']} words share another's pattern")
    for g in d.collisions()[:5]:
        click.echo("  same pattern: " + " ".join(repr(w) for w in g))
    words = [w for w in d.words[16:16 + top]]
    if words:
        click.echo("most frequent: " + " ".join(f"{w!r}:{d.counts[d.index(w)]}" for w in words))


@dict_group.command("neighbours")
@click.argument("path", type=click.Path())
@click.argument("word", type=TEXT)
@click.option("-k", type=int, default=10, show_default=True, help="how many neighbours")
@friendly
def neighbours(path, word, k):
    """The words whose patterns overlap WORD's most (Jaccard): collisions and morphology. WORD need not be in
    the dictionary."""
    from tfree_codec.decode.dictionary import Dictionary

    if k < 1:
        raise TfreeError("-k must be at least 1")
    d = Dictionary.load(path)
    i = d.index(word)
    n = len(d.pattern(i)) if i >= 0 else len(d.codec.encode_words([word])[1])
    click.echo(f"{word!r}: {'id ' + str(i) if i >= 0 else 'not in the dictionary'}, {n} rows")
    for w, shared, jac in d.neighbours(word, k):
        click.echo(f"  {jac:6.3f}  {shared:4d} shared  {w!r}")
