"""Connections page (admin): databases by URL (PostgreSQL, MySQL/MariaDB, DuckDB, SQLite files).

An admin adds a name, a URL *without* password and where the password comes from (an environment
variable of the server, or a key of the secrets file ``T2SQL_DB_SECRETS``). The connection is opened
and its tables read before it is saved to the connections file; pages only ever show masked URLs,
and error messages are scrubbed of passwords.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for

from t2sql.databases.connections import ConnectionConfigError, ConnectionSpec, mask_url
from webui.answering import service
from webui.auth import admin_required

bp = Blueprint("connections", __name__, url_prefix="/connections")


def _rows():
    svc = service()
    try:
        specs, error = svc.catalog.specs(), None
    except ConnectionConfigError as exc:
        specs, error = [], str(exc)
    rows = []
    for spec in specs:
        try:
            url = mask_url(spec.url)
        except ConnectionConfigError:
            url = "(invalid URL)"
        source = f"environment variable {spec.password_env}" if spec.password_env else \
            f"secret {spec.password_secret}" if spec.password_secret else "none (URL or trust)"
        rows.append({"name": spec.name, "url": url, "password": source})
    return rows, error


@bp.route("")
@admin_required
def index():
    rows, error = _rows()
    if error:
        flash(error, "error")
    return render_template("connections/index.html", connections=rows,
                           connections_file=str(service().catalog.connections_file))


@bp.route("", methods=("POST",))
@admin_required
def add():
    form = request.form
    spec = ConnectionSpec(name=(form.get("name") or "").strip(), url=(form.get("url") or "").strip(),
                          password_env=(form.get("password_env") or "").strip() or None,
                          password_secret=(form.get("password_secret") or "").strip() or None)
    try:
        db = service().catalog.add_connection(spec)
    except ConnectionConfigError as exc:
        flash(f"Connection not added: {exc}", "error")
        rows, _ = _rows()
        return render_template("connections/index.html", connections=rows,
                               connections_file=str(service().catalog.connections_file),
                               form={"name": spec.name, "password_env": spec.password_env or "",
                                     "password_secret": spec.password_secret or ""}), 400
    flash(f"Connection {db.name} added ({db.engine}).", "success")
    return redirect(url_for("connections.index"))


@bp.route("/<name>/delete", methods=("POST",))
@admin_required
def delete(name: str):
    if service().catalog.remove_connection(name):
        flash(f"Connection {name} removed.", "success")
    else:
        flash(f"No connection named {name}.", "error")
    return redirect(url_for("connections.index"))
