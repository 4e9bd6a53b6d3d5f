"""Quiet defaults for Prefect's ephemeral server, applied only where the user has chosen nothing."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

# Telemetry cannot reach its host from closed networks and prints an error when it tries. The
# ephemeral server's 20 s start-up limit is too tight for a busy two-core machine.
QUIET_DEFAULTS = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}


def _active_profile_settings() -> dict[str, object]:
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect"))
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml"))
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    return dict(profiles.get("profiles", {}).get(active, {}))


def chosen_by_user(name: str) -> bool:
    """Does the environment or the active Prefect profile set this Prefect setting?"""
    return name in os.environ or name in _active_profile_settings()


def apply_quiet_defaults(extra: dict[str, str] | None = None) -> None:
    """Set quiet defaults in the environment unless the environment or the active profile sets them."""
    chosen = _active_profile_settings()
    for name, value in {**QUIET_DEFAULTS, **(extra or {})}.items():
        if name not in os.environ and name not in chosen:
            os.environ[name] = value
