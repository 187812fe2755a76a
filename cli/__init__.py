"""The ``t2sql`` command line.

    t2sql run --config configs/quickstart.yaml [--set train.epochs=2 ...]
    t2sql evaluate --model champion --config configs/quickstart.yaml
    t2sql ask "How many singers are there?" --db data/spider_sample/database/club_1/club_1.sqlite
    t2sql ask "How many singers are there?" --db postgresql+psycopg://ro@127.0.0.1/club_1 --password-env PGPASS
    t2sql ask --sql "SELECT count(*) FROM club" --db postgresql+psycopg://ro@127.0.0.1/club_1
    t2sql load-db data/spider_sample/database/*/*.sqlite --to postgresql+psycopg://admin@127.0.0.1/{db_id} --create
    t2sql score --predictions pred.sql --spider DIR --split dev --out results.json
    t2sql predict --model champion --spider DIR --split dev --out pred.sql
    t2sql predict --model champion --data questions.jsonl --out pred.sql
    t2sql runs | t2sql promote RUN_ID --reason "..." | t2sql serve | t2sql up
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from t2sql.config import ConfigError, load_config


def _prefect_env(work_dir: Path) -> None:
    """Quiet, offline-friendly Prefect defaults; results persisted under the work dir."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str((work_dir / "prefect-results").resolve()))
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    # The temporary server can take over 20 s to start on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


class Terminated(Exception):
    """SIGTERM received: training checkpointed and the run stopped."""


def _run_stoppable(fn, grace_s: float = 30.0):
    """Run ``fn()`` so that SIGTERM (a scheduler's or a worker's stop) ends it within seconds.

    ``fn`` runs in a worker thread; the main thread keeps the SIGTERM handler (Prefect replaces the
    handler of the thread its flow runs in and defers the signal until its tasks end, which a
    training task does only at its end). On SIGTERM every training loop is asked to checkpoint and
    stop after its current step (:func:`t2sql.training.request_stop`); once none runs (at most
    ``grace_s`` seconds), :class:`Terminated` is raised. Running the same command again resumes
    from the checkpoints.
    """
    import signal
    import threading
    import time

    from t2sql.training import request_stop, running_loops

    outcome: dict[str, object] = {}
    stop = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = exc

    def on_sigterm(signum, frame) -> None:
        request_stop()
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    worker = threading.Thread(target=target, name="t2sql-run", daemon=True)
    worker.start()
    try:
        while worker.is_alive() and not stop.is_set():
            worker.join(0.2)
        if stop.is_set():
            deadline = time.monotonic() + grace_s
            while worker.is_alive() and running_loops() > 0 and time.monotonic() < deadline:
                worker.join(0.1)
            raise Terminated()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]


def _exit_now(status: int) -> None:
    """End the process at once, its child processes (a temporary Prefect server, workers) first.

    After a stop the flow's worker thread would otherwise retry, report and wait on Prefect's
    service threads, which keep the interpreter from exiting.
    """
    import psutil

    sys.stdout.flush()
    sys.stderr.flush()
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    psutil.wait_procs(children, timeout=5)
    os._exit(status)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)  # validate before starting anything
    from t2sql.config import expand_path

    _prefect_env(Path(expand_path(cfg.work_dir, "work_dir")))
    from flows.pipeline import t2sql_pipeline

    try:
        result = _run_stoppable(lambda: t2sql_pipeline(config_path=str(args.config), overrides=args.set or []))
    except Terminated:
        print("t2sql: stopped on SIGTERM; checkpoints written, run the same command again to resume",
              file=sys.stderr)
        _exit_now(143)
    m = result["metrics"]
    print("\ntechnique comparison:")
    for row in result["techniques"]:
        print("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    print("metrics: " + json.dumps({k: m.get(k) for k in ("exact_match", "bleu", "execution_accuracy", "parse_rate",
                                                        "execution_success_rate", "latency_ms_p50")}))
    print(f"promoted: {result['promoted']} ({result['reason']})")
    print(result["run_dir"])
    return 0


