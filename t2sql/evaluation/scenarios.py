"""Business scenario files: questions a team cares about, with the SQL that answers them.

A scenario file is YAML (the web GUI's expert-review page writes the same format)::

    name: sales-team            # scenario name
    database: /abs/or/relative/path.sqlite   # relative to the YAML file
    examples:
      - question: "How many customers are there?"
        gold_sql: "SELECT count(*) FROM customers"
        category: wrong_aggregation   # optional: the expert's error category for the model's answer
        model_sql: "..."              # optional

:func:`load_scenarios` turns a file into evaluation records; :func:`append_scenario_example` adds
one example (creating the file), atomically and under a lock so concurrent reviewers lose nothing.
"""

from __future__ import annotations

import fcntl
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from t2sql.evaluation.categories import ERROR_CATEGORIES
from t2sql.evaluation.schema import context_from_sqlite
from t2sql.io import atomic_open


class ScenarioError(ValueError):
    """A scenario file is missing, not YAML, or has a bad field; the message names file and field."""


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"scenario file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: top level must be a mapping with name, database and examples")
    return data


def _database_path(path: Path, database: str) -> Path:
    db = Path(os.path.expanduser(database))
    return db if db.is_absolute() else (path.parent / db)


def _check_text(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(f"{path}: {where}: expected a non-empty string, got {value!r}")
    return value.strip()


def load_scenarios(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a scenario file into evaluation records.

    Args:
        path: the YAML file.

    Returns:
        One record per example, in the data layer's shape (``id``, ``question``, ``context`` (the
        database's CREATE TABLE statements), ``answer`` (gold SQL), ``db_id``, ``db_path``
        (absolute), ``source`` = ``"scenario"``) plus ``scenario`` (the name) and, when present,
        ``expert_category`` and ``model_sql``.

    Raises:
        ScenarioError: the file is missing or malformed, a field is missing or of the wrong type, an
            expert category is unknown, or the database does not exist.
    """
    path = Path(path)
    data = _read(path)
    name = _check_text(path, "name", data.get("name"))
    database = _check_text(path, "database", data.get("database"))
    db_path = _database_path(path, database).resolve()
    if not db_path.is_file():
        raise ScenarioError(f"{path}: database: {db_path} does not exist")
    examples = data.get("examples") or []
    if not isinstance(examples, list):
        raise ScenarioError(f"{path}: examples: expected a list")
    context = context_from_sqlite(db_path)
    records = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict):
            raise ScenarioError(f"{path}: examples[{i}]: expected a mapping with question and gold_sql")
        unknown = set(ex) - {"question", "gold_sql", "category", "model_sql"}
        if unknown:
            raise ScenarioError(f"{path}: examples[{i}]: unknown key(s) {', '.join(sorted(unknown))}")
        record = {
            "id": f"{name}-{i}",
            "question": _check_text(path, f"examples[{i}].question", ex.get("question")),
            "context": context,
            "answer": _check_text(path, f"examples[{i}].gold_sql", ex.get("gold_sql")),
            "db_id": db_path.stem,
            "db_path": str(db_path),
            "source": "scenario",
            "scenario": name,
        }
        category = ex.get("category")
        if category is not None:
            if category not in ERROR_CATEGORIES:
                raise ScenarioError(f"{path}: examples[{i}].category: unknown category {category!r} "
                                    f"(known: {', '.join(ERROR_CATEGORIES)})")
            record["expert_category"] = category
        if ex.get("model_sql") is not None:
            record["model_sql"] = _check_text(path, f"examples[{i}].model_sql", ex.get("model_sql"))
        records.append(record)
    return records


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append_scenario_example(path: str | os.PathLike[str], *, name: str, database: str, question: str,
                            gold_sql: str, category: str | None = None, model_sql: str | None = None) -> int:
    """Add one example to a scenario file, creating the file if needed.

    The file is rewritten through a temporary file and a rename under an exclusive lock, so a crash
    never leaves it half-written and concurrent writers do not lose each other's examples.

    Args:
        path: the YAML file.
        name: scenario name (must equal the file's name when the file exists).
        database: the SQLite file, absolute or relative to the YAML file (must name the same file as
            the existing one's).
        question, gold_sql: the example.
        category: the expert's error category for the model's answer (a key of ``ERROR_CATEGORIES``).
        model_sql: the model's SQL that the expert reviewed.

    Returns:
        The number of examples in the file afterwards.

    Raises:
        ScenarioError: an empty field, an unknown category, or a file whose name or database differ.
    """
    path = Path(path)
    name = _check_text(path, "name", name)
    database = _check_text(path, "database", database)
    entry: dict[str, Any] = {"question": _check_text(path, "question", question),
                             "gold_sql": _check_text(path, "gold_sql", gold_sql)}
    if category is not None:
        if category not in ERROR_CATEGORIES:
            raise ScenarioError(f"{path}: category: unknown category {category!r} "
                                f"(known: {', '.join(ERROR_CATEGORIES)})")
        entry["category"] = category
    if model_sql is not None:
        entry["model_sql"] = model_sql
    with _file_lock(path):
        if path.exists():
            data = _read(path)
            if data.get("name") != name:
                raise ScenarioError(f"{path}: name: the file holds scenario {data.get('name')!r}, not {name!r}")
            old_db = _database_path(path, str(data.get("database", ""))).resolve()
            if old_db != _database_path(path, database).resolve():
                raise ScenarioError(f"{path}: database: the file uses {data.get('database')!r}, not {database!r}")
            examples = data.get("examples") or []
            if not isinstance(examples, list):
                raise ScenarioError(f"{path}: examples: expected a list")
        else:
            data = {"name": name, "database": database}
            examples = []
        examples.append(entry)
        data["examples"] = examples
        with atomic_open(path) as fh:
            yaml.safe_dump(data, fh, sort_keys=False, allow_unicode=True, width=120)
    return len(examples)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default); (0, 1) when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
