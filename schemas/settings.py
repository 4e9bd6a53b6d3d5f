"""Factory settings: one object, read from FACTORY_* environment variables and `.env`."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.manifest import partition_out_of_range


DEFAULT_CHUNK_BYTES = 8 * 2**20


class SettingsFileError(ValueError):
    """The `.env` file cannot be read as settings (not UTF-8, not a file)."""


class FactorySettings(BaseSettings):
    """Where the factory reads and writes; chosen once, at the edge (CLI or deployment). Every value is
    checked here, so a setting that cannot work fails before anything is written."""

    model_config = SettingsConfigDict(env_prefix="FACTORY_", env_file=".env", extra="ignore")

    database_url: str = Field("sqlite:///.factory/warehouse.db", min_length=1)
    lake_url: str = Field(".factory/lake", min_length=1)
    manifest_dir: Path = Path("data/manifests")
    # pulled datasets (http, sql sources) land each pull's pages here, as files with manifests
    landing_dir: Path = Path(".factory/landing")
    # a pulled dataset's source URL, overriding its declaration: '{"customers": "http://…"}'
    source_urls: dict[str, str] = Field(default_factory=dict)
    report_dir: Path = Path("reports")
    partition_start_date: date = date(2026, 3, 1)
    default_partition: date = date(2026, 4, 17)
    # the dataset commands use when --dataset is not given (needed once several are registered)
    default_dataset: str | None = Field(None, min_length=1)
    # committed snapshots kept per partition (the current one included)
    lake_retention: int = Field(5, ge=1, le=10_000)
    # Parquet files of a snapshot hold at most this many rows
    lake_rows_per_file: int = Field(500_000, ge=1, le=100_000_000)
    # a partition is read, validated and written in chunks of about this much input: memory holds one
    # chunk (plus one narrow row per entity), never the partition
    chunk_bytes: int = Field(DEFAULT_CHUNK_BYTES, ge=1, le=2**40)
    # how often a running attempt proves it is alive (health: stale after 30 min)
    heartbeat_seconds: float = Field(30.0, gt=0, le=3600, allow_inf_nan=False)
    # mart models (one DuckDB SQL file each); the shipped ones by default
    marts_dir: Path = Path(__file__).parent / "marts"
    # after a partition commits (run, backfill, restore, pull), its downstream marts are brought up to date
    marts_after_commit: bool = True
    s3_block: str | None = None  # a saved prefect-aws S3Bucket block for s3:// URLs
    s3_endpoint_url: str | None = None  # an S3-compatible endpoint (MinIO) when no block is named

    def manifest_root(self, dataset: str) -> Path:
        """Where a dataset's manifests are: delivered ones in manifest_dir, pulled ones in landing_dir."""
        from schemas.datasets import DATASETS

        spec = DATASETS.get(dataset)
        if spec is None or not spec.pulled:
            return Path(self.manifest_dir)
        landing = Path(self.landing_dir)
        landing.mkdir(parents=True, exist_ok=True)  # before the first pull it is empty, not missing
        return landing

    @field_validator("partition_start_date", "default_partition")
    @classmethod
    def _a_partition_day(cls, day: date) -> date:
        if (why := partition_out_of_range(day)) is not None:
            raise ValueError(why)
        return day


def load_settings(**overrides: object) -> FactorySettings:
    """Settings from the environment, with explicit overrides (tests, CLI flags) winning."""
    try:
        given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        return FactorySettings(**given)
    except UnicodeDecodeError as exc:
        raise SettingsFileError(f".env: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset "
                                f"{exc.start})") from None
    except IsADirectoryError:
        raise SettingsFileError(".env: is a directory, not a settings file") from None
