"""What every command module shares: errors as one line (``friendly``), the codec options, reading text."""
from __future__ import annotations

import functools
import signal
import sys

import click

from tfree_codec import Codec, CodecConfig, TfreeError


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
            _interrupted()
        except SystemError as e:  # Ctrl-C inside a numba kernel surfaces as "returned a result with an exception set"
            if not _from_interrupt(e):
                raise
            _interrupted()
    return wrapper


# What to say after Ctrl-C, by command: where a rerun picks up the work, say how.
RESUME_HINT = {"train": "interrupted; rerun the same command with --resume auto to resume from the last checkpoint",
               "encode": "interrupted; rerun the same command to resume"}


def _from_interrupt(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _interrupted():
    """One line and exit 130; a second Ctrl-C while exiting changes nothing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctx = click.get_current_context(silent=True)
    sys.stderr.write("\n" if getattr(sys.stderr, "isatty", lambda: False)() else "")
    click.echo(RESUME_HINT.get(ctx.info_name if ctx else "", "interrupted"), err=True)
    sys.exit(130)


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
