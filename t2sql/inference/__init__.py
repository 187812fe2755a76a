"""Inference: one ``Translator`` over every backend (see :mod:`t2sql.inference.backends`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from t2sql.inference.backends import available_backends, canonical_backend

if TYPE_CHECKING:
    from t2sql.inference.translator import Translator

__all__ = ["Translator", "available_backends", "canonical_backend"]


def __getattr__(name: str):
    # Translator pulls in torch; name look-ups (config validation) should not.
    if name == "Translator":
        from t2sql.inference.translator import Translator

        return Translator
    raise AttributeError(f"module 't2sql.inference' has no attribute {name!r}")
