"""The t2sql web GUI: ask questions, compare registered models, start pipelines, monitor answers.

    python -m webui --host 127.0.0.1 --port 8000 --registry runs     # production server (waitress)
    flask --app webui run --debug                                      # development only

One blueprint per page (``ask``, ``models``, ``pipelines``, ``monitoring``, ``review``), a JSON
API (``api``) and a login for admin actions (``auth``). The model is the registry's champion,
reloaded when a new one is promoted. Every question is logged in ``monitoring.sqlite`` in the
instance folder.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.security import generate_password_hash

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SECRET_ENV = "T2SQL_SECRET_KEY"
ADMIN_PASSWORD_ENV = "T2SQL_ADMIN_PASSWORD"
ADMIN_USER_ENV = "T2SQL_ADMIN_USER"
INSTANCE_ENV = "T2SQL_WEBUI_INSTANCE"
REGISTRY_ENV = "T2SQL_REGISTRY"

csrf = CSRFProtect()


def default_registry_root() -> str:
    """``$T2SQL_REGISTRY``, else ``$T2SQL_HOME/runs``, else ``runs``."""
    if os.environ.get(REGISTRY_ENV):
        return os.environ[REGISTRY_ENV]
    if os.environ.get("T2SQL_HOME"):
        return str(Path(os.environ["T2SQL_HOME"]) / "runs")
    return "runs"


def default_instance_path() -> str:
    """``$T2SQL_WEBUI_INSTANCE``, else ``$T2SQL_HOME/webui``, else ``.t2sql/webui`` under the working directory."""
    if os.environ.get(INSTANCE_ENV):
        return str(Path(os.environ[INSTANCE_ENV]).resolve())
    if os.environ.get("T2SQL_HOME"):
        return str((Path(os.environ["T2SQL_HOME"]) / "webui").resolve())
    return str((Path.cwd() / ".t2sql" / "webui").resolve())


def _int_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return max(1, int(value))
    except ValueError:
        raise ValueError(f"environment variable {name} must be a whole number, got {value!r}") from None


def _defaults(instance: Path) -> dict[str, Any]:
    return {
        "REGISTRY_ROOT": default_registry_root(),
        # "champion", "run:<id>", a run id or a model directory.
        "MODEL_REF": os.environ.get("T2SQL_MODEL", "champion"),
        # Callable(model_dir: Path) -> object with translate_one(question, context) -> (sql, ms).
        "TRANSLATOR_FACTORY": None,
        "REGISTRY_CHECK_S": 1.0,  # seconds between two looks at the registry for a new champion
        # Intra-op threads of the model (default: physical cores); 1 suits a busy shared machine.
        "TRANSLATOR_THREADS": _int_env("T2SQL_MODEL_THREADS"),
        "TRANSLATOR_MAX_NEW_TOKENS": _int_env("T2SQL_MAX_NEW_TOKENS") or 128,
        "MODEL_CACHE_SIZE": 2,
        "DATABASE_DIRS": [str(PROJECT_ROOT / "data" / "spider_sample" / "database")],
        "UPLOAD_DIR": str(instance / "uploads"),
        "CONNECTIONS_FILE": os.environ.get("T2SQL_CONNECTIONS") or str(instance / "connections.yaml"),
        "DB_SECRETS_FILE": os.environ.get("T2SQL_DB_SECRETS"),
        "MONITORING_DB": str(instance / "monitoring.sqlite"),
        "SCENARIO_DIR": str(instance / "scenarios"),
        "MAX_CONTENT_LENGTH": 32 * 1024 * 1024,
        "MAX_SCHEMA_CHARS": 100_000,
        "QUERY_TIMEOUT_S": 5.0,
        "ROW_CAP": 1000,
        "PAGE_SIZE": 25,
        "ANSWER_CACHE": True,
        "ADMIN_USER": os.environ.get(ADMIN_USER_ENV, "admin"),
        "ADMIN_PASSWORD_HASH": None,
        "PREFECT_API_URL": os.environ.get("PREFECT_API_URL"),
        "PREFECT_UI_URL": os.environ.get("PREFECT_UI_URL"),
        "PIPELINE_DEPLOYMENT": "t2sql-pipeline/on-demand",
        "PIPELINE_CONFIG_DIR": str(PROJECT_ROOT / "configs"),
        # Callable(app_config) -> a pipelines service (see webui.pipelines.PrefectPipelines).
        "PIPELINE_SERVICE_FACTORY": None,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "WTF_CSRF_TIME_LIMIT": None,
        "T2SQL_ENV": os.environ.get("T2SQL_ENV", "production"),
    }


def _password_hash(value: str) -> str:
    """A stored hash as given, or the hash of a plain password."""
    if value.startswith(("pbkdf2:", "scrypt:")):
        return value
    return generate_password_hash(value)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask application.

    Args:
        test_config: settings that replace the defaults (tests pass temporary paths, a
            ``TRANSLATOR_FACTORY``, ``ADMIN_PASSWORD`` in plain text, ``SECRET_KEY``).

    Returns:
        The configured app with every blueprint registered.
    """
    instance = Path((test_config or {}).get("INSTANCE_PATH") or default_instance_path())
    app = Flask(__name__, instance_path=str(instance), instance_relative_config=True)
    app.config.from_mapping(_defaults(instance))
    secret = os.environ.get(SECRET_ENV)
    if secret:
        app.config["SECRET_KEY"] = secret
    if os.environ.get(ADMIN_PASSWORD_ENV):
        app.config["ADMIN_PASSWORD_HASH"] = _password_hash(os.environ[ADMIN_PASSWORD_ENV])
    if test_config:
        app.config.update({k: v for k, v in test_config.items() if k not in ("ADMIN_PASSWORD", "INSTANCE_PATH")})
        if test_config.get("ADMIN_PASSWORD"):
            app.config["ADMIN_PASSWORD_HASH"] = _password_hash(test_config["ADMIN_PASSWORD"])
    if not app.config.get("SECRET_KEY"):
        log.warning("%s is not set: using a random per-process secret key (sessions end at restart)", SECRET_ENV)
        app.config["SECRET_KEY"] = secrets.token_hex(32)
    if app.debug and app.config["T2SQL_ENV"] != "development":
        log.warning("debug mode refused outside development (set T2SQL_ENV=development to allow it)")
        app.debug = False

    for key in ("UPLOAD_DIR", "SCENARIO_DIR"):
        Path(app.config[key]).mkdir(parents=True, exist_ok=True)
    Path(app.config["MONITORING_DB"]).parent.mkdir(parents=True, exist_ok=True)

    from webui.answering import AnswerService
    from webui.databases import DatabaseCatalog
    from webui.store import MonitoringStore
    from webui.translators import TranslatorPool

    store = MonitoringStore(app.config["MONITORING_DB"])
    catalog = DatabaseCatalog(app.config["DATABASE_DIRS"], app.config["UPLOAD_DIR"],
                              connections_file=app.config["CONNECTIONS_FILE"],
                              secrets_file=app.config["DB_SECRETS_FILE"],
                              timeout_s=app.config["QUERY_TIMEOUT_S"], row_cap=app.config["ROW_CAP"])
    translators = TranslatorPool(
        app.config["REGISTRY_ROOT"], app.config["MODEL_REF"], factory=app.config["TRANSLATOR_FACTORY"],
        threads=app.config["TRANSLATOR_THREADS"], max_new_tokens=app.config["TRANSLATOR_MAX_NEW_TOKENS"],
        max_models=app.config["MODEL_CACHE_SIZE"], check_every_s=app.config["REGISTRY_CHECK_S"],
    )
    app.extensions["t2sql.store"] = store
    app.extensions["t2sql.answers"] = AnswerService(
        catalog, translators, store, timeout_s=app.config["QUERY_TIMEOUT_S"], row_cap=app.config["ROW_CAP"],
        use_cache=app.config["ANSWER_CACHE"], max_schema_chars=app.config["MAX_SCHEMA_CHARS"],
    )

    csrf.init_app(app)

    from webui import api, ask, auth, connections, models, monitoring, pipelines, review

    app.register_blueprint(auth.bp)
    app.register_blueprint(ask.bp)
    app.register_blueprint(models.bp)
    app.register_blueprint(pipelines.bp)
    app.register_blueprint(monitoring.bp)
    app.register_blueprint(review.bp)
    app.register_blueprint(connections.bp)
    app.register_blueprint(api.bp)
    csrf.exempt(api.bp)
    app.add_url_rule("/", endpoint="index", view_func=ask.index)

    from webui.store import iso

    app.add_template_filter(lambda ts: iso(ts)[:19].replace("T", " "), "utc")

    @app.context_processor
    def _globals():
        from webui.auth import current_admin

        return {"admin_user": current_admin(), "admin_enabled": bool(app.config.get("ADMIN_PASSWORD_HASH"))}

    @app.after_request
    def _headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'self'",
        )
        return response

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError):
        return render_template("error.html", title="Form expired",
                               message=f"{exc.description} Reload the page and submit again."), 400

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if request.path.startswith("/api/"):
            response = jsonify(error=exc.description or exc.name, status=exc.code)
        else:
            response = app.make_response(render_template("error.html", title=f"{exc.code} {exc.name}",
                                                         message=exc.description))
        response.status_code = exc.code or 500
        for key, value in exc.get_headers():  # e.g. Allow on 405
            if key.lower() != "content-type":
                response.headers[key] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            return jsonify(error=f"internal error: {type(exc).__name__}", status=500), 500
        return render_template("error.html", title="Something went wrong",
                               message=f"The server hit an unexpected {type(exc).__name__}; it is logged."), 500

    return app


def serve(host: str, port: int, registry_root: str, threads: int = 8) -> None:
    """Run the GUI under waitress until interrupted.

    Args:
        host: interface to bind (``127.0.0.1`` for local use only).
        port: TCP port.
        registry_root: the model registry whose champion answers questions.
        threads: waitress worker threads.
    """
    from waitress import serve as waitress_serve

    app = create_app({"REGISTRY_ROOT": registry_root})
    log.info("t2sql web GUI on http://%s:%d (registry %s, instance %s)", host, port, registry_root,
             app.instance_path)
    waitress_serve(app, host=host, port=port, threads=threads, ident="t2sql")
