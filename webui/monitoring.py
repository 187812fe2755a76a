"""The Monitoring page: success rate and latency over time and per database, CSV export, and
corrected questions exported as evaluation scenarios (YAML) or training records (JSONL)."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from flask import Blueprint, Response, render_template, request

from webui.answering import SCHEMA_PREFIX, ModelUnavailable, TargetError, service
from webui.store import EXPORT_COLUMNS, iso

bp = Blueprint("monitoring", __name__, url_prefix="/monitoring")

PERIODS = {"24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0, "all": None}
_PLOT_LOCK = threading.Lock()


def _filters() -> tuple[str, float | None, str | None]:
    period = request.args.get("period", "7d")
    if period not in PERIODS:
        period = "7d"
    span = PERIODS[period]
    database = request.args.get("database") or None
    return period, (time.time() - span) if span else None, database


@bp.route("")
def index():
    store = service().store
    period, since, database = _filters()
    return render_template(
        "monitoring/index.html", period=period, periods=list(PERIODS), database=database,
        databases=store.databases(), summary=store.summary(since, database), per_db=store.per_database(since),
        series=store.timeseries(since, database), recent=store.recent(15, database),
        n_corrected=len(store.corrected()), corrected_dbs=sorted({r["database"] for r in store.corrected()
                                                                  if not r["database"].startswith(SCHEMA_PREFIX)}),
    )


def render_plot(series: list[dict], title: str) -> bytes:
    """A PNG of success rate (top) and model latency p50/p95 (bottom) over time."""
    import datetime as dt

    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.6), dpi=100)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    times = [dt.datetime.fromtimestamp(p["start"]) for p in series]
    if series:
        ax1.plot(times, [100.0 * p["success_rate"] for p in series], marker="o", color="#2f7d4f", lw=1.8, ms=4)
        lat_t = [t for t, p in zip(times, series, strict=True) if p["latency_p50"] is not None]
        ax2.plot(lat_t, [p["latency_p50"] for p in series if p["latency_p50"] is not None], marker="o", ms=4,
                 color="#2b5c9e", lw=1.8, label="p50")
        ax2.plot(lat_t, [p["latency_p95"] for p in series if p["latency_p95"] is not None], marker="o", ms=4,
                 color="#c96a1b", lw=1.8, label="p95")
        ax2.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False, fontsize=8)
        locator = AutoDateLocator()
        ax2.xaxis.set_major_locator(locator)
        ax2.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    else:
        ax1.text(0.5, 0.5, "no questions yet", ha="center", va="center", transform=ax1.transAxes, color="#777")
    ax1.set_ylim(-3, 103)
    ax1.set_ylabel("success %")
    ax2.set_ylabel("model ms")
    ax2.set_ylim(bottom=0)
    ax1.set_title(title, fontsize=10, loc="left")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@bp.route("/plot.png")
def plot():
    period, since, database = _filters()
    series = service().store.timeseries(since, database)
    title = f"{database or 'all databases'}, {'all time' if period == 'all' else 'last ' + period}"
    with _PLOT_LOCK:  # matplotlib's font cache and text layout are not thread-safe
        png = render_plot(series, title)
    return Response(png, mimetype="image/png", headers={"Cache-Control": "no-store"})


@bp.route("/export.csv")
def export_csv():
    """Every logged question in the period as CSV."""
    _, since, database = _filters()
    store = service().store

    def generate():
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        yield buf.getvalue()
        for row in store.rows(since, database):
            buf.seek(0)
            buf.truncate()
            writer.writerow(row)
            yield buf.getvalue()

    name = f"t2sql-questions-{time.strftime('%Y%m%d')}.csv"
    return Response(generate(), mimetype="text/csv", headers={"Content-Disposition": f"attachment; filename={name}"})


def training_records() -> list[dict]:
    """Corrected questions as data records (the shape of train/validation/test .jsonl lines)."""
    svc = service()
    try:
        choice = svc.translators.current()
    except ModelUnavailable:
        choice = None
    records = []
    for row in svc.store.corrected():
        try:
            target = svc.target(database=row["database"])
        except TargetError:
            continue  # the database was removed since
        try:
            context = svc.context(target, choice)
        except TargetError:
            continue  # a connection that cannot be read now
        file_db = target.db is not None and target.db.path is not None
        records.append({
            "id": f"webui-{row['id']}",
            "question": row["question"],
            "context": context,
            "answer": svc.as_sqlite(target, row["corrected_sql"]),  # server dialects back to SQLite's
            "db_id": target.db.name if target.db else None,
            "db_path": str(target.db.path) if file_db else None,
            "source": "spider" if file_db else "create_context",
        })
    return records


@bp.route("/export/training.jsonl")
def export_training():
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in training_records())
    return Response(body, mimetype="application/x-ndjson",
                    headers={"Content-Disposition": "attachment; filename=t2sql-corrections.jsonl"})


def scenario_yaml(database: str) -> str:
    """The corrected questions of one database in the evaluation's scenario format (YAML)."""
    from t2sql.evaluation.scenarios import append_scenario_example

    svc = service()
    db = svc.catalog.get(database)
    if db is None or db.path is None:  # scenarios name SQLite files; server connections have none
        return ""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{database}.yaml"
        for row in svc.store.corrected(database):
            append_scenario_example(path, name=f"webui-{database}", database=str(db.path), question=row["question"],
                                    gold_sql=row["corrected_sql"], category=row["expert_category"],
                                    model_sql=row["sql"] or None)
        return path.read_text() if path.exists() else ""


@bp.route("/export/scenarios.zip")
def export_scenarios():
    """One scenario YAML per database with corrected questions (pasted schemas have no database to run on)."""
    store = service().store
    names = sorted({r["database"] for r in store.corrected() if not r["database"].startswith(SCHEMA_PREFIX)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.writestr(f"scenarios/webui-{name}.yaml", scenario_yaml(name))
    name = f"t2sql-scenarios-{iso(time.time())[:10]}.zip"
    return Response(buf.getvalue(), mimetype="application/zip",
                    headers={"Content-Disposition": f"attachment; filename={name}"})


@bp.route("/export/scenario/<database>.yaml")
def export_scenario(database: str):
    text = scenario_yaml(database)
    if not text:
        return Response(f"no corrected questions for database {database!r}\n", status=404, mimetype="text/plain")
    return Response(text, mimetype="application/x-yaml",
                    headers={"Content-Disposition": f"attachment; filename=webui-{database}.yaml"})

