"""Entity storage: one interface (:class:`Store`), an embedded SQLite backend and PostgreSQL."""

from __future__ import annotations

from territoire.context.errors import BadRequestData
from territoire.context.store.base import DEFAULT_TENANT, EntityQuery, QueryResult, Store, TypeExpr

__all__ = ["DEFAULT_TENANT", "EntityQuery", "QueryResult", "Store", "TypeExpr", "open_store"]


def open_store(url: str, *, busy_timeout_ms: int = 10_000, pool_size: int = 8, migrate: bool = True) -> Store:
    """Open the store named by a database URL and apply pending migrations.

    ``sqlite:///relative.db``, ``sqlite:////absolute/path.db``, ``sqlite:///:memory:`` is refused
    (each thread would see its own database), ``postgresql://user@host:port/db``.
    """
    store: Store
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path or path == ":memory:":
            raise BadRequestData("sqlite:///:memory: is not supported: use a file path")
        from territoire.context.store.sqlite import SqliteStore

        store = SqliteStore(path, busy_timeout_ms=busy_timeout_ms)
    elif url.startswith(("postgresql://", "postgres://")):
        from territoire.context.store.postgres import PostgresStore

        store = PostgresStore(url, pool_size=pool_size)
    else:
        raise BadRequestData(f"Unsupported database URL {url!r}: use sqlite:///FILE or postgresql://...")
    if migrate:
        store.migrate()
    return store
