"""Settings, read from the environment (prefix ``TERRITOIRE_``) or a ``.env`` file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration of one Territoire process."""

    model_config = SettingsConfigDict(env_prefix="TERRITOIRE_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///territoire.db",
        description="sqlite:///path/to/file.db (embedded default) or postgresql://user@host:port/db",
    )
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Largest accepted body [bytes].")
    context_dir: Path | None = Field(
        default=None,
        description="Directory of preloaded @context documents for sites without internet "
        "(an index.json mapping URL -> file, or files named after the URL).",
    )
    context_fetch_timeout: float = Field(default=5.0, gt=0, description="Timeout to fetch a user @context [s].")
    default_limit: int = Field(default=20, ge=1, description="Page size when a query gives no limit.")
    max_limit: int = Field(default=1000, ge=1, description="Largest page size a query may ask for.")
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0)
    postgres_pool_size: int = Field(default=8, ge=1)
