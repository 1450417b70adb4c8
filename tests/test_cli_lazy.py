"""The CLI loads a command's module only when that command runs: `tfree --help` and `--version` import neither the
codec nor numba nor torch, the listed summaries are whole, and a Ctrl-C while a command loads is one line."""
import signal
import subprocess
import sys

import click
import pytest

import tfree_codec
from tfree_cli.main import COMMANDS, main


@pytest.mark.slow  # a tfree subprocess (quick: it imports no command)
def test_help_and_version_import_no_command():
    script = ("import sys; from tfree_cli.main import main\n"
              "for args in (['--help'], ['--version']):\n"
              "    try: main(args, prog_name='tfree')\n"
              "    except SystemExit: pass\n"
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'tfree_codec', 'numba', 'torch', 'numpy'}))")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    lines = r.stdout.splitlines()
    assert lines[-1] == "[]" and f"tfree, version {tfree_codec.__version__}" in lines
    assert all(f"  {name}" in r.stdout for name in COMMANDS)


def test_every_listed_command_loads_and_its_summary_is_whole():
    ctx = click.Context(main)
    for name, (_, _, summary) in COMMANDS.items():
        cmd = main.get_command(ctx, name)
        assert isinstance(cmd, click.Command) and cmd.name == name
        assert summary.endswith(".") and len(summary) <= 60 and "..." not in summary
    assert main.get_command(ctx, "nope") is None


def default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow  # a tfree subprocess
def test_ctrl_c_while_a_command_loads_is_one_line():
    script = """
import importlib, os, signal, sys
import tfree_cli.entry as entry
sys.argv = ["tfree", "inspect", "Hello"]
real = importlib.import_module
def interrupting(name, package=None):
    if name == ".codec_cmds":  # the command's module: numba and the codec, a second or more when busy
        os.kill(os.getpid(), signal.SIGINT)
    return real(name, package)
importlib.import_module = interrupting
entry.run()
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                       preexec_fn=default_sigint)  # even from a background job, where SIGINT is ignored
    assert (p.returncode, p.stdout, p.stderr) == (130, "", "interrupted\n")
