"""A file-system model registry: one directory per run and an index of runs and the champion.

Layout::

    runs/
      index.json                  # {"runs": {run_id: entry}, "champion": run_id | null, "decisions": [...]}
      <run_id>/
        model/                    # Hugging Face model + tokenizer (what the Translator loads)
        config.yaml  metrics.json  report.html  report.md  exploration/

Index writes go through a temporary file, fsync and rename under an exclusive lock, so a crash
never leaves the index half-written and concurrent writers do not lose each other's runs.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from t2sql.io import atomic_write_json

INDEX = "index.json"


class RegistryError(RuntimeError):
    """A run cannot be found or the registry is unreadable."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


class Registry:
    """Runs and the current champion under one root directory."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    # -- index ---------------------------------------------------------------------------------
    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    def _empty(self) -> dict[str, Any]:
        return {"runs": {}, "champion": None, "decisions": []}

    def read_index(self) -> dict[str, Any]:
        """The index; an empty one when the registry is new.

        Raises:
            RegistryError: the index exists but is not valid JSON (it is never left so by this class).
        """
        if not self.index_path.exists():
            return self._empty()
        try:
            data = json.loads(self.index_path.read_text())
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{self.index_path}: corrupt registry index: {exc}") from exc
        for key, value in self._empty().items():
            data.setdefault(key, value)
        return data

    @contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                index = self.read_index()
                yield index
                atomic_write_json(self.index_path, index)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- runs ----------------------------------------------------------------------------------
    def new_run_dir(self, run_id: str) -> Path:
        path = self.root / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def register(self, run_id: str, *, metrics: dict[str, Any], info: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record a run whose directory is already written. Re-registering a run updates it.

        Returns:
            The index entry of the run.
        """
        run_dir = self.root / run_id
        if not (run_dir / "model").is_dir():
            raise RegistryError(f"run {run_id}: {run_dir / 'model'} does not exist; write the run before registering")
        entry = {
            "run_id": run_id,
            "path": str(run_dir.resolve()),
            "registered_at": _now(),
            "metrics": metrics,
            **(info or {}),
        }
        with self._locked() as index:
            index["runs"][run_id] = entry
        return entry

    def runs(self) -> list[dict[str, Any]]:
        """All registered runs, newest first."""
        index = self.read_index()
        return sorted(index["runs"].values(), key=lambda e: e.get("registered_at", ""), reverse=True)

    def get(self, run_id: str) -> dict[str, Any]:
        index = self.read_index()
        if run_id not in index["runs"]:
            known = ", ".join(sorted(index["runs"])[:10]) or "none"
            raise RegistryError(f"unknown run {run_id!r} in {self.root} (registered: {known})")
        return index["runs"][run_id]

    def champion(self) -> str | None:
        return self.read_index()["champion"]

    def resolve(self, ref: str) -> Path:
        """Turn ``champion``, ``run:<id>``, a run id, a run directory or a model directory into a model directory.

        Raises:
            RegistryError: nothing matches.
        """
        if ref in ("champion", "run:champion"):
            champ = self.champion()
            if champ is None:
                raise RegistryError(f"no champion in {self.root}: run the pipeline first (t2sql run --config ...)")
            ref = champ
        if ref.startswith("run:"):
            ref = ref[4:]
        p = Path(ref)
        if p.is_dir():
            return p / "model" if (p / "model").is_dir() else p
        if (self.root / ref / "model").is_dir():
            return self.root / ref / "model"
        raise RegistryError(f"{ref!r} is neither a registered run in {self.root} nor a model directory")

    def promote(self, run_id: str, *, reason: str, by: str = "pipeline") -> None:
        """Make ``run_id`` the champion and record why."""
        with self._locked() as index:
            if run_id not in index["runs"]:
                raise RegistryError(f"cannot promote unknown run {run_id!r}")
            previous = index["champion"]
            index["champion"] = run_id
            index["decisions"].append(
                {"at": _now(), "run_id": run_id, "promoted": True, "previous": previous, "reason": reason, "by": by}
            )

    def record_decision(self, run_id: str, *, promoted: bool, reason: str, by: str = "pipeline") -> None:
        """Record a gate decision that did not change the champion."""
        with self._locked() as index:
            index["decisions"].append(
                {"at": _now(), "run_id": run_id, "promoted": promoted, "previous": index["champion"],
                 "reason": reason, "by": by}
            )

    def delete(self, run_id: str) -> None:
        with self._locked() as index:
            index["runs"].pop(run_id, None)
            if index["champion"] == run_id:
                index["champion"] = None
        shutil.rmtree(self.root / run_id, ignore_errors=True)


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
