"""Thin Prefect tasks over ``t2sql`` functions: retries, caching and names, nothing more."""
