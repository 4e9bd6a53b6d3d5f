"""Prefect flows: the entry points. Thin: they compose tasks and decide."""