def _model_key(model_dir: str | os.PathLike[str]) -> str:
    """Evaluation cache key of a model folder: its path and the size and time of each of its files, so a
    file edited in place (its ``t2sql_prompt.json``, new weights) is scored again, which the folder's own
    time would not say."""
    from t2sql.compression.onnx_export import source_stamp
    from t2sql.io import fingerprint

    return f"model-{Path(model_dir).resolve()}-{fingerprint(source_stamp(model_dir))}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from t2sql import pipeline

    overrides = list(args.set or [])
    if args.db_url:
        overrides.append(f"eval.database_url={args.db_url}")
    if args.password_env:
        overrides.append(f"eval.database_password_env={args.password_env}")
    cfg = load_config(args.config, overrides)
    model_dir = pipeline.registry_for(cfg).resolve(args.model)
    data = pipeline.prepare(cfg)
    test = args.data or data["test"]
    metrics = pipeline.evaluate_model_dir(cfg.eval, pipeline.work_dir(cfg), str(model_dir), test,
                                          key=_model_key(model_dir),
                                          backend=args.backend, max_source_length=cfg.train.max_source_length)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}, indent=2))
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    """Translate a question (or take ``--sql``) and run it read-only on a SQLite file or a database URL."""
    from t2sql.databases import introspect
    from t2sql.databases.connections import ConnectionConfigError, open_connection

    try:
        conn = open_connection(args.db, password_env=args.password_env, timeout_s=args.timeout, row_cap=args.max_rows)
    except ConnectionConfigError as exc:
        print(f"t2sql: {exc}", file=sys.stderr)
        return 2
    try:
        if args.sql is not None:
            sql, read = args.sql, args.sql_dialect
            try:
                shown = conn.prepare(sql, read=read)
            except ValueError as exc:  # the guard's refusal
                print(f"refused ({getattr(exc, 'kind', 'denied')}): {exc}", file=sys.stderr)
                return 1
            print(f"SQL ({conn.dialect}):\n  {shown}")
        else:
            if not args.question:
                print("t2sql: give a question, or --sql", file=sys.stderr)
                return 2
            from t2sql.inference import Translator

            try:
                context = introspect.create_tables(conn)
            except (RuntimeError, ValueError) as exc:
                print(f"t2sql: {conn.scrub(str(exc))}", file=sys.stderr)
                return 1
            translator = Translator.load(args.model, args.registry, backend=args.backend, num_beams=args.beams)
            if conn.dialect == "sqlite":
                sql, ms = translator.translate_one(args.question, context, db_path=str(conn.path))
            else:
                if getattr(translator.prompt, "reads_database", False):
                    context = introspect.with_question_values(args.question, context, conn)
                sql, ms = translator.translate_one(args.question, context)
            read = "sqlite"  # the model writes SQLite-style SQL
            try:
                shown = conn.prepare(sql, read=read)
            except ValueError:
                shown = sql
            print(f"SQL ({ms:.0f} ms, model {translator.model_dir}, {conn.dialect}):\n  {shown}")
        result = conn.execute(sql, read=read)
    finally:
        conn.close()
    if not result.ok:
        print(f"the query failed ({result.error_kind}): {result.error}", file=sys.stderr if args.sql else sys.stdout)
        return 1
    if args.csv:
        from t2sql.databases.charts import result_csv

        Path(args.csv).write_text(result_csv(result.columns, result.rows), encoding="utf-8")
    if args.chart:
        from t2sql.databases.charts import chart_svg

        svg = chart_svg(result.columns, result.rows)
        if svg is None:
            print("no chart fits this result (it needs a category or a date/time and a number)")
        else:
            Path(args.chart).write_text(svg, encoding="utf-8")
    print(" | ".join(result.columns))
    for row in result.rows:
        print(" | ".join("NULL" if v is None else str(v) for v in row))
    print(f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''}{', truncated' if result.truncated else ''})")
    return 0


