"""Run reports: one self-contained HTML page, a Markdown version and the data behind them as JSON.

    from t2sql.report import write_report
    paths = write_report("runs/abc", {"metrics": metrics, "history": history, "techniques": rows})

Every key of ``summary`` is optional; a section appears only when its data is there. Plots are drawn
with matplotlib's Agg backend and embedded in the HTML as base64 PNG (also saved under ``plots/``);
the Markdown version (for Prefect artifacts) carries the tables and links to the plots.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2sql.io import atomic_write_json, atomic_write_text
from t2sql.summary import ReportSection, RunSummary

HEADLINE_METRICS = (
    ("execution_accuracy", "execution accuracy"), ("exact_set_match", "exact-set match (Spider)"),
    ("exact_match", "exact match (normalised SQL)"), ("bleu", "BLEU"), ("parse_rate", "parses"),
    ("execution_success_rate", "executes"), ("execution_accuracy_database", "execution accuracy, real databases"),
    ("execution_accuracy_fuzz", "execution accuracy, generated databases"),
    ("execution_accuracy_informative", "execution accuracy, gold result not empty or zero"),
    ("fuzz_disagreement", "generated-database verdict disagrees with exact match"),
    ("latency_ms_p50", "latency p50 (ms)"), ("latency_ms_p95", "latency p95 (ms)"),
    ("slow_query_share", "predictions > 2x slower than gold"), ("n_examples", "examples"),
    ("n_with_database", "with a database"), ("n_schema_only", "schema only"),
)
_FRACTIONS = {"execution_accuracy", "exact_set_match", "exact_match", "parse_rate", "execution_success_rate",
              "execution_accuracy_database", "execution_accuracy_fuzz", "execution_accuracy_informative",
              "fuzz_disagreement", "slow_query_share",
              "accuracy", "val_execution_accuracy", "ci_low", "ci_high", "share", "f1", "acc", "rec"}


@dataclass
class _Section:
    title: str
    md: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)

    def text(self, text: str) -> None:
        self.md.append(text)
        self.html.append(f"<p>{html.escape(text)}</p>")

    def table(self, headers: list[str], rows: list[list[Any]], fraction_cols: set[int] | None = None) -> None:
        fraction_cols = fraction_cols or set()
        cells = [[_fmt(v, i in fraction_cols) for i, v in enumerate(r)] for r in rows]
        self.md.append("| " + " | ".join(_md(h) for h in headers) + " |")
        self.md.append("|" + "|".join(" --- " for _ in headers) + "|")
        self.md.extend("| " + " | ".join(_md(c) for c in r) + " |" for r in cells)
        self.md.append("")
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in cells)
        self.html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def code(self, label: str, sql: str) -> None:
        self.md.append(f"{label}: `{sql.replace('`', chr(39))}`  ")
        self.html.append(f"<div class='sql'><b>{html.escape(label)}</b> <code>{html.escape(sql)}</code></div>")


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fmt(value: Any, fraction: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if fraction:
            return f"{value:.3f}"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)[:200]
    return str(value)


class _Plots:
    """Draws figures with matplotlib (Agg), keeps them as PNG bytes and writes them under plots/."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir / "plots"
        self.made: dict[str, Path] = {}

    def draw(self, name: str, section: _Section, draw: Callable[[Any], None], width: float = 7.0,
             height: float = 3.6) -> None:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(width, height), dpi=100)
        try:
            draw(ax)
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
        finally:
            plt.close(fig)
        data = buf.getvalue()
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{name}.png"
        tmp = path.with_suffix(".png.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self.made[name] = path
        section.html.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,"
                            f"{base64.b64encode(data).decode()}'/>")
        section.md.append(f"[plot: {name}](plots/{name}.png)")
        section.md.append("")


