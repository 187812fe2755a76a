"""The Models page: registered runs, their metrics and evaluation reports, the champion; promotion (admin)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_from_directory, url_for

from t2sql.registry import Registry, RegistryError
from webui.auth import admin_required, current_admin

bp = Blueprint("models", __name__, url_prefix="/models")

METRICS = [  # (key, label, format)
    ("execution_accuracy", "Execution acc.", "pct"),
    ("exact_match", "Exact match", "pct"),
    ("bleu", "BLEU", "num"),
    ("parse_rate", "Parses", "pct"),
    ("execution_success_rate", "Runs", "pct"),
    ("latency_ms_p50", "p50 ms", "ms"),
    ("latency_ms_p95", "p95 ms", "ms"),
    ("n_examples", "Examples", "int"),
]
# Files of a run directory that may be shown; never model weights.
SERVED_SUFFIXES = {".html", ".png", ".svg", ".jpg", ".jpeg", ".css", ".md", ".json", ".yaml", ".yml", ".csv", ".txt"}
REPORT_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'none'; "
              "frame-ancestors 'self'")
_HIDDEN_INFO = {"run_id", "path", "metrics", "registered_at", "mlflow_run_id", "source"}


def registry() -> Registry:
    return Registry(current_app.config["REGISTRY_ROOT"])


def _run_or_404(run_id: str) -> dict:
    try:
        return registry().get(run_id)
    except RegistryError as exc:
        abort(404, description=str(exc))


def _info(entry: dict) -> dict:
    """Scalar descriptive fields of a run (technique, base model, ...)."""
    return {k: v for k, v in entry.items() if k not in _HIDDEN_INFO and isinstance(v, (str, int, float, bool))}


@bp.route("")
def index():
    reg = registry()
    try:
        runs, champion, decisions = reg.runs(), reg.champion(), reg.decisions()
    except RegistryError as exc:
        flash(str(exc), "error")
        runs, champion, decisions = [], None, []
    for run in runs:
        run["info"] = _info(run)
        run["has_report"] = (reg.run_dir(run["run_id"]) / "report.html").is_file()
    decisions = list(reversed(decisions))[:15]
    return render_template("models/index.html", runs=runs, champion=champion, metrics=METRICS,
                           decisions=decisions, registry_root=str(reg.root))


@bp.route("/<run_id>")
def detail(run_id: str):
    entry = _run_or_404(run_id)
    run_dir = registry().run_dir(run_id)
    config_text = None
    if (run_dir / "config.yaml").is_file():
        config_text = (run_dir / "config.yaml").read_text(errors="replace")[:20000]
    extra_metrics = {k: v for k, v in (entry.get("metrics") or {}).items()
                     if k not in {m[0] for m in METRICS} and isinstance(v, (int, float, str))}
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
                   if p.is_file() and p.suffix in SERVED_SUFFIXES and "model" not in p.relative_to(run_dir).parts[:1])
    return render_template("models/detail.html", run=entry, run_id=run_id, metrics=METRICS, extra=extra_metrics,
                           info=_info(entry), champion=registry().champion(), config_text=config_text, files=files[:50],
                           has_report=(run_dir / "report.html").is_file())


@bp.route("/<run_id>/files/<path:name>")
def run_file(run_id: str, name: str):
    """A report or plot from a run directory (weights and other files are not served)."""
    _run_or_404(run_id)
    if Path(name).suffix.lower() not in SERVED_SUFFIXES or Path(name).parts[:1] == ("model",):
        abort(404, description=f"{name} is not a report file")
    response = send_from_directory(registry().run_dir(run_id), name)
    if name.endswith(".html"):
        response.headers["Content-Security-Policy"] = REPORT_CSP
    return response


@bp.route("/<run_id>/promote", methods=("POST",))
@admin_required
def promote(run_id: str):
    _run_or_404(run_id)
    reason = " ".join((request.form.get("reason") or "").split())[:500]
    if not reason:
        flash("Give a reason for the promotion; it is recorded with the decision.", "error")
        return redirect(url_for("models.index"))
    try:
        registry().promote(run_id, reason=reason, by=f"admin:{current_admin()}")
        current_app.extensions["t2sql.answers"].translators.invalidate()
    except RegistryError as exc:
        flash(str(exc), "error")
        return redirect(url_for("models.index"))
    flash(f"{run_id} is now the champion; new questions use it.", "success")
    return redirect(url_for("models.index"))

