"""Explore prepared data: counts, token lengths against the model's limits, and SQL features.

    from t2sql.data.explore import explore
    summary = explore(prepared, ".t2sql/work/data/explore", tokenizer=tok, max_source_length=256)

Writes ``exploration.md``, ``exploration.html`` (self-contained: plots embedded as base64 PNG),
``exploration.json`` and the PNG plots into the output directory.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from sqlglot import exp

from t2sql.data.schema import parse_query
from t2sql.io import atomic_open, atomic_write_json, atomic_write_text, read_jsonl
from t2sql.prompt import build_source

SPLITS = ("train", "validation", "test")
FEATURES = ("join", "aggregate", "group_by", "order_by", "limit", "nested", "set_operation", "distinct",
            "having", "like")


def sql_features(sql: str) -> set[str] | None:
    """The SQL features a query uses (names from :data:`FEATURES`), or None when it does not parse.

    ``nested`` is a SELECT inside another SELECT (a subquery anywhere); ``set_operation`` is UNION,
    INTERSECT or EXCEPT.
    """
    try:
        tree = parse_query(sql)
    except ValueError:
        return None
    found = set()
    if tree.find(exp.Join):
        found.add("join")
    if tree.find(exp.AggFunc):
        found.add("aggregate")
    if tree.find(exp.Group):
        found.add("group_by")
    if tree.find(exp.Order):
        found.add("order_by")
    if tree.find(exp.Limit):
        found.add("limit")
    if any(s.find_ancestor(exp.Select) is not None for s in tree.find_all(exp.Select)):
        found.add("nested")
    if tree.find(exp.SetOperation):
        found.add("set_operation")
    if tree.find(exp.Distinct):  # SELECT DISTINCT and COUNT(DISTINCT ...)
        found.add("distinct")
    if tree.find(exp.Having):
        found.add("having")
    if tree.find(exp.Like) or tree.find(exp.ILike):
        found.add("like")
    return found


def _lengths(texts: list[str], tokenizer) -> np.ndarray:
    if not texts:
        return np.zeros(0, dtype=np.int64)
    if tokenizer is None:
        return np.array([len(t.split()) for t in texts], dtype=np.int64)
    ids = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    return np.array([len(x) for x in ids], dtype=np.int64)


def _describe(lengths: np.ndarray, max_length: int) -> dict[str, Any]:
    if lengths.size == 0:
        return {"n": 0, "max_length": max_length, "truncated": 0, "truncated_share": 0.0}
    truncated = int((lengths > max_length).sum())
    return {
        "n": int(lengths.size), "min": int(lengths.min()), "mean": round(float(lengths.mean()), 2),
        "p50": float(np.percentile(lengths, 50)), "p95": float(np.percentile(lengths, 95)),
        "max": int(lengths.max()), "max_length": max_length, "truncated": truncated,
        "truncated_share": truncated / int(lengths.size),
    }


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig, path: Path) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return data


def _plot_counts(counts: dict[str, dict[str, int]], sources: list[str], path: Path) -> bytes:
    fig, ax = _figure()
    x = np.arange(len(SPLITS))
    width = 0.8 / max(1, len(sources))
    for i, src in enumerate(sources):
        vals = [counts[s].get(src, 0) for s in SPLITS]
        bars = ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=src)
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(x, SPLITS)
    ax.set_ylabel("records")
    ax.set_title("Records per split and source")
    if sources:
        ax.legend()
    return _save(fig, path)


def _plot_lengths(by_split: dict[str, np.ndarray], max_length: int, unit: str, title: str, path: Path) -> bytes:
    fig, ax = _figure()
    top = max([max_length] + [int(v.max()) for v in by_split.values() if v.size])
    bins = np.linspace(0, top + 1, min(60, top + 2))
    for split, vals in by_split.items():
        if vals.size:
            ax.hist(vals, bins=bins, histtype="step", linewidth=1.5, label=f"{split} (n={vals.size})")
    ax.axvline(max_length, color="red", linestyle="--", label=f"max length {max_length}")
    ax.set_xlabel(f"length ({unit})")
    ax.set_ylabel("records")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _plot_features(shares: dict[str, float], path: Path) -> bytes:
    fig, ax = _figure()
    names = list(shares)
    vals = [100.0 * shares[n] for n in names]
    bars = ax.barh(names[::-1], vals[::-1])
    ax.bar_label(bars, fmt="%.1f%%", fontsize=8)
    ax.set_xlabel("share of queries (%)")
    ax.set_xlim(0, max(vals + [1.0]) * 1.15)
    ax.set_title("SQL features (all splits)")
    return _save(fig, path)


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def explore(prepared: dict[str, Any], out_dir: str | os.PathLike[str], tokenizer=None, max_source_length: int = 256,
            max_target_length: int = 128) -> dict[str, Any]:
    """Summarise prepared splits and write a Markdown and a self-contained HTML report with plots.

    Args:
        prepared: what :func:`t2sql.data.prepare_data` returned (paths of train/validation/test).
        out_dir: directory for exploration.md/.html/.json and the PNG plots.
        tokenizer: a Hugging Face tokenizer to count tokens with (special tokens included, as the
            trainer sees them); None counts whitespace-separated words and says so.
        max_source_length: the model's source limit, drawn on the plot; longer sources are truncated.
        max_target_length: the same for the target SQL.

    Returns:
        The summary (also written as exploration.json): ``counts`` per split and source,
        ``lengths`` (source/target: min, mean, p50, p95, max, truncated, truncated_share; overall
        and per split), ``sql_features`` (count and share of queries using each), ``unparsed``.

    Raises:
        FileNotFoundError: a split file named in ``prepared`` does not exist.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = {s: list(read_jsonl(prepared[s])) for s in SPLITS}
    sources = sorted({r["source"] for rs in records.values() for r in rs})
    counts = {s: dict(sorted(Counter(r["source"] for r in records[s]).items())) for s in SPLITS}
    unit = "tokens" if tokenizer is not None else "whitespace words"
    tok_name = None
    if tokenizer is not None:
        tok_name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__

    src_len = {s: _lengths([build_source(r["question"], r["context"]) for r in records[s]], tokenizer) for s in SPLITS}
    tgt_len = {s: _lengths([r["answer"] for r in records[s]], tokenizer) for s in SPLITS}
    all_src = np.concatenate(list(src_len.values()))
    all_tgt = np.concatenate(list(tgt_len.values()))
    lengths = {
        "source": _describe(all_src, max_source_length),
        "target": _describe(all_tgt, max_target_length),
        "by_split": {s: {"source": _describe(src_len[s], max_source_length),
                         "target": _describe(tgt_len[s], max_target_length)} for s in SPLITS},
    }

    feature_counts: Counter[str] = Counter()
    by_source: dict[str, Counter[str]] = {src: Counter() for src in sources}
    n_by_source: Counter[str] = Counter()
    parsed = unparsed = 0
    for rs in records.values():
        for r in rs:
            found = sql_features(r["answer"])
            if found is None:
                unparsed += 1
                continue
            parsed += 1
            n_by_source[r["source"]] += 1
            feature_counts.update(found)
            by_source[r["source"]].update(found)
    features = {f: {"count": feature_counts[f], "share": feature_counts[f] / parsed if parsed else 0.0}
                for f in FEATURES}
    features_by_source = {src: {f: by_source[src][f] / n_by_source[src] if n_by_source[src] else 0.0
                                for f in FEATURES} for src in sources}

    png = {
        "counts": _plot_counts(counts, sources, out / "counts.png"),
        "source_lengths": _plot_lengths(src_len, max_source_length, unit, "Source length (question + schema)",
                                        out / "source_lengths.png"),
        "target_lengths": _plot_lengths(tgt_len, max_target_length, unit, "Target length (SQL)",
                                        out / "target_lengths.png"),
        "sql_features": _plot_features({f: v["share"] for f, v in features.items()}, out / "sql_features.png"),
    }
    summary = {
        "n_records": int(sum(len(rs) for rs in records.values())),
        "counts": counts,
        "length_unit": unit,
        "tokenizer": tok_name,
        "lengths": lengths,
        "sql_features": features,
        "sql_features_by_source": features_by_source,
        "parsed": parsed,
        "unparsed": unparsed,
        "plots": {k: f"{k}.png" for k in png},
    }
    atomic_write_json(out / "exploration.json", summary)

    count_rows = [[s] + [counts[s].get(src, 0) for src in sources] + [len(records[s])] for s in SPLITS]
    count_header = ["split"] + sources + ["total"]
    len_header = ["", "min", "mean", "p50", "p95", "max", "max length", "truncated", "share truncated"]
    len_rows = []
    for name in ("source", "target"):
        d = lengths[name]
        if d["n"]:
            len_rows.append([name, d["min"], d["mean"], d["p50"], d["p95"], d["max"], d["max_length"], d["truncated"],
                             f"{100 * d['truncated_share']:.2f}%"])
    feat_header = ["feature", "queries", "share"] + [f"share ({src})" for src in sources]
    feat_rows = [[f, features[f]["count"], f"{100 * features[f]['share']:.1f}%"]
                 + [f"{100 * features_by_source[src][f]:.1f}%" for src in sources] for f in FEATURES]
    how = (f"Lengths are counted in tokens of the tokenizer `{tok_name}`, special tokens included."
           if tokenizer is not None else
           "No tokenizer was given: lengths are counted in whitespace-separated words, which undercounts "
           "subword tokens, so the truncated shares are lower bounds.")
    note = f"{parsed} queries parsed by sqlglot" + (f", {unparsed} did not parse." if unparsed else ".")

    md = "\n\n".join([
        "# Data exploration",
        "## Records per split and source", _md_table(count_header, count_rows), "![counts](counts.png)",
        "## Lengths", how, _md_table(len_header, len_rows),
        "![source lengths](source_lengths.png)", "![target lengths](target_lengths.png)",
        "## SQL features", note, _md_table(feat_header, feat_rows), "![SQL features](sql_features.png)",
    ]) + "\n"
    atomic_write_text(out / "exploration.md", md)

    def img(key: str, alt: str) -> str:
        return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png[key]).decode("ascii")}">'

    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Data exploration</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}
img{{max-width:100%}}</style></head><body>
<h1>Data exploration</h1>
<h2>Records per split and source</h2>{_html_table(count_header, count_rows)}{img("counts", "counts")}
<h2>Lengths</h2><p>{html.escape(how)}</p>{_html_table(len_header, len_rows)}
{img("source_lengths", "source lengths")}{img("target_lengths", "target lengths")}
<h2>SQL features</h2><p>{html.escape(note)}</p>{_html_table(feat_header, feat_rows)}
{img("sql_features", "SQL features")}
</body></html>
"""
    atomic_write_text(out / "exploration.html", page)
    return summary
