"""``tfree``: every command is a few lines over a library call; ``TfreeError`` becomes one line and exit 1."""
from __future__ import annotations

import functools
import sys

import click

import tfree_codec
from tfree_codec import TfreeError


def friendly(fn):
    """Turn library errors into click's one-line ``Error: ...`` and a non-zero exit, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TfreeError as e:
            raise click.ClickException(str(e)) from None
        except UnicodeDecodeError as e:
            raise click.ClickException(f"input is not valid UTF-8 ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise click.ClickException(f"{e.strerror or e}: {e.filename}" if e.filename else str(e)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(tfree_codec.__version__, prog_name="tfree")
def main() -> None:
    """tfree: a tokenizer-free text codec (T-FREE) for language models."""


# Command modules register themselves on `main` when imported (one module per stage of the flow).
from . import codec_cmds  # noqa: E402,F401  text -> words -> patterns: inspect, stats
from . import shards_cmds  # noqa: E402,F401  corpora -> Arrow shards: encode, shards info|verify
from . import train_cmds  # noqa: E402,F401  model: train, eval
from . import dict_cmds  # noqa: E402,F401  dictionaries: dict build|info|neighbours
from . import generate_cmds  # noqa: E402,F401  text from a model: generate, quickstart
# (more command modules are imported here)
