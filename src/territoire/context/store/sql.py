"""What both SQL backends share: the schema's use, query building, and the write path.

The backends differ only in their driver, their JSON functions (SQLite JSON1 vs PostgreSQL jsonb),
their spatial index (R*Tree + exact test in Python vs PostGIS) and their locking. Everything else,
including every statement's shape, lives here so the two behave identically.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import orjson

from territoire.context.errors import BadRequestData
from territoire.context.model import Entity, geo_instances, now_iso
from territoire.context.store.base import (
    AttributeInfo,
    ChangeSet,
    EntityQuery,
    Mutation,
    QueryResult,
    Store,
    TypeExpr,
    TypeInfo,
)

#: Rows per statement when a list of ids is sent as IN (...) parameters.
ID_CHUNK = 500


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchone(self) -> Any: ...


def chunks(items: Sequence[str], size: int = ID_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def entity_from_row(row: Sequence[Any], types: list[str], scopes: list[str] | None) -> Entity:
    """Rebuild the internal entity from a row ``(id, types, scopes, created_at, modified_at, data)``."""
    entity: Entity = {"id": row[0], "type": types}
    if scopes:
        entity["scope"] = scopes
    entity["createdAt"] = row[3]
    entity["modifiedAt"] = row[4]
    data = row[5]
    entity["attrs"] = orjson.loads(data) if isinstance(data, str | bytes) else data
    return entity


@dataclass(frozen=True)
class WriteEvent:
    """One committed-to-be write, as write hooks see it (inside its transaction)."""

    store: SqlStore
    cursor: Cursor
    tenant: str
    previous: dict[str, Entity]  # the entities as they were before the write (absent: new)
    changes: ChangeSet


WriteHook = Callable[[WriteEvent], None]


class SqlStore(Store, abc.ABC):
    """A :class:`Store` over a DB-API connection; subclasses give the dialect."""

    #: Placeholder of the driver's paramstyle.
    ph: str = "?"
    migrations_package = ""

    def __init__(self) -> None:
        self._known_tenants: set[str] = set()
        self._write_hooks: list[WriteHook] = []

    # --- driver hooks --------------------------------------------------------------------------

    @abc.abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]:
        """A cursor for reads (autocommit / snapshot)."""

    @abc.abstractmethod
    def _write(self) -> AbstractContextManager[Cursor]:
        """A cursor inside a write transaction, committed on exit, rolled back on error."""

    @abc.abstractmethod
    def _lock_ids(self, cur: Cursor, tenant: str, ids: Sequence[str]) -> None:
        """Serialise concurrent writers of the same entities (no-op where the DB already does)."""

    @abc.abstractmethod
    def _decode_list(self, value: Any) -> list[str] | None: ...

    @abc.abstractmethod
    def _encode_list(self, value: list[str] | None) -> Any: ...

    @abc.abstractmethod
    def _insert_geo_sql(self) -> str: ...

    @abc.abstractmethod
    def _geo_row(self, tenant: str, entity_id: str, attr: str, value: dict[str, Any]) -> tuple[Any, ...]: ...

    @abc.abstractmethod
    def _data_select(self) -> str:
        """The SELECT expression returning the attrs JSON as text."""

    @abc.abstractmethod
    def _data_param(self) -> str:
        """The placeholder expression binding a JSON text to the data column."""

    @abc.abstractmethod
    def _has_any_attr(self, attrs: Sequence[str]) -> tuple[str, list[Any]]: ...

    @abc.abstractmethod
    def _regex(self, column: str) -> str: ...

    @abc.abstractmethod
    def _compile_q(self, query: EntityQuery) -> tuple[str, list[Any]]: ...

    @abc.abstractmethod
    def _compile_scope(self, query: EntityQuery) -> tuple[str, list[Any]]: ...

    @abc.abstractmethod
    def _geo_clause(self, tenant: str, query: EntityQuery) -> tuple[str, list[Any]]: ...

    @abc.abstractmethod
    def _discovery_rows(
        self, cur: Cursor, tenant: str, type_iri: str | None, attr_iri: str | None
    ) -> list[tuple[str, str, str, int]]:
        """Rows (entity type, attribute, attribute type, number of entities)."""

    @abc.abstractmethod
    def _upsert_sql(self) -> str: ...

    # --- migrations ----------------------------------------------------------------------------

    def _migration_scripts(self) -> list[tuple[int, str]]:
        folder = resources.files("territoire.context.store") / "migrations" / self.migrations_package
        scripts = []
        for item in folder.iterdir():
            match = re.match(r"(\d+)_.*\.sql$", item.name)
            if match:
                scripts.append((int(match.group(1)), item.read_text(encoding="utf-8")))
        return sorted(scripts)

    # --- tenants -------------------------------------------------------------------------------

    def tenant_exists(self, tenant: str) -> bool:
        if tenant in self._known_tenants:
            return True
        with self._read() as cur:
            cur.execute(f"SELECT 1 FROM tenants WHERE name = {self.ph}", (tenant,))
            found = cur.fetchone() is not None
        if found:
            self._known_tenants.add(tenant)
        return found

    def list_tenants(self) -> list[str]:
        with self._read() as cur:
            cur.execute("SELECT name FROM tenants ORDER BY name")
            return [row[0] for row in cur.fetchall()]

    def _ensure_tenant(self, cur: Cursor, tenant: str) -> None:
        if tenant in self._known_tenants:
            return
        cur.execute(
            f"INSERT INTO tenants (name, created_at) VALUES ({self.ph}, {self.ph}) ON CONFLICT (name) DO NOTHING",
            (tenant, now_iso()),
        )

    # --- reads ---------------------------------------------------------------------------------

    def _entity_columns(self) -> str:
        """The columns :meth:`_row_to_entity` reads, from the ``entities e`` alias."""
        return f"e.id, e.types, e.scopes, e.created_at, e.modified_at, {self._data_select()}"

    def _select_entities(self) -> str:
        return f"SELECT {self._entity_columns()} FROM entities e"

    def _row_to_entity(self, row: Sequence[Any]) -> Entity:
        return entity_from_row(row, self._decode_list(row[1]) or [], self._decode_list(row[2]))

    def _load(self, cur: Cursor, tenant: str, ids: Sequence[str]) -> dict[str, Entity]:
        found: dict[str, Entity] = {}
        unique = list(dict.fromkeys(ids))
        for part in chunks(unique):
            marks = ", ".join([self.ph] * len(part))
            cur.execute(f"{self._select_entities()} WHERE e.tenant = {self.ph} AND e.id IN ({marks})", (tenant, *part))
            for row in cur.fetchall():
                found[row[0]] = self._row_to_entity(row)
        return found

    def get_entities(self, tenant: str, ids: Sequence[str]) -> dict[str, Entity]:
        with self._read() as cur:
            return self._load(cur, tenant, ids)

    # --- writes --------------------------------------------------------------------------------

    def reader(self) -> AbstractContextManager[Cursor]:
        """A cursor for reads, for domains that keep tables of their own in this database."""
        return self._read()

    def transaction(self) -> AbstractContextManager[Cursor]:
        """A cursor in a write transaction (committed on exit, rolled back on error)."""
        return self._write()

    def add_write_hook(self, hook: WriteHook) -> None:
        """Run ``hook`` inside every write transaction, after the entities are written.

        History and the subscriptions' outbox are written this way, in the same transaction as
        the change itself: both are exactly as durable as the write (nothing lost, nothing extra).
        """
        self._write_hooks.append(hook)

    def remove_write_hook(self, hook: WriteHook) -> None:
        """Stop running ``hook`` (an application sharing this store is closing)."""
        if hook in self._write_hooks:
            self._write_hooks.remove(hook)

    def modify(self, tenant: str, ids: Sequence[str], mutation: Mutation) -> ChangeSet:
        unique = list(dict.fromkeys(ids))
        with self._write() as cur:
            self._lock_ids(cur, tenant, unique)
            existing = self._load(cur, tenant, unique)
            before = {eid: (list(e["type"]), geo_instances(e)) for eid, e in existing.items()}
            # Mutations change the loaded entities in place: hooks get an untouched copy.
            previous = orjson.loads(orjson.dumps(existing)) if self._write_hooks else {}
            changes = mutation(existing)
            if changes.upserts or changes.deletes:
                self._ensure_tenant(cur, tenant)
                self._apply(cur, tenant, changes, before)
                event = WriteEvent(self, cur, tenant, previous, changes)
                for hook in self._write_hooks:
                    hook(event)
        self._known_tenants.add(tenant)
        return changes

    def _apply(
        self,
        cur: Cursor,
        tenant: str,
        changes: ChangeSet,
        before: dict[str, tuple[list[str], list[tuple[str, dict[str, Any]]]]],
    ) -> None:
        if changes.deletes:
            deleted = list(dict.fromkeys(changes.deletes))
            for part in chunks(deleted):
                marks = ", ".join([self.ph] * len(part))
                for table in ("entities", "entity_types", "entity_geo"):
                    cur.execute(f"DELETE FROM {table} WHERE tenant = {self.ph} AND id IN ({marks})", (tenant, *part))
        if not changes.upserts:
            return
        rows = []
        type_rows: list[tuple[str, str, str]] = []
        geo_rows: list[tuple[Any, ...]] = []
        retype: list[str] = []
        regeo: list[str] = []
        for entity in changes.upserts:
            eid = entity["id"]
            rows.append(
                (
                    tenant,
                    eid,
                    self._encode_list(entity["type"]),
                    self._encode_list(entity.get("scope")),
                    entity["createdAt"],
                    entity["modifiedAt"],
                    orjson.dumps(entity["attrs"]).decode(),
                )
            )
            old = before.get(eid)
            geos = geo_instances(entity)
            if old is None or old[0] != entity["type"]:
                if old is not None:
                    retype.append(eid)
                type_rows.extend((tenant, t, eid) for t in entity["type"])
            if old is None or old[1] != geos:
                if old is not None:
                    regeo.append(eid)
                geo_rows.extend(self._geo_row(tenant, eid, attr, value) for attr, value in geos)
        self._write_entities(cur, rows, before.keys())
        for table, stale in (("entity_types", retype), ("entity_geo", regeo)):
            for part in chunks(stale):
                marks = ", ".join([self.ph] * len(part))
                cur.execute(f"DELETE FROM {table} WHERE tenant = {self.ph} AND id IN ({marks})", (tenant, *part))
        if type_rows:
            self._write_types(cur, type_rows)
        if geo_rows:
            self._write_geo(cur, geo_rows)

    def _write_entities(self, cur: Cursor, rows: list[tuple[Any, ...]], existing: Collection[str]) -> None:
        """Upsert entity rows ``(tenant, id, types, scopes, created_at, modified_at, data)``;
        ``existing`` holds the ids already stored (locked by this transaction)."""
        cur.executemany(self._upsert_sql(), rows)

    def _write_types(self, cur: Cursor, rows: list[tuple[str, str, str]]) -> None:
        """Insert ``(tenant, type, id)`` rows (stale ones were deleted before)."""
        cur.executemany(f"INSERT INTO entity_types (tenant, type, id) VALUES ({self.ph}, {self.ph}, {self.ph})", rows)

    def _write_geo(self, cur: Cursor, rows: list[tuple[Any, ...]]) -> None:
        """Insert the rows made by :meth:`_geo_row` (stale ones were deleted before)."""
        cur.executemany(self._insert_geo_sql(), rows)

    # --- queries -------------------------------------------------------------------------------

    def _type_clause(self, types: TypeExpr) -> tuple[str, list[Any]]:
        groups: list[str] = []
        params: list[Any] = []
        exists = "EXISTS (SELECT 1 FROM entity_types t WHERE t.tenant = e.tenant AND t.id = e.id AND t.type"
        singles = [group[0] for group in types.any_of if len(group) == 1]
        if singles:
            groups.append(f"{exists} IN ({', '.join([self.ph] * len(singles))}))")
            params.extend(singles)
        for group in types.any_of:
            if len(group) > 1:
                groups.append("(" + " AND ".join(f"{exists} = {self.ph})" for _ in group) + ")")
                params.extend(group)
        return "(" + " OR ".join(groups) + ")", params

    def _where(self, tenant: str, query: EntityQuery) -> tuple[str, list[Any]]:
        clauses = [f"e.tenant = {self.ph}"]
        params: list[Any] = [tenant]
        if query.ids:
            clauses.append(f"e.id IN ({', '.join([self.ph] * len(query.ids))})")
            params.extend(query.ids)
        if query.id_pattern:
            try:
                re.compile(query.id_pattern)
            except re.error as err:
                raise BadRequestData(f"idPattern is not a valid regular expression: {err}") from None
            clauses.append(self._regex("e.id"))
            params.append(query.id_pattern)
        if query.types is not None:
            sql, more = self._type_clause(query.types)
            clauses.append(sql)
            params.extend(more)
        if query.attrs:
            sql, more = self._has_any_attr(query.attrs)
            clauses.append(sql)
            params.extend(more)
        if query.q is not None:
            sql, more = self._compile_q(query)
            clauses.append(f"({sql})")
            params.extend(more)
        if query.scope_q is not None:
            sql, more = self._compile_scope(query)
            clauses.append(f"({sql})")
            params.extend(more)
        if query.geo is not None:
            sql, more = self._geo_clause(tenant, query)
            clauses.append(sql)
            params.extend(more)
        return " AND ".join(clauses), params

    def query(self, tenant: str, query: EntityQuery) -> QueryResult:
        single_type = (
            query.types.any_of[0][0]
            if query.types is not None and len(query.types.any_of) == 1 and len(query.types.any_of[0]) == 1
            else None
        )
        if single_type is not None:
            # One type (the common case): walk that type's ids in order through the entity_types
            # primary key, so a LIMIT stops early instead of passing over every other type first.
            rest = dataclasses.replace(query, types=None)
            where, params = self._where(tenant, rest)
            source = (
                "entity_types t JOIN entities e ON e.tenant = t.tenant AND e.id = t.id "
                f"WHERE t.tenant = {self.ph} AND t.type = {self.ph} AND "
            )
            params = [tenant, single_type, *params]
            order = "t.id"
        else:
            where, params = self._where(tenant, query)
            source, order = "entities e WHERE ", "e.id"
        select = f"SELECT {self._entity_columns()} FROM "
        with self._read() as cur:
            count = None
            if query.count:
                cur.execute(f"SELECT count(*) FROM {source}{where}", params)
                count = int(cur.fetchone()[0])
            entities: list[Entity] = []
            if query.limit > 0:
                cur.execute(
                    f"{select}{source}{where} ORDER BY {order} LIMIT {self.ph} OFFSET {self.ph}",
                    [*params, query.limit, query.offset],
                )
                entities = [self._row_to_entity(row) for row in cur.fetchall()]
        return QueryResult(entities=entities, count=count)

    # --- discovery -----------------------------------------------------------------------------

    def type_infos(self, tenant: str, type_iri: str | None = None) -> list[TypeInfo]:
        with self._read() as cur:
            where = f"tenant = {self.ph}" + (f" AND type = {self.ph}" if type_iri else "")
            cur.execute(
                f"SELECT type, count(*) FROM entity_types WHERE {where} GROUP BY type ORDER BY type",
                (tenant, type_iri) if type_iri else (tenant,),
            )
            counts = {row[0]: int(row[1]) for row in cur.fetchall()}
            rows = self._discovery_rows(cur, tenant, type_iri, None)
        per_type: dict[str, dict[str, set[str]]] = {t: {} for t in counts}
        for type_name, attr, attr_type, _ in rows:
            per_type.setdefault(type_name, {}).setdefault(attr, set()).add(attr_type)
        return [
            TypeInfo(
                type_name=t,
                entity_count=counts.get(t, 0),
                attributes=tuple((a, tuple(sorted(kinds))) for a, kinds in sorted(per_type[t].items())),
            )
            for t in sorted(per_type)
        ]

    def attribute_infos(self, tenant: str, attr_iri: str | None = None) -> list[AttributeInfo]:
        with self._read() as cur:
            rows = self._discovery_rows(cur, tenant, None, attr_iri)
        types: dict[str, set[str]] = {}
        kinds: dict[str, set[str]] = {}
        counts: dict[str, int] = {}
        for type_name, attr, attr_type, n in rows:
            types.setdefault(attr, set()).add(type_name)
            kinds.setdefault(attr, set()).add(attr_type)
            counts[attr] = counts.get(attr, 0) + n
        return [
            AttributeInfo(attr, tuple(sorted(types[attr])), tuple(sorted(kinds[attr])), counts[attr])
            for attr in sorted(types)
        ]

    # --- configuration tables ------------------------------------------------------------------

    def required_validations(self, tenant: str) -> dict[str, str]:
        with self._read() as cur:
            cur.execute(f"SELECT type, schema_name FROM type_validation WHERE tenant = {self.ph}", (tenant,))
            return {row[0]: row[1] for row in cur.fetchall()}

    def set_validation(self, tenant: str, type_iri: str, schema_name: str | None) -> None:
        with self._write() as cur:
            cur.execute(
                f"DELETE FROM type_validation WHERE tenant = {self.ph} AND type = {self.ph}", (tenant, type_iri)
            )
            if schema_name is not None:
                self._ensure_tenant(cur, tenant)
                cur.execute(
                    f"INSERT INTO type_validation (tenant, type, schema_name) VALUES ({self.ph}, {self.ph}, {self.ph})",
                    (tenant, type_iri, schema_name),
                )

    def load_contexts(self) -> list[Any]:
        from territoire.context.jsonld import StoredContext

        with self._read() as cur:
            cur.execute("SELECT local_id, url, body, kind, created_at FROM jsonld_contexts ORDER BY created_at")
            return [
                StoredContext(
                    local_id=row[0],
                    url=row[1],
                    body=orjson.loads(row[2]) if isinstance(row[2], str | bytes) else row[2],
                    kind=row[3],
                    created_at=row[4],
                )
                for row in cur.fetchall()
            ]

    def save_context(self, ctx: Any) -> None:
        with self._write() as cur:
            cur.execute(f"DELETE FROM jsonld_contexts WHERE local_id = {self.ph}", (ctx.local_id,))
            cur.execute(
                "INSERT INTO jsonld_contexts (local_id, url, kind, body, created_at) VALUES "
                f"({self.ph}, {self.ph}, {self.ph}, {self._data_param()}, {self.ph})",
                (ctx.local_id, ctx.url, ctx.kind, orjson.dumps(ctx.body).decode(), ctx.created_at),
            )

    def delete_context(self, local_id: str) -> None:
        with self._write() as cur:
            cur.execute(f"DELETE FROM jsonld_contexts WHERE local_id = {self.ph}", (local_id,))
