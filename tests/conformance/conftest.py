"""Conformance tests: the ETSI NGSI-LD test suite ported to pytest, on both backends.

The suite's @context (``ngsi-ld-test-suite-compound.jsonld`` on forge.etsi.org) is served from
``data/contexts`` through the broker's offline context directory: nothing is fetched at test time.

Speed: the suite has hundreds of cases, each a handful of requests. Building an application per
test (and TRUNCATE on PostgreSQL) costs ten times more than the requests themselves, so here
``client`` is one application per backend for the whole session, its data emptied (DELETE, fast on
tables this small) before each test: every test still starts from an empty broker, like with the
root fixture. The application runs without its background workers (subscription delivery,
temporal retention), which these tests do not exercise, and on a Store object of its own (on
PostgreSQL, the same database as the root fixture's): the write hooks it registers must not fire
for the other tests' writes. Tests that depend on state the store does
not hold (the @context registry kept in memory) use ``isolated_client``, the root fixtures' fresh
application per test.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import tests.conftest as root
from _etsi import Api
from fastapi.testclient import TestClient

from territoire.app import create_app
from territoire.config import Settings
from territoire.context.store import Store, open_store

CONTEXTS = Path(__file__).parent / "data" / "contexts"
#: Tables left alone between tests: schema bookkeeping, PostGIS's own, and the stored @contexts
#: (mirrored in the application's memory, so they must stay consistent with it).
KEPT = {"schema_migrations", "spatial_ref_sys", "jsonld_contexts", "sqlite_sequence"}


def conformance_settings() -> Settings:
    return Settings(database_url="sqlite:///unused.db", context_fetch_timeout=2.0, context_dir=CONTEXTS)


@pytest.fixture
def settings() -> Settings:
    return conformance_settings()


class _Broker:
    """One backend's store and running application, and a connection to empty its tables."""

    def __init__(self, store: Store, emptier: Any, tables: list[str]) -> None:
        self.store = store
        self.app = create_app(conformance_settings(), store=store)
        self.app.state.background = []  # no delivery / retention workers (see the module docstring)
        self.client = TestClient(self.app, raise_server_exceptions=False)
        self.client.__enter__()
        self._emptier = emptier
        self._tables = tables

    def empty(self) -> None:
        for table in self._tables:
            self._emptier.execute(f"DELETE FROM {table}")
        if isinstance(self._emptier, sqlite3.Connection):
            self._emptier.commit()
        self.store._known_tenants.clear()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self._emptier.close()
        self.store.close()


def _open_broker(backend: str, directory: Path) -> _Broker:
    emptier: Any
    if backend == "postgres":
        root._postgres_store()  # creates this process's database, migrated
        # A Store of its own: the application registers write hooks (subscriptions, temporal) on
        # its store, and this application outlives the tests sharing the root fixture's store.
        store = open_store(root.POSTGRES_URL, pool_size=2)
        emptier = psycopg.connect(root.POSTGRES_URL, autocommit=True)
        rows = emptier.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    else:
        path = directory / "territoire.db"
        store = open_store(f"sqlite:///{path}")
        emptier = sqlite3.connect(path)
        rows = emptier.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    # The R*Tree's shadow tables follow its virtual table (entity_geo_rtree) and are not touched.
    tables = [row[0] for row in rows if row[0] not in KEPT and not row[0].startswith("entity_geo_rtree_")]
    return _Broker(store, emptier, tables)


@pytest.fixture(scope="session")
def _brokers() -> Iterator[dict[str, _Broker]]:
    brokers: dict[str, _Broker] = {}
    yield brokers
    for broker in brokers.values():
        broker.close()


@pytest.fixture(params=["sqlite", "postgres"])
def client(
    request: pytest.FixtureRequest, _brokers: dict[str, _Broker], tmp_path_factory: pytest.TempPathFactory
) -> TestClient:
    """The broker under test, empty, on each backend (overrides the root ``client``)."""
    backend: str = request.param
    if backend == "postgres":
        root.postgres_or_skip()
    broker = _brokers.get(backend)
    if broker is None:
        broker = _brokers[backend] = _open_broker(backend, tmp_path_factory.mktemp("etsi"))
    broker.empty()
    return broker.client


@pytest.fixture
def isolated_client(store: Store, settings: Settings) -> Iterator[TestClient]:
    """A fresh application per test (the root ``client``), for tests of in-memory state."""
    app = create_app(settings, store=store)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def api(client: TestClient) -> Api:
    return Api(client)
