"""The model registry on MLflow: each registered run is a version of the ``t2sql`` model, the
champion an alias, every gate decision a tag.

    from t2sql.registry import Registry
    reg = Registry("runs")                    # embedded: runs/mlflow.db and runs/mlartifacts/, no server
    reg = Registry("runs", tracking_uri="http://127.0.0.1:5000")   # a team's server (or T2SQL_MLFLOW_URI)
    model_dir = reg.resolve("champion")       # also run:<id>, <id>, models:/t2sql@champion, a directory

A pipeline run is written to a local run directory first (:meth:`Registry.new_run_dir`: ``model/``,
``config.yaml``, ``metrics.json``, the report and its plots). :meth:`Registry.register` then logs it
as an MLflow run (config as params, the learning curve as step metrics, test metrics, the data
fingerprint and library digest as tags, the run directory as artifacts) with its techniques,
rank-sweep points and compression variants as nested runs, and creates a model version from its
``model`` artifacts. The gate moves the ``champion`` alias (:meth:`Registry.promote`) and records
its reason on the version.

A process killed at any point leaves the registry consistent: a version is created only once its
run's artifacts are all logged, the alias only ever moves to an existing version, and an
unfinished MLflow run of a run id is replaced when that run is registered again.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

#: Environment variable naming a team's MLflow tracking server (else the embedded store).
URI_ENV = "T2SQL_MLFLOW_URI"
MODEL_NAME = "t2sql"
EXPERIMENT = "t2sql"
ALIAS = "champion"
RUN_TAG = "t2sql.run_id"
_DECISION = "t2sql.decision."
_INFO = "t2sql.info."
_METRIC = "t2sql.metric."
_TEMPLATE_LOCK = threading.Lock()


class RegistryError(RuntimeError):
    """A run cannot be found, or the registry cannot be read."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as dotted MLflow params (values as text, at most 6,000 characters)."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    text = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value)
    return {prefix.rstrip("."): text[:6000]}


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    return None


