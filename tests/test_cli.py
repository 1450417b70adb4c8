"""The `tfree` command: inspect and stats, and one clear line (never a traceback) for bad input."""
import json
import subprocess
import sys

import pytest

from conftest import cli as run



def test_version():
    r = run("--version")
    assert r.exit_code == 0 and "tfree, version" in r.output


def test_inspect_text_and_json():
    r = run("inspect", "Hello, world!")
    assert r.exit_code == 0
    assert "4 words" in r.output and "'Hello'" in r.output
    r = run("inspect", "--json", "-", input="pi is 3.14")
    data = json.loads(r.output)
    assert data["words"] == ["pi", "is", "<|ws|>", "3", ".", "1", "4"]
    assert len(data["patterns"]) == 7 and len(data["offsets"]) == 7


def test_inspect_with_codec_file(tmp_path):
    assert run("inspect", "--vocab-size", "16384", "x").exit_code == 0
    from tfree_codec import CodecConfig
    CodecConfig(vocab_size=1024).save(tmp_path / "codec.json")
    data = json.loads(run("inspect", "--json", "--codec", str(tmp_path / "codec.json"), "word").output)
    assert max(max(p) for p in data["patterns"]) < 1024


def test_stats(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one two three. four\n", encoding="utf-8")
    r = run("stats", str(f))
    assert r.exit_code == 0
    assert "20 bytes" in r.output and "6 words" in r.output and "MB/s" in r.output


@pytest.mark.parametrize("args, content, message", [
    (["stats", "{f}"], b"\xff\xfe not utf-8", "not valid UTF-8"),
    (["stats", "{f}"], b"", "empty input"),
    (["stats", "{missing}"], None, "no such file"),
    (["inspect", "--vocab-size", "1000", "x"], None, "power of two"),
    (["inspect", "--hash", "md4", "x"], None, "Invalid value"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, args, content, message):
    f = tmp_path / "in.txt"
    if content is not None:
        f.write_bytes(content)
    args = [a.format(f=f, missing=tmp_path / "missing.txt") for a in args]
    r = run(*args)
    assert r.exit_code != 0
    assert message in r.output
    assert "Traceback" not in r.output


def test_installed_console_script_reports_errors_without_traceback(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xc3\x28")
    r = subprocess.run([sys.executable, "-m", "tfree_cli", "stats", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["Error: input is not valid UTF-8 (invalid continuation byte at byte 0)"]


def test_ctrl_c_while_the_commands_load_is_one_line():
    # Ctrl-C arrives just as the entry point starts importing the commands (numba, a second or more when busy)
    script = """
import builtins, os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal, even when the suite runs in the background
import tfree_cli.entry as entry
sys.argv = ["tfree", "--version"]
real_import = builtins.__import__
def interrupting_import(name, *args, **kwargs):
    if name == "main":  # `from .main import main` in entry.run
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupting_import
entry.run()
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (130, "", "interrupted\n")
