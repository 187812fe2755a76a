"""The typed summary of one pipeline run, which the report renders and the registry stores.

    from t2sql.summary import RunSummary, ReportSection
    summary = RunSummary(metrics=metrics, techniques=rows, sections=technique_sections(finetunes))

Fixed fields hold what every run has (test metrics, the learning curve, the technique comparison,
the rank sweep, compressed variants, the champion decision). What only some runs have is added as
:class:`ReportSection` entries by the part of the library that knows it: a technique through its
optional ``report_sections(facts)`` hook (AdaLoRA's final ranks, BitNet's ternary share, the rounds
of iterative refinement), compression through :func:`t2sql.compression.variants.report_sections`.
The report renders every section the same way, so a new technique or compression method adds its
own section without a change to the report.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ReportTable(BaseModel):
    """A table of a report section; ``fractions`` names the columns of shares (shown with three decimals)."""

    model_config = ConfigDict(extra="forbid")

    columns: list[str]
    rows: list[list[Any]]
    fractions: list[str] = Field(default_factory=list)


class ReportSection(BaseModel):
    """A titled part of the report: paragraphs, then tables."""

    model_config = ConfigDict(extra="forbid")

    title: str
    source: str = Field(description="Who added it: 'technique:<name>' or 'compression'.")
    text: list[str] = Field(default_factory=list)
    tables: list[ReportTable] = Field(default_factory=list)


class RunSummary(BaseModel):
    """Everything the report of one run shows."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict, description="Test metrics of the winner.")
    predictions_path: str | None = None
    exploration: dict[str, Any] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(default_factory=list, description="The winner's learning curve.")
    winner: str | None = None
    techniques: list[dict[str, Any]] = Field(default_factory=list, description="One comparison row per technique.")
    technique_summaries: dict[str, dict[str, Any]] = Field(default_factory=dict)
    rank_sweep: list[dict[str, Any]] | None = None
    chosen_rank: int | None = None
    variants: list[dict[str, Any]] | None = Field(default=None, description="Compressed variants of the winner.")
    champion: dict[str, Any] | None = Field(default=None, description="The champion gate's decision.")
    sections: list[ReportSection] = Field(default_factory=list)
