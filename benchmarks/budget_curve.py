"""Execution accuracy against the training budget: the same recipe at several wall-clock budgets.

    T2SQL_DATA_DIR=../shared/data python benchmarks/budget_curve.py --config configs/spider_cpu.yaml --minutes 5,25,100
    python benchmarks/budget_curve.py --runs runs/spider_cpu-aaaa,runs/spider_cpu-bbbb   # collect finished runs only
    python benchmarks/budget_curve.py --config configs/quickstart.yaml --minutes 0.2,0.5 --out /tmp/curve

Each budget is one ``t2sql run --config CONFIG --set train.max_minutes=M`` (the pipeline, so a budget
already run is taken from its cache), one after the other: a second job on the same cores would lower
the score of the first. For each run it reads the run directory (``metrics.json``, ``report.json``)
and prints, side by side: optimizer steps, best validation loss, test execution accuracy, the same on
questions whose gold result is not empty or zero, the share of SQL that runs and p50 latency. It
writes ``budget_curve.json`` and ``budget_curve.png`` (accuracy against minutes, log scale) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run_budget(config: str, minutes: float, overrides: list[str]) -> Path:
    """Run the pipeline with ``train.max_minutes=minutes``; the run directory it printed last."""
    cmd = [sys.executable, "-m", "cli", "run", "--config", config, "--set", f"train.max_minutes={minutes}"]
    for item in overrides:
        cmd += ["--set", item]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines or not Path(lines[-1]).is_dir():
        raise SystemExit(f"t2sql run failed for {minutes} minutes (exit {proc.returncode}):\n" + "\n".join(lines[-20:]))
    return Path(lines[-1])


def read_run(run_dir: Path) -> dict:
    """One point of the curve from a finished run directory."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    report = json.loads((run_dir / "report.json").read_text()) if (run_dir / "report.json").is_file() else {}
    history = report.get("history") or []
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    minutes = ((config or {}).get("train") or {}).get("max_minutes")
    return {"run_dir": str(run_dir), "minutes": minutes,
            "steps": max((int(row.get("step") or 0) for row in history), default=None),
            "best_val_loss": min((row["val_loss"] for row in history if row.get("val_loss") is not None), default=None),
            "execution_accuracy": metrics.get("execution_accuracy"),
            "execution_accuracy_informative": metrics.get("execution_accuracy_informative"),
            "execution_success_rate": metrics.get("execution_success_rate"),
            "exact_match": metrics.get("exact_match"), "n_examples": metrics.get("n_examples"),
            "latency_ms_p50": metrics.get("latency_ms_p50")}


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted((p for p in points if p["minutes"]), key=lambda p: p["minutes"])
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    xs = [p["minutes"] for p in pts]
    for key, label in (("execution_accuracy", "test execution accuracy"),
                       ("execution_accuracy_informative", "EX, gold not empty/zero"),
                       ("execution_success_rate", "SQL that runs")):
        ax.plot(xs, [p[key] for p in pts], marker="o", label=label)
    ax.axhline(0.30, color="grey", linestyle="--", linewidth=1, label="goal: 0.30 EX")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlabel("training budget (minutes, 2 CPU cores)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy on databases never seen, by training budget", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/spider_cpu.yaml")
    ap.add_argument("--minutes", default="5,25,100", help="comma-separated budgets")
    ap.add_argument("--runs", help="comma-separated finished run directories to collect instead of running")
    ap.add_argument("--set", action="append", default=[], help="more config overrides for every run")
    ap.add_argument("--out", default=".t2sql/budget_curve")
    args = ap.parse_args(argv)

    if args.runs:
        dirs = [Path(p) for p in args.runs.split(",")]
    else:
        dirs = [run_budget(args.config, float(m), args.set) for m in args.minutes.split(",")]
    points = sorted((read_run(d) for d in dirs), key=lambda p: p["minutes"] or 0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "budget_curve.json").write_text(json.dumps(points, indent=2))
    plot(points, out / "budget_curve.png")
    print(f"{'minutes':>8} {'steps':>6} {'val loss':>8} {'EX':>6} {'EX inf.':>7} {'runs':>6} {'p50 ms':>7}")
    for p in points:
        def f(v, fmt):
            return format(v, fmt) if isinstance(v, (int, float)) else "-"
        print(f"{f(p['minutes'], '8g')} {f(p['steps'], '6d')} {f(p['best_val_loss'], '8.3f')} "
              f"{f(p['execution_accuracy'], '6.3f')} {f(p['execution_accuracy_informative'], '7.3f')} "
              f"{f(p['execution_success_rate'], '6.3f')} {f(p['latency_ms_p50'], '7.1f')}")
    print(f"wrote {out / 'budget_curve.json'} and {out / 'budget_curve.png'}")
    print(json.dumps(points))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
