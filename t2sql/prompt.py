"""How a record becomes model input and target, and how model output becomes SQL.

Training, every inference backend, the web GUI and ``t2sql predict`` go through these functions with
the same :class:`PromptOptions`, which are saved beside every exported model (``t2sql_prompt.json``),
so a model is always served in the format it was trained on. The work is done by the prompt format
the options name (:mod:`t2sql.prompts`): ``plain`` (``question: ... schema: CREATE TABLE ...``, the
gold SQL as target) or ``linked`` (numbered tables and columns, link marks, and targets that point
at schema items by number, :mod:`t2sql.linking`).

    prompt:                 # the config section: a format and its own options
      format: linked
      placeholders: true
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer, model_validator

from t2sql.model_dir import PROMPT_FILE
from t2sql.prompts import available, get_format

_WS = re.compile(r"\s+")
log = logging.getLogger(__name__)


class PromptOptions(BaseModel):
    """The ``prompt:`` section: ``format`` (a name in :data:`t2sql.prompts.FORMATS`) and that format's
    own options, written beside it.

    The format's options read as attributes (``opts.placeholders``). Sections written before formats
    had names (``schema_format: sql | compact``) are read as ``plain`` and ``linked``.
    """

    model_config = ConfigDict(extra="forbid")

    format: str = "plain"
    options: Any = None

    @model_validator(mode="before")
    @classmethod
    def _format_and_options(cls, data: Any) -> Any:
        if isinstance(data, PromptOptions):
            return data
        data = dict(data or {})
        if set(data) <= {"format", "options"} and isinstance(data.get("options"), BaseModel):
            return data
        name = data.pop("format", None)
        if name is None:
            name, data = _legacy(data)
        if name not in available():
            raise ValueError(f"unknown prompt format {name!r}; valid: {', '.join(available())}")
        try:
            options = get_format(name).Config.model_validate(data)
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or name}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{name} format: {reasons}") from None
        return {"format": name, "options": options}

    @model_serializer(mode="wrap")
    def _flat(self, handler, info) -> dict[str, Any]:
        return {"format": self.format, **self.options.model_dump(mode=info.mode)}

    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("options")
        if options is not None and not name.startswith("_") and name in type(options).model_fields:
            return getattr(options, name)
        return super().__getattr__(name)

    def replace(self, **changes: Any) -> "PromptOptions":
        """The same format with some options changed (validated)."""
        return PromptOptions.model_validate({**self.model_dump(), **changes})

    @property
    def reads_database(self) -> bool:
        """Whether inputs are written with the question's database (stored values it names)."""
        return get_format(self.format).reads_database(self.options)

    def extra_tokens(self) -> list[str]:
        """Strings a tokenizer should keep as single tokens for this format (empty for the plain one)."""
        return get_format(self.format).extra_tokens(self.options)


#: Options that never worked with ``schema_format: sql``: refused there rather than ignored.
_NEEDS_LINKED = {"placeholders", "infer_joins", "value_pointers", "question_links", "linked_tables_only",
                 "fix_tables", "linked_columns_only", "key_columns", "question_values", "value_columns",
                 "order_words"}


def _legacy(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(format, options) of a section written as ``schema_format: sql | compact`` with every option flat."""
    schema_format = data.pop("schema_format", "sql")
    if schema_format == "compact":
        return "linked", data
    plain = get_format("plain").Config.model_fields
    linked = get_format("linked").Config.model_fields
    dropped = sorted(k for k, v in data.items() if k not in plain and k in linked and v != linked[k].default)
    refused = [k for k in dropped if k in _NEEDS_LINKED]
    if refused:
        raise ValueError(f"{refused[0]} needs format: linked (or schema_format: compact)")
    if dropped:
        log.warning("prompt options %s have no effect in the plain format (schema_format: sql); ignored",
                    ", ".join(dropped))
    return "plain", {k: v for k, v in data.items() if k in plain or k not in linked}


def _resolve(opts: PromptOptions | None):
    opts = opts if opts is not None else PromptOptions()
    return get_format(opts.format), opts.options


def question_context(question: str, context: str, db_path: str | os.PathLike[str] | None,
                     opts: PromptOptions | None) -> str:
    """The context the model reads for ``question``: for a format that reads the database (the linked
    format's ``question_values``), with the values of ``db_path`` the question names written into it."""
    if opts is None or not db_path:
        return context
    fmt, cfg = _resolve(opts)
    return fmt.context_for(question, context, db_path, cfg)


def build_source(question: str, context: str, opts: PromptOptions | None = None) -> str:
    """Model input for one question over a schema given as CREATE TABLE statements.

    Args:
        question: the question.
        context: CREATE TABLE statements (``"; "``-joined, optionally with sample-value comments).
        opts: the prompt options; None for the plain format.
    """
    fmt, cfg = _resolve(opts)
    return fmt.encode_source(question, context, cfg)


def build_sources(pairs: Sequence[tuple[str, str]], opts: PromptOptions | None = None) -> list[str]:
    """:func:`build_source` for (question, context) pairs."""
    return [build_source(q, c, opts) for q, c in pairs]


def training_target(answer: str, question: str, context: str, opts: PromptOptions | None = None) -> str | None:
    """The training target of a gold query, or None when the format cannot write it (the example is left out)."""
    fmt, cfg = _resolve(opts)
    return fmt.encode_target(answer, question, context, cfg)


def build_target(answer: str, question: str, context: str, opts: PromptOptions | None = None) -> str:
    """:func:`training_target`, with the gold query as written where the format cannot write it
    (texts a tokenizer is trained on)."""
    target = training_target(answer, question, context, opts)
    return _WS.sub(" ", answer).strip() if target is None else target


def placeholder_target(answer: str, question: str, context: str, opts: PromptOptions) -> str | None:
    """The linked format's placeholder target of ``answer``, or None when the shown schema cannot write it."""
    from t2sql.prompts.linked import placeholder_target as linked_target

    if opts.format != "linked":
        raise ValueError(f"placeholder targets belong to the linked format, not {opts.format!r}")
    return linked_target(answer, question, context, opts.options)


def postprocess(text: str, question: str = "", context: str = "", opts: PromptOptions | None = None) -> str:
    """Turn generated text into SQL in the format's way; never raises.

    Always: whitespace collapsed, a trailing semicolon dropped. Then what the format does: with the
    linked format's placeholders, numbers mapped back to the real names of ``context``, ``ON``
    conditions inferred, values snapped (see :func:`t2sql.linking.restore_sql`).
    """
    if opts is None:
        return _WS.sub(" ", text).strip().rstrip(";").strip()
    fmt, cfg = _resolve(opts)
    return fmt.decode(text, question, context, cfg)


def save_prompt_options(opts: PromptOptions | None, model_dir: str | os.PathLike[str]) -> None:
    """Write the options beside a model (``t2sql_prompt.json``)."""
    (Path(model_dir) / PROMPT_FILE).write_text(json.dumps((opts or PromptOptions()).model_dump(mode="json")))


def load_prompt_options(model_dir: str | os.PathLike[str]) -> PromptOptions:
    """The options a model was trained with (the plain format for models without the file)."""
    path = Path(model_dir) / PROMPT_FILE
    if path.is_file():
        return PromptOptions.model_validate(json.loads(path.read_text()))
    return PromptOptions()
