"""Factory settings: one object, read from FACTORY_* environment variables and `.env`."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class FactorySettings(BaseSettings):
    """Where the factory reads and writes; chosen once, at the edge (CLI or deployment)."""

    model_config = SettingsConfigDict(env_prefix="FACTORY_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///.factory/warehouse.db"
    lake_url: str = ".factory/lake"
    manifest_dir: Path = Path("data/manifests")
    report_dir: Path = Path("reports")
    partition_start_date: date = date(2026, 3, 1)
    default_partition: date = date(2026, 4, 17)
    lake_retention: int = 5  # committed snapshots kept per partition (the current one included)
    lake_rows_per_file: int = 500_000  # Parquet files of a snapshot hold at most this many rows
    heartbeat_seconds: float = 30.0  # how often a running attempt proves it is alive (health: stale after 30 min)
    s3_block: str | None = None  # a saved prefect-aws S3Bucket block for s3:// URLs
    s3_endpoint_url: str | None = None  # an S3-compatible endpoint (MinIO) when no block is named


def load_settings(**overrides: object) -> FactorySettings:
    """Settings from the environment, with explicit overrides (tests, CLI flags) winning."""
    return FactorySettings(**{k: v for k, v in overrides.items() if v is not None})
