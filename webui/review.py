"""Expert review: failed and thumbs-down questions get gold SQL and an error category, saved as
evaluation scenario examples (one YAML file per database in the instance's scenario folder)."""

from __future__ import annotations

import re
from pathlib import Path

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_from_directory, url_for

from t2sql.evaluation.categories import ERROR_CATEGORIES
from t2sql.evaluation.scenarios import append_scenario_example
from webui.answering import MAX_SQL_CHARS, TargetError, service
from webui.auth import admin_required, current_admin

bp = Blueprint("review", __name__, url_prefix="/review")

# The evaluation's categories (what its reports count), less "correct": a reviewed answer is wrong.
CATEGORIES = [(k, v) for k, v in ERROR_CATEGORIES.items() if k != "correct"]
_CATEGORY_KEYS = {k for k, _ in CATEGORIES}
_FILE = re.compile(r"^[A-Za-z0-9_-]+\.yaml$")


def scenario_path(database: str) -> Path:
    return Path(current_app.config["SCENARIO_DIR"]) / f"webui-{database}.yaml"


@bp.route("")
@admin_required
def index():
    store = service().store
    folder = Path(current_app.config["SCENARIO_DIR"])
    files = sorted(p.name for p in folder.glob("*.yaml")) if folder.is_dir() else []
    return render_template("review/index.html", queue=store.review_queue(50), reviewed=store.reviewed(15),
                           categories=CATEGORIES, files=files, scenario_dir=str(folder))


@bp.route("/<int:qid>", methods=("POST",))
@admin_required
def save(qid: int):
    svc = service()
    row = svc.store.get(qid)
    if row is None:
        abort(404, description=f"no question with id {qid}")
    gold = (request.form.get("gold_sql") or "").strip().rstrip(";").strip()
    category = request.form.get("category", "")
    if category not in _CATEGORY_KEYS:
        flash(f"Question {qid}: choose an error category.", "error")
        return redirect(url_for("review.index"))
    if not gold or len(gold) > MAX_SQL_CHARS:
        flash(f"Question {qid}: write the gold SQL (at most {MAX_SQL_CHARS} characters).", "error")
        return redirect(url_for("review.index"))
    try:
        target = svc.target(database=row["database"])
    except TargetError as exc:
        flash(f"Question {qid}: {exc}", "error")
        return redirect(url_for("review.index"))
    res = svc.run_sql(target, gold, row_cap=1)
    if not res.ok:
        flash(f"Question {qid}: the gold SQL must run on {row['database']}: {res.error}", "error")
        return redirect(url_for("review.index"))
    by = f"admin:{current_admin()}"
    if target.db is not None and target.db.path is not None:
        append_scenario_example(scenario_path(target.db.name), name=f"webui-{target.db.name}",
                                database=str(target.db.path), question=row["question"], gold_sql=gold,
                                category=category, model_sql=row["sql"] or None)
        where = f"scenario file webui-{target.db.name}.yaml"
    else:
        where = ("the training export (a pasted schema or a server connection has no SQLite file for an "
                 "evaluation scenario)")
    svc.store.mark_reviewed(qid, gold_sql=gold, category=category, by=by)
    flash(f"Question {qid} saved to {where}.", "success")
    return redirect(url_for("review.index"))


@bp.route("/scenarios/<name>")
@admin_required
def scenario_file(name: str):
    if not _FILE.match(name):
        abort(404)
    return send_from_directory(current_app.config["SCENARIO_DIR"], name, mimetype="application/x-yaml",
                               as_attachment=True)


__all__ = ["CATEGORIES", "bp"]
