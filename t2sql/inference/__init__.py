"""Inference: one ``Translator`` over every backend."""

from t2sql.inference.translator import Translator

__all__ = ["Translator"]
