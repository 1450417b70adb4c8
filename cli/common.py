"""What every command module shares: errors as one line (``friendly``), the codec options, reading text."""
from __future__ import annotations

import functools
import os
import signal
import sys

import click

from tfree_codec import Codec, CodecConfig, TfreeError


def friendly(fn):
    """Turn library errors into click's one-line ``Error: ...`` and a non-zero exit, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        old = _watch_sigint()
        old_hook = sys.unraisablehook
        sys.unraisablehook = _interrupt_again(old_hook)
        try:
            out = fn(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows up here, inside the handler below, not at exit
            return out
        except TfreeError as e:
            raise click.ClickException(str(e)) from None
        except ModuleNotFoundError as e:
            raise click.ClickException(needs_extra(e)) from None
        except UnicodeDecodeError as e:
            raise click.ClickException(f"input is not valid UTF-8 ({e.reason} at byte {e.start})") from None
        except BrokenPipeError:  # before OSError, of which it is one
            _stdout_gone()
        except OSError as e:
            raise click.ClickException(f"{e.strerror or e}: {e.filename}" if e.filename else str(e)) from None
        except KeyboardInterrupt:
            _interrupted()
        except SystemError as e:  # Ctrl-C inside a numba kernel surfaces as "returned a result with an exception set"
            if not _from_interrupt(e):
                raise
            _interrupted()
        finally:
            sys.unraisablehook = old_hook
            if old is not None:
                signal.signal(signal.SIGINT, old)
    return wrapper


# An optional package -> the extra that installs it (pyproject.toml). The codec, shards and dictionaries need none.
EXTRAS = {"torch": "train", "safetensors": "train", "transformers": "hf", "accelerate": "hf", "tokenizers": "baseline",
          "matplotlib": "plot", "tensorboard": "tensorboard"}


def needs_extra(e: ModuleNotFoundError) -> str:
    """One line for a command that reached an optional package this install lacks; anything else is a bug and
    is raised again as it is."""
    top = (e.name or "").split(".")[0]
    if top not in EXTRAS:
        raise e
    ctx = click.get_current_context(silent=True)
    cmd = ctx.command_path if ctx else "this command"
    return f"{cmd} needs {top}, which is not installed: pip install 'tfree-codec[{EXTRAS[top]}]'"


def _interrupt_again(hook):
    """Ctrl-C that lands inside a C callback (llvmlite's JIT cache notifier while numba compiles) is swallowed
    there and printed as "Exception ignored ... Traceback". Say nothing and deliver it again a moment later, from
    another thread, so that it surfaces in Python code once the callback has returned (so cleanups run); the
    watchdog started by the first one still ends the process within a second."""
    import threading  # noqa: PLC0415

    def quiet(u):
        if _fired and isinstance(u.exc_value, KeyboardInterrupt):
            import _thread  # noqa: PLC0415

            t = threading.Timer(0.02, _thread.interrupt_main)
            t.daemon = True
            t.start()
        else:
            hook(u)
    return quiet


def _stdout_gone() -> None:
    """The reader of stdout went away (``tfree ... | head``): stop quietly, as ``yes | head`` does. stdout is
    pointed at /dev/null so that the interpreter's last flush does not raise again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (tests capture stdout)
        pass
    sys.exit(0)


def show_progress(quiet: bool) -> bool:
    """Progress bars only where someone watches: not with -q, and not when stderr is a file or a pipe."""
    return not quiet and sys.stderr.isatty()


# What to say after Ctrl-C, by command: where a rerun picks up the work, say how.
RESUME_HINT = {"train": "interrupted; rerun the same command with --resume auto to resume from the last checkpoint",
               "encode": "interrupted; rerun the same command to resume",
               "retok": "interrupted; rerun the same command with --resume auto to resume from the last checkpoint"}


def _from_interrupt(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


_said: list = []   # the interrupt line is written once
_fired: list = []  # a real SIGINT arrived (not a KeyboardInterrupt raised in-process)


def _interrupted():
    """One line and exit 130; a second Ctrl-C while exiting changes nothing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not _said:
        _said.append(True)
        ctx = click.get_current_context(silent=True)
        sys.stderr.write("\n" if getattr(sys.stderr, "isatty", lambda: False)() else "")
        click.echo(RESUME_HINT.get(ctx.info_name if ctx else "", "interrupted"), err=True)
    ctx = click.get_current_context(silent=True)
    if _fired:
        # a real Ctrl-C, and every cleanup has run on the way here (encode's workers are killed in its finally):
        # skip the interpreter's slow teardown (torch)
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:  # noqa: BLE001 - exiting anyway
                pass
        os._exit(130)
    sys.exit(130)


def _watch_sigint():
    """Ctrl-C raises KeyboardInterrupt as usual (so cleanups run) and also starts a watchdog (0.8 s): a library
    that swallows the exception (a bare ``except`` in a JIT cache loader) or slow interpreter teardown cannot keep
    the process alive. Returns the handler to put back (None where Ctrl-C is ignored or this is not the main thread)."""
    try:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return None  # ignored on purpose (nohup, a background job) or someone else's handler: leave it be
        return signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread
        return None


def _on_sigint(signum, frame):
    import threading  # noqa: PLC0415

    _fired.append(True)

    hint = RESUME_HINT.get(getattr(click.get_current_context(silent=True), "info_name", ""), "interrupted")

    def stop():
        if not _said:
            _said.append(True)
            os.write(2, (hint + "\n").encode())
        try:
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
        os._exit(130)

    t = threading.Timer(0.8, stop)
    t.daemon = True
    t.start()
    raise KeyboardInterrupt


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
