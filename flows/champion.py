"""The ``t2sql-evaluate-champion`` flow: the registry's champion on a config's test split.

    python -m flows.champion configs/quickstart.yaml [dotted.key=value ...]
    prefect deployment run t2sql-evaluate-champion/weekly     # through a server (see prefect.yaml)

The test split is the one the pipeline prepares from the config (same data, same split), so the
figures compare with those the champion gate used. The metrics land in a table artifact.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from t2sql.config import load_config, registry_root
from tasks.data import prepare_data
from tasks.evaluate import evaluate_champion

FLOW_NAME = "t2sql-evaluate-champion"
ARTIFACT_KEY = "t2sql-champion-evaluation"


@flow(name=FLOW_NAME, log_prints=True)
def evaluate_registry_champion(config_path: str = "configs/quickstart.yaml",
                               overrides: list[str] | None = None) -> dict[str, Any]:
    """Evaluate the current champion on the test split of ``config_path``.

    Args:
        config_path: a YAML pipeline configuration (data, eval settings and registry).
        overrides: ``dotted.key=value`` settings applied on top.

    Returns:
        {"run_id": the champion, "metrics": scalar metrics, "test": the test file}.

    Raises:
        RuntimeError: the registry has no champion, or its model cannot be loaded.
    """
    logger = get_run_logger()
    cfg = load_config(config_path, overrides)
    raw = cfg.model_dump(mode="json")
    data = prepare_data(raw)
    champion = evaluate_champion(raw, data)
    if champion is None:
        raise RuntimeError(f"no champion to evaluate in {registry_root(cfg)}: run the pipeline first "
                           "(deployment t2sql-pipeline/on-demand or `t2sql run --config ...`)")
    metrics = {k: v for k, v in champion["metrics"].items() if not isinstance(v, (dict, list))}
    metrics.pop("predictions_path", None)
    create_table_artifact(key=ARTIFACT_KEY, table=[{"run_id": champion["run_id"], **metrics}],
                          description=f"Champion {champion['run_id']} on {data['test']}")
    logger.info("champion %s: execution accuracy %s, exact match %s on %s examples", champion["run_id"],
                metrics.get("execution_accuracy"), metrics.get("exact_match"), metrics.get("n_examples"))
    return {"run_id": champion["run_id"], "metrics": metrics, "test": data["test"]}


if __name__ == "__main__":
    print(evaluate_registry_champion(sys.argv[1], sys.argv[2:]))
