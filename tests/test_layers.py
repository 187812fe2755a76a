"""The library is plain Python: importing every t2sql module pulls in neither Prefect nor Flask."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import t2sql

ROOT = Path(__file__).resolve().parents[1]


def test_t2sql_imports_neither_prefect_nor_flask():
    modules = [m.name for m in pkgutil.walk_packages(t2sql.__path__, "t2sql.")]
    assert "t2sql.training" in modules and "t2sql.pipeline" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('prefect', 'flask', 'webui', 'flows', 'tasks'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"t2sql imported: {out.stdout.strip()}"


def test_no_source_mentions_prefect_or_flask_imports():
    for path in (ROOT / "t2sql").rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")):
                assert not stripped.split()[1].startswith(("prefect", "flask")), f"{path}: {stripped}"
