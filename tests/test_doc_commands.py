"""Every shell command in README.md and docs/*.md runs as written from a fresh clone: this test extracts the fenced
``bash``/``sh`` blocks (and ``$ `` lines of plain blocks, whose printed output must match too) and runs them, in
order, each document in a fresh directory of its own, holding only the input files the docs assume a user has
(``corpus.jsonl``, ``notes.txt``, ... made below from the bundled sample).

Covered: README.md, docs/generate.md, docs/training.md, docs/shards.md (and any block added to docs/ later: a new
command runs unless SKIP names it). docs/shards.md is being rewritten with the new shard format (issue 13's
sibling work): if its commands change, this test says which one fails.

What is not run is listed in SKIP, each with why (a venv and a network install, ../shared data, minutes of
training, several processes). Training commands of docs/training.md run SHRUNK: the same command with a few steps
of a tiny model (the replacements are listed), so that every option they use is checked.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import cli

pytestmark = pytest.mark.slow  # the docs' commands train, convert and evaluate models
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]

# (document, a piece of the command) -> why it is not run here
SKIP = {
    ("README.md", "python3 -m venv .venv"): "makes a venv and installs torch from the network (minutes); the suite runs in one",
    ("README.md", "pip install -e ."): "installs into the running venv; .ci/codec-only makes this install in a venv of its own",
    ("README.md", "pip install -e \".[train]\""): "installs torch from the network; the suite's venv has [test], which holds [train]",
    ("docs/generate.md", "tfree generate runs/austen"): "needs runs/austen, a run trained for minutes (the recipe below)",
    ("docs/generate.md", "tfree quickstart"): "about 2 minutes of training; tests/test_generate.py runs quickstart.run with 2 steps",
    ("docs/generate.md", "mkdir -p austen"): "the bundled model's recipe: ../shared data and ~30 CPU minutes of training",
    ("docs/generate.md", "../../shared/data/english_prose.txt.xz"): "the recipe: reads ../shared (the corpora beside a clone, not in it)",
    ("docs/generate.md", "austen-shards"): "the recipe: trains for minutes on the ../shared text",
    ("docs/generate.md", "tfree export run-tfree"): "the recipe: needs its trained run",
    ("docs/generate.md", "tfree eval bundled-model"): "the recipe: needs its trained run and held-out text",
    ("docs/generate.md", "tfree eval run-bpe/final"): "the recipe: needs its trained run and held-out text",
    ("docs/hf.md", "pip install torch==2.13.0"): "installs torch and transformers from the network; the suite's venv has [test], which holds [hf]",
    ("docs/training.md", "torchrun"): "4 processes on 1 GB of text",
}
# docs/training.md's training commands, shrunk to seconds (everything else about them runs as written)
SHRINK = [("--max-bytes 50MB", "--max-steps 3 --batch-size 2 --n-layer 1 --val-bytes 4KB --log-every 1 -q"),
          ("--preset small", "--preset tiny"), ("--eval-every 500", "--eval-every 2"),
          ("--save-every 1000", "--save-every 1"), ("--bpe-vocab 32000", "--bpe-vocab 400")]
YAML_SHRINK = [("max_bytes: 50MB", "max_steps: 3\nbatch_size: 2\nn_layer: 1\nval_bytes: 4KB\nlog_every: 1"),
               ("preset: small", "preset: tiny"), ("eval_every: 500", "eval_every: 2"), ("save_every: 1000", "save_every: 1")]


def blocks(path: str):
    """[(command, expected output or None)] of a markdown file, in order."""
    text = open(os.path.join(ROOT, path), encoding="utf-8").read()
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        lang, body = m.group(1), m.group(2)
        if lang in ("bash", "sh", "shell"):
            for line in body.replace("\\\n", " ").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    out.append((line.strip(), None))
        elif lang == "" and body.startswith("$ "):
            for chunk in re.split(r"^\$ ", body, flags=re.M)[1:]:
                cmd, _, shown = chunk.partition("\n")
                out.append((cmd.strip(), shown))
    return out


def _skip(doc: str, cmd: str) -> str | None:
    return next((why for (d, piece), why in SKIP.items() if d == doc and piece in cmd), None)


def _inputs(d: str) -> None:
    """The files the docs assume a user brings, made from the bundled sample."""
    import zstandard

    from tfree_codec.assets import sample_text

    text = sample_text(120_000)
    docs = [text[i:i + 2000] for i in range(0, len(text), 2000)]
    with open(os.path.join(d, "corpus.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in docs[:-6])
    with open(os.path.join(d, "heldout.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in docs[-6:])
    os.makedirs(os.path.join(d, "corpus"))
    for k in range(3):
        with open(os.path.join(d, "corpus", f"part{k}.txt"), "w", encoding="utf-8") as f:
            f.write("\n\n".join(docs[10 * k:10 * k + 10]))
    with open(os.path.join(d, "data.jsonl.zst"), "wb") as f:
        f.write(zstandard.ZstdCompressor().compress("".join(json.dumps({"body": t}) + "\n" for t in docs[:8]).encode()))
    with open(os.path.join(d, "notes.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(docs[:5]))
    with open(os.path.join(d, "prompt.txt"), "w", encoding="utf-8") as f:
        f.write("It is a truth")
    # docs/training.md's config file, as a user saves it from the page, shrunk as its training commands are
    body = re.search(r"^```yaml\n(.*?)^```", open(os.path.join(ROOT, "docs", "training.md"), encoding="utf-8").read(),
                     re.S | re.M).group(1)
    for a, b in YAML_SHRINK:
        body = body.replace(a, b)
    with open(os.path.join(d, "small.yaml"), "w", encoding="utf-8") as f:
        f.write(body)


def test_every_skip_names_a_command_that_exists():
    found = {(doc, piece) for doc in DOCS for cmd, _ in blocks(doc) for (d, piece) in SKIP if d == doc and piece in cmd}
    assert found == set(SKIP), set(SKIP) - found


def _simple_tfree(cmd: str):
    """The arguments of a plain ``tfree ...`` command (no pipe, redirect, glob or variable; a trailing comment
    dropped), else None."""
    try:
        words = shlex.split(cmd, comments=True)
    except ValueError:
        return None
    if words[:1] != ["tfree"] or any(re.search(r"[|&;<>$`*?(){}\\~]", w) for w in words):
        return None
    return words[1:]


@pytest.mark.parametrize("doc", DOCS)
def test_the_commands_of_a_doc_run_as_written(doc, tmp_path, monkeypatch):
    """Each command as a user types it: the first ``tfree`` command of a doc through the installed executable
    (bash, a fresh process), the other plain ones in this process (the same command, without paying torch's
    import again each time), anything with shell syntax through bash."""
    cmds = blocks(doc)
    if not cmds:
        pytest.skip(f"{doc} has no shell commands")
    _inputs(str(tmp_path))
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
           "OMP_NUM_THREADS": "1", "TFREE_NUM_THREADS": "1"}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFREE_NUM_THREADS", "1")
    ran, spawned = 0, False
    for cmd, shown in cmds:
        if _skip(doc, cmd):
            continue
        if doc == "docs/training.md":
            for a, b in SHRINK:
                cmd = cmd.replace(a, b)
        args = _simple_tfree(cmd)
        if args is not None and spawned:
            r = cli(*args)
            code, stdout, stderr = r.exit_code, r.stdout, r.stderr
        else:
            p = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            code, stdout, stderr = p.returncode, p.stdout, p.stderr
            spawned |= args is not None
        assert code == 0, f"{doc}: `{cmd}` failed:\n{stderr[-2000:]}"
        assert "Traceback" not in stderr, f"{doc}: `{cmd}`:\n{stderr[-2000:]}"
        if shown is not None:  # the doc prints what the command prints
            assert stdout.rstrip("\n") == shown.rstrip("\n"), f"{doc}: `{cmd}` printed:\n{stdout}"
        ran += 1
    if not ran:
        pytest.skip(f"{doc}: every command is in SKIP")


def test_the_readme_python_runs_as_written(tmp_path, monkeypatch, one_thread):
    """README.md's Python blocks, in order and in one namespace, in a folder holding what they assume a user has
    (shards/ of corpus.jsonl, made by `tfree encode`)."""
    from tfree_codec import CodecConfig
    from tfree_codec.shards.writer import encode_to_shards

    _inputs(str(tmp_path))
    encode_to_shards([str(tmp_path / "corpus.jsonl")], str(tmp_path / "shards"), CodecConfig(), num_proc=1,
                     progress=False)
    monkeypatch.chdir(tmp_path)
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    snippets = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert len(snippets) == 2
    ns = {}
    for code in snippets:
        exec(compile(code, "README.md", "exec"), ns)  # noqa: S102 - the README's own code
    assert ns["loss"].item() > 0 and len(ns["ds"]) > 0 and ns["codec"].join(ns["enc"].words) == "Hello, world!"
