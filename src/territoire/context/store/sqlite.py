"""The embedded backend: one SQLite file in WAL mode, no server.

One connection per thread (FastAPI runs sync handlers in a thread pool); writers take the
database's write lock up front (``BEGIN IMMEDIATE``) so a read-modify-write never deadlocks on a
lock upgrade. Geo-queries use an R*Tree on bounding boxes, then an exact test in Python
(``geo_match``), registered as an SQL function so LIMIT, OFFSET and count stay in SQL.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

import orjson

from territoire.context import geo, qlang
from territoire.context.store.base import EntityQuery
from territoire.context.store.sql import Cursor, SqlStore


def json_path(iri: str) -> str:
    """The JSON1 path selecting a top-level key (IRIs contain '.', ':' and '/', hence the quotes)."""
    return '$."' + iri.replace('"', '\\"') + '"'


#: Width of the point grid's columns [deg of longitude].
GRID_DEGREES = 0.01


def grid_column(lon: float) -> int:
    """The point grid column of a longitude [deg]."""
    return int((lon + 180.0) // GRID_DEGREES)


class _GeoQueries:
    """Geo-queries handed to the ``geo_match`` SQL function by token (SQL cannot carry objects).

    Tokens are kept in a bounded first-in first-out table: a query's token is only needed while
    its statements run, long before 10,000 newer queries have pushed it out.
    """

    MAX_TOKENS = 10_000

    def __init__(self) -> None:
        self._by_token: dict[str, geo.GeoQuery] = {}
        self._lock = threading.Lock()

    def register(self, query: geo.GeoQuery) -> str:
        token = uuid.uuid4().hex
        with self._lock:
            self._by_token[token] = query
            if len(self._by_token) > self.MAX_TOKENS:
                self._by_token.pop(next(iter(self._by_token)))
        return token

    def match(self, token: str, geojson: str) -> int:
        query = self._by_token.get(token)
        if query is None:
            return 0
        return 1 if geo.geo_matches(query, orjson.loads(geojson)) else 0


class SqliteStore(SqlStore):
    backend = "sqlite"
    ph = "?"
    migrations_package = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 10_000) -> None:
        super().__init__()
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._geo = _GeoQueries()
        self._thread_lock = threading.Lock()
        self._lock_file: BinaryIO | None = None

    # --- connections ---------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA cache_size = -65536")
            qlang.register_sqlite_functions(conn)
            conn.create_function("geo_match", 2, self._geo.match, deterministic=True)
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        cur = self._conn().cursor()
        try:
            yield cur
        finally:
            cur.close()

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """Wait for this writer's turn: a thread lock, then an advisory lock on ``<db>.lock``.

        SQLite's own busy handler polls with sleeps of up to 100 ms, which wastes most of the
        time when several processes (``serve --workers N``) write in turn; a blocking flock
        wakes the next writer the moment the previous one commits.
        """
        with self._thread_lock:
            if fcntl is None:
                yield
                return
            if self._lock_file is None:
                self._lock_file = open(self.path + ".lock", "a+b")  # noqa: SIM115 - kept for the store's life
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)

    @contextmanager
    def _write(self) -> Iterator[Cursor]:
        with self._writer_turn():
            conn = self._conn()
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                cur.close()
                raise
            cur.execute("COMMIT")
            cur.close()

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    # --- migrations ----------------------------------------------------------------------------

    def schema_version(self) -> int:
        conn = self._conn()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def migrate(self) -> list[int]:
        from territoire.context.model import now_iso

        applied: list[int] = []
        self.schema_version()  # creates the bookkeeping table
        conn = self._conn()
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, script in self._migration_scripts():
            if version in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-check under the write lock: another process may have migrated meanwhile.
                row = conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone()
                if row is None:
                    for statement in _split_sql(script):
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, now_iso()))
                    applied.append(version)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return applied

    # --- dialect -------------------------------------------------------------------------------

    def _lock_ids(self, cur: Cursor, tenant: str, ids: Sequence[str]) -> None:
        """BEGIN IMMEDIATE already holds the database's single write lock."""

    def _decode_list(self, value: Any) -> list[str] | None:
        if value is None:
            return None
        decoded: list[str] = orjson.loads(value)
        return decoded

    def _encode_list(self, value: list[str] | None) -> Any:
        return None if value is None else orjson.dumps(value).decode()

    def _insert_geo_sql(self) -> str:
        return (
            "INSERT INTO entity_geo (tenant, id, attr, cx, minx, miny, maxx, maxy, geojson) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )

    def _geo_row(self, tenant: str, entity_id: str, attr: str, value: dict[str, Any]) -> tuple[Any, ...]:
        minx, miny, maxx, maxy = geo.bbox(value)
        cell = grid_column(minx) if value.get("type") == "Point" else None
        return (tenant, entity_id, attr, cell, minx, miny, maxx, maxy, orjson.dumps(value).decode())

    def _data_select(self) -> str:
        return "e.data"

    def _data_param(self) -> str:
        return "?"

    def _upsert_sql(self) -> str:
        return (
            "INSERT INTO entities (tenant, id, types, scopes, created_at, modified_at, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, id) DO UPDATE SET types = excluded.types, "
            "scopes = excluded.scopes, created_at = excluded.created_at, "
            "modified_at = excluded.modified_at, data = excluded.data"
        )

    def _has_any_attr(self, attrs: Sequence[str]) -> tuple[str, list[Any]]:
        sql = " OR ".join("json_type(e.data, ?) IS NOT NULL" for _ in attrs)
        return f"({sql})", [json_path(a) for a in attrs]

    def _regex(self, column: str) -> str:
        return f"regexp(?, {column})"

    def _compile_q(self, query: EntityQuery) -> tuple[str, list[Any]]:
        return qlang.compile_q_sqlite(query.q, query.expand, "e.data")

    def _compile_scope(self, query: EntityQuery) -> tuple[str, list[Any]]:
        return qlang.compile_scope_sqlite(query.scope_q, "e.scopes")

    def _geo_clause(self, tenant: str, query: EntityQuery) -> tuple[str, list[Any]]:
        """Candidates from the point grid and the R*Tree, then the exact test (``geo_match``)."""
        assert query.geo is not None
        token = self._geo.register(query.geo)
        box = geo.candidate_bbox(query.geo)
        scope = "g.tenant = ? AND g.attr = ?"
        if box is None:
            sql = f"SELECT g.id FROM entity_geo g WHERE {scope} AND geo_match(?, g.geojson)"
            return f"e.id IN ({sql})", [tenant, query.geoproperty, token]
        minx, miny, maxx, maxy = box
        first, last = grid_column(minx), grid_column(maxx)
        points = (
            f"SELECT g.id FROM entity_geo g WHERE {scope} AND g.cx BETWEEN ? AND ? AND g.miny BETWEEN ? AND ? "
            "AND g.minx BETWEEN ? AND ? AND geo_match(?, g.geojson)"
        )
        others = (
            # CROSS JOIN makes SQLite start from the R*Tree (it would otherwise scan the tenant).
            "SELECT g.id FROM entity_geo_rtree r CROSS JOIN entity_geo g ON g.gid = r.gid "
            f"WHERE r.minx <= ? AND r.maxx >= ? AND r.miny <= ? AND r.maxy >= ? AND {scope} "
            "AND geo_match(?, g.geojson)"
        )
        params = [tenant, query.geoproperty, first, last, miny, maxy, minx, maxx, token]
        params += [maxx, minx, maxy, miny, tenant, query.geoproperty, token]
        return f"e.id IN ({points} UNION ALL {others})", params

    def _discovery_rows(
        self, cur: Cursor, tenant: str, type_iri: str | None, attr_iri: str | None
    ) -> list[tuple[str, str, str, int]]:
        sql = (
            "SELECT t.type, j.key, json_extract(k.value, '$.type'), count(DISTINCT e.id) "
            "FROM entity_types t JOIN entities e ON e.tenant = t.tenant AND e.id = t.id, "
            "json_each(e.data) j, json_each(j.value) k WHERE t.tenant = ?"
        )
        params: list[Any] = [tenant]
        if type_iri is not None:
            sql += " AND t.type = ?"
            params.append(type_iri)
        if attr_iri is not None:
            sql += " AND j.key = ?"
            params.append(attr_iri)
        cur.execute(sql + " GROUP BY 1, 2, 3", params)
        return [(r[0], r[1], r[2], int(r[3])) for r in cur.fetchall()]


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        buffer += line + "\n"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
