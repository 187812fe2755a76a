"""The judge: is a predicted query right? The one place that runs a prediction beside its gold query.

    from t2sql.evaluation.judge import ExampleScorer, ScoringOptions, score_predictions
    scorer = ExampleScorer(ScoringOptions(timeout_s=2.0))
    line, _ = scorer.score(record, "SELECT count(*) FROM singer")
    line["correct"], line["executed"], line["execution_match"]

Test-set evaluation (:mod:`t2sql.evaluation.evaluate`), the Spider scorer, validation during
training (:mod:`t2sql.validation`) and iterative refinement's re-weighting all ask this judge, so a
prediction counts as right by one rule everywhere: the same result on every SQLite file of the
example (test-suite semantics: multisets, order only when the gold query orders, column
permutations, float tolerance, time limit, row cap, read-only), else on databases generated from
its schema, else Spider's exact-set match.

With ``ScoringOptions.database_url`` (``postgresql+psycopg://user@127.0.0.1/{db_id}``, filled with the
record's ``db_id``) gold and predicted SQL run on that server instead of the SQLite file: both are
written in SQLite's dialect, checked by the statement guard and rewritten into the server's dialect
by :meth:`t2sql.databases.connections.Connection.execute`, in a read-only session with the same
time limit and row cap. ``t2sql load-db`` copies Spider's SQLite files there.
"""

from __future__ import annotations

import os
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from t2sql.evaluation.categories import categorize
from t2sql.evaluation.execution import ExecResult, connect_readonly, connect_schema, execute
from t2sql.evaluation.fuzz import fuzz_verdict
from t2sql.evaluation.results import fix_operators, order_matters, remove_distinct, results_match
from t2sql.evaluation.schema import DbSchema, schema_from_context, schema_from_sqlite
from t2sql.evaluation.structure import (SqlStructureError, build_structure, exact_set_match, hardness,
                                        normalize_sql, parse_sql, query_types)


@dataclass
class ScoringOptions:
    """How examples are scored (read from an ``EvalConfig`` by :meth:`from_config`).

    Attributes:
        timeout_s: time limit per query.
        row_cap: rows fetched per query at most.
        keep_distinct: compare results with DISTINCT kept (the test-suite default removes it).
        fuzz_databases: generated databases per schema-only record (0: no execution check there).
        fuzz_seed: seed of the generated rows.
        slow_factor: a prediction is slow when it runs this many times longer than the gold query...
        slow_min_ms: ...measured against at least this many milliseconds (timer noise below it).
        samples: successes and failures kept as examples for the report.
    """

    timeout_s: float = 5.0
    row_cap: int = 10000
    keep_distinct: bool = False
    fuzz_databases: int = 3
    fuzz_seed: int = 0
    slow_factor: float = 2.0
    slow_min_ms: float = 1.0
    samples: int = 8
    database_url: str | None = None
    database_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, eval_cfg: Any | None) -> "ScoringOptions":
        if eval_cfg is None:
            return cls()
        return cls(
            timeout_s=float(getattr(eval_cfg, "query_timeout_s", cls.timeout_s)),
            row_cap=int(getattr(eval_cfg, "row_cap", cls.row_cap)),
            keep_distinct=bool(getattr(eval_cfg, "keep_distinct", cls.keep_distinct)),
            fuzz_databases=int(getattr(eval_cfg, "fuzz_databases", cls.fuzz_databases)),
            fuzz_seed=int(getattr(eval_cfg, "fuzz_seed", cls.fuzz_seed)),
            slow_factor=float(getattr(eval_cfg, "slow_query_factor", cls.slow_factor)),
            slow_min_ms=float(getattr(eval_cfg, "slow_query_min_ms", cls.slow_min_ms)),
            samples=int(getattr(eval_cfg, "report_samples", cls.samples)),
            database_url=getattr(eval_cfg, "database_url", None) or None,
            database_password=_password_from_env(getattr(eval_cfg, "database_password_env", None)),
        )