def cmd_load_db(args: argparse.Namespace) -> int:
    """Copy SQLite files into PostgreSQL, MySQL/MariaDB or DuckDB (``--to`` may hold ``{db_id}``)."""
    from t2sql.databases.connections import mask_url
    from t2sql.databases.load import load_sqlite

    password = os.environ[args.password_env] if args.password_env else None
    for path in args.sqlite:
        db_id = Path(path).stem
        target = args.to.replace("{db_id}", db_id)
        counts = load_sqlite(path, target, create=args.create, replace=args.replace, password=password)
        print(f"{path} -> {mask_url(target)}: {len(counts)} tables, {sum(counts.values())} rows")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from t2sql.evaluation.spider import format_score_table, score_spider

    password = os.environ.get(args.password_env) if args.password_env else None
    if args.password_env and password is None:
        raise ValueError(f"--password-env: the environment variable {args.password_env} is not set")
    result = score_spider(args.predictions, args.spider, args.split, args.out, timeout_s=args.timeout,
                          database_url=args.db_url, password=password)
    print(format_score_table(result))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from t2sql import predict

    kwargs = {"backend": args.backend, "num_beams": args.beams, "batch_size": args.batch_size,
              "constrained": args.constrained}
    if args.spider:
        n = predict.predict_spider(args.model, args.spider, args.split, args.out, registry_root=args.registry,
                                   **kwargs)
    else:
        n = predict.predict_records(args.model, args.data, args.out, registry_root=args.registry, **kwargs)
    print(f"wrote {n} predictions to {args.out}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from t2sql.registry import Registry

    reg = Registry(args.registry)
    champ = reg.champion()
    for e in reg.runs():
        m = e.get("metrics", {})
        mark = "*" if e["run_id"] == champ else " "
        print(f"{mark} v{e['version']} {e['run_id']}  EX={m.get('execution_accuracy')}  EM={m.get('exact_match')}  "
              f"p50={m.get('latency_ms_p50')}ms  {e.get('technique', '')}")
    return 0


def cmd_import_runs(args: argparse.Namespace) -> int:
    from t2sql.registry import Registry, import_file_registry

    reg = Registry(args.registry)
    imported = import_file_registry(args.old_registry, reg)
    print(f"imported {len(imported)} runs into {reg.tracking_uri}; champion: {reg.champion()}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """The MLflow UI over the registry's store, on loopback; Ctrl-C stops it."""
    import subprocess

    from t2sql.registry import Registry

    reg = Registry(args.registry)
    if not reg.embedded:
        print(f"runs are tracked on {reg.tracking_uri}: open its UI there")
        return 0
    reg.client  # creates the embedded store if it is new
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", reg.tracking_uri,
           "--default-artifact-root", (reg.root / "mlartifacts").resolve().as_uri(),
           "--host", args.host, "--port", str(args.port), "--workers", "1"]
    print(f"MLflow UI for {reg.root}: http://{args.host}:{args.port}", flush=True)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from t2sql.registry import Registry

    Registry(args.registry).promote(args.run_id, reason=args.reason, by="cli")
    print(f"{args.run_id} is the champion")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import webui

    webui.serve(host=args.host, port=args.port, registry_root=args.registry, threads=args.threads)
    return 0


def build_parser() -> argparse.ArgumentParser:
    default_registry = str(Path(os.environ["T2SQL_HOME"]) / "runs") if os.environ.get("T2SQL_HOME") else "runs"
    p = argparse.ArgumentParser(prog="t2sql", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def config_args(sp):
        sp.add_argument("--config", required=True, help="pipeline YAML, e.g. configs/quickstart.yaml")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. train.epochs=2 (repeatable)")

    sp = sub.add_parser("run", help="run the pipeline; the last line printed is the run directory")
    config_args(sp)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("evaluate", help="evaluate a registered run or a model directory")
    config_args(sp)
    sp.add_argument("--model", default="champion", help="run id, 'champion' or a model directory")
    sp.add_argument("--data", help="a test JSONL or scenario YAML (default: the config's test split)")
    sp.add_argument("--backend", default=None)
    sp.add_argument("--db-url", help="run gold and predicted SQL on this database server instead of the SQLite "
                                     "files, e.g. postgresql+psycopg://user@127.0.0.1/{db_id} (see t2sql load-db)")
    sp.add_argument("--password-env", help="environment variable holding the --db-url password")
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("ask", help="translate one question (or run --sql) on a database, read-only")
    sp.add_argument("question", nargs="?", help="the question (leave out with --sql)")
    sp.add_argument("--db", required=True, help="SQLite file or database URL (postgresql+psycopg://..., "
                                                "mysql+pymysql://..., duckdb:///file.duckdb)")
    sp.add_argument("--password-env", help="environment variable holding the database password")
    sp.add_argument("--sql", help="run this SQL instead of translating a question (through the same guard)")
    sp.add_argument("--sql-dialect", default=None, help="dialect --sql is written in (default: the database's)")
    sp.add_argument("--csv", help="write the result as CSV to this file")
    sp.add_argument("--chart", help="write the result's chart (SVG) to this file, where one fits")
    sp.add_argument("--model", default="champion")
    sp.add_argument("--registry", default=default_registry)
    sp.add_argument("--backend", default="torch")
    sp.add_argument("--beams", type=int, default=1)
    sp.add_argument("--timeout", type=float, default=10.0)
    sp.add_argument("--max-rows", type=int, default=50)
    sp.set_defaults(func=cmd_ask)

    sp = sub.add_parser("score", help="score predicted SQL against a Spider-layout directory")
    sp.add_argument("--predictions", required=True, help="one predicted SQL per line, in question order")
    sp.add_argument("--spider", required=True, help="directory with tables.json, database/, dev.json ...")
    sp.add_argument("--split", default="dev")
    sp.add_argument("--out", help="per-example results as JSON")
    sp.add_argument("--timeout", type=float, default=30.0)
    sp.add_argument("--db-url", help="run the SQL on this server instead of the SQLite files, "
                                     "e.g. postgresql+psycopg://user@127.0.0.1/{db_id} (see t2sql load-db)")
    sp.add_argument("--password-env", help="environment variable holding the --db-url password")
    sp.set_defaults(func=cmd_score)

    sp = sub.add_parser("load-db", help="copy SQLite databases into PostgreSQL, MySQL/MariaDB or DuckDB")
    sp.add_argument("sqlite", nargs="+", help="SQLite files")
    sp.add_argument("--to", required=True, help="target URL; {db_id} is replaced by each file's name")
    sp.add_argument("--create", action="store_true", help="create the database on the server if needed")
    sp.add_argument("--replace", action="store_true", help="drop tables of the same names first")
    sp.add_argument("--password-env", help="environment variable holding the target's password")
    sp.set_defaults(func=cmd_load_db)

    sp = sub.add_parser("predict", help="write one predicted SQL per line for a Spider split or a JSONL file")
    sp.add_argument("--model", default="champion")
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--spider", help="Spider-layout directory")
    src.add_argument("--data", help="JSONL of question/context records")
    sp.add_argument("--split", default="dev")
    sp.add_argument("--out", required=True)
    sp.add_argument("--registry", default=default_registry)
    sp.add_argument("--backend", default="torch")
    sp.add_argument("--beams", type=int, default=1)
    sp.add_argument("--batch-size", type=int, default=32)
    sp.add_argument("--constrained", action="store_true",
                    help="constrained decoding: only valid query prefixes over the question's own schema")
    sp.set_defaults(func=cmd_predict)

    sp = sub.add_parser("runs", help="list registered runs (* marks the champion)")
    sp.add_argument("--registry", default=default_registry)
    sp.set_defaults(func=cmd_runs)

    sp = sub.add_parser("import-runs", help="register the runs of a registry written before MLflow (index.json)")
    sp.add_argument("old_registry", help="the old registry directory")
    sp.add_argument("--registry", default=default_registry)
    sp.set_defaults(func=cmd_import_runs)

    sp = sub.add_parser("ui", help="open the MLflow UI over the registry (runs, learning curves, model versions)")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=5000)
    sp.add_argument("--registry", default=default_registry)
    sp.set_defaults(func=cmd_ui)

    sp = sub.add_parser("promote", help="make a run the champion")
    sp.add_argument("run_id")
    sp.add_argument("--reason", default="promoted by hand")
    sp.add_argument("--registry", default=default_registry)
    sp.set_defaults(func=cmd_promote)

    sp = sub.add_parser("serve", help="serve the web GUI with waitress")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8000)
    sp.add_argument("--threads", type=int, default=8)
    sp.add_argument("--registry", default=default_registry)
    sp.set_defaults(func=cmd_serve)

    sub.add_parser("up", help="start a local Prefect server, the deployments and a worker; prints the UI address "
                              "(t2sql up --help)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["up"]:  # every option belongs to deployments.up
        from deployments.up import main as up

        return up(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"t2sql: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"t2sql: error: {exc}", file=sys.stderr)
        return 1

