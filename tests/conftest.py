"""Shared fixtures: every store-backed test runs on SQLite and on PostgreSQL.

PostgreSQL comes from TERRITOIRE_TEST_POSTGRES_URL (default: the local server, database
territoire_test). Each pytest process works in its own database named after it plus the process
id (created at first use, dropped at the end), so concurrent runs never empty each other's
tables. Without a reachable server the PostgreSQL half is skipped with the reason shown, except
under CI (CI=true), where it fails: CI must test both backends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from territoire.app import create_app
from territoire.config import Settings
from territoire.context.store import Store, open_store

BASE_POSTGRES_URL = os.environ.get(
    "TERRITOIRE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/territoire_test"
)
#: This process's own database.
POSTGRES_URL = f"{BASE_POSTGRES_URL}_{os.getpid()}"
#: Tables kept between tests (schema bookkeeping and PostGIS's own).
KEEP_TABLES = {"schema_migrations", "spatial_ref_sys"}


def _postgres_problem() -> str | None:
    """None if the test database is usable, else why not."""
    base, _, dbname = POSTGRES_URL.rpartition("/")
    try:
        with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=3) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{dbname}"')
            available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'").fetchone()
            if not available:
                return "PostGIS is not installed on the PostgreSQL server"
    except psycopg.Error as err:
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {err}"
    return None


_PG_PROBLEM: str | bool | None = False


def postgres_or_skip() -> None:
    global _PG_PROBLEM
    if _PG_PROBLEM is False:
        _PG_PROBLEM = _postgres_problem()
    if _PG_PROBLEM:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {_PG_PROBLEM}")
        pytest.skip(str(_PG_PROBLEM))


_shared_pg: Store | None = None


def _postgres_store() -> Store:
    """One PostgreSQL store for the session (migrations once), emptied before each test."""
    global _shared_pg
    postgres_or_skip()
    if _shared_pg is None:
        _shared_pg = open_store(POSTGRES_URL, pool_size=4)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
            if row[0] not in KEEP_TABLES
        ]
        conn.execute(f"TRUNCATE {', '.join(tables)}")
    _shared_pg._known_tenants.clear()  # type: ignore[attr-defined]
    return _shared_pg


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _shared_pg is not None:
        _shared_pg.close()
    if _PG_PROBLEM is None:  # the database was created by this process
        base, _, dbname = POSTGRES_URL.rpartition("/")
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgres":
        yield _postgres_store()
        return
    sqlite_store = open_store(f"sqlite:///{tmp_path / 'territoire.db'}")
    yield sqlite_store
    sqlite_store.close()


@pytest.fixture
def settings() -> Settings:
    return Settings(database_url="sqlite:///unused.db", context_fetch_timeout=2.0)


@pytest.fixture
def client(store: Store, settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, store=store)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
