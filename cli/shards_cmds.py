"""``tfree encode`` (datasets -> Arrow shards) and ``tfree shards info|verify|cat|index`` (format: docs/shards.md)."""
from __future__ import annotations

import json
import os
import re
import sys

import click

from tfree_codec import TfreeError

from .common import TEXT, codec_options, friendly, local_dir, make_codec, show_progress

_SIZE = re.compile(r"(?i)^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$")


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def parse_size(text: str) -> int:
    """``4MB`` -> 4000000, ``4MiB`` -> 4194304, ``1024`` -> 1024."""
    m = _SIZE.match(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a size (e.g. 4MB, 512KiB, 1000000)")
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * (1024 if m.group(3) else 1000) ** power)


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), callback=local_dir,
              help="shard directory")
@click.option("--split", type=click.Choice(["none", "lines", "paragraphs"]), default="none", show_default=True,
              help="plain text: the whole file is one document, or one per line / blank-line paragraph")
@click.option("--text-column", default="text", type=TEXT, show_default=True, help="JSONL field / Parquet or Arrow column")
@click.option("--format", "fmt", type=click.Choice(["auto", "text", "jsonl", "parquet", "arrow"]), default="auto",
              show_default=True, help="input format (auto: by extension; stdin is text)")
@click.option("--num-proc", type=int, default=None,
              help="processes (one encodes on all cores' threads)  [default: one per 512 MB of input, up to the cores]")
@click.option("--docs-per-shard", type=int, default=None, help="documents per shard (instead of --shard-bytes)")
@click.option("--shard-bytes", default="2MiB", show_default=True, help="UTF-8 text per shard")
@click.option("--overwrite", is_flag=True, help="replace shards of another codec or input in OUT")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@codec_options
@friendly
def encode(inputs, out_dir, split, text_column, fmt, num_proc, docs_per_shard, shard_bytes, overwrite, quiet,
           **codec_kw):
    """Encode INPUTS (files, directories, globs, - for stdin; .txt/.jsonl/.parquet/.arrow, optionally .gz/.xz/.zst;
    datasets save_to_disk folders) into Arrow shards in OUT. Rerun the same command to resume after an interruption."""
    from tfree_codec.shards.writer import encode_to_shards

    if num_proc is not None and num_proc < 1:
        raise TfreeError("--num-proc must be at least 1")
    codec = make_codec(**codec_kw)
    s = encode_to_shards(inputs, out_dir, codec.config, split=split, text_column=text_column, fmt=fmt,
                         num_proc=num_proc, overwrite=overwrite, docs_per_shard=docs_per_shard,
                         shard_bytes=parse_size(shard_bytes), progress=show_progress(quiet))
    if s["up_to_date"]:
        click.echo(f"{out_dir} is up to date: {_n(s['documents'], 'document')}, {_n(s['shards'], 'shard')}", err=True)
        return
    mb, dt = s["utf8_bytes"] / 1e6, s["seconds"]
    resumed = f", {s['resumed']} resumed" if s["resumed"] else ""
    resumed += f", {_n(s['damaged'], 'damaged shard')} re-encoded" if s.get("damaged") else ""
    click.echo(f"encoded {_n(s['documents'], 'document')} ({_n(s['words'], 'word')}, {mb:,.1f} MB) into "
               f"{_n(s['shards'], 'shard')} in {out_dir}{resumed}: {dt:.1f} s, {s['documents'] / dt:,.0f} docs/s, {mb / dt:.2f} MB/s", err=True)


@click.group()
def shards() -> None:
    """Look at and check shard directories made by tfree encode."""


