"""The package's shape: stages import one way (no cycles, between modules or sub-packages), `import tfree_codec`
never reaches torch, and no module grows past 500 lines. Read from the source with ast, so a lazy import inside a
function counts as an edge too: it would close the same loop at run time."""
from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"tfree_codec": os.path.join(ROOT, "tfree_codec"), "tfree_cli": os.path.join(ROOT, "cli")}
MAX_LINES = 500


def _modules() -> dict[str, str]:
    """dotted module name -> file, for both installed packages (cli/ installs as tfree_cli)."""
    out = {}
    for pkg, base in PACKAGES.items():
        for dirpath, _, files in os.walk(base):
            for f in files:
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), base)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join([pkg, *rel])] = os.path.join(dirpath, f)
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].endswith("__init__.py")


@functools.lru_cache(maxsize=None)
def _tree(name: str) -> ast.Module:
    return ast.parse(open(MODULES[name], encoding="utf-8").read())


@functools.lru_cache(maxsize=None)
def _imports(name: str, top_level_only: bool = False) -> frozenset[str]:
    """Every module `name` imports: project modules by dotted name, anything else by its top-level name."""
    tree = _tree(name)
    here = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if top_level_only and nested:
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.add(alias.name if alias.name in MODULES else alias.name.split(".")[0])
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = here.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                if target in MODULES:
                    subs = {f"{target}.{a.name}" for a in child.names} & MODULES.keys()  # `from pkg import module`
                    found.update(subs)
                    if len(subs) < len(child.names):  # a name defined in target itself
                        found.add(target)
                else:
                    found.add(target.split(".")[0])
            visit(child, nested)

    visit(tree, False)
    found.discard(name)
    return frozenset(found)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                found = dfs(v)
                if found:
                    return found
        state[u] = 2
        stack.pop()
        return None

    for u in sorted(graph):
        if u not in state:
            found = dfs(u)
            if found:
                return found
    return None


def _stage(name: str) -> str:
    """tfree_codec.decode.scorer -> tfree_codec.decode; top-level modules are stages of their own."""
    parts = name.split(".")
    return ".".join(parts[:2])


def test_the_finder_sees_the_known_edges():
    # the walker itself: a relative import, a `from pkg import module`, and a lazy import inside a function
    assert "tfree_codec.codec" in _imports("tfree_codec")
    assert "tfree_codec.text.words" in _imports("tfree_codec.codec")
    assert "tfree_codec.model.checkpoint" in _imports("tfree_codec.train.loop")
    assert "tfree_codec.decode.torch_decoder" in _imports("tfree_codec.decode.decoder")
    assert "tfree_codec.decode.torch_decoder" not in _imports("tfree_codec.decode.decoder", top_level_only=True)
    assert "torch" in _imports("tfree_codec.model.transformer")
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_modules():
    graph = {m: {t for t in _imports(m) if t in MODULES} for m in MODULES}
    assert _cycle(graph) is None


def test_no_import_cycle_between_stages():
    graph: dict[str, set[str]] = {}
    for m in MODULES:
        for t in _imports(m):
            if t in MODULES and _stage(t) != _stage(m):
                graph.setdefault(_stage(m), set()).add(_stage(t))
    assert _cycle(graph) is None
    assert not [m for m in MODULES if m.startswith("tfree_codec") and any(t.startswith("tfree_cli") for t in _imports(m))]


def _reachable(entry: str, top_level_only: bool = False) -> set[str]:
    """Every project module that importing ``entry`` can run (lazy imports inside functions too, unless
    ``top_level_only``)."""
    seen, todo = set(), [entry]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        todo += [t for t in _imports(m, top_level_only) if t in MODULES]
    return seen


@pytest.mark.parametrize("entry", ["tfree_codec", "tfree_codec.decode.dictionary", "tfree_codec.decode.decoder",
                                   "tfree_codec.shards.reader", "tfree_codec.shards.writer"])
def test_importing_the_codec_never_reaches_torch(entry):
    for m in _reachable(entry, top_level_only=True):
        assert "torch" not in _imports(m, top_level_only=True), f"{m} imports torch, reachable from {entry}"


