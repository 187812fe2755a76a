"""Prefect flows: the pipeline and its subflows."""