def _num(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


# -- sections --------------------------------------------------------------------------------------

def _metrics_section(metrics: dict[str, Any], plots: _Plots) -> list[_Section]:
    out = []
    s = _Section("Metrics")
    rows = [[label, metrics.get(key)] for key, label in HEADLINE_METRICS if metrics.get(key) is not None]
    known = {k for k, _ in HEADLINE_METRICS}
    rows += [[k, v] for k, v in metrics.items() if k not in known and isinstance(v, (int, float, str))
             and not isinstance(v, bool) and k not in ("predictions_path", "test_fingerprint", "latency_basis")
             and not k.startswith("eval_")]
    s.md.append("| metric | value |\n| --- | --- |")
    s.md.extend(f"| {_md(label)} | {_md(_fmt(v, _is_fraction(label, metrics)))} |" for label, v in rows)
    s.md.append("")
    s.html.append("<table><thead><tr><th>metric</th><th>value</th></tr></thead><tbody>" + "".join(
        f"<tr><td>{html.escape(str(label))}</td><td>{html.escape(_fmt(v, _is_fraction(label, metrics)))}</td></tr>"
        for label, v in rows) + "</tbody></table>")
    if metrics.get("latency_basis"):
        s.text(f"Latency: {metrics['latency_basis']}.")
    out.append(s)

    by_hardness = metrics.get("by_hardness") or {}
    if by_hardness:
        h = _Section("By hardness (Spider levels)")
        h.table(["level", "examples", "exact-set match", "execution accuracy", "accuracy"],
                [[lv, v.get("n"), v.get("exact_set_match"), v.get("execution_accuracy"), v.get("accuracy")]
                 for lv, v in by_hardness.items()], {2, 3, 4})
        out.append(h)

    components = metrics.get("by_component") or {}
    if components:
        c = _Section("Clause scores (Spider partial matching)")
        c.table(["component", "accuracy", "recall", "F1"],
                [[name, v.get("acc"), v.get("rec"), v.get("f1")] for name, v in components.items()], {1, 2, 3})
        out.append(c)

    scenarios = metrics.get("by_scenario") or {}
    if scenarios:
        from t2sql.evaluation.structure import QUERY_TYPE_LABELS

        sc = _Section("Accuracy per business scenario")
        items = sorted(scenarios.items(), key=lambda kv: (kv[1].get("kind") != "scenario", kv[0]))
        sc.table(["scenario", "kind", "examples", "correct", "accuracy", "95% CI low", "95% CI high"],
                 [[QUERY_TYPE_LABELS.get(k, k), v.get("kind"), v.get("n"), v.get("correct"), v.get("accuracy"),
                   v.get("ci_low"), v.get("ci_high")] for k, v in items], {4, 5, 6})

        def draw(ax):
            names = [QUERY_TYPE_LABELS.get(k, k) for k, _ in items]
            acc = [v.get("accuracy") or 0.0 for _, v in items]
            low = [max(0.0, a - (v.get("ci_low") or a)) for a, (_, v) in zip(acc, items)]
            high = [max(0.0, (v.get("ci_high") or a) - a) for a, (_, v) in zip(acc, items)]
            ax.barh(names, acc, xerr=[low, high], color="#4c72b0", capsize=3)
            ax.set_xlim(0, 1)
            ax.set_xlabel("accuracy (95% Wilson interval)")
            ax.invert_yaxis()

        plots.draw("accuracy_per_scenario", sc, draw, height=max(2.5, 0.35 * len(items) + 1))
        out.append(sc)

    categories = metrics.get("error_categories") or {}
    if categories:
        e = _Section("Error categories")
        e.table(["category", "count", "share"],
                [[v.get("label", k), v.get("count"), v.get("share")] for k, v in categories.items()], {2})

        def draw(ax):
            names = [v.get("label", k) for k, v in categories.items()]
            counts = [v.get("count", 0) for v in categories.values()]
            colors = ["#55a868" if k == "correct" else "#c44e52" for k in categories]
            ax.barh(names, counts, color=colors)
            ax.set_xlabel("examples")
            ax.invert_yaxis()

        plots.draw("error_categories", e, draw, height=max(2.5, 0.3 * len(categories) + 1))
        for key, v in categories.items():
            if key == "correct":
                continue
            for ex in (v.get("examples") or [])[:2]:
                e.text(f"{v.get('label', key)} — {ex.get('question', '')}")
                e.code("gold", str(ex.get("gold", "")))
                e.code("predicted", str(ex.get("pred", "")))
        out.append(e)
    return out


def _is_fraction(label: str, metrics: dict[str, Any]) -> bool:
    key = next((k for k, lab in HEADLINE_METRICS if lab == label), label)
    return key in _FRACTIONS or key.endswith(("_accuracy", "_match", "_rate", "_share"))


def _latency_section(metrics: dict[str, Any], predictions_path: str | None, plots: _Plots) -> _Section | None:
    hist = metrics.get("latency_histogram")
    latencies: list[float] = []
    if not hist and predictions_path and Path(predictions_path).is_file():
        with open(predictions_path, encoding="utf-8") as fh:
            for line in fh:
                value = json.loads(line).get("latency_ms")
                if value is not None:
                    latencies.append(float(value))
    if not hist and not latencies:
        return None
    s = _Section("Latency")
    p50, p95 = metrics.get("latency_ms_p50"), metrics.get("latency_ms_p95")
    if p50 is not None:
        s.text(f"Model latency per question: p50 {p50:.1f} ms, p95 {p95:.1f} ms.")
    if metrics.get("slow_query_share") is not None:
        s.text(f"Predicted queries more than 2x slower than gold: {metrics['slow_query_share']:.1%} of "
               f"{metrics.get('n_timed_queries', 0)} timed (mean {_fmt(metrics.get('pred_exec_ms_mean'))} ms "
               f"vs gold {_fmt(metrics.get('gold_exec_ms_mean'))} ms).")

    def draw(ax):
        if hist:
            edges, counts = hist["edges"], hist["counts"]
            ax.stairs(counts, edges, fill=True, color="#8172b2")
        else:
            ax.hist(latencies, bins=30, color="#8172b2")
        ax.set_xlabel("latency per question (ms)")
        ax.set_ylabel("questions")

    plots.draw("latency_histogram", s, draw)
    return s


def _samples_section(metrics: dict[str, Any], predictions_path: str | None, limit: int = 5) -> _Section | None:
    samples = metrics.get("samples") or {}
    successes = list(samples.get("successes") or [])[:limit]
    failures = list(samples.get("failures") or [])[:limit]
    if not successes and not failures and predictions_path and Path(predictions_path).is_file():
        with open(predictions_path, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                bucket = successes if row.get("correct") else failures
                if len(bucket) < limit:
                    bucket.append(row)
                if len(successes) >= limit and len(failures) >= limit:
                    break
    if not successes and not failures:
        return None
    s = _Section("Sample successes and failures")
    for title, rows in (("Successes", successes), ("Failures", failures)):
        if not rows:
            continue
        s.md.append(f"**{title}**\n")
        s.html.append(f"<h3>{title}</h3>")
        for row in rows:
            label = row.get("error_category") or ""
            s.text(f"[{row.get('db_id') or ''}{', ' + label if label and label != 'correct' else ''}] "
                   f"{row.get('question', '')}")
            s.code("gold", str(row.get("gold", "")))
            s.code("predicted", str(row.get("pred", "")))
            if row.get("error"):
                s.text(f"error: {row['error']}")
    return s


def _history_section(history: list[dict[str, Any]], plots: _Plots) -> _Section:
    s = _Section("Learning curve")
    s.table(["step", "elapsed (s)", "train loss", "val loss", "val execution accuracy"],
            [[h.get("step"), h.get("elapsed_s"), h.get("train_loss"), h.get("val_loss"),
              h.get("val_execution_accuracy")] for h in history[-20:]], {4})
    if len(history) > 20:
        s.text(f"(last 20 of {len(history)} evaluations shown)")

    def draw(ax):
        t = [_num(h.get("elapsed_s")) or 0.0 for h in history]
        for key, color in (("train_loss", "#dd8452"), ("val_loss", "#4c72b0")):
            pts = [(x, _num(h.get(key))) for x, h in zip(t, history) if _num(h.get(key)) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=color, label=key)
        ax.set_xlabel("elapsed (s)")
        ax.set_ylabel("loss")
        acc = [(x, _num(h.get("val_execution_accuracy"))) for x, h in zip(t, history)
               if _num(h.get("val_execution_accuracy")) is not None]
        if acc:
            ax2 = ax.twinx()
            ax2.plot([p[0] for p in acc], [p[1] for p in acc], marker="s", ms=3, color="#55a868",
                     label="val execution accuracy")
            ax2.set_ylabel("execution accuracy")
            ax2.set_ylim(0, 1)
            ax2.legend(loc="upper right")
        ax.legend(loc="upper left")

    plots.draw("learning_curve", s, draw)
    return s


def _techniques_section(rows: list[dict[str, Any]], plots: _Plots) -> _Section:
    s = _Section("Fine-tuning techniques compared")
    cols = ["technique", "trainable_params", "peak_rss_mb", "wall_s", "tokens_per_s", "best_val_loss",
            "exact_match", "execution_accuracy", "size_mb"]
    s.table(cols, [[r.get(c) for c in cols] for r in rows], {6, 7})

    def draw(ax):
        import numpy as np

        names = [str(r.get("technique")) for r in rows]
        x = np.arange(len(names))
        ax.bar(x - 0.2, [_num(r.get("execution_accuracy")) or 0 for r in rows], 0.4, label="execution accuracy")
        ax.bar(x + 0.2, [_num(r.get("exact_match")) or 0 for r in rows], 0.4, label="exact match")
        ax.set_xticks(x, names, rotation=20)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.legend(loc="upper left")
        walls = [_num(r.get("wall_s")) for r in rows]
        if any(w is not None for w in walls):
            ax2 = ax.twinx()
            ax2.plot(x, [w or 0 for w in walls], "ko--", label="wall (s)")
            ax2.set_ylabel("training wall time (s)")
            ax2.legend(loc="upper right")

    plots.draw("techniques", s, draw)
    return s


def _rank_section(sweep: list[dict[str, Any]], chosen: Any, plots: _Plots) -> _Section:
    s = _Section("LoRA rank")
    if sweep:
        s.table(["rank", "trainable params", "val loss", "execution accuracy"],
                [[r.get("rank"), r.get("trainable_params"), r.get("val_loss"), r.get("execution_accuracy")]
                 for r in sweep], {3})
        if chosen is not None:
            s.text(f"Chosen rank: {chosen}.")

        def draw(ax):
            pts = sorted(sweep, key=lambda r: _num(r.get("rank")) or 0)
            ranks = [_num(r.get("rank")) for r in pts]
            ax.plot(ranks, [_num(r.get("val_loss")) for r in pts], "o-", color="#4c72b0", label="val loss")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("rank")
            ax.set_ylabel("val loss")
            accs = [_num(r.get("execution_accuracy")) for r in pts]
            if any(a is not None for a in accs):
                ax2 = ax.twinx()
                ax2.plot(ranks, [a if a is not None else float("nan") for a in accs], "s--", color="#55a868",
                         label="execution accuracy")
                ax2.set_ylabel("execution accuracy")
            if chosen is not None:
                ax.axvline(float(chosen), color="grey", ls=":")

        plots.draw("rank_sweep", s, draw)
    return s


def _added_section(added: ReportSection) -> _Section:
    """A section a technique or the compression stage added to the run summary."""
    s = _Section(added.title)
    for paragraph in added.text:
        s.text(paragraph)
    for table in added.tables:
        s.table(table.columns, table.rows, {i for i, c in enumerate(table.columns) if c in table.fractions})
    return s


def _variants_section(rows: list[dict[str, Any]], plots: _Plots) -> _Section:
    s = _Section("Compressed variants")
    cols = ["variant", "size_mb", "latency_ms_p50", "exact_match", "execution_accuracy"]
    s.table(cols, [[r.get(c) for c in cols] for r in rows], {3, 4})

    def draw(ax):
        for r in rows:
            x, y = _num(r.get("latency_ms_p50")), _num(r.get("execution_accuracy"))
            if x is None or y is None:
                continue
            ax.scatter([x], [y], s=40)
            ax.annotate(str(r.get("variant")), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("latency p50 (ms)")
        ax.set_ylabel("execution accuracy")

    plots.draw("variants_accuracy_latency", s, draw)
    return s


def _champion_section(champion: dict[str, Any]) -> _Section:
    s = _Section("Champion gate")
    decision = champion.get("promoted", champion.get("promote"))
    if decision is not None:
        s.text(f"Decision: {'promoted' if decision else 'not promoted'}. {champion.get('reason', '')}".strip())
    cand, champ = champion.get("candidate"), champion.get("champion")
    if isinstance(cand, dict) or isinstance(champ, dict):
        cand, champ = cand or {}, champ or {}
        keys = [k for k in ("execution_accuracy", "exact_set_match", "exact_match", "bleu", "latency_ms_p50",
                            "latency_ms_p95", "n_examples", "test_fingerprint") if k in cand or k in champ]
        s.table(["metric", "candidate", "champion"], [[k, cand.get(k), champ.get(k)] for k in keys])
    rest = {k: v for k, v in champion.items() if k not in ("candidate", "champion", "promoted", "promote", "reason")}
    if rest:
        s.table(["field", "value"], [[k, v] for k, v in rest.items()])
    return s


def _exploration_section(exploration: dict[str, Any], run_dir: Path) -> _Section:
    s = _Section("Data exploration")
    for key in ("markdown_path", "html_path"):
        path = exploration.get(key)
        if path:
            shown = os.path.relpath(path, run_dir) if os.path.isabs(str(path)) else str(path)
            s.md.append(f"[{key.replace('_path', '')} report]({shown})  ")
            s.html.append(f"<p><a href='{html.escape(shown)}'>{html.escape(key.replace('_path', ''))} report</a></p>")
    md_path = exploration.get("markdown_path")
    if md_path and Path(md_path).is_file() and Path(md_path).stat().st_size < 100_000:
        s.md.append("")
        s.md.append(Path(md_path).read_text(encoding="utf-8"))
    scalars = [[k, v] for k, v in exploration.items()
               if k not in ("markdown_path", "html_path") and isinstance(v, (int, float, str, bool))]
    if scalars:
        s.table(["field", "value"], scalars)
    return s


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}img{max-width:100%;display:block;margin:.6em 0}.sql code{font-size:.9em;background:#f6f6f6;
padding:.1em .3em}.sql{margin:.15em 0 .15em 1em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}"""


def write_report(run_dir: str | os.PathLike[str], summary: RunSummary | dict[str, Any]) -> dict[str, Path]:
    """Write report.html, report.md and report.json (the summary, with the titles of the sections shown).

    Args:
        run_dir: the run's directory (created if needed); plots go to ``run_dir/plots``.
        summary: a :class:`t2sql.summary.RunSummary` (or its dict): ``metrics`` (from evaluation),
            ``predictions_path``, ``exploration``, ``history``, ``techniques``, ``rank_sweep``,
            ``chosen_rank``, ``variants``, ``champion``, ``title``, and the ``sections`` techniques and
            compression added. Missing fields leave their section out.

    Returns:
        {"html": path, "markdown": path, "json": path, "plots": {name: path}}.

    Raises:
        pydantic.ValidationError: ``summary`` has an unknown field or a field of the wrong type.
    """
    typed = summary if isinstance(summary, RunSummary) else RunSummary.model_validate(summary)
    summary = typed.model_dump(mode="json")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plots = _Plots(run_dir)
    metrics = summary.get("metrics") or {}
    predictions_path = summary.get("predictions_path") or metrics.get("predictions_path")
    sections: list[_Section] = []
    if metrics:
        sections += _metrics_section(metrics, plots)
    if metrics or predictions_path:
        lat = _latency_section(metrics, predictions_path, plots)
        if lat is not None:
            sections.append(lat)
    if summary.get("history"):
        sections.append(_history_section(list(summary["history"]), plots))
    if summary.get("techniques"):
        sections.append(_techniques_section(list(summary["techniques"]), plots))
    if summary.get("rank_sweep"):
        sections.append(_rank_section(list(summary["rank_sweep"]), summary.get("chosen_rank"), plots))
    if summary.get("variants"):
        sections.append(_variants_section(list(summary["variants"]), plots))
    sections += [_added_section(added) for added in typed.sections]
    if summary.get("champion"):
        sections.append(_champion_section(dict(summary["champion"])))
    if summary.get("exploration"):
        sections.append(_exploration_section(dict(summary["exploration"]), run_dir))
    if metrics or predictions_path:
        samples = _samples_section(metrics, predictions_path)
        if samples is not None:
            sections.append(samples)

    title = str(summary.get("title") or f"t2sql run report: {run_dir.name}")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = [f"# {title}", "", f"Generated {stamp}.", ""]
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>Generated {stamp}.</p>"]
    if not sections:
        md.append("No results to report yet.")
        body.append("<p>No results to report yet.</p>")
    for s in sections:
        md += [f"## {s.title}", ""] + s.md + [""]
        body += [f"<h2>{html.escape(s.title)}</h2>"] + s.html
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")
    paths = {"html": run_dir / "report.html", "markdown": run_dir / "report.md", "json": run_dir / "report.json"}
    atomic_write_text(paths["html"], page)
    atomic_write_text(paths["markdown"], "\n".join(md) + "\n")
    atomic_write_json(paths["json"], {**summary, "title": title, "generated": stamp,
                                      "section_titles": [s.title for s in sections]})
    return {**paths, "plots": dict(plots.made)}
