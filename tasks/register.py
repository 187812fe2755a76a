"""Report and registration tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from t2sql import pipeline
from t2sql.config import load_config


@task(name="register", retries=2, retry_delay_seconds=[2, 10])
def register(config: dict[str, Any], winner: dict[str, Any], summary: dict[str, Any], run_id: str,
             champion: dict[str, Any] | None = None, data_fingerprint: str | None = None) -> dict[str, Any]:
    """Write the run directory and report, register the run in MLflow and apply the champion gate."""
    return pipeline.register_run(load_config(raw=config), winner, summary, run_id, champion, data_fingerprint)


@task(name="publish-artifacts")
def publish_artifacts(registration: dict[str, Any], techniques: list[dict[str, Any]]) -> None:
    """The run's summary as Prefect artifacts: the metrics table and the Markdown report."""
    run_dir = Path(registration["run_dir"])
    key = registration["run_id"].lower().replace("_", "-").replace(".", "-")
    create_table_artifact(key=f"{key}-techniques", table=techniques,
                          description=f"Techniques compared for run {registration['run_id']}")
    md = run_dir / "report.md"
    text = md.read_text() if md.is_file() else ""
    header = (f"# Run {registration['run_id']}\n\nPromoted: **{registration['promoted']}** "
              f"({registration['reason']})\n\nRun directory: `{run_dir}`\n\n")
    create_markdown_artifact(key=f"{key}-report", markdown=header + text,
                             description=f"Report of run {registration['run_id']}")
