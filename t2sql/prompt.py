"""How a record becomes model input, and how model output becomes SQL.

Training and every inference backend go through these two functions, so a change of input
format (schema serialisation, linking marks) applies everywhere at once.
"""

from __future__ import annotations

import re

_WS = re.compile(r"\s+")


def build_source(question: str, context: str) -> str:
    """Model input for one question over a schema given as CREATE TABLE statements."""
    question = _WS.sub(" ", question).strip()
    context = _WS.sub(" ", context).strip()
    return f"question: {question} schema: {context}"


def postprocess(text: str) -> str:
    """Clean a generated SQL string (whitespace, a trailing semicolon)."""
    text = _WS.sub(" ", text).strip()
    return text.rstrip(";").strip()
