"""t2sql: fine-tune, compress, evaluate and serve small text-to-SQL models on CPUs."""

__version__ = "0.1.0"
