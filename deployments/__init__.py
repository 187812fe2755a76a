"""Prefect deployments of the t2sql flows (declared in ``prefect.yaml``) and ``python -m deployments.up``."""
