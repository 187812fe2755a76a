"""The Pipelines page: start the Prefect deployment with chosen parameters (admin) and follow its runs.

Talks to the Prefect server at ``PREFECT_API_URL`` (``prefect server start``); when none is
configured or reachable the page says so instead of failing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from webui import PROJECT_ROOT
from webui.auth import admin_required, current_admin

bp = Blueprint("pipelines", __name__, url_prefix="/pipelines")

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


class PipelineUnavailable(RuntimeError):
    """No Prefect server is configured or reachable; the message says how to start one."""


class PipelineError(RuntimeError):
    """The server answered but refused (unknown deployment, bad parameters)."""


@dataclass
class PipelineStatus:
    reachable: bool
    message: str
    api_url: str | None
    ui_url: str | None


class PipelineService(Protocol):
    deployment: str

    def status(self) -> PipelineStatus: ...
    def start(self, parameters: dict[str, Any]) -> str: ...
    def run(self, run_id: str) -> dict[str, Any]: ...
    def recent(self, limit: int = 10) -> list[dict[str, Any]]: ...


def _ui_from_api(api_url: str) -> str:
    base = api_url.rstrip("/")
    return base[: -len("/api")] if base.endswith("/api") else base


class PrefectPipelines:
    """A Prefect deployment reached through the REST API.

    Args:
        api_url: the server's API (``http://127.0.0.1:4200/api``), or None when not configured.
        deployment: ``flow-name/deployment-name``.
        ui_url: the Prefect UI (default: the API URL without ``/api``).
    """

    def __init__(self, api_url: str | None, deployment: str, ui_url: str | None = None):
        self.api_url = api_url.rstrip("/") if api_url else None
        self.deployment = deployment
        self.ui_url = (ui_url or (_ui_from_api(self.api_url) if self.api_url else None))

    def status(self) -> PipelineStatus:
        if not self.api_url:
            return PipelineStatus(False, "No Prefect server is configured: start one with `prefect server start "
                                  "--host 127.0.0.1` and set PREFECT_API_URL=http://127.0.0.1:4200/api for the GUI.",
                                  None, None)
        try:
            r = httpx.get(f"{self.api_url}/health", timeout=2.0)
            r.raise_for_status()
        except (httpx.HTTPError, ValueError) as exc:
            return PipelineStatus(False, f"The Prefect server at {self.api_url} is not reachable "
                                  f"({type(exc).__name__}). Start it with `prefect server start --host 127.0.0.1`.",
                                  self.api_url, self.ui_url)
        return PipelineStatus(True, f"Prefect server at {self.api_url} is up.", self.api_url, self.ui_url)

    def _settings(self):
        from prefect.settings import PREFECT_API_URL, temporary_settings

        if not self.api_url:
            raise PipelineUnavailable(self.status().message)
        return temporary_settings(updates={PREFECT_API_URL: self.api_url})

    def _describe(self, run) -> dict[str, Any]:
        state = run.state
        return {
            "id": str(run.id), "name": run.name,
            "state_type": state.type.value if state else "UNKNOWN", "state_name": state.name if state else "Unknown",
            "message": (state.message or "") if state else "",
            "created": run.created, "start_time": run.start_time, "end_time": run.end_time,
            "expected_start_time": run.expected_start_time,
            "parameters": run.parameters, "url": f"{self.ui_url}/runs/flow-run/{run.id}" if self.ui_url else None,
        }

    def _call(self, fn):
        from prefect.exceptions import ObjectNotFound

        try:
            with self._settings():
                return fn()
        except ObjectNotFound as exc:
            raise PipelineError(f"not found on the Prefect server: {exc}. Create the deployment "
                                f"{self.deployment!r} first (deploy the pipeline flow and start a worker).") from None
        except (httpx.HTTPError, OSError) as exc:
            raise PipelineUnavailable(f"the Prefect server at {self.api_url} did not answer: "
                                      f"{type(exc).__name__}: {exc}") from None

    def start(self, parameters: dict[str, Any]) -> str:
        """Create a flow run of the deployment and return its id without waiting for it.

        Raises:
            PipelineUnavailable: no server.
            PipelineError: the deployment does not exist or refuses the parameters.
        """
        status = self.status()
        if not status.reachable:
            raise PipelineUnavailable(status.message)
        from prefect.deployments import run_deployment

        def go():
            try:
                run = run_deployment(self.deployment, parameters=parameters, timeout=0, as_subflow=False)
            except (ValueError, TypeError) as exc:
                raise PipelineError(f"the deployment refused the parameters: {exc}") from None
            return str(run.id)

        return self._call(go)

    def run(self, run_id: str) -> dict[str, Any]:
        """The state of one flow run."""
        from prefect.client.orchestration import get_client

        def go():
            with get_client(sync_client=True) as client:
                return self._describe(client.read_flow_run(uuid.UUID(run_id)))

        return self._call(go)

    def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest flow runs of the deployment, newest first; empty when it does not exist yet."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
        from prefect.client.schemas.sorting import FlowRunSort

        def go():
            with get_client(sync_client=True) as client:
                dep = client.read_deployment_by_name(self.deployment)
                runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                                             sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)
                return [self._describe(r) for r in runs]

        return self._call(go)


def pipeline_service() -> PipelineService:
    cfg = current_app.config
    factory = cfg.get("PIPELINE_SERVICE_FACTORY")
    if factory is not None:
        return factory(cfg)
    return PrefectPipelines(cfg.get("PREFECT_API_URL"), cfg["PIPELINE_DEPLOYMENT"], cfg.get("PREFECT_UI_URL"))


def config_choices() -> list[str]:
    """Pipeline configs offered in the form: ``*.yaml`` in the config folder, relative to the project."""
    folder = Path(current_app.config["PIPELINE_CONFIG_DIR"])
    out = []
    for p in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
        try:
            out.append(p.resolve().relative_to(PROJECT_ROOT).as_posix())
        except ValueError:
            out.append(str(p.resolve()))
    return out


def parse_overrides(text: str) -> list[str]:
    """One ``dotted.key=value`` override per non-empty line.

    Raises:
        ValueError: a line is not KEY=VALUE (the message quotes it).
    """
    out = []
    for n, line in enumerate((text or "").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, _ = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override line {n} {line!r}: expected KEY=VALUE, e.g. train.epochs=2")
        out.append(line)
    return out


@bp.route("")
def index():
    svc = pipeline_service()
    status = svc.status()
    runs, runs_error = [], None
    if status.reachable:
        try:
            runs = svc.recent(10)
        except PipelineError as exc:
            runs_error = str(exc)
        except PipelineUnavailable as exc:
            status = PipelineStatus(False, str(exc), status.api_url, status.ui_url)
    return render_template("pipelines/index.html", status=status, runs=runs, runs_error=runs_error,
                           deployment=svc.deployment, configs=config_choices(), final=FINAL_STATES)


@bp.route("/start", methods=("POST",))
@admin_required
def start():
    from t2sql.config import ConfigError, load_config

    config_path = (request.form.get("config_path") or "").strip()
    if config_path not in config_choices():
        flash(f"Choose one of the listed configs (got {config_path!r}).", "error")
        return redirect(url_for("pipelines.index"))
    try:
        overrides = parse_overrides(request.form.get("overrides", ""))
        path = Path(config_path) if Path(config_path).is_absolute() else PROJECT_ROOT / config_path
        load_config(path, overrides)  # refuse a bad config here rather than in the worker
    except (ValueError, ConfigError) as exc:
        flash(f"Not started: {exc}", "error")
        return redirect(url_for("pipelines.index"))
    svc = pipeline_service()
    try:
        run_id = svc.start({"config_path": config_path, "overrides": overrides})
    except (PipelineUnavailable, PipelineError) as exc:
        flash(f"Not started: {exc}", "error")
        return redirect(url_for("pipelines.index"))
    current_app.logger.info("pipeline run %s started by admin:%s", run_id, current_admin())
    flash(f"Pipeline run {run_id} created.", "success")
    return redirect(url_for("pipelines.run", run_id=run_id))


@bp.route("/runs/<run_id>")
def run(run_id: str):
    try:
        uuid.UUID(run_id)
    except ValueError:
        abort(404, description=f"{run_id!r} is not a flow run id")
    svc = pipeline_service()
    status = svc.status()
    info, error = None, None
    if status.reachable:
        try:
            info = svc.run(run_id)
        except (PipelineError, PipelineUnavailable) as exc:
            error = str(exc)
    else:
        error = status.message
    return render_template("pipelines/run.html", run=info, error=error, status=status, final=FINAL_STATES,
                           run_id=run_id)