def _password_from_env(name: str | None) -> str | None:
    if not name:
        return None
    if name not in os.environ:
        raise ValueError(f"eval.database_password_env: the environment variable {name} is not set")
    return os.environ[name]


class _LRU(OrderedDict):
    """A small cache of open connections, closing the least recently used beyond ``size``."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or_open(self, key: str, opener: Callable[[], sqlite3.Connection]) -> sqlite3.Connection:
        if key in self:
            self.move_to_end(key)
            return self[key]
        conn = opener()
        self[key] = conn
        while len(self) > self.size:
            _, old = self.popitem(last=False)
            old.close()
        return conn

    def close(self) -> None:
        while self:
            _, conn = self.popitem()
            conn.close()


def _parse(sql: str):
    try:
        return parse_sql(sql), None
    except SqlStructureError as exc:
        return None, exc


class ExampleScorer:
    """Scores one (record, prediction) pair at a time; holds open connections between calls.

    Args:
        options: scoring settings.
        schema_for: record -> schema; default: read from ``db_path`` or ``context``.
        db_paths_for: record -> the SQLite files to compare on; default: ``[db_path]`` when set.
    """

    def __init__(self, options: ScoringOptions | None = None, *,
                 schema_for: Callable[[dict[str, Any]], DbSchema | None] | None = None,
                 db_paths_for: Callable[[dict[str, Any]], list[str]] | None = None):
        self.options = options or ScoringOptions()
        self.schema_for = schema_for or _default_schema
        self.db_paths_for = db_paths_for or _default_db_paths
        self._conns = _LRU(8)
        self._schema_conns = _LRU(16)
        self._servers = _LRU(8)

    def close(self) -> None:
        self._conns.close()
        self._schema_conns.close()
        self._servers.close()

    def _server_runner(self, record: dict[str, Any]) -> tuple[str, Callable[[str], ExecResult]] | None:
        """The record's database on ``options.database_url`` as a runner of SQLite-style SQL, or None."""
        template = self.options.database_url
        if not template:
            return None
        from t2sql.databases.connections import open_connection

        url = template.replace("{db_id}", str(record.get("db_id") or ""))
        opts = self.options
        conn = self._servers.get_or_open(url, lambda: open_connection(
            url, password=opts.database_password, timeout_s=opts.timeout_s, row_cap=opts.row_cap))
        return conn.masked_url, lambda sql: conn.execute(sql, read="sqlite", timeout_s=opts.timeout_s,
                                                         row_cap=opts.row_cap)

    def _runners(self, record: dict[str, Any]) -> list[tuple[str, Callable[[], Callable[[str], ExecResult]]]]:
        """Where the example's SQL runs: the server of ``database_url``, else each SQLite file."""
        if self.options.database_url:
            if not record.get("db_id"):
                return []  # a schema-only record: checked on generated databases as before
            return [("server", lambda: self._server_runner(record)[1])]
        opts = self.options
        paths = [p for p in self.db_paths_for(record) if p and os.path.isfile(p)]

        def file_runner(path: str) -> Callable[[], Callable[[str], ExecResult]]:
            def open_() -> Callable[[str], ExecResult]:
                conn = self._database(path)
                return lambda sql: execute(conn, sql, timeout_s=opts.timeout_s, row_cap=opts.row_cap)
            return open_

        return [(p, file_runner(p)) for p in paths]

    def _run_sql(self, sql: str) -> str:
        sql = fix_operators(sql)
        return sql if self.options.keep_distinct else remove_distinct(sql)

    def _database(self, path: str) -> sqlite3.Connection:
        """A cached read-only connection to the database file ``path``."""
        return self._conns.get_or_open(path, lambda: connect_readonly(path))

    def score(self, record: dict[str, Any], pred_sql: str | None, latency_ms: float | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Score one prediction.

        Args:
            record: a data record (``question``, ``context``, ``answer``, ``db_path``, ...).
            pred_sql: the predicted SQL (None or empty counts as a prediction that does not parse).
            latency_ms: the model's time for this question, if measured.

        Returns:
            (line, extra): ``line`` is the JSON-able per-example result written to predictions.jsonl;
            ``extra`` holds the component scores for the running totals.
        """
        opts = self.options
        gold = str(record.get("answer") or "").strip()
        pred = (pred_sql or "").strip()
        gold_tree, _ = _parse(gold)
        pred_tree, pred_parse_error = _parse(pred)
        parse_ok = pred_tree is not None
        exact = normalize_sql(pred, pred_tree) == normalize_sql(gold, gold_tree) if pred else False

        schema = None
        try:
            schema = self.schema_for(record)
        except (OSError, sqlite3.Error):
            schema = None
        gold_struct = None
        struct_schema = schema if schema else None
        if gold_tree is not None:
            try:
                gold_struct = build_structure(gold_tree, struct_schema)
            except SqlStructureError:
                struct_schema = None  # names outside the given schema: resolve both queries without it
                try:
                    gold_struct = build_structure(gold_tree, None)
                except SqlStructureError:
                    gold_struct = None
        pred_struct, struct_error = None, None
        if pred_tree is not None:
            try:
                pred_struct = build_structure(pred_tree, struct_schema)
            except SqlStructureError as exc:
                struct_error = exc.kind
        components = None
        if gold_struct is not None:
            exact_set, components = exact_set_match(pred_struct, gold_struct, struct_schema)
            level = hardness(gold_struct)
            types = query_types(gold_struct)
        else:
            exact_set, level, types = exact, "unknown", ["unknown"]

        line: dict[str, Any] = {
            "id": record.get("id"), "db_id": record.get("db_id"), "source": record.get("source"),
            "question": record.get("question"), "gold": gold, "pred": pred,
            "exact_match": bool(exact), "exact_set_match": bool(exact_set), "execution_match": None,
            "correct": False, "parse_ok": parse_ok, "executed": None, "error_category": None, "error": None,
            "hardness": level, "query_types": types, "latency_ms": latency_ms, "gold_exec_ms": None,
            "pred_exec_ms": None, "slow_query": None, "eval_mode": "none",
        }
        if record.get("scenario"):
            line["scenario"] = record["scenario"]
        if record.get("expert_category"):
            line["expert_category"] = record["expert_category"]
        if not parse_ok and pred_parse_error is not None:
            line["error"] = str(pred_parse_error)

        pred_fail: ExecResult | None = None
        runners = self._runners(record)
        gold_run, pred_run = self._run_sql(gold), self._run_sql(pred) if pred else ""
        if runners and pred:
            line["eval_mode"] = "database"
            match, ran = True, 0
            for i, (where, opener) in enumerate(runners):
                try:
                    run = opener()
                except (OSError, sqlite3.Error, ValueError) as exc:
                    line["error"] = line["error"] or f"cannot open {where}: {exc}"
                    continue
                g = run(gold_run)
                if not g.ok:
                    line["gold_error"] = g.error
                    continue
                ran += 1
                line.setdefault("gold_informative", informative_result(g.rows))
                p = run(pred_run)
                if i == 0 or line["gold_exec_ms"] is None:
                    line["gold_exec_ms"], line["pred_exec_ms"] = round(g.elapsed_ms, 3), round(p.elapsed_ms, 3)
                if not p.ok:
                    pred_fail, match = p, False
                    break
                if g.truncated != p.truncated or not results_match(g.rows, p.rows, order_matters=order_matters(gold)):
                    match = False
                    break
            line["execution_match"] = match if ran else None
            line["executed"] = pred_fail is None if ran else None
        elif runners:  # empty prediction on a real database
            line["eval_mode"] = "database"
            line["execution_match"], line["executed"] = False, False
            try:  # the gold result still says whether the question counts among the informative ones
                g = runners[0][1]()(gold_run)
            except (OSError, sqlite3.Error, ValueError):
                g = None
            if g is not None and g.ok:
                line["gold_informative"] = informative_result(g.rows)
        elif record.get("context"):
            context = record["context"]
            try:
                conn = self._schema_conns.get_or_open(context, lambda: connect_schema(context))
            except sqlite3.Error:
                conn = None
            if conn is not None:
                p = execute(conn, pred_run, timeout_s=opts.timeout_s, row_cap=opts.row_cap) if pred else \
                    ExecResult(ok=False, error="empty prediction", error_kind="syntax")
                g = execute(conn, gold_run, timeout_s=opts.timeout_s, row_cap=opts.row_cap)
                line["executed"] = p.ok
                if not p.ok:
                    pred_fail = p
                if opts.fuzz_databases > 0:
                    line["eval_mode"] = "fuzz"
                    if not p.ok:
                        line["execution_match"] = False if g.ok else None
                    elif g.ok:
                        verdict = fuzz_verdict(context, gold, pred, k=opts.fuzz_databases, timeout_s=opts.timeout_s,
                                               row_cap=opts.row_cap, seed=opts.fuzz_seed,
                                               gold_structure=gold_struct if struct_schema else None,
                                               gold_exec_sql=gold_run, pred_exec_sql=pred_run)
                        line["execution_match"] = verdict.match
                        line["fuzz_databases"], line["fuzz_gold_nonempty"] = verdict.databases, verdict.gold_nonempty
                        if verdict.pred_error is not None:
                            pred_fail = verdict.pred_error
                            line["executed"] = False
                        elif verdict.databases:  # timed on filled tables, not on the empty schema
                            line["gold_exec_ms"] = round(verdict.gold_ms, 3)
                            line["pred_exec_ms"] = round(verdict.pred_ms, 3)

        if pred_fail is not None:
            line["error"] = pred_fail.error
        if line["gold_exec_ms"] is not None and line["pred_exec_ms"] is not None and line["executed"]:
            line["slow_query"] = line["pred_exec_ms"] > opts.slow_factor * max(line["gold_exec_ms"], opts.slow_min_ms)
        correct = line["execution_match"] if line["execution_match"] is not None else bool(exact_set)
        line["correct"] = bool(correct)
        line["error_category"] = categorize(
            correct=bool(correct), parse_ok=parse_ok,
            exec_error_kind=pred_fail.error_kind if pred_fail is not None else None,
            structure_error_kind=struct_error if line["executed"] is None else None,
            gold=gold_struct, pred=pred_struct, schema=struct_schema)
        return line, {"components": components}


def informative_result(rows: list[tuple]) -> bool:
    """Whether a gold result tells answers apart: some value other than NULL, 0 or ''.

    An empty result, or a count of 0, is also what many wrong queries return (a condition on a
    value that is not stored, a join that finds nothing), so execution accuracy counts such
    questions right for wrong answers; ``execution_accuracy_informative`` leaves them out.
    """
    return any(any(v is not None and v != 0 and v != "" for v in row) for row in rows)


def _default_schema(record: dict[str, Any]) -> DbSchema | None:
    if record.get("db_path") and os.path.isfile(record["db_path"]):
        return schema_from_sqlite(record["db_path"])
    if record.get("context"):
        return schema_from_context(record["context"])
    return None


def _default_db_paths(record: dict[str, Any]) -> list[str]:
    return [record["db_path"]] if record.get("db_path") else []


def score_predictions(records: Sequence[dict[str, Any]], preds: Sequence[str],
                      scorer: "ExampleScorer | None" = None) -> dict[str, float]:
    """Execution accuracy and the share of predictions that run, by the judge.

    Returns:
        ``{"execution_accuracy", "execution_success_rate", "n"}``; accuracy counts only records
        whose gold query could be checked by execution.
    """
    own = scorer is None
    scorer = scorer or ExampleScorer()
    ran = correct = checked = 0
    try:
        for rec, pred in zip(records, preds):
            line, _ = scorer.score(rec, pred)
            ran += bool(line["executed"])
            if line["execution_match"] is not None:
                checked += 1
                correct += bool(line["execution_match"])
    finally:
        if own:
            scorer.close()
    return {"execution_accuracy": correct / checked if checked else 0.0,
            "execution_success_rate": ran / len(records) if records else 0.0, "n": len(records)}
