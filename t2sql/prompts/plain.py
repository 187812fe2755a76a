"""The plain format: ``question: ... schema: CREATE TABLE ...`` in, the gold SQL as the target.

    prompt:
      format: plain
"""

from __future__ import annotations

import os
import re

from pydantic import BaseModel, ConfigDict, Field

_WS = re.compile(r"\s+")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repair: bool = Field(
        default=False,
        description="Drop what a cut-off generation left open (an unterminated value with its comparison, a "
        "trailing WHERE/AND/comma) and close parentheses, so the query can run.")
    snap_values: bool = Field(
        default=False, description="Snap string values in the output onto question spans.")


def extra_tokens(config: Config) -> list[str]:
    return []


def reads_database(config: Config) -> bool:
    return False


def context_for(question: str, context: str, db_path: str | os.PathLike[str] | None, config: Config) -> str:
    return context


def encode_source(question: str, context: str, config: Config) -> str:
    return f"question: {_WS.sub(' ', question).strip()} schema: {_WS.sub(' ', context).strip()}"


def encode_target(answer: str, question: str, context: str, config: Config) -> str:
    return _WS.sub(" ", answer).strip()


def decode(text: str, question: str, context: str, config: Config) -> str:
    text = _WS.sub(" ", text).strip().rstrip(";").strip()
    if config.repair:
        from t2sql.linking import repair_sql

        text = repair_sql(text)
    if config.snap_values:
        from t2sql.linking import snap_literals

        try:
            return snap_literals(text, _WS.sub(" ", question).strip(), None)
        except Exception:  # noqa: BLE001 - a model's output must never crash serving
            return text
    return text