def test_the_generate_stage_never_reaches_the_trainer():
    """Inference reads checkpoints; it never needs the trainer, not even lazily or through another module."""
    stage = [m for m in MODULES if m.startswith("tfree_codec.generate")]
    assert "tfree_codec.generate.language_model" in stage and "tfree_codec.generate.score" in stage
    for m in stage:
        assert not [t for t in _reachable(m) if t.startswith("tfree_codec.train")], m
    assert "tfree_codec.train.loop" in _reachable("tfree_cli.train_cmds")  # the walk does see the trainer


MAX_PARAMS = 8


def _kernel_or_command(node: ast.FunctionDef, jitted: set[str]) -> bool:
    """A numba kernel (decorated, or handed to ``njit(...)`` in its module) or a click command: their parameters
    are the arrays a kernel walks or the options a command line has."""
    names = {ast.unparse(d.func if isinstance(d, ast.Call) else d) for d in node.decorator_list}
    return node.name in jitted or any(n.split(".")[-1] in ("njit", "jit", "command", "group") for n in names)


def _params(node: ast.FunctionDef) -> int:
    a = node.args
    n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
    first = (a.posonlyargs + a.args)[:1]
    return n - (1 if first and first[0].arg in ("self", "cls") else 0)


def _long_signatures() -> list[str]:
    out = []
    for m in MODULES:
        tree = _tree(m)
        jitted = {arg.id for call in ast.walk(tree) if isinstance(call, ast.Call) and isinstance(call.func, ast.Call)
                  and ast.unparse(call.func.func).split(".")[-1] in ("njit", "jit")
                  for arg in call.args if isinstance(arg, ast.Name)}
        out += [f"{m}.{node.name} ({_params(node)})" for node in ast.walk(tree)
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _params(node) > MAX_PARAMS
                and not _kernel_or_command(node, jitted)]
    return out


def test_no_function_takes_more_than_8_parameters():
    """Settings travel as one object (Sampling, TrainConfig, EncodeOptions, Reading, ...), not as long lists."""
    assert not _long_signatures()
    # the check itself sees a long signature, and lets kernels and commands have theirs
    tree = ast.parse("def f(a, b, c, d, e, f, g, h, i): pass\n@njit\ndef k(a, b, c, d, e, f, g, h, i): pass\n"
                     "def m(self, a, b, c, d, e, f, g, h): pass")
    f, k, m = tree.body
    assert _params(f) == 9 and not _kernel_or_command(f, set()) and _kernel_or_command(k, set()) and _params(m) == 8


def test_no_module_over_500_lines():
    long = {m: n for m, f in MODULES.items() if (n := sum(1 for _ in open(f, encoding="utf-8"))) > MAX_LINES}
    assert not long


def test_every_stage_says_what_it_takes_and_hands_on():
    for m in MODULES:
        if _is_package(m) and m.count(".") == 1 and m.startswith("tfree_codec.") and m != "tfree_codec.assets":
            doc = ast.get_docstring(ast.parse(open(MODULES[m], encoding="utf-8").read()))
            assert doc and "takes" in doc.lower() and "hands on" in doc.lower(), m


def test_the_public_api_is_one_import_away_without_torch():
    code = ("import sys, tfree_codec; from tfree_codec import Codec, CodecConfig, Dictionary, Decoder; "
            "print('torch' in sys.modules, Dictionary.__module__, Decoder.__module__, 'load' in dir(tfree_codec)); "
            "tfree_codec.load; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "tfree_codec.decode.dictionary", "tfree_codec.decode.decoder", "True", "True"]


def test_load_generates_from_the_bundled_model():
    import tfree_codec
    from tfree_codec.generate import LanguageModel

    lm = tfree_codec.load(device="cpu")
    assert isinstance(lm, LanguageModel)
    a = lm.generate("It is a truth", max_new_tokens=5, seed=0)  # the continuation, without the prompt
    assert a.strip()
    assert a == LanguageModel.load(device="cpu").generate("It is a truth", max_new_tokens=5, seed=0)