class Registry:
    """Registered runs and the champion, in an MLflow tracking store and model registry.

    Args:
        root: the local registry directory: run directories, and (embedded) ``mlflow.db`` and
            ``mlartifacts/``; models of a remote server are downloaded under ``root/.models``.
        tracking_uri: an MLflow tracking URI; default ``$T2SQL_MLFLOW_URI``, else the embedded
            SQLite store under ``root``.
        model_name: the registered model's name.
    """

    def __init__(self, root: str | os.PathLike[str], tracking_uri: str | None = None, model_name: str = MODEL_NAME):
        self.root = Path(root)
        self.tracking_uri = tracking_uri or os.environ.get(URI_ENV) or None
        self.embedded = self.tracking_uri is None
        if self.embedded:
            self.tracking_uri = f"sqlite:///{(self.root / 'mlflow.db').resolve()}"
        self.model_name = model_name
        self._client = None

    # -- the store -----------------------------------------------------------------------------
    @property
    def client(self):
        """The MLflow client (the embedded store is created on first use)."""
        if self._client is None:
            from mlflow import MlflowClient

            if self.embedded:
                self.root.mkdir(parents=True, exist_ok=True)
                _seed_database(self.root / "mlflow.db")
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        location = (self.root / "mlartifacts").resolve().as_uri() if self.embedded else None
        try:
            return self.client.create_experiment(EXPERIMENT, artifact_location=location)
        except Exception:  # noqa: BLE001 - created meanwhile by another process
            exp = self.client.get_experiment_by_name(EXPERIMENT)
            if exp is None:
                raise
            return exp.experiment_id

    def _versions(self, run_id: str | None = None) -> list:
        """The model's versions; with ``run_id``, only that run's (filtered by the store)."""
        from mlflow.exceptions import MlflowException

        query = f"name='{self.model_name}'"
        if run_id is not None:
            query += f" and tags.`{RUN_TAG}` = '{run_id.replace(chr(39), chr(39) * 2)}'"
        try:
            return list(self.client.search_model_versions(query))
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code):
                return []
            raise RegistryError(f"cannot read the model registry at {self.tracking_uri}: {exc}") from exc

    def _version_of(self, run_id: str):
        found = [mv for mv in self._versions(run_id) if mv.tags.get(RUN_TAG) == run_id]
        return found[0] if found else None

    def _champion_version(self):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.model_name, ALIAS)
        except MlflowException:
            return None

    # -- runs ----------------------------------------------------------------------------------
    def new_run_dir(self, run_id: str) -> Path:
        """The local directory a run is written to before it is registered."""
        path = self.root / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def register(self, run_id: str, *, metrics: dict[str, Any], info: dict[str, Any] | None = None,
                 config: dict[str, Any] | None = None, summary: dict[str, Any] | None = None,
                 tags: dict[str, str] | None = None) -> dict[str, Any]:
        """Log a written run directory to MLflow and make its model a new version.

        Registering a run id that already has a version returns that version's entry; an
        unfinished MLflow run left by a killed registration is deleted and logged again.

        Args:
            run_id: the run's id; ``root/<run_id>/model`` must exist.
            metrics: test metrics (numbers become MLflow metrics, text becomes tags).
            info: descriptive fields (technique, config name, base model), tags of the version.
            config: the run's configuration, logged as dotted params.
            summary: the run summary (:class:`t2sql.summary.RunSummary` as a dict): its learning
                curve becomes step metrics; techniques, rank-sweep points and variants nested runs.
            tags: more run tags (``data_fingerprint``, ``library_digest``, ...).

        Returns:
            The registry entry of the run.

        Raises:
            RegistryError: the run directory has no model.
        """
        from mlflow.entities import Metric, Param

        run_dir = self.root / run_id
        if not (run_dir / "model").is_dir():
            raise RegistryError(f"run {run_id}: {run_dir / 'model'} does not exist; write the run before registering")
        existing = self._version_of(run_id)
        if existing is not None:
            return self._entry(existing)
        client = self.client
        exp = self._experiment_id()
        for stale in client.search_runs([exp], f"tags.`{RUN_TAG}` = '{run_id}'"):
            client.delete_run(stale.info.run_id)  # left unfinished by a killed registration
        info = {k: v for k, v in (info or {}).items() if v is not None}
        run_tags = {RUN_TAG: run_id, **{f"{_INFO}{k}": str(v) for k, v in info.items()},
                    **{f"{_METRIC}{k}": str(v) for k, v in metrics.items() if isinstance(v, str)},
                    **{k: str(v) for k, v in (tags or {}).items()}}
        run = client.create_run(exp, run_name=run_id, tags=run_tags)
        rid = run.info.run_id
        params = [Param(k, v) for k, v in _flatten(config or {}).items()]
        for i in range(0, len(params), 100):
            client.log_batch(rid, params=params[i:i + 100])
        stamp = int(_dt.datetime.now().timestamp() * 1000)
        points = [Metric(k, v, stamp, 0) for k, v in _numeric(metrics).items()]
        for row in (summary or {}).get("history") or []:
            step = int(row.get("step") or 0)
            points += [Metric(f"curve.{k}", v, stamp, step) for k, v in _numeric(row).items() if k != "step"]
        for i in range(0, len(points), 1000):
            client.log_batch(rid, metrics=points[i:i + 1000])
        self._log_children(exp, rid, run_id, summary or {})
        client.log_artifacts(rid, str(run_dir))
        client.set_terminated(rid, "FINISHED")
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(self.model_name, description="t2sql text-to-SQL models, one version a run")
        except MlflowException:
            pass  # exists
        version = client.create_model_version(self.model_name, f"{run.info.artifact_uri}/model", run_id=rid,
                                              tags={RUN_TAG: run_id, "registered_at": _now(),
                                                    **{f"{_INFO}{k}": str(v) for k, v in info.items()}})
        return self._entry(version)

    def _log_children(self, exp: str, parent: str, run_id: str, summary: dict[str, Any]) -> None:
        """Techniques, rank-sweep points and compression variants as runs nested under ``parent``."""
        from mlflow.entities import Metric, Param, RunTag

        stamp = int(_dt.datetime.now().timestamp() * 1000)
        children: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        for row in summary.get("techniques") or []:
            children.append((f"technique {row.get('technique')}", {"kind": "technique"}, row))
        for row in summary.get("rank_sweep") or []:
            children.append((f"rank {row.get('rank')}", {"kind": "rank_sweep"}, row))
        for row in summary.get("variants") or []:
            children.append((f"variant {row.get('variant')}", {"kind": "variant"},
                             {k: v for k, v in row.items() if k != "metrics"}))
        for name, tags, row in children:
            child = self.client.create_run(exp, run_name=f"{run_id} {name}",
                                           tags={"mlflow.parentRunId": parent, "t2sql.kind": tags["kind"]})
            params = [Param(k, str(v)[:6000]) for k, v in row.items() if isinstance(v, str)]
            points = [Metric(k, v, stamp, 0) for k, v in _numeric(row).items()]
            self.client.log_batch(child.info.run_id, metrics=points, params=params[:100],
                                  tags=[RunTag("t2sql.parent_run_id", run_id)])
            self.client.set_terminated(child.info.run_id, "FINISHED")

    def _entry(self, mv) -> dict[str, Any]:
        run = self.client.get_run(mv.run_id)
        metrics: dict[str, Any] = dict(run.data.metrics)
        metrics = {k: v for k, v in metrics.items() if not k.startswith("curve.")}
        metrics.update({k[len(_METRIC):]: v for k, v in run.data.tags.items() if k.startswith(_METRIC)})
        info = {k[len(_INFO):]: v for k, v in mv.tags.items() if k.startswith(_INFO)}
        return {"run_id": mv.tags.get(RUN_TAG), "version": str(mv.version), "mlflow_run_id": mv.run_id,
                "registered_at": mv.tags.get("registered_at", ""), "source": mv.source, "metrics": metrics, **info}

    def is_registered(self, run_id: str) -> bool:
        """Whether ``run_id`` has a model version."""
        return self._version_of(run_id) is not None

    def runs(self) -> list[dict[str, Any]]:
        """Every registered run, newest first."""
        entries = [self._entry(mv) for mv in self._versions() if mv.tags.get(RUN_TAG)]
        return sorted(entries, key=lambda e: int(e["version"]), reverse=True)

    def get(self, run_id: str) -> dict[str, Any]:
        """The entry of one run.

        Raises:
            RegistryError: the run is not registered.
        """
        mv = self._version_of(run_id)
        if mv is None:
            known = ", ".join(sorted(mv.tags.get(RUN_TAG, "") for mv in self._versions())[:10]) or "none"
            raise RegistryError(f"unknown run {run_id!r} in {self.tracking_uri} (registered: {known})")
        return self._entry(mv)

    def champion(self) -> str | None:
        """The run id of the version the ``champion`` alias points at, or None."""
        mv = self._champion_version()
        return None if mv is None else mv.tags.get(RUN_TAG)

    def signature(self) -> tuple[str | None, int]:
        """(champion version, number of versions): changes when a run is registered or promoted."""
        mv = self._champion_version()
        return (None if mv is None else str(mv.version)), len(self._versions())

    def model_dir(self, run_id: str) -> Path:
        """The local directory of a registered run's model: its run directory where this machine wrote it,
        else its artifacts (downloaded once from a remote store)."""
        mv = self._version_of(run_id)
        if mv is None:
            raise RegistryError(f"unknown run {run_id!r} in {self.tracking_uri}")
        return self._materialize(mv)

    def _materialize(self, mv) -> Path:
        run_id = mv.tags.get(RUN_TAG)
        written = self.root / run_id / "model" if run_id else None
        if written is not None and written.is_dir():
            return written  # the run directory this machine wrote and registered: the same files
        local = _local_path(mv.source)
        if local is not None and local.is_dir():
            return local
        target = self.root / ".models" / f"{self.model_name}-v{mv.version}"
        if (target / "model").is_dir():
            return target / "model"
        import mlflow.artifacts

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=self.root))
        try:  # the whole run directory: the model, its report and plots
            mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="", dst_path=str(tmp),
                                                tracking_uri=self.tracking_uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target / "model"

    def run_dir(self, run_id: str) -> Path:
        """The directory with a run's report and files: its local run directory, else its artifacts."""
        local = self.root / run_id
        if (local / "model").is_dir():
            return local
        return self.model_dir(run_id).parent

    def resolve(self, ref: str) -> Path:
        """Turn ``champion``, ``models:/<name>@champion``, ``run:<id>``, a run id, a run directory or a
        model directory into a local model directory.

        Raises:
            RegistryError: nothing matches.
        """
        if ref in ("champion", "run:champion", f"models:/{self.model_name}@{ALIAS}"):
            mv = self._champion_version()
            if mv is None:
                raise RegistryError(f"no champion in {self.tracking_uri}: run the pipeline first "
                                    "(t2sql run --config ...)")
            return self._materialize(mv)
        if ref.startswith("run:"):
            ref = ref[4:]
        p = Path(ref)
        if p.is_dir():
            return p / "model" if (p / "model").is_dir() else p
        mv = self._version_of(ref)
        if mv is not None:
            return self._materialize(mv)
        raise RegistryError(f"{ref!r} is neither a registered run in {self.tracking_uri} nor a model directory")

    def promote(self, run_id: str, *, reason: str, by: str = "pipeline") -> None:
        """Point the ``champion`` alias at ``run_id``'s version and record why on it."""
        mv = self._version_of(run_id)
        if mv is None:
            raise RegistryError(f"cannot promote unknown run {run_id!r}")
        previous = self.champion()
        self.client.set_registered_model_alias(self.model_name, ALIAS, mv.version)
        self._decide(mv, promoted=True, reason=reason, by=by, previous=previous)

    def record_decision(self, run_id: str, *, promoted: bool, reason: str, by: str = "pipeline") -> None:
        """Record a gate decision that did not move the champion."""
        mv = self._version_of(run_id)
        if mv is None:
            raise RegistryError(f"cannot record a decision for unknown run {run_id!r}")
        self._decide(mv, promoted=promoted, reason=reason, by=by, previous=self.champion())

    def _decide(self, mv, *, promoted: bool, reason: str, by: str, previous: str | None) -> None:
        at = _now()
        decision = {"at": at, "run_id": mv.tags.get(RUN_TAG), "promoted": promoted, "previous": previous,
                    "reason": reason[:4000], "by": by}
        key = _DECISION + at.replace(":", "-").replace("+", "Z")
        self.client.set_model_version_tag(self.model_name, mv.version, key, json.dumps(decision))
        self.client.set_model_version_tag(self.model_name, mv.version, "gate_reason", reason[:4000])

    def decisions(self) -> list[dict[str, Any]]:
        """Every gate decision, oldest first."""
        found = [json.loads(v) for mv in self._versions() for k, v in mv.tags.items() if k.startswith(_DECISION)]
        return sorted(found, key=lambda d: d["at"])

    def delete(self, run_id: str) -> None:
        """Delete a run's version (and the alias with it) and its local run directory."""
        mv = self._version_of(run_id)
        if mv is not None:
            if self.champion() == run_id:
                self.client.delete_registered_model_alias(self.model_name, ALIAS)
            self.client.delete_model_version(self.model_name, mv.version)
        shutil.rmtree(self.root / run_id, ignore_errors=True)