@shards.command()
@click.argument("directory", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="the manifest as JSON")
@friendly
def info(directory, as_json):
    """Documents, words, bytes, codec and files of a shard DIRECTORY (checks manifest, codec and sizes)."""
    from tfree_codec.shards.reader import ShardDataset

    ds = ShardDataset(directory)
    m = ds.manifest
    if as_json:
        click.echo(json.dumps(m, indent=1, ensure_ascii=False))
        return
    size = sum(s["size"] + s["lexicon_size"] for s in m["shards"]) + m["lexicon"]["size"]
    c = ds.config
    click.echo(f"{directory}: {_n(len(ds), 'document')}, {_n(ds.num_words, 'word')}, {ds.num_bytes / 1e6:,.2f} MB of "
               f"text, {_n(ds.num_shards, 'shard')} ({size / 1e6:,.1f} MB on disk, "
               f"{size / max(ds.num_bytes, 1):.2f}x the text)")
    click.echo(f"codec {c.fingerprint()}: v={c.vocab_size} m={c.num_activations} k_lower={c.k_lower} hash={c.hash}; "
               f"format {m['format_version']}; lexicon {_n(len(ds.lexicon_words), 'word')}; "
               f"split={m.get('options', {}).get('split', '?')}")
    for s in m["shards"]:
        src = _sources(s.get("sources"))
        click.echo(f"  {s['file']}  {s['documents']:>9,} docs {s['words']:>11,} words {s['lexicon_words']:>9,} distinct "
                   f"{(s['size'] + s['lexicon_size']) / 1e6:>9,.2f} MB  {src}")


def _shown(name) -> str:
    """A name read from a file, as one piece of one line: quoted and escaped when it holds a newline or any other
    character that is not printable (a manifest could otherwise forge output lines)."""
    name = str(name)
    return name if name.isprintable() else ascii(name)


def _sources(sources) -> str:
    """``input[start:stop]`` of each source a manifest lists for a shard (nothing there is trusted to be tidy)."""
    if not isinstance(sources, list):
        return "" if sources is None else _shown(sources)
    return ", ".join(f"{_shown(x.get('input'))}[{_shown(x.get('start'))}:{_shown(x.get('stop'))}]"
                     if isinstance(x, dict) else _shown(x) for x in sources)


@shards.command()
@click.argument("directory", type=click.Path())
@friendly
def verify(directory):
    """Re-hash every shard of DIRECTORY (sha256) and check it against the manifest; exit 1 on any mismatch."""
    from tqdm.auto import tqdm

    from tfree_codec.shards.reader import ShardDataset

    ds = ShardDataset(directory)
    with tqdm(total=ds.num_shards, desc="verify", unit="shard", leave=False, disable=None) as bar:
        r = ds.verify(progress=lambda k: bar.update(1))
    click.echo(f"{os.path.normpath(directory)}: OK, {_n(r['shards'], 'shard')}, {_n(r['documents'], 'document')}, "
               f"{_n(r['words'], 'word')} verified")


@shards.command()
@click.argument("directory", type=click.Path())
@click.option("--sep", default="\n", type=TEXT, show_default="a newline", help="written after each document")
@friendly
def cat(directory, sep):
    """Write the exact text of DIRECTORY's documents to stdout, in id order, each followed by SEP."""
    from tfree_codec.shards.reader import ShardDataset

    ds = ShardDataset(directory)
    out = sys.stdout.buffer
    sep_bytes = sep.encode("utf-8")
    try:
        for k in range(ds.num_shards):
            out.write(b"".join(t.encode("utf-8") + sep_bytes for t in ds.texts(k)))
        out.flush()
    except BrokenPipeError:  # `tfree shards cat DIR | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@shards.command()
@click.argument("directory", type=click.Path())
@codec_options
@friendly
def index(directory, **codec_kw):
    """Write the manifest (and lexicon.arrow, codec.json, README.md) of the shards in DIRECTORY, written by
    write_part from Ray, Spark or datasets.map without finish_parts, or whose manifest was lost. Every shard is
    checked in full; foreign or damaged files are refused. The codec flags are needed only without codec.json."""
    from tqdm.auto import tqdm

    from tfree_codec.shards.index import index_shards

    ctx = click.get_current_context()
    given = any(ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT for k in codec_kw)
    config = make_codec(**codec_kw).config if given or not os.path.isfile(os.path.join(directory, "codec.json")) \
        else None
    with tqdm(desc="index", unit="shard", leave=False, disable=None) as bar:
        r = index_shards(directory, config, progress=lambda k: bar.update(1))
    m = r["manifest"]
    state = "up to date" if r["up_to_date"] else "indexed"
    click.echo(f"{os.path.normpath(directory)}: {state}, {_n(len(m['shards']), 'shard')}, "
               f"{_n(m['documents'], 'document')}, {_n(m['words'], 'word')}, lexicon {_n(m['lexicon']['words'], 'word')}")
