"""The layers go one way (webui -> flows -> tasks -> t2sql), and the library has no import circle.

Both are read from the source with the AST, imports inside functions included, so a deferred
import cannot hide a circle or a dependency on an upper layer.
"""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import t2sql

ROOT = Path(__file__).resolve().parents[1]
UPPER_LAYERS = ("flows", "tasks", "webui", "deployments", "cli", "prefect", "flask")


def _modules() -> dict[str, Path]:
    mods = {}
    for path in (ROOT / "t2sql").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _imports(name: str, path: Path) -> set[str]:
    """Every module a module names in an import statement, at any depth in the file.

    ``from a.b import c`` names ``a.b.c`` when that is a module, else ``a.b``.
    """
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names]
            targets = [t for t in subs if _is_module(t)] or [base]
            if len(targets) < len(subs) and base not in targets:
                targets.append(base)  # names defined in the package itself
        else:
            continue
        found.update(targets)
    found.discard(name)
    return found


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_library_imports_no_upper_layer():
    bad = []
    for name, path in _modules().items():
        for target in _imports(name, path):
            if target.split(".")[0] in UPPER_LAYERS:
                bad.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not bad, bad


def test_library_has_no_import_circle():
    mods = _modules()
    graph = {name: {t for t in _imports(name, path) if t in mods and not t == "t2sql"}
             for name, path in mods.items()}
    assert "t2sql.inference.translator" in graph["t2sql.validation"]  # the graph is really read
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_importing_every_module_pulls_in_neither_prefect_nor_flask():
    modules = [m.name for m in pkgutil.walk_packages(t2sql.__path__, "t2sql.")]
    assert "t2sql.training" in modules and "t2sql.pipeline" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        f"bad = sorted(k for k in sys.modules if k.split('.')[0] in {UPPER_LAYERS!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"t2sql imported: {out.stdout.strip()}"
