"""Admin login: one account whose password comes from ``T2SQL_ADMIN_PASSWORD`` (compared as a hash).

Promoting a model, starting a pipeline and expert review need it. Without the variable the
login is disabled and those actions are refused.
"""

from __future__ import annotations

import functools
import hmac
import time

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash

bp = Blueprint("auth", __name__, url_prefix="/auth")

_FAILED_DELAY_S = 0.5


def current_admin() -> str | None:
    """The logged-in admin's user name, or None."""
    return session.get("admin")


def admin_required(view):
    """Redirect to the login page unless an admin is logged in."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if current_admin() is None:
            flash("Log in as admin to do that.", "warning")
            return redirect(url_for("auth.login", next=request.path))
        return view(*args, **kwargs)

    return wrapped


def _safe_next(target: str | None) -> str:
    """Only local paths are followed after login (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("index")


@bp.route("/login", methods=("GET", "POST"))
def login():
    enabled = bool(current_app.config.get("ADMIN_PASSWORD_HASH"))
    next_url = _safe_next(request.values.get("next"))
    if request.method == "POST":
        if not enabled:
            flash("Admin login is disabled: set T2SQL_ADMIN_PASSWORD on the server.", "error")
            return render_template("auth/login.html", enabled=enabled, next=next_url), 403
        user = (request.form.get("username") or "").strip()
        password = request.form.get("password") or ""
        user_ok = hmac.compare_digest(user.encode(), str(current_app.config["ADMIN_USER"]).encode())
        pass_ok = check_password_hash(current_app.config["ADMIN_PASSWORD_HASH"], password)
        if user_ok and pass_ok:
            session.clear()
            session["admin"] = user
            flash(f"Logged in as {user}.", "success")
            return redirect(next_url)
        time.sleep(_FAILED_DELAY_S)  # slows password guessing
        flash("Wrong user name or password.", "error")
        return render_template("auth/login.html", enabled=enabled, next=next_url), 401
    return render_template("auth/login.html", enabled=enabled, next=next_url)


@bp.route("/logout", methods=("POST",))
def logout():
    session.clear()
    flash("Logged out.", "success")
    return redirect(url_for("index"))
