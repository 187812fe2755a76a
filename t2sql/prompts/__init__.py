"""Prompt formats, found by name: how a record becomes model input and target, and output becomes SQL.

Each format is one module with the same shape:

- ``Config``: a pydantic model of its options (the ``prompt:`` section beside ``format:``);
- ``encode_source(question, context, config) -> str``: the model input;
- ``encode_target(answer, question, context, config) -> str | None``: the training target of a gold
  query, or None when the format cannot write it (training then leaves the example out);
- ``decode(text, question, context, config) -> str``: generated text back to SQL; never raises;
- ``extra_tokens(config) -> list[str]``: strings a freshly trained tokenizer keeps whole;
- ``reads_database(config) -> bool`` and ``context_for(question, context, db_path, config) -> str``:
  whether inputs need the question's database, and the context written with it.

:mod:`t2sql.prompt` is the one entry point the rest of the library calls; it dispatches to the
format a model was trained with (saved beside it in ``t2sql_prompt.json``). Adding a format is
adding a module and a line in :data:`FORMATS`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

FORMATS: dict[str, str] = {
    "plain": "t2sql.prompts.plain",
    "linked": "t2sql.prompts.linked",
}


def available() -> list[str]:
    """The registered format names, sorted."""
    return sorted(FORMATS)


def get_format(name: str) -> ModuleType:
    """The module implementing prompt format ``name``.

    Raises:
        KeyError: the name is unknown; the message lists the valid names.
    """
    if name not in FORMATS:
        raise KeyError(f"unknown prompt format {name!r}; valid: {', '.join(available())}")
    return importlib.import_module(FORMATS[name])
