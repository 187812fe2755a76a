"""Execution checks for schema-only data: fill the schema with generated rows, several times over.

Records without a database (only CREATE TABLE statements) cannot be executed meaningfully on empty
tables: almost any query returns nothing there. Here the schema is built K times in memory and
filled with rows that contain the literals of the gold query (and near variants: the number plus or
minus one, a LIKE pattern's text), random values of each column's type, NULLs and duplicate rows;
foreign-key columns take values of the referenced column so joins find partners. A prediction counts
as correct only if it returns the gold result on every one of the K databases (the idea of the
test-suite evaluation's distilled databases, generated per question).
"""

from __future__ import annotations

import random
import sqlite3
import zlib
from dataclasses import dataclass
from typing import Any

from t2sql.evaluation.execution import ExecResult, execute, lock_reads_only
from t2sql.evaluation.results import order_matters, results_match
from t2sql.evaluation.schema import DbSchema, schema_from_connection
from t2sql.evaluation.structure import SqlStructureError, build_structure, literals

_WORDS = ("alpha", "beta", "gamma", "delta", "omega", "north", "south", "red", "blue", "x")


def _affinity(declared: str) -> str:
    """SQLite's type affinity rules for a declared column type."""
    t = declared.upper()
    if "INT" in t:
        return "integer"
    if any(k in t for k in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if not t or "BLOB" in t:
        return "none"
    if any(k in t for k in ("REAL", "FLOA", "DOUB")):
        return "real"
    if any(k in t for k in ("DATE", "TIME")):
        return "date"
    return "numeric"


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _literal_variants(op: int, value: Any) -> list[Any]:
    """The literal itself and values on either side of it, so that comparisons go both ways."""
    if isinstance(value, float):
        v = _number(value)
        return [v, v, v + 1, v - 1]
    if not isinstance(value, str):
        return []
    text = value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" else value
    if op == 9:  # LIKE pattern: the text with and without surroundings
        core = text.replace("%", " ").replace("_", " ").strip()
        return [core, f"{core} z", f"a {core}", core.upper()] if core else []
    out: list[Any] = [text, text]
    try:
        number = float(text)
    except ValueError:
        out.append(text.upper() if text.upper() != text else text.lower())
    else:
        out += [_number(number + 1), _number(number - 1)]
    return out


@dataclass
class _Pools:
    by_column: dict[str, list[Any]]
    strings: list[Any]
    numbers: list[Any]


def _pools(gold_structure: dict[str, Any] | None) -> _Pools:
    pools = _Pools({}, [], [])
    for column, op, value in literals(gold_structure):
        if column in ("limit", "offset"):
            continue
        variants = _literal_variants(op, value)
        if column is not None and column.startswith("__") and "." in column:
            pools.by_column.setdefault(column, []).extend(variants)
        for v in variants:
            (pools.numbers if isinstance(v, (int, float)) else pools.strings).append(v)
    return pools


def _random_value(rng: random.Random, affinity: str, pools: _Pools) -> Any:
    if affinity == "integer":
        return rng.randint(1, 6) if rng.random() < 0.8 else rng.randint(-5, 1000)
    if affinity == "real":
        return round(rng.uniform(0, 100), 2) if rng.random() < 0.7 else float(rng.randint(1, 6))
    if affinity == "numeric":
        return rng.randint(1, 6) if rng.random() < 0.6 else round(rng.uniform(0, 100), 1)
    if affinity == "date":
        return f"20{rng.randint(0, 25):02d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if affinity == "text":
        if pools.strings and rng.random() < 0.15:
            return rng.choice(pools.strings)
        return rng.choice(_WORDS) if rng.random() < 0.85 else str(rng.randint(1, 6))
    return rng.choice([rng.randint(1, 6), rng.choice(_WORDS)])


def _fill(conn: sqlite3.Connection, schema: DbSchema, pools: _Pools, rng: random.Random) -> None:
    generated: dict[tuple[str, str], list[Any]] = {}
    references = {child: parent for child, parent in schema.foreign_keys}
    for table, columns in schema.tables.items():
        if not columns:
            continue

        def value_for(col: str, i: int) -> Any:
            key = (table, col)
            affinity = _affinity(schema.types.get(key, ""))
            column_pool = pools.by_column.get(f"__{table}.{col}__")
            parent = references.get(key)
            required = key in schema.not_null or key in schema.primary_keys
            r = rng.random()
            if parent is not None and generated.get(parent) and r < 0.8:
                return rng.choice(generated[parent])
            if not required and r < 0.1:
                return None
            if key in schema.primary_keys and affinity in ("integer", "numeric") and rng.random() < 0.7:
                return i + 1
            if column_pool and r < 0.5:
                return rng.choice(column_pool)
            if affinity in ("integer", "real", "numeric") and pools.numbers and r < 0.6:
                return rng.choice(pools.numbers)
            return _random_value(rng, affinity, pools)

        rows: list[list[Any]] = []
        # Every literal variant of the gold query appears at least once in its column.
        planted = [(j, v) for j, col in enumerate(columns)
                   for v in dict.fromkeys(pools.by_column.get(f"__{table}.{col}__", []))]
        rng.shuffle(planted)
        for j, v in planted[:12]:
            row = [value_for(col, len(rows)) for col in columns]
            row[j] = v
            rows.append(row)
        for _ in range(rng.randint(3, 8)):
            if rows and rng.random() < 0.25:
                rows.append(list(rng.choice(rows)))  # a duplicate row
            else:
                rows.append([value_for(col, len(rows)) for col in columns])
        quoted = table.replace('"', '""')
        marks = ", ".join("?" for _ in columns)
        conn.executemany(f'INSERT OR IGNORE INTO "{quoted}" VALUES ({marks})', rows)
        for j, col in enumerate(columns):
            generated[(table, col)] = [r[j] for r in rows if r[j] is not None]
    conn.commit()


def fuzz_databases(context: str, gold_sql: str, *, k: int = 3, seed: int = 0,
                   gold_structure: dict[str, Any] | None = None) -> list[sqlite3.Connection]:
    """K in-memory databases of the schema in ``context``, filled with rows for ``gold_sql``.

    Args:
        context: CREATE TABLE statements.
        gold_sql: the gold query, whose literals are planted in the rows.
        k: number of databases.
        seed: base of the random generator; the same inputs give the same databases.
        gold_structure: the gold query's structure (from :func:`build_structure`), if already built.

    Returns:
        Read-only (reads-only authorizer) connections; an empty list when SQLite refuses the
        CREATE TABLE statements.
    """
    base = zlib.crc32(f"{seed}\0{context}\0{gold_sql}".encode())
    conns = []
    schema: DbSchema | None = None
    for i in range(k):
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            conn.executescript(context)
        except sqlite3.Error:
            conn.close()
            return []
        if schema is None:
            schema = schema_from_connection(conn)
            if gold_structure is None:
                try:
                    gold_structure = build_structure(gold_sql, schema)
                except SqlStructureError:
                    gold_structure = None
            pools = _pools(gold_structure)
        _fill(conn, schema, pools, random.Random(base + i))
        conns.append(lock_reads_only(conn))
    return conns


@dataclass
class FuzzVerdict:
    """The outcome of comparing a prediction with the gold query on generated databases.

    Attributes:
        match: True when the prediction gave the gold result on every database where the gold
            query ran; None when no database could be built or the gold query ran on none.
        databases: how many databases the gold query ran on.
        gold_nonempty: on how many of them the gold result had rows (a measure of how telling the
            check was).
        pred_error: the prediction's first execution failure, if any.
        gold_ms / pred_ms: execution time of gold and prediction summed over the databases where
            both ran.
    """

    match: bool | None
    databases: int
    gold_nonempty: int
    pred_error: ExecResult | None = None
    gold_ms: float = 0.0
    pred_ms: float = 0.0


def fuzz_verdict(context: str, gold_sql: str, pred_sql: str, *, k: int = 3, timeout_s: float = 5.0,
                 row_cap: int = 10000, seed: int = 0, gold_structure: dict[str, Any] | None = None,
                 gold_exec_sql: str | None = None, pred_exec_sql: str | None = None) -> FuzzVerdict:
    """Run gold and prediction on ``k`` generated databases and compare their results.

    Args:
        context: CREATE TABLE statements.
        gold_sql / pred_sql: the queries (``*_exec_sql``, when given, is what is run instead, e.g.
            without DISTINCT).
        k, seed, gold_structure: as for :func:`fuzz_databases`.
        timeout_s, row_cap: limits per query.

    Returns:
        A :class:`FuzzVerdict`.
    """
    conns = fuzz_databases(context, gold_sql, k=k, seed=seed, gold_structure=gold_structure)
    if not conns:
        return FuzzVerdict(None, 0, 0)
    ordered = order_matters(gold_sql)
    ran = nonempty = 0
    match = True
    pred_error = None
    gold_ms = pred_ms = 0.0
    try:
        for conn in conns:
            gold = execute(conn, gold_exec_sql or gold_sql, timeout_s=timeout_s, row_cap=row_cap)
            if not gold.ok:
                continue
            ran += 1
            nonempty += bool(gold.rows)
            pred = execute(conn, pred_exec_sql or pred_sql, timeout_s=timeout_s, row_cap=row_cap)
            if not pred.ok:
                pred_error = pred
                match = False
                break
            gold_ms += gold.elapsed_ms
            pred_ms += pred.elapsed_ms
            if gold.truncated != pred.truncated or not results_match(gold.rows, pred.rows, order_matters=ordered):
                match = False
                break
    finally:
        for conn in conns:
            conn.close()
    return FuzzVerdict(match if ran else None, ran, nonempty, pred_error, gold_ms, pred_ms)