def _seed_database(path: Path) -> None:
    """Create an embedded store by copying an empty one made once per process (creating the MLflow
    schema takes seconds; a copy takes milliseconds)."""
    if path.exists():
        return
    global _TEMPLATE
    with _TEMPLATE_LOCK:
        if _TEMPLATE is None or not _TEMPLATE.exists():
            from mlflow import MlflowClient

            folder = Path(tempfile.mkdtemp(prefix="t2sql-mlflow-template-"))
            uri = f"sqlite:///{folder / 'mlflow.db'}"
            MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
            _TEMPLATE = folder / "mlflow.db"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(_TEMPLATE, tmp)
        if not path.exists():
            os.replace(tmp, path)
        else:
            tmp.unlink(missing_ok=True)


_TEMPLATE: Path | None = None


def import_file_registry(old_root: str | os.PathLike[str], registry: Registry) -> list[str]:
    """Register the runs of a registry written before MLflow (``index.json`` and one directory a run).

    Runs are registered in the order they were, and the old champion becomes the champion.

    Returns:
        The run ids imported (runs already in ``registry`` are skipped).

    Raises:
        RegistryError: there is no readable ``index.json`` under ``old_root``.
    """
    old_root = Path(old_root)
    try:
        index = json.loads((old_root / "index.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{old_root / 'index.json'}: not a readable file registry index ({exc})") from exc
    imported = []
    entries = sorted(index.get("runs", {}).values(), key=lambda e: e.get("registered_at", ""))
    for entry in entries:
        run_id = entry["run_id"]
        if registry.is_registered(run_id):
            continue
        src = Path(entry.get("path") or old_root / run_id)
        if not (src / "model").is_dir():
            src = old_root / run_id
        dst = registry.root / run_id
        if src.resolve() != dst.resolve():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        info = {k: v for k, v in entry.items() if k not in ("run_id", "path", "registered_at", "metrics")
                and isinstance(v, (str, int, float, bool))}
        registry.register(run_id, metrics=entry.get("metrics") or {}, info=info, tags={"t2sql.imported_from": str(old_root)})
        imported.append(run_id)
    champion = index.get("champion")
    if champion and registry.is_registered(champion) and registry.champion() != champion:
        registry.promote(champion, reason="champion of the imported file registry", by="import")
    return imported


def gate(candidate: dict[str, Any], champion: dict[str, Any] | None, *, min_accuracy_gain: float,
         max_latency_ratio: float) -> tuple[bool, str]:
    """Decide whether a candidate's metrics beat the champion's.

    Without a champion the candidate is promoted. Otherwise only when (1) both were evaluated on
    the same test set (their ``test_fingerprint`` agree, when both carry one), (2) its execution
    accuracy exceeds the champion's by more than ``min_accuracy_gain`` (any gain when that is 0), and
    (3) its p50 latency is at most ``max_latency_ratio`` times the champion's.

    Args:
        candidate: the new run's metrics (``execution_accuracy``, ``latency_ms_p50``, ``test_fingerprint``).
        champion: the champion's metrics, or None when there is no champion.
        min_accuracy_gain: required gain in execution accuracy (a fraction).
        max_latency_ratio: allowed candidate / champion p50 latency.

    Returns:
        (promote, reason): the reason states every check with its numbers, in text.
    """
    acc_new = candidate.get("execution_accuracy")
    if champion is None:
        shown = "unknown" if acc_new is None else f"{float(acc_new):.3f}"
        return True, f"no champion yet; candidate execution accuracy {shown}"
    if acc_new is None:
        return False, "candidate has no execution accuracy, so it cannot be compared with the champion"
    acc_new = float(acc_new)
    fp_new, fp_old = candidate.get("test_fingerprint"), champion.get("test_fingerprint")
    if fp_new and fp_old and fp_new != fp_old:
        return False, (f"not comparable: candidate was evaluated on test set {fp_new}, the champion on {fp_old}; "
                       "re-evaluate both on the same test set")
    acc_old = float(champion.get("execution_accuracy") or 0.0)
    lat_new = float(candidate.get("latency_ms_p50") or 0.0)
    lat_old = float(champion.get("latency_ms_p50") or 0.0)
    gain = acc_new - acc_old
    reasons = []
    accuracy_ok = gain > min_accuracy_gain
    reasons.append(f"execution accuracy {acc_new:.3f} vs champion {acc_old:.3f}: gain {gain:+.3f} "
                   f"{'exceeds' if accuracy_ok else 'does not exceed'} the required {min_accuracy_gain:.3f}")
    latency_ok = True
    if lat_old > 0 and lat_new > 0:
        ratio = lat_new / lat_old
        latency_ok = ratio <= max_latency_ratio
        reasons.append(f"latency p50 {lat_new:.1f} ms is {ratio:.2f}x the champion's {lat_old:.1f} ms "
                       f"({'within' if latency_ok else 'beyond'} the allowed {max_latency_ratio:.2f}x)")
    else:
        reasons.append("latency not compared (missing on one side)")
    if fp_new and fp_old:
        reasons.append(f"same test set ({fp_new})")
    return accuracy_ok and latency_ok, "; ".join(reasons)

