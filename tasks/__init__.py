"""Prefect tasks: each a thin @task over plain functions that tests call directly."""
