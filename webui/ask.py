"""The Ask page: choose or upload a database (or paste a schema), ask, read and edit the SQL, see rows."""

from __future__ import annotations

import math

from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, url_for
from markupsafe import Markup

from t2sql.databases.charts import chart_svg, result_csv

from webui.answering import MAX_SQL_CHARS, SCHEMA_PREFIX, ModelUnavailable, TargetError, cell, service
from webui.databases import UploadError

bp = Blueprint("ask", __name__, url_prefix="/ask")


def _form_page(status: int = 200, **values):
    svc = service()
    try:
        model = svc.translators.current().label
        model_error = None
    except ModelUnavailable as exc:
        model, model_error = None, str(exc)
    selected = values.pop("database", None) or request.args.get("database") or ""
    return render_template(
        "ask/index.html", databases=svc.catalog.list(), selected=selected, model=model, model_error=model_error,
        recent=svc.store.recent(8), **values,
    ), status


def index():
    """The question form (also served at ``/``)."""
    return _form_page()


@bp.route("", methods=("GET", "POST"))
def ask():
    if request.method == "GET":
        return redirect(url_for("index"))
    svc = service()
    question = request.form.get("question", "")
    database = request.form.get("database", "")
    schema = request.form.get("schema", "")
    mode = request.form.get("mode", "database")
    keep = {"question": question, "schema": schema, "database": database, "mode": mode}
    if mode == "schema":
        database = ""
    else:
        schema = ""
    try:
        target = svc.target(database=database, schema=schema)
        answer = svc.answer(question, target, origin="page")
    except (TargetError, ValueError) as exc:
        flash(str(exc), "error")
        return _form_page(400, **keep)
    except ModelUnavailable as exc:
        flash(f"No model can answer right now: {exc}", "error")
        return _form_page(503, **keep)
    return redirect(url_for("ask.result", qid=answer.id))


@bp.route("/upload", methods=("POST",))
def upload():
    file = request.files.get("file")
    if file is None or not file.filename:
        flash("Choose a .sqlite file to upload.", "error")
        return _form_page(400)
    try:
        db = service().catalog.save_upload(file.stream, file.filename)
    except UploadError as exc:
        flash(f"Upload refused: {exc}", "error")
        return _form_page(400)
    flash(f"Database {db.name} added.", "success")
    return redirect(url_for("index", database=db.name))


def _entry_or_404(qid: int) -> dict:
    row = service().store.get(qid)
    if row is None:
        abort(404, description=f"no question with id {qid}")
    return row


@bp.route("/<int:qid>")
def result(qid: int):
    """A logged question with its SQL (editable) and the rows, paginated."""
    svc = service()
    row = _entry_or_404(qid)
    sql = request.args.get("sql", row["sql"])
    edited = "sql" in request.args and sql != row["sql"]
    try:
        page = max(1, int(request.args.get("page", 1)))
    except ValueError:
        page = 1
    try:
        target = svc.target(database=row["database"])
    except TargetError as exc:
        target, result_, context = None, None, ""
        flash(f"This question's database is gone: {exc}", "error")
    else:
        result_ = svc.result_for(qid, target, sql)
        try:
            choice = svc.translators.current()
        except ModelUnavailable:
            choice = None
        try:
            context = svc.context(target, choice)
        except TargetError as exc:
            context = ""
            flash(str(exc), "error")
    size = current_app.config["PAGE_SIZE"]
    rows, pages = [], 1
    if result_ is not None and result_.ok:
        pages = max(1, math.ceil(len(result_.rows) / size))
        page = min(page, pages)
        rows = [[cell(v) for v in r] for r in result_.rows[(page - 1) * size:page * size]]
    chart = None
    if result_ is not None and result_.ok:
        svg = chart_svg(result_.columns, [[cell(v) for v in r] for r in result_.rows])
        chart = Markup(svg) if svg else None  # built from escaped text, no scripts or external references
    dialect = svc.dialect(target) if target is not None else "sqlite"
    return render_template(
        "ask/result.html", chart=chart, dialect=dialect, entry=row, sql=sql, edited=edited, result=result_, rows=rows,
        page=page, pages=pages,
        page_size=size, context=context, schema_only=row["database"].startswith(SCHEMA_PREFIX),
        row_cap=current_app.config["ROW_CAP"], timeout_s=current_app.config["QUERY_TIMEOUT_S"],
    )


@bp.route("/<int:qid>/result.csv")
def result_csv_download(qid: int):
    """The rows of a question's SQL (or of ``?sql=``, run through the same guard) as a CSV download."""
    svc = service()
    row = _entry_or_404(qid)
    sql = request.args.get("sql", row["sql"])
    if len(sql) > MAX_SQL_CHARS:
        abort(400, description=f"the SQL has {len(sql)} characters; at most {MAX_SQL_CHARS} run")
    try:
        target = svc.target(database=row["database"])
    except TargetError as exc:
        abort(404, description=str(exc))
    res = svc.run_sql(target, sql)
    if not res.ok:
        abort(400, description=f"the query did not run ({res.error_kind}): {res.error}")
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in row["database"])[:60]
    return Response(result_csv(res.columns, [[cell(v) for v in r] for r in res.rows]), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}-{qid}.csv"'})


@bp.route("/<int:qid>/run", methods=("POST",))
def run(qid: int):
    """Run edited SQL (shown via a redirect, so pages and reloads keep it) or save it as the correction."""
    svc = service()
    row = _entry_or_404(qid)
    sql = (request.form.get("sql") or "").strip()
    if len(sql) > MAX_SQL_CHARS:
        flash(f"The SQL has {len(sql)} characters; at most {MAX_SQL_CHARS} run.", "error")
        return redirect(url_for("ask.result", qid=qid))
    if request.form.get("action") == "save":
        try:
            target = svc.target(database=row["database"])
        except TargetError as exc:
            flash(str(exc), "error")
            return redirect(url_for("ask.result", qid=qid))
        res = svc.run_sql(target, sql, row_cap=1)
        if not res.ok:
            flash(f"Not saved: the corrected SQL must run ({res.error}).", "error")
            return redirect(url_for("ask.result", qid=qid, sql=sql))
        svc.store.set_correction(qid, sql)
        flash("Saved as the correct SQL for this question; it can be exported from Monitoring.", "success")
    return redirect(url_for("ask.result", qid=qid, sql=sql))


@bp.route("/<int:qid>/feedback", methods=("POST",))
def feedback(qid: int):
    _entry_or_404(qid)
    value = {"up": 1, "down": -1}.get(request.form.get("value", ""))
    if value is None:
        abort(400, description="feedback must be 'up' or 'down'")
    service().store.set_feedback(qid, value)
    flash("Thanks: feedback recorded." if value > 0 else "Thanks: sent to expert review.", "success")
    return redirect(url_for("ask.result", qid=qid))
