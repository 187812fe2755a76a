"""Data layer: load sources into (question, context, answer) records, prepare splits, explore them.

    from t2sql.data import load_source, prepare_data, explore
"""

from t2sql.data.explore import explore
from t2sql.data.preprocess import prepare_data
from t2sql.data.sources import DataSourceError, load_source

__all__ = ["DataSourceError", "explore", "load_source", "prepare_data"]
