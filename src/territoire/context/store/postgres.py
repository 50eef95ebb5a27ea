"""The production backend: PostgreSQL 15 with PostGIS, through a psycopg 3 connection pool.

Concurrent writers of the same entities are serialised with transaction-scoped advisory locks
taken in a fixed order (no deadlock), which also covers entities that do not exist yet.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
from psycopg_pool import ConnectionPool

from territoire.context import geo, qlang
from territoire.context.errors import InternalError
from territoire.context.model import Entity
from territoire.context.store.base import EntityQuery, TypeExpr
from territoire.context.store.sql import Cursor, SqlStore

#: Advisory lock namespace for schema migrations (any constant distinct from entity-lock hashes).
MIGRATION_LOCK = 7_302_551_001


class PostgresStore(SqlStore):
    backend = "postgres"
    ph = "%s"
    migrations_package = "postgres"

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        super().__init__()
        self.url = url
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            # JIT compilation costs ~1 s per q query (the JSON functions are costed far above
            # jit_above_cost) for ~2 ms of execution: off for this workload.
            kwargs={"autocommit": True, "options": "-c jit=off"},
            open=False,
            timeout=30.0,
        )
        try:
            self._pool.open(wait=True, timeout=10.0)
        except psycopg.OperationalError as err:  # pragma: no cover - depends on the server
            self._pool.close()
            raise InternalError(f"Cannot connect to PostgreSQL at {url}: {err}") from err
        except Exception as err:
            self._pool.close()
            raise InternalError(f"Cannot connect to PostgreSQL at {url}: {err}") from err

    # --- connections ---------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        with self._pool.connection() as conn, conn.cursor() as cur:
            yield cur

    @contextmanager
    def _write(self) -> Iterator[Cursor]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    def close(self) -> None:
        self._pool.close()

    # --- migrations ----------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._read() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            cur.execute("SELECT max(version) FROM schema_migrations")
            row = cur.fetchone()
        return int(row[0] or 0)

    def migrate(self) -> list[int]:
        from territoire.context.model import now_iso

        applied: list[int] = []
        self.schema_version()
        with self._write() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            cur.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in cur.fetchall()}
            for version, script in self._migration_scripts():
                if version in done:
                    continue
                cur.execute(script)
                cur.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, now_iso()))
                applied.append(version)
        return applied

    # --- dialect -------------------------------------------------------------------------------

    def _load(self, cur: Cursor, tenant: str, ids: Sequence[str]) -> dict[str, Entity]:
        """Look the ids up one by one through the primary key (a join on unnest): with IN or ANY,
        stale statistics during a bulk load make the planner scan the whole tenant instead."""
        if not ids:
            return {}
        cur.execute(
            f"SELECT {self._entity_columns()} "
            "FROM unnest(%s::text[]) AS wanted(id) JOIN entities e ON e.tenant = %s AND e.id = wanted.id",
            (list(dict.fromkeys(ids)), tenant),
        )
        return {row[0]: self._row_to_entity(row) for row in cur.fetchall()}

    # Bulk writes go through COPY into per-connection staging tables: several times faster than
    # executemany for the 1,000-entity batches of ingestion and batch upserts.

    def _staging(self, cur: Cursor) -> None:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS staging_entities (LIKE entities) ON COMMIT DELETE ROWS;"
            "CREATE TEMP TABLE IF NOT EXISTS staging_geo "
            "(tenant TEXT, id TEXT, attr TEXT, geojson TEXT) ON COMMIT DELETE ROWS"
        )

    def _write_entities(self, cur: Cursor, rows: list[tuple[Any, ...]], existing: Collection[str]) -> None:
        pg_cur: psycopg.Cursor[Any] = cur  # type: ignore[assignment]
        # New entities (their ids are locked by this transaction) are copied straight in.
        new = [row for row in rows if row[1] not in existing]
        if new:
            with pg_cur.copy(
                "COPY entities (tenant, id, types, scopes, created_at, modified_at, data) FROM STDIN"
            ) as copy:
                for row in new:
                    copy.write_row(row)
        updated = [row for row in rows if row[1] in existing]
        if len(updated) < 8:
            if updated:
                super()._write_entities(cur, updated, existing)
            return
        self._staging(cur)
        with pg_cur.copy(
            "COPY staging_entities (tenant, id, types, scopes, created_at, modified_at, data) FROM STDIN"
        ) as copy:
            for row in updated:
                copy.write_row(row)
        cur.execute(
            "UPDATE entities e SET types = s.types, scopes = s.scopes, created_at = s.created_at, "
            "modified_at = s.modified_at, data = s.data FROM staging_entities s "
            "WHERE e.tenant = s.tenant AND e.id = s.id"
        )

    def _write_types(self, cur: Cursor, rows: list[tuple[str, str, str]]) -> None:
        pg_cur: psycopg.Cursor[Any] = cur  # type: ignore[assignment]
        with pg_cur.copy("COPY entity_types (tenant, type, id) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _write_geo(self, cur: Cursor, rows: list[tuple[Any, ...]]) -> None:
        pg_cur: psycopg.Cursor[Any] = cur  # type: ignore[assignment]
        # Points are copied straight in as EWKT; other geometries are converted by PostGIS.
        points = [row for row in rows if row[5] is not None]
        if points:
            with pg_cur.copy("COPY entity_geo (tenant, id, attr, geojson, geom) FROM STDIN") as copy:
                for row in points:
                    copy.write_row((row[0], row[1], row[2], row[3], row[5]))
        others = [row for row in rows if row[5] is None]
        if len(others) < 8:
            if others:
                cur.executemany(self._insert_geo_sql(), [row[:5] for row in others])
            return
        self._staging(cur)
        with pg_cur.copy("COPY staging_geo (tenant, id, attr, geojson) FROM STDIN") as copy:
            for row in others:
                copy.write_row(row[:4])
        cur.execute(
            "INSERT INTO entity_geo (tenant, id, attr, geojson, geom) SELECT tenant, id, attr, geojson::jsonb, "
            "ST_MakeValid(ST_SetSRID(ST_GeomFromGeoJSON(geojson), 4326)) FROM staging_geo"
        )

    def _type_clause(self, types: TypeExpr) -> tuple[str, list[Any]]:
        """On the entities' own ``types`` array: with no per-row join the planner can drive a query
        from its most selective part (ids, geo candidates) even before statistics exist."""
        groups: list[str] = []
        params: list[Any] = []
        singles = [group[0] for group in types.any_of if len(group) == 1]
        if singles:
            groups.append("e.types && %s::text[]")
            params.append(singles)
        for group in types.any_of:
            if len(group) > 1:
                groups.append("e.types @> %s::text[]")
                params.append(list(group))
        return "(" + " OR ".join(groups) + ")", params

    def _lock_ids(self, cur: Cursor, tenant: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        cur.execute(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(%s || chr(31) || x, 0) AS h "
            "FROM unnest(%s::text[]) AS x) AS locks ORDER BY h",
            (tenant, list(ids)),
        )

    def _decode_list(self, value: Any) -> list[str] | None:
        return None if value is None else list(value)

    def _encode_list(self, value: list[str] | None) -> Any:
        return value

    def _insert_geo_sql(self) -> str:
        return (
            "INSERT INTO entity_geo (tenant, id, attr, geojson, geom) "
            "VALUES (%s, %s, %s, %s::jsonb, ST_MakeValid(ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)))"
        )

    def _geo_row(self, tenant: str, entity_id: str, attr: str, value: dict[str, Any]) -> tuple[Any, ...]:
        """``(tenant, id, attr, geojson, geojson, point EWKT or None)``."""
        text = orjson.dumps(value).decode()
        point = None
        if value.get("type") == "Point":
            lon, lat = value["coordinates"][0], value["coordinates"][1]
            point = f"SRID=4326;POINT({float(lon)!r} {float(lat)!r})"
        return (tenant, entity_id, attr, text, text, point)

    def _data_select(self) -> str:
        return "e.data::text"

    def _data_param(self) -> str:
        return "%s::jsonb"

    def _upsert_sql(self) -> str:
        return (
            "INSERT INTO entities (tenant, id, types, scopes, created_at, modified_at, data) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (tenant, id) DO UPDATE SET "
            "types = excluded.types, scopes = excluded.scopes, created_at = excluded.created_at, "
            "modified_at = excluded.modified_at, data = excluded.data"
        )

    def _has_any_attr(self, attrs: Sequence[str]) -> tuple[str, list[Any]]:
        return "(e.data ?| %s::text[])", [list(attrs)]

    def _regex(self, column: str) -> str:
        return f"{column} ~ %s"

    def _compile_q(self, query: EntityQuery) -> tuple[str, list[Any]]:
        return qlang.compile_q_postgres(query.q, query.expand, "e.data")

    def _compile_scope(self, query: EntityQuery) -> tuple[str, list[Any]]:
        return qlang.compile_scope_postgres(query.scope_q, "e.scopes")

    def _geo_clause(self, tenant: str, query: EntityQuery) -> tuple[str, list[Any]]:
        assert query.geo is not None
        predicate, params = geo.postgis_predicate(query.geo, "g.geom")
        # ARRAY(...) is computed once (an InitPlan), then the ids are looked up by primary key: with
        # a plain IN the planner may walk every entity in id order and probe the subquery per row.
        return (
            f"e.id = ANY(ARRAY(SELECT g.id FROM entity_geo g WHERE g.tenant = %s AND g.attr = %s AND {predicate}))",
            [tenant, query.geoproperty, *params],
        )

    def _discovery_rows(
        self, cur: Cursor, tenant: str, type_iri: str | None, attr_iri: str | None
    ) -> list[tuple[str, str, str, int]]:
        sql = (
            "SELECT t.type, j.key, k.value ->> 'type', count(DISTINCT e.id) "
            "FROM entity_types t JOIN entities e ON e.tenant = t.tenant AND e.id = t.id "
            "CROSS JOIN LATERAL jsonb_each(e.data) AS j CROSS JOIN LATERAL jsonb_array_elements(j.value) AS k(value) "
            "WHERE t.tenant = %s"
        )
        params: list[Any] = [tenant]
        if type_iri is not None:
            sql += " AND t.type = %s"
            params.append(type_iri)
        if attr_iri is not None:
            sql += " AND j.key = %s"
            params.append(attr_iri)
        cur.execute(sql + " GROUP BY 1, 2, 3", params)
        return [(r[0], r[1], r[2], int(r[3])) for r in cur.fetchall()]
