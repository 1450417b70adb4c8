"""``tfree``: the click group, assembled from one command module per stage of the flow.

Every command is a few lines over a library call; ``TfreeError`` becomes one line and exit 1 (``common.friendly``).
"""
from __future__ import annotations

import click

import tfree_codec

from .codec_cmds import inspect, stats  # text -> words -> patterns
from .dict_cmds import dict_group  # dictionaries: dict build|info|neighbours
from .generate_cmds import export, generate, quickstart  # text from a model
from .retok_cmds import retok  # a trained BPE model -> a T-FREE model (its body kept)
from .serve_cmds import serve  # a model behind an OpenAI-compatible HTTP API
from .shards_cmds import encode, shards  # corpora -> Arrow shards: encode, shards info|verify
from .train_cmds import eval_, plot, train  # model: train, eval, plot


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(tfree_codec.__version__, prog_name="tfree")
def main() -> None:
    """tfree: a tokenizer-free text codec (T-FREE) for language models."""


for _command in (inspect, stats, encode, shards, dict_group, train, eval_, plot, generate, export, quickstart):
    main.add_command(_command)
main.add_command(retok)
main.add_command(serve)
