"""Typed configuration for the whole workflow, read from YAML with command-line overrides.

    t2sql run --config configs/quickstart.yaml --set train.epochs=2 --set train.learning_rate=5e-4

Every section is a pydantic model that refuses unknown keys, so a typo in a YAML file or an
override fails at once with the dotted path of the field and the reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from t2sql.compression.config import CompressionConfig
from t2sql.prompt import PromptOptions

DATA_DIR_ENV = "T2SQL_DATA_DIR"
HOME_ENV = "T2SQL_HOME"


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the field at fault."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


SourceKind = Literal["spider", "create_context", "wikisql"]


class SourceConfig(Strict):
    """One data source turned into (question, context, answer) records."""

    kind: SourceKind
    path: str = Field(description="Hub dataset id or local file/directory; ${T2SQL_DATA_DIR} is expanded.")
    files: list[str] | None = Field(
        default=None,
        description="Files inside the directory. Spider: question files (default train_spider.json, and dev.json "
        "if present); WikiSQL: JSON-lines files (default train/dev/test.jsonl that exist).",
    )
    limit: int | None = Field(default=None, ge=1, description="Keep at most this many rows (after shuffling by seed).")
    databases: list[str] | None = Field(
        default=None, description="Keep only these databases: Spider db_ids or WikiSQL table_ids."
    )
    train_only: bool = Field(
        default=False,
        description="Every record of this source goes to the training split (extra data, e.g. WikiSQL beside "
        "Spider); the other sources are split as if it were not there.")

    @model_validator(mode="after")
    def _options_fit_kind(self) -> "SourceConfig":
        if self.kind == "create_context":
            for name in ("files", "databases"):
                if getattr(self, name):
                    raise ValueError(f"{name} is only for spider and wikisql sources, not create_context")
        return self


class DataConfig(Strict):
    """Which sources to load, how to split them, and how Spider schemas are written as context."""

    sources: list[SourceConfig] = Field(min_length=1)
    val_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)
    split_by: Literal["database", "random"] = Field(
        default="database",
        description="database: every question of a database (or WikiSQL table) lands in one split, so no schema leaks.",
    )
    schema_mode: Literal["full", "used"] = Field(
        default="full",
        description="Context for Spider: every table of the database (full) or only those the query uses (used).",
    )
    with_types: bool = True
    sample_values: int = Field(default=0, ge=0, description="Sample values per column appended to the schema.")


class ModelConfig(Strict):
    base_model: str = Field(
        default="t5-small",
        description="Hub id, local directory, or a registered run ('run:<id>' or 'champion').",
    )
    offline_fallback: bool = Field(
        default=True, description="When the hub cannot be reached, build a small T5 from the settings below."
    )
    vocab_size: int = Field(default=4096, ge=260)
    d_model: int = Field(default=256, ge=8)
    d_ff: int = Field(default=1024, ge=8)
    d_kv: int = Field(default=64, ge=4)
    num_layers: int = Field(default=3, ge=1)
    num_decoder_layers: int = Field(default=3, ge=1)
    num_heads: int = Field(default=4, ge=1)
    dropout_rate: float = Field(default=0.1, ge=0.0, lt=1.0)


class TrainConfig(Strict):
    epochs: float = Field(default=3.0, gt=0)
    learning_rate: float = Field(default=1e-3, gt=0, lt=1)
    batch_size: int = Field(default=16, ge=1)
    max_tokens_per_batch: int | None = Field(
        default=None, ge=64, description="Cap on padded source tokens per batch; batches of short examples grow."
    )
    max_source_length: int = Field(default=256, ge=8)
    max_target_length: int = Field(default=128, ge=4)
    seed: int = 42
    early_stopping_patience: int = Field(default=3, ge=0, description="0 disables early stopping.")
    eval_every_steps: int | None = Field(default=None, ge=1, description="Default: once per epoch.")
    checkpoint_every_steps: int = Field(default=50, ge=1)
    max_minutes: float | None = Field(default=None, gt=0, description="Wall-clock budget; the schedule fits it.")
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="fp32", description="Mixed precision for training: bf16 autocast on CPUs that support it."
    )
    quantization: Literal["nf4", "int8"] = Field(
        default="nf4", description="Weight precision of quantized techniques (QLoRA: 4-bit nf4 or 8-bit)."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(default=None, ge=1, description="Default: the machine's physical cores.")
    val_max_examples: int | None = Field(default=200, ge=1, description="Validation examples per evaluation.")
    val_execution_examples: int = Field(
        default=32, ge=0,
        description="Validation questions decoded and run at each evaluation, for the learning curve's execution "
                    "accuracy (spread over the split); 0 records validation loss only.",
    )
    val_max_new_tokens: int = Field(default=128, ge=4, description="Decoding length of those validation questions.")


class TechniqueSpec(Strict):
    """A fine-tuning technique by registry name with its own settings."""

    name: str
    label: str | None = Field(default=None, description="Display name (default: the technique name).")
    params: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict, description="Overrides of the train section for this technique.")

    @model_validator(mode="after")
    def _known(self) -> "TechniqueSpec":
        from t2sql.techniques import get_technique

        technique = get_technique(self.name)
        technique.Config.model_validate(self.params)
        TrainConfig.model_validate(self.train)
        return self


class RankSweepConfig(Strict):
    """Adapter-rank estimation: short LoRA runs at several ranks, the smallest good rank wins."""

    enabled: bool = False
    ranks: list[int] = Field(default_factory=lambda: [2, 4, 8, 16, 32, 64], min_length=1)
    technique: Literal["lora"] = "lora"
    max_minutes: float = Field(default=1.0, gt=0, description="Training budget of each sweep run.")
    tolerance: float = Field(default=0.02, ge=0, description="Relative validation-loss tolerance to the best rank.")
    val_examples: int = Field(default=50, ge=1, description="Validation examples scored by execution per rank.")
    apply_to: list[str] = Field(default_factory=lambda: ["lora", "qlora"],
                                description="Techniques whose rank `r` is set to the chosen rank.")

    @field_validator("ranks")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(r < 1 for r in v):
            raise ValueError("ranks must be >= 1")
        return sorted(set(v))


class EvalConfig(Strict):
    batch_size: int = Field(default=32, ge=1)
    num_beams: int = Field(default=1, ge=1)
    max_new_tokens: int = Field(default=128, ge=1)
    max_examples: int | None = Field(default=None, ge=1)
    query_timeout_s: float = Field(default=5.0, gt=0)
    row_cap: int = Field(default=10000, ge=1)
    execution_guided: bool = Field(default=False, description="Answer with the first of num_beams candidates that runs.")
    constrained: bool = Field(
        default=False, description="Constrained decoding (t2sql.inference.constrained): each step keeps only tokens "
        "that leave the output a valid query prefix over the question's own schema.")
    backend: str = Field(default="torch", description="Inference backend (torch-fp32, torch-int8, onnx-int8, ...).")
    fuzz_databases: int = Field(default=3, ge=1, description="Generated databases per schema-only example.")
    fuzz_seed: int = 0
    keep_distinct: bool = Field(default=False, description="Compare results with DISTINCT kept (Spider drops it).")
    slow_query_factor: float = Field(default=2.0, gt=0, description="Flag predictions this many times slower than gold.")
    slow_query_min_ms: float = Field(default=1.0, ge=0)
    report_samples: int = Field(default=8, ge=0, description="Sample successes and failures in the report.")
    database_url: str | None = Field(default=None, description=(
        "Run gold and predicted SQL on this server instead of the SQLite files: a SQLAlchemy URL with {db_id}, "
        "e.g. postgresql+psycopg://user@127.0.0.1:5432/{db_id} (databases copied there by t2sql load-db)."))
    database_password_env: str | None = Field(default=None, description="Environment variable with its password.")

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        from t2sql.inference.backends import canonical_backend

        return canonical_backend(v)


class GateConfig(Strict):
    """Champion gate: promote only when execution accuracy improves without a latency regression."""

    min_accuracy_gain: float = Field(default=0.0, ge=0, description="Required gain in execution accuracy (fraction).")
    max_latency_ratio: float = Field(default=1.5, gt=0, description="New p50 latency / champion p50 latency, at most.")


class RegistryConfig(Strict):
    root: str = Field(default="runs", description="Registry directory; ${T2SQL_HOME} is expanded.")
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking server of a team (http://host:5000); default: $T2SQL_MLFLOW_URI, "
        "else an embedded SQLite store and artifact folder under the registry directory.")
    model_name: str = Field(default="t2sql", pattern=r"^[A-Za-z0-9_.-]+$", description="The registered model's name.")


class PipelineConfig(Strict):
    name: str = Field(default="t2sql", pattern=r"^[A-Za-z0-9_.-]+$")
    work_dir: str = Field(default=".t2sql/work", description="Cache of prepared data and trained models.")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    prompt: PromptOptions = Field(default_factory=PromptOptions)
    train: TrainConfig = Field(default_factory=TrainConfig)
    techniques: list[TechniqueSpec] = Field(default_factory=lambda: [TechniqueSpec(name="full")], min_length=1)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    compression: CompressionConfig = Field(default_factory=CompressionConfig)
    rank_sweep: RankSweepConfig = Field(default_factory=RankSweepConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="train.<field> -> values; every technique runs at every combination, e.g. "
                    "{'train.learning_rate': [1e-3, 5e-4]}.",
    )
    runner: Literal["thread", "dask"] = "thread"
    max_workers: int = Field(default=2, ge=1)
    dask_address: str | None = None

    @field_validator("grid")
    @classmethod
    def _grid_keys(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            section, _, name = key.partition(".")
            if section != "train" or name not in TrainConfig.model_fields:
                raise ValueError(f"grid key {key!r}: must be train.<field>, one of "
                                 f"{', '.join(sorted(TrainConfig.model_fields))}")
            if not values:
                raise ValueError(f"grid key {key!r}: needs at least one value")
            for value in values:
                TrainConfig.model_validate({name: value})
        return v

    def expanded_techniques(self) -> list["TechniqueSpec"]:
        """Every technique at every grid point, each with its train overrides and a unique label."""
        import itertools

        keys = list(self.grid)
        combos = list(itertools.product(*(self.grid[k] for k in keys))) or [()]
        specs = []
        for t in self.techniques:
            for combo in combos:
                overrides = {k.split(".", 1)[1]: v for k, v in zip(keys, combo)}
                label = t.label or t.name
                if overrides:
                    label += "[" + ",".join(f"{k}={v}" for k, v in overrides.items()) + "]"
                specs.append(t.model_copy(update={"label": label, "train": {**t.train, **overrides}}))
        return specs

    @field_validator("techniques")
    @classmethod
    def _unique(cls, v: list[TechniqueSpec]) -> list[TechniqueSpec]:
        names = [t.label or t.name for t in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"technique listed twice: {', '.join(dupes)}")
        return v


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_path(value: str, field: str = "path") -> str:
    """Expand ``${VAR}`` and ``~`` in a path, naming the field when a variable is unset."""

    def sub(m: re.Match[str]) -> str:
        var = m.group(1)
        if var not in os.environ:
            hint = " (point it at the shared data directory, e.g. ../shared/data)" if var == DATA_DIR_ENV else ""
            raise ConfigError(f"{field}: environment variable {var} is not set{hint}")
        return os.environ[var]

    return os.path.expanduser(_VAR.sub(sub, value))


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        got = e.get("input")
        shown = "" if e["type"] in ("extra_forbidden", "missing") else f" (got {got!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r}: expected KEY=VALUE, e.g. train.epochs=2")
    key, _, text = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {assignment!r}: empty key")
    value = yaml.safe_load(text) if text.strip() else None
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is not a valid list index") from None
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {'.'.join(parts[:i])} is not a section")
        node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        try:
            node[int(last)] = value
        except (ValueError, IndexError):
            raise ConfigError(f"override {key}: {last} is not a valid list index") from None
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {key}: {'.'.join(parts[:-1])} is not a section")


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None,
                raw: dict[str, Any] | None = None) -> PipelineConfig:
    """Load and validate a pipeline configuration.

    Args:
        path: YAML file. Ignored when ``raw`` is given.
        overrides: ``dotted.key=value`` assignments applied after the file is read.
        raw: an already-parsed mapping (used by flows that receive the config as a parameter).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: the file is missing or not YAML, or a field is unknown or invalid; the message
            names the dotted path of every bad field and the reason.
    """
    origin = "parameters"
    if raw is None:
        if path is None:
            raise ConfigError("no configuration given: pass --config FILE")
        p = Path(path)
        origin = str(p)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
    else:
        import copy

        raw = copy.deepcopy(raw)
    for assignment in overrides or []:
        apply_override(raw, assignment)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None
    except KeyError as exc:  # unknown technique name raised by the registry
        raise ConfigError(f"invalid configuration ({origin}): techniques: {exc.args[0]}") from None


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    """A JSON-able dict of a config (used for hashing, saving and Prefect parameters)."""
    return cfg.model_dump(mode="json")


def registry_root(cfg: PipelineConfig) -> Path:
    """The registry directory: ``$T2SQL_HOME/runs`` when set, else the config's root."""
    if os.environ.get(HOME_ENV) and cfg.registry.root == "runs":
        return Path(os.environ[HOME_ENV]) / "runs"
    return Path(expand_path(cfg.registry.root, "registry.root"))
