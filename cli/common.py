"""What every command module shares: errors as one line (``friendly``), the codec options, reading text."""
from __future__ import annotations

import functools
import io
import os
import re
import signal
import sys
import warnings

import click

from tfree_codec import Codec, CodecConfig, TfreeError
from tfree_codec.config import from_interrupt


def friendly(fn):
    """Turn library errors into click's one-line ``Error: ...`` and a non-zero exit, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _whole_stdout()
        old = _watch_sigint()
        old_hook, old_show = sys.unraisablehook, warnings.showwarning
        sys.unraisablehook = _interrupt_again(old_hook)
        warnings.showwarning = _one_line_warning
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
            if not from_interrupt(e):
                raise
            _interrupted()
        except Exception:
            # After a real Ctrl-C, what broke broke because of it: numba's compiler interrupted inside LLVM (the
            # interrupt swallowed by a C callback) raises RuntimeError "no compiled object yet" before the
            # re-delivered interrupt lands.
            if not _fired:
                raise
            _interrupted()
        finally:
            sys.unraisablehook, warnings.showwarning = old_hook, old_show
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


class _WholeWrites(io.RawIOBase):
    """stdout's file descriptor, where a write writes everything or raises. A BufferedWriter hands a large write
    straight to its raw file and returns what one write() took; click.echo and TextIOWrapper ignore that count, so
    on a full disk the rest was dropped silently and the command exited 0 (`tfree shards cat DIR > file`)."""

    def __init__(self, fd: int):
        super().__init__()
        self.fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def write(self, b) -> int:
        view, done = memoryview(b).cast("B"), 0
        try:
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OSError(e.errno, e.strerror, "<stdout>") from None
        return done


def _whole_stdout() -> None:
    """Put stdout (the real one: not a test's capture) on _WholeWrites, with its encoding and buffering."""
    out = sys.stdout
    if out is not sys.__stdout__:  # captured (tests), or already put on _WholeWrites
        return
    try:
        fd = out.fileno()
        out.flush()
    except (OSError, ValueError, AttributeError):
        return
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(_WholeWrites(fd)), encoding=out.encoding, errors=out.errors,
                                  line_buffering=out.line_buffering, write_through=getattr(out, "write_through", False))


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning as one line on stderr (Python's shows the file, the line number and the source line)."""
    click.echo(f"warning: {message}", err=True)


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


class Utf8Text(click.ParamType):
    """Text typed on the command line: strict UTF-8. Python turns argv bytes that are not UTF-8 into lone
    surrogates, which would be counted, hashed and written as something else than what was typed."""

    name = "text"

    def convert(self, value, param, ctx):
        problem = not_utf8(value)
        if problem:
            self.fail(problem, param, ctx)
        return value


def not_utf8(value) -> str | None:
    """Why ``value`` (a str from argv) is not the UTF-8 text typed, or None."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
        return None
    except UnicodeEncodeError:
        raw = os.fsencode(value)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"{value!r} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start})"
    return f"{value!r} is not valid UTF-8"


TEXT = Utf8Text()


def local_dir(ctx, param, value):
    """An output path, never a URL: ``-o file:///abs/dir`` would otherwise make ``./file:/abs/dir``."""
    if value is not None and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(value)):
        raise click.BadParameter(f"{value!r} is a URL: tfree writes to local paths only (give the path itself)")
    return value


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
