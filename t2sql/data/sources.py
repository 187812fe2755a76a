"""Loaders that turn each data source into (question, context, answer) records.

Every loader returns ``(records, rejects)``. A record follows the project's record shape::

    {"id", "question", "context", "answer", "db_id", "db_path", "source"}

A malformed row (broken JSON line, missing or empty field, wrong type, SQL that sqlglot cannot
parse, unknown db_id, ...) becomes a reject ``{"source", "file", "row", "reason", "detail", "raw"}``
and is set aside, never dropped silently. ``reason`` is a short category (counted in the
statistics), ``detail`` says what exactly was wrong. A file that cannot be read at all raises
:class:`DataSourceError` naming it.

With a ``limit``, rows are taken in a random order fixed by the seed until ``limit`` records are
found (then put back in file order), so only the rows looked at are checked and counted.
"""

from __future__ import annotations

import json
import math
import random
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from t2sql.data.schema import (parse_query, quote_identifier, read_sample_values, spider_create_tables,
                               tables_in)

CREATE_CONTEXT_HUB_ID = "b-mc2/sql-create-context"
WIKISQL_AGG = {"": "", "MAX": "MAX", "MIN": "MIN", "COUNT": "COUNT", "SUM": "SUM", "AVG": "AVG"}
WIKISQL_OPS = {"=", ">", "<"}
_NUMERIC_AGG = {"MAX", "MIN", "SUM", "AVG"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_CREATE_NAME = re.compile(
    r'CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?("(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[^\s(;]+)', re.IGNORECASE)


class DataSourceError(ValueError):
    """A source file or directory cannot be read; the message names it."""


class Reject(Exception):
    """A row that cannot become a record: ``reason`` is a short category, ``detail`` the specifics."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# One input row: (file, row index, parsed value or raw text, reject found while reading or None).
Row = tuple[str, int, Any, "Reject | None"]


def _reject(kind: str, file: str, row: int, exc: Reject, raw: Any) -> dict[str, Any]:
    return {"source": kind, "file": file, "row": row, "reason": exc.reason, "detail": exc.detail, "raw": raw}


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise DataSourceError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataSourceError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataSourceError(f"{path}: not valid JSON ({exc})") from None


def _json_list_rows(path: Path) -> list[Row]:
    data = _read_json(path)
    if not isinstance(data, list):
        raise DataSourceError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    return [(str(path), i, raw, None) for i, raw in enumerate(data)]


def _jsonl_rows(path: Path) -> list[Row]:
    """Rows of a JSON-lines file; a line that is not JSON becomes a reject (row = 0-based line number)."""
    rows: list[Row] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if not line.strip():
                    continue
                try:
                    rows.append((str(path), i, json.loads(line), None))
                except json.JSONDecodeError as exc:
                    rows.append((str(path), i, line.rstrip("\n"), Reject("invalid JSON", str(exc))))
    except FileNotFoundError:
        raise DataSourceError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataSourceError(f"{path}: cannot read ({exc})") from None
    return rows


def _parquet_rows(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        data = pq.read_table(path).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on a broken file
        raise DataSourceError(f"{path}: cannot read as Parquet ({exc})") from None
    return [(str(path), i, raw, None) for i, raw in enumerate(data)]


def _collect(kind: str, rows: list[Row], convert: Callable[[Any, str, int], dict[str, Any]], limit: int | None,
             seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Convert rows in file order, or, with ``limit``, in a seeded random order until ``limit`` records."""
    order: list[int] = list(range(len(rows)))
    if limit is not None:
        random.Random(seed).shuffle(order)
    records: list[tuple[int, dict[str, Any]]] = []
    rejects: list[tuple[int, dict[str, Any]]] = []
    for pos in order:
        if limit is not None and len(records) >= limit:
            break
        file, index, raw, error = rows[pos]
        try:
            if error is not None:
                raise error
            if not isinstance(raw, dict):
                raise Reject("not an object", f"expected a JSON object, got {type(raw).__name__}")
            records.append((pos, convert(raw, file, index)))
        except Reject as exc:
            rejects.append((pos, _reject(kind, file, index, exc, raw)))
    records.sort(key=lambda t: t[0])
    rejects.sort(key=lambda t: t[0])
    return [r for _, r in records], [r for _, r in rejects]


def _text(raw: dict[str, Any], name: str, label: str | None = None) -> str:
    label = label or name
    if name not in raw or raw[name] is None:
        raise Reject(f"missing field: {label}")
    value = raw[name]
    if not isinstance(value, str):
        raise Reject(f"wrong type: {label}", f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise Reject(f"empty field: {label}")
    return value


def _query(sql: str):
    try:
        return parse_query(sql)
    except ValueError as exc:
        msg = str(exc)
        if msg.startswith("SQL does not parse"):
            raise Reject("unparseable SQL", msg) from None
        raise Reject("SQL is not a single query", msg) from None


def _row_id(kind: str, file: str, index: int) -> str:
    return f"{kind}/{Path(file).stem}/{index}"


# --------------------------------------------------------------------------- sql-create-context


def _create_context_rows(path: str) -> list[Row]:
    p = Path(path)
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".jsonl":
            return _jsonl_rows(p)
        if suffix == ".json":
            return _json_list_rows(p)
        if suffix == ".parquet":
            return _parquet_rows(p)
        raise DataSourceError(f"{p}: unsupported file type {suffix!r} (use .json, .jsonl or .parquet)")
    if not p.exists() and not _HUB_ID.fullmatch(path):
        raise DataSourceError(f"{p}: file not found")
    # A hub id (b-mc2/sql-create-context) or a local dataset directory.
    try:
        import datasets

        ds = datasets.load_dataset(path, split="train")
    except Exception as exc:  # the hub is unreachable offline; datasets raises many kinds
        first = (str(exc).splitlines() or [""])[0][:200]
        raise DataSourceError(
            f"{path}: cannot load with datasets.load_dataset ({type(exc).__name__}: {first}); "
            "offline, give a local .json, .jsonl or .parquet file with question, context, answer") from None
    return [(path, i, dict(raw), None) for i, raw in enumerate(ds)]


def _context_tables(context: str) -> set[str]:
    names = set()
    for m in _CREATE_NAME.finditer(context):
        name = m.group(1)
        if name[0] in "\"`[":
            name = name[1:-1].replace('""', '"')
        names.add(name.lower())
    return names


def load_create_context(path: str = CREATE_CONTEXT_HUB_ID, *, limit: int | None = None, seed: int = 0
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Load sql-create-context rows (question, context, answer).

    Args:
        path: the hub id ``b-mc2/sql-create-context`` (needs the Hugging Face hub), a local dataset
            directory, or a local .json (list of objects), .jsonl or .parquet file.
        limit: keep at most this many records, chosen at random with ``seed``.
        seed: seed of that choice.

    Returns:
        ``(records, rejects)``; records have ``db_id`` and ``db_path`` None.

    Raises:
        DataSourceError: the file cannot be read (the message names it).
    """
    rows = _create_context_rows(path)

    def convert(raw: dict[str, Any], file: str, index: int) -> dict[str, Any]:
        question = _text(raw, "question")
        context = _text(raw, "context")
        answer = _text(raw, "answer")
        declared = _context_tables(context)
        if not declared:
            raise Reject("context has no CREATE TABLE", context[:80])
        used = tables_in(_query(answer))
        missing = sorted(used - declared)
        if missing:
            raise Reject("unknown table in SQL", ", ".join(missing))
        return {"id": _row_id("create_context", file, index), "question": question, "context": context,
                "answer": answer, "db_id": None, "db_path": None, "source": "create_context"}

    return _collect("create_context", rows, convert, limit, seed)


# --------------------------------------------------------------------------- Spider


def load_spider(path: str, *, files: list[str] | None = None, databases: list[str] | None = None,
                limit: int | None = None, seed: int = 0, schema_mode: str = "full", with_types: bool = True,
                sample_values: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Load a directory in Spider's standard layout.

    The directory holds ``tables.json``, question files (``train_spider.json``, ``dev.json``, ...)
    and, optionally, ``database/<db_id>/<db_id>.sqlite``.

    Args:
        path: the directory.
        files: question files inside it (default ``train_spider.json`` and ``dev.json`` if present).
        databases: keep only questions on these db_ids.
        limit: keep at most this many records, chosen at random with ``seed``.
        seed: seed of that choice.
        schema_mode: ``full``: the context has every table of the database; ``used``: only the
            tables the gold query reads.
        with_types: write column types in the context.
        sample_values: distinct values per column shown in the context, read from the SQLite file
            when it exists.

    Returns:
        ``(records, rejects)``; ``db_path`` is the absolute path of the SQLite file, or None.

    Raises:
        DataSourceError: the directory, tables.json or a question file is missing or unreadable, or
            ``databases`` names a db_id that tables.json does not have.
    """
    if schema_mode not in ("full", "used"):
        raise ValueError(f"schema_mode must be 'full' or 'used', got {schema_mode!r}")
    root = Path(path)
    if not root.is_dir():
        raise DataSourceError(f"{root}: Spider directory not found")
    entries = _read_json(root / "tables.json")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "db_id" in e for e in entries):
        raise DataSourceError(f"{root / 'tables.json'}: expected a list of objects with db_id")
    schemas = {e["db_id"]: e for e in entries}
    keep = None
    if databases:
        unknown = sorted(set(databases) - set(schemas))
        if unknown:
            raise DataSourceError(f"{root / 'tables.json'}: databases not found: {', '.join(unknown)}")
        keep = set(databases)
    if files is None:
        files = [f for f in ("train_spider.json", "dev.json") if (root / f).is_file()]
        if not files:
            raise DataSourceError(f"{root}: no train_spider.json or dev.json (name the question files in 'files')")
    rows: list[Row] = []
    for name in files:
        for row in _json_list_rows(root / name):
            raw = row[2]
            if keep is not None and isinstance(raw, dict) and isinstance(raw.get("db_id"), str) \
                    and raw["db_id"] in schemas and raw["db_id"] not in keep:
                continue
            rows.append(row)

    db_paths: dict[str, str | None] = {}
    samples: dict[str, dict] = {}
    contexts: dict[tuple[str, frozenset[str] | None], str] = {}
    table_names = {db: {t.lower() for t in e.get("table_names_original", [])} for db, e in schemas.items()}

    def db_path_of(db: str) -> str | None:
        if db not in db_paths:
            f = root / "database" / db / f"{db}.sqlite"
            db_paths[db] = str(f.resolve()) if f.is_file() else None
        return db_paths[db]

    def context_of(db: str, used: frozenset[str] | None) -> str:
        key = (db, used)
        if key not in contexts:
            entry = schemas[db]
            if db not in samples:
                samples[db] = {}
                dbp = db_path_of(db)
                if sample_values > 0 and dbp is not None:
                    tabs = entry.get("table_names_original", [])
                    cols = [(tabs[t], c) for t, c in entry.get("column_names_original", []) if 0 <= t < len(tabs)]
                    samples[db] = read_sample_values(dbp, cols, sample_values)
            try:
                contexts[key] = spider_create_tables(entry, only_tables=used, with_types=with_types,
                                                     samples=samples[db])
            except ValueError as exc:
                raise DataSourceError(f"{root / 'tables.json'}: {exc}") from None
        return contexts[key]

    def convert(raw: dict[str, Any], file: str, index: int) -> dict[str, Any]:
        db = _text(raw, "db_id")
        question = _text(raw, "question")
        query = _text(raw, "query")
        if db not in schemas:
            raise Reject("unknown db_id", db)
        used = tables_in(_query(query))
        missing = sorted(used - table_names[db])
        if missing:
            raise Reject("unknown table in SQL", ", ".join(missing))
        only = frozenset(used) if schema_mode == "used" and used else None
        return {"id": _row_id("spider", file, index), "question": question, "context": context_of(db, only),
                "answer": query, "db_id": db, "db_path": db_path_of(db), "source": "spider"}

    return _collect("spider", rows, convert, limit, seed)


# --------------------------------------------------------------------------- WikiSQL


def snake_case(name: str) -> str:
    """A WikiSQL column header as a snake_case identifier: ``School/Club Team`` -> ``school_club_team``.

    Accents are dropped, other non-ASCII characters separate words, ``#`` and ``%`` become
    ``number`` and ``percent`` (``Obama#`` and ``Obama%`` are different columns), every run of
    other characters becomes one ``_``; may return ``""``.
    """
    ascii_name = "".join("" if unicodedata.combining(c) else c if c.isascii() else " "
                         for c in unicodedata.normalize("NFKD", name))
    ascii_name = ascii_name.replace("#", " number ").replace("%", " percent ")
    return re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")


def wikisql_table_name(table_id: str) -> str:
    """``1-10015132-11`` -> ``table_1_10015132_11`` (the naming of sql-create-context)."""
    return "table_" + re.sub(r"[^A-Za-z0-9]+", "_", table_id).strip("_")


def _sql_number(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


def _wikisql_record(raw: dict[str, Any], file: str, index: int) -> dict[str, Any]:
    question = _text(raw, "question")
    table_id = _text(raw, "table_id")
    if "sql" not in raw or raw["sql"] is None:
        raise Reject("missing field: sql")
    sql = raw["sql"]
    if not isinstance(sql, dict):
        raise Reject("wrong type: sql", f"expected an object, got {type(sql).__name__}")
    sel = _text(sql, "sel", "sql.sel")
    agg = sql.get("agg", "")
    if not isinstance(agg, str) or agg.upper() not in WIKISQL_AGG:
        raise Reject("unknown aggregation", repr(agg))
    agg = WIKISQL_AGG[agg.upper()]
    conds = sql.get("conds", [])
    if not isinstance(conds, list):
        raise Reject("wrong type: sql.conds", f"expected a list, got {type(conds).__name__}")

    where: list[tuple[str, str, Any]] = []
    for k, cond in enumerate(conds):
        if not isinstance(cond, (list, tuple)) or len(cond) != 3:
            raise Reject("wrong type: sql.conds", f"condition {k} is not [column, op, value]")
        col, op, value = cond
        if not isinstance(col, str):
            raise Reject("wrong type: sql.conds", f"condition {k}: column is {type(col).__name__}")
        if not col.strip():
            raise Reject("empty column name", f"condition {k}")
        if op not in WIKISQL_OPS:
            raise Reject("unknown operator", repr(op))
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise Reject("wrong type: sql.conds", f"condition {k}: value is {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise Reject("wrong type: sql.conds", f"condition {k}: value is {value}")
        if isinstance(value, str) and not value.strip():
            raise Reject("empty condition value", f"condition {k}")
        where.append((col, op, value))

    # Columns in order of use; a column is numeric when aggregated with MAX/MIN/SUM/AVG or compared
    # with a number (WikiSQL stores a number only for its real-typed columns).
    headers = [sel] + [c for c, _, _ in where]
    idents: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for h in headers:
        if h in idents:
            continue
        ident = snake_case(h)
        if not ident:
            raise Reject("empty column name", f"{h!r} has no letters or digits")
        if ident in idents.values():
            raise Reject("column names collide", f"{h!r} and another column both become {ident!r}")
        idents[h] = ident
        kinds[h] = "VARCHAR"
    if agg in _NUMERIC_AGG:
        kinds[sel] = "INTEGER"
    for col, _, value in where:
        if not isinstance(value, str):
            if isinstance(value, float) and not value.is_integer():
                kinds[col] = "REAL"
            elif kinds[col] == "VARCHAR":
                kinds[col] = "INTEGER"

    table = wikisql_table_name(table_id)
    q = {h: quote_identifier(i) for h, i in idents.items()}
    target = f"{agg}({q[sel]})" if agg else q[sel]
    answer = f"SELECT {target} FROM {table}"
    if where:
        parts = []
        for col, op, value in where:
            lit = "'" + value.replace("'", "''") + "'" if isinstance(value, str) else _sql_number(value)
            parts.append(f"{q[col]} {op} {lit}")
        answer += " WHERE " + " AND ".join(parts)
    context = f"CREATE TABLE {table} (" + ", ".join(f"{q[h]} {kinds[h]}" for h in idents) + ")"
    _query(answer)
    return {"id": _row_id("wikisql", file, index), "question": question, "context": context, "answer": answer,
            "db_id": table_id, "db_path": None, "source": "wikisql"}


def load_wikisql(path: str, *, files: list[str] | None = None, databases: list[str] | None = None,
                 limit: int | None = None, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Load WikiSQL JSON lines and build sql-create-context style records.

    Each row has ``table_id``, ``question`` and ``sql`` = ``{sel, agg, conds: [[column, op, value]]}``
    with real column names. The table becomes ``table_<table_id>``, columns snake_case identifiers,
    the context ``CREATE TABLE t (col VARCHAR, ...)`` with only the columns the query uses, and the
    answer ``SELECT COUNT(col) FROM t WHERE col = 'value' AND ...``. Text values are single-quoted;
    values WikiSQL stores as numbers are written as numbers, and their columns declared INTEGER
    (REAL for fractional values) so that SQLite compares them numerically.

    Args:
        path: a directory (reads ``train.jsonl``, ``dev.jsonl``, ``test.jsonl`` that exist) or one file.
        files: file names inside the directory instead of the default.
        databases: keep only these table_ids.
        limit: keep at most this many records, chosen at random with ``seed``.
        seed: seed of that choice.

    Returns:
        ``(records, rejects)``; ``db_id`` is the WikiSQL table_id, ``db_path`` None.

    Raises:
        DataSourceError: the path or a file is missing or unreadable.
    """
    root = Path(path)
    if root.is_file():
        paths = [root]
    elif root.is_dir():
        names = files or [f for f in ("train.jsonl", "dev.jsonl", "test.jsonl") if (root / f).is_file()]
        if not names:
            raise DataSourceError(f"{root}: no train.jsonl, dev.jsonl or test.jsonl (name the files in 'files')")
        paths = [root / n for n in names]
    else:
        raise DataSourceError(f"{root}: WikiSQL file or directory not found")
    keep = set(databases) if databases else None
    rows: list[Row] = []
    for p in paths:
        for row in _jsonl_rows(p):
            raw = row[2]
            if keep is not None and isinstance(raw, dict) and isinstance(raw.get("table_id"), str) \
                    and raw["table_id"] not in keep:
                continue
            rows.append(row)
    return _collect("wikisql", rows, _wikisql_record, limit, seed)


# --------------------------------------------------------------------------- dispatch


def load_source(source_cfg, seed: int = 0, data_cfg=None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Load one configured source.

    Args:
        source_cfg: a :class:`t2sql.config.SourceConfig`; ``${T2SQL_DATA_DIR}`` in its path is expanded.
        seed: seed of the ``limit`` subset.
        data_cfg: the :class:`t2sql.config.DataConfig` whose ``schema_mode``, ``with_types`` and
            ``sample_values`` shape Spider contexts (defaults when None).

    Returns:
        ``(records, rejects)`` as described in this module.

    Raises:
        DataSourceError: a file or directory cannot be read.
        t2sql.config.ConfigError: the path uses an unset environment variable.
    """
    from t2sql.config import expand_path

    path = expand_path(source_cfg.path, "data.sources.path")
    if source_cfg.kind == "spider":
        opts = {} if data_cfg is None else {"schema_mode": data_cfg.schema_mode, "with_types": data_cfg.with_types,
                                           "sample_values": data_cfg.sample_values}
        return load_spider(path, files=source_cfg.files, databases=source_cfg.databases, limit=source_cfg.limit,
                           seed=seed, **opts)
    if source_cfg.kind == "wikisql":
        return load_wikisql(path, files=source_cfg.files, databases=source_cfg.databases, limit=source_cfg.limit,
                            seed=seed)
    if source_cfg.kind == "create_context":
        return load_create_context(path, limit=source_cfg.limit, seed=seed)
    raise ValueError(f"unknown source kind {source_cfg.kind!r}")

