"""The rough edges a new user hits on the command line: `tfree ... | head` exits quietly, no progress bars when
stderr is not a terminal, `tfree generate`'s rate leaves out the first word (prompt and one-time compile)."""
import subprocess
import sys

import pytest
from conftest import cli
from tfree_codec.generate import BUNDLED_MODEL

DICT = f"{BUNDLED_MODEL}/dictionary.arrow"


@pytest.mark.slow
def test_a_closed_pipe_ends_the_command_quietly():
    p = subprocess.Popen([sys.executable, "-m", "tfree_cli", "dict", "neighbours", DICT, "the", "-k", "5000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = p.stdout.readline()
    p.stdout.close()  # as `| head -1` does
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0 and first.startswith(b"'the'")
    assert "Broken pipe" not in err and "Traceback" not in err and "Exception ignored" not in err, err


@pytest.mark.slow
def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 2000)
    r = subprocess.run([sys.executable, "-m", "tfree_cli", "dict", "build", str(text), "-o", str(tmp_path / "d.arrow")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "counting words" not in r.stderr and "\r" not in r.stderr  # the bar, had it been drawn


def test_generate_rates_the_words_after_the_first():
    r = cli("generate", "It is a truth", "-n", "6", "--seed", "0", "--device", "cpu", "--ignore-eot")
    assert r.exit_code == 0, r.output
    assert "(first word after" in r.stderr and "words/s after the first" in r.stderr
