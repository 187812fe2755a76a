"""Prepare training data: load every source, normalise, drop duplicates, split without leakage.

    from t2sql.config import load_config
    from t2sql.data import prepare_data
    cfg = load_config("configs/quickstart.yaml")
    prepared = prepare_data(cfg.data, ".t2sql/work/data", seed=cfg.train.seed)

Writes ``train.jsonl``, ``validation.jsonl``, ``test.jsonl``, ``rejects.jsonl`` and ``stats.json``
into the output directory. The same configuration and seed always give byte-identical files.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

from t2sql.data.normalize import normalize_record
from t2sql.data.sources import load_source
from t2sql.io import atomic_write_json, fingerprint, write_jsonl

SPLITS = ("train", "validation", "test")


def group_key(record: dict[str, Any], split_by: str = "database") -> str:
    """The unit that must stay within one split.

    ``database``: a Spider database or a WikiSQL table (by ``db_id``); a sql-create-context record,
    which has no db_id, is grouped by its schema text. ``random``: every record on its own.
    """
    if split_by == "random":
        return f"id:{record['id']}"
    if record.get("db_id"):
        return f"{record['source']}:{record['db_id']}"
    return f"context:{record['context']}"


def _unit(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by (seed, key): a group's place never depends on the other groups."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8")).hexdigest()
    return int(digest[:15], 16) / float(16**15)


def assign_splits(keys: set[str] | list[str], val_fraction: float, test_fraction: float, seed: int
                  ) -> dict[str, str]:
    """Assign each group key to train, validation or test by hashing it with the seed.

    A key lands in test when its hash value ``u`` is below ``test_fraction``, in validation when
    below ``test_fraction + val_fraction``, else in train, so adding new groups never moves old
    ones. With at least three groups, a split left empty by chance (and asked for, fraction > 0)
    takes the group of the biggest split whose ``u`` lies nearest its interval.

    Returns:
        ``{key: split name}``.
    """
    u = {k: _unit(seed, k) for k in set(keys)}
    bounds = {"test": (0.0, test_fraction), "validation": (test_fraction, test_fraction + val_fraction),
              "train": (test_fraction + val_fraction, 1.0)}
    out = {}
    for k, x in u.items():
        out[k] = "test" if x < test_fraction else "validation" if x < test_fraction + val_fraction else "train"
    if len(u) < 3:
        return out
    wanted = [s for s in ("test", "validation") if bounds[s][1] > bounds[s][0]] + ["train"]
    for split in wanted:
        members = Counter(out.values())
        if members[split]:
            continue
        donor = max((s for s in SPLITS if members[s] > 1), key=lambda s: (members[s], s == "train"))
        lo, hi = bounds[split]
        candidates = sorted((k for k, s in out.items() if s == donor),
                            key=lambda k: (min(abs(u[k] - lo), abs(u[k] - hi)), k))
        out[candidates[0]] = split
    return out


def prepare_data(data_cfg, out_dir: str | os.PathLike[str], seed: int) -> dict[str, Any]:
    """Load, normalise, de-duplicate and split every configured source; write the splits and statistics.

    Args:
        data_cfg: a :class:`t2sql.config.DataConfig`.
        out_dir: directory for train.jsonl, validation.jsonl, test.jsonl, rejects.jsonl, stats.json.
        seed: seed of the ``limit`` subsets and of the split assignment.

    Returns:
        ``{"train", "validation", "test", "rejects": path, "stats": dict, "fingerprint": str}``; the
        fingerprint is a hash of the written files.

    Raises:
        t2sql.data.sources.DataSourceError: a source cannot be read.
        ValueError: no record is left after loading.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    train_only: list[bool] = []
    rejects: list[dict[str, Any]] = []
    seen_keys: set[tuple[str, str, str]] = set()
    seen_ids: set[str] = set()
    source_stats = []
    for index, src in enumerate(data_cfg.sources):
        loaded, rejected = load_source(src, seed, data_cfg)
        kept = duplicates = 0
        for rec in loaded:
            rec = normalize_record(rec)
            key = (rec["question"], rec["context"], rec["answer"])
            if key in seen_keys:
                duplicates += 1
                continue
            seen_keys.add(key)
            if rec["id"] in seen_ids:
                rec["id"] = f"{rec['id']}~{index}"
            seen_ids.add(rec["id"])
            records.append(rec)
            train_only.append(src.train_only)
            kept += 1
        rejects.extend(rejected)
        source_stats.append({"index": index, "kind": src.kind, "path": src.path, "limit": src.limit,
                             "loaded": len(loaded), "rejects": len(rejected), "duplicates": duplicates,
                             "records": kept, "train_only": src.train_only,
                             "rejects_by_reason": dict(sorted(Counter(r["reason"] for r in rejected).items()))})
    if not records:
        raise ValueError("data.sources: no usable record in any source "
                         f"({len(rejects)} rejected; see the reasons in {out / 'rejects.jsonl'})")

    keys = [group_key(r, data_cfg.split_by) for r in records]
    # Groups of train-only sources go to train and take no part in the assignment of the others
    # (a group also found in a split source follows that source).
    split_keys = {k for k, only in zip(keys, train_only) if not only}
    where = assign_splits(split_keys, data_cfg.val_fraction, data_cfg.test_fraction, seed) if split_keys else {}
    where.update({k: "train" for k in keys if k not in where})
    splits: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    groups: dict[str, set[str]] = {s: set() for s in SPLITS}
    for rec, key in zip(records, keys):
        splits[where[key]].append(rec)
        groups[where[key]].add(key)

    paths = {s: out / f"{s}.jsonl" for s in SPLITS}
    for s in SPLITS:
        write_jsonl(paths[s], splits[s])
    write_jsonl(out / "rejects.jsonl", rejects)
    stats = {
        "seed": seed,
        "split_by": data_cfg.split_by,
        "val_fraction": data_cfg.val_fraction,
        "test_fraction": data_cfg.test_fraction,
        "schema_mode": data_cfg.schema_mode,
        "with_types": data_cfg.with_types,
        "sample_values": data_cfg.sample_values,
        "sources": source_stats,
        "records": len(records),
        "rejects": len(rejects),
        "duplicates": sum(s["duplicates"] for s in source_stats),
        "rejects_by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "splits": {
            s: {"records": len(splits[s]), "groups": len(groups[s]),
                "by_source": dict(sorted(Counter(r["source"] for r in splits[s]).items()))}
            for s in SPLITS
        },
    }
    atomic_write_json(out / "stats.json", stats)
    fp = fingerprint(*(str(paths[s]) for s in SPLITS), str(out / "rejects.jsonl"), str(out / "stats.json"))
    return {"train": str(paths["train"]), "validation": str(paths["validation"]), "test": str(paths["test"]),
            "rejects": str(out / "rejects.jsonl"), "stats": stats, "fingerprint": fp}
