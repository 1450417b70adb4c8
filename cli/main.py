"""``tfree``: the click group, assembled from one command module per stage of the flow.

A command's module (and with it numba, torch, the codec) is imported only when that command runs, is completed or
shows its own help: ``tfree --help`` and ``tfree --version`` import none of them. Every command is a few lines over
a library call; ``TfreeError`` becomes one line and exit 1 (``common.friendly``).
"""
from __future__ import annotations

import importlib

import click

from .loading import interrupts_end_quietly

# name -> (module, attribute, the summary `tfree --help` lists), in the order of the flow
COMMANDS = {
    "inspect": ("codec_cmds", "inspect", "Show the words, offsets and pattern sizes of a text."),
    "stats": ("codec_cmds", "stats", "Words, bytes per word and speed of files."),
    "encode": ("shards_cmds", "encode", "Encode corpora into Arrow shards (resumable)."),
    "shards": ("shards_cmds", "shards", "Look at, check, print or index shard directories."),
    "dict": ("dict_cmds", "dict_group", "Build and inspect word dictionaries."),
    "train": ("train_cmds", "train", "Train a T-FREE model (or its BPE baseline)."),
    "retok": ("retok_cmds", "retok", "Turn a trained BPE model into a T-FREE model."),
    "eval": ("train_cmds", "eval_", "Held-out bits per byte of a checkpoint."),
    "plot": ("train_cmds", "plot", "Draw the validation curves of runs side by side."),
    "generate": ("generate_cmds", "generate", "Continue a prompt with a model, word by word."),
    "serve": ("serve_cmds", "serve", "Serve a model with an OpenAI-compatible HTTP API."),
    "export": ("generate_cmds", "export", "Copy a checkpoint for generation only."),
    "quickstart": ("generate_cmds", "quickstart", "Encode, train and generate on the bundled sample."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (``COMMANDS``); the list in ``--help`` needs none."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        with interrupts_end_quietly():  # numba, the codec: a second or more
            return getattr(importlib.import_module(f".{module}", __package__), attr)

    def format_commands(self, ctx, formatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, _, summary) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tfree-codec", prog_name="tfree")  # read from the install: no import
def main() -> None:
    """tfree: a tokenizer-free text codec (T-FREE) for language models."""
