"""Framework settings: the only place the framework reads the environment.

Every setting is an ``ADCONNECT_*`` environment variable (or a line in a ``.env`` file in
the working directory). Providers have their own settings classes, read from
``ADCONNECT_<PROVIDER>_*`` by the plugin's ``settings.py``.
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["FrameworkSettings", "default_data_dir"]


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("adconnect", appauthor=False))


class FrameworkSettings(BaseSettings):
    """Platform-wide settings (``ADCONNECT_*``)."""

    model_config = SettingsConfigDict(env_prefix="ADCONNECT_", env_file=".env", extra="ignore", frozen=True)

    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL of a role that may create schemas and roles (migrations). "
        "Unset: an embedded PostgreSQL is started in the data directory.",
    )
    app_database_url: SecretStr | None = Field(
        default=None,
        description="URL the application uses at run time. Must be a role that owns no table "
        "and is subject to row-level security. Unset: derived from ADCONNECT_DATABASE_URL with "
        "the user replaced by ADCONNECT_APP_ROLE (works with trust or peer authentication).",
    )
    app_role: str = Field(default="adconnect_app", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    data_dir: Path = Field(default_factory=default_data_dir)
    master_key: SecretStr | None = Field(
        default=None,
        description="Base64 32-byte master key(s), comma-separated, newest first. Unset: a key "
        "file `master.key` (mode 0600) in the data directory, created on first run.",
    )
    timezone: str = "America/Jamaica"
    disable_plugins: str = Field(
        default="", description="Comma-separated entry-point names that must not load."
    )
    trace_plugins: bool = False
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    log_level: str = "INFO"
    # --- the runner: leader election, schedules and the job queue (adconnect.scheduling) ---
    schedule_refresh_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often the leader re-reads schedules, enablement and connection status.",
    )
    misfire_grace_seconds: int = Field(
        default=300,
        ge=1,
        description="How late a scheduled sync may still start (after a pause, a restart or a leader "
        "change); a fire missed by more is skipped until the next one.",
    )
    worker_concurrency: int = Field(default=2, ge=1, le=64, description="Sync jobs run at once per runner.")
    leader_poll_seconds: float = Field(
        default=2.0, gt=0, description="How often a standby runner tries to become the leader."
    )
    worker_heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="How often a worker tells the job queue it is alive."
    )
    stalled_worker_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A worker silent for this long is presumed dead and its jobs are run again.",
    )
    worker_poll_seconds: float = Field(
        default=5.0, gt=0, description="Longest wait between two looks at the queue (besides notifications)."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _stalled_after_heartbeats(self) -> FrameworkSettings:
        if self.stalled_worker_seconds <= self.worker_heartbeat_seconds:
            raise ValueError(
                "ADCONNECT_STALLED_WORKER_SECONDS must be longer than ADCONNECT_WORKER_HEARTBEAT_SECONDS"
            )
        return self

    @property
    def disabled_plugins(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.disable_plugins.split(",") if p.strip())

    @property
    def master_key_file(self) -> Path:
        return self.data_dir / "master.key"

    @property
    def embedded_pgdata(self) -> Path:
        return self.data_dir / "pgdata"
