"""The history of attribute values: the store's write hook, the bulk path and the queries.

Layout (migrations ``0002_temporal.sql``):

* ``temporal_series`` — one row per attribute instance of an entity (tenant, entity id,
  attribute IRI, datasetId) with the entity's types; its key ``sid`` is a 64-bit hash of those
  four names, so writers need no lookup to know it.
* ``temporal_instances`` — one row per temporal instance, keyed ``(sid, ts)`` where ``ts`` is
  the instance's observedAt, or the time it was written when it has none (or deleted, for the
  instance recording a deletion). Numbers are in ``num`` (double precision), so aggregation
  runs in SQL; other values are JSON in ``value``; observedAt is also kept as sent.
  PostgreSQL: partitioned by month on ``ts`` (partitions created on demand), B-tree
  ``(sid, ts) INCLUDE (num)`` — that is (entity, attribute, time), with the aggregated column —
  and BRIN on ``ts``. SQLite: a WITHOUT ROWID table whose primary key ``(sid, ts)`` is the
  covering index every query reads.

An instance written twice for the same (attribute, datasetId, time) replaces the first (the
temporal upsert of clause 5.6.11; a correction of an observation). Writes go through one bulk
function: executemany on SQLite, COPY into a staging table then one INSERT ... ON CONFLICT on
PostgreSQL. The store's write hook records every instance a write created or changed, in the
write's own transaction.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import Any

import orjson

from territoire.context.model import Entity, Instance
from territoire.context.store.sql import ID_CHUNK, Cursor, SqlStore, WriteEvent, chunks
from territoire.context.temporal.model import (
    FLAG_DOWNSAMPLED,
    Duration,
    StoredInstance,
    TemporalQuery,
    calendar_buckets,
    decode_instance,
    deletion_instance,
    encode_instance,
    format_time,
    from_us,
    month_bounds,
    month_start,
    parse_time,
)

log = logging.getLogger("territoire.temporal")

#: Advisory lock serialising the creation of PostgreSQL partitions (any constant of our own).
PARTITION_LOCK = 7_302_551_003
#: Rows above which PostgreSQL writes go through COPY rather than one INSERT from arrays.
COPY_THRESHOLD = 200
#: Most aggregation periods a calendar duration (months, years) may produce per query.
MAX_CALENDAR_PERIODS = 1200
#: Size of the known-series cache beyond which it is emptied (about 100 bytes an entry).
MAX_KNOWN_SERIES = 2_000_000

#: (sid, ts, iid, kind, num, value, observed_at, unit_code, extra, created_at, modified_at, deleted_at)
Row = tuple[int, int, int, int, float | None, str | None, str | None, str | None, str | None, int, int, int | None]
#: (sid, tenant, entity_id, attr, dataset_id, types as JSON)
SeriesRow = tuple[int, str, str, str, str, str]

_random = random.Random()
_INSTANCE_COLUMNS = "sid, ts, iid, kind, num, value, observed_at, unit_code, extra, created_at, modified_at, deleted_at"
_TIME_COLUMNS = {"observedAt": "ts", "createdAt": "created_at", "modifiedAt": "modified_at", "deletedAt": "deleted_at"}


@lru_cache(maxsize=262_144)
def series_id(tenant: str, entity_id: str, attr: str, dataset_id: str) -> int:
    """The 64-bit key of an attribute instance's history (signed, as SQL integers are)."""
    key = "\x1f".join((tenant, entity_id, attr, dataset_id)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big", signed=True)


_getrandbits = _random.getrandbits


def new_instance_id() -> int:
    """A random 63-bit instance id (its URI is made by ``model.instance_uri``)."""
    return _getrandbits(63)


@dataclass(frozen=True)
class Series:
    """One attribute instance's history: entity, attribute IRI, datasetId ('' = default)."""

    sid: int
    entity_id: str
    attr: str
    dataset_id: str
    types: tuple[str, ...] = ()


@dataclass
class HistoryIntent:
    """History the temporal API writes itself during a store write (see :meth:`TemporalStorage.intent`).

    The hook does not record the automatic instances of ``entity_ids`` in that write (they are
    the consequence of the explicit history) and calls ``apply`` with the write's cursor.
    """

    tenant: str
    entity_ids: frozenset[str]
    apply: Callable[[Cursor], object]
    applied: bool = False


_INTENT: contextvars.ContextVar[HistoryIntent | None] = contextvars.ContextVar(
    "territoire_history_intent", default=None
)


@dataclass
class Batch:
    """Rows about to be written and the series they belong to.

    ``known`` maps the series this process wrote (or found) to the entity types written with
    them: a series row is only written when it is new or its entity changed types.
    """

    rows: dict[tuple[int, int], Row] = field(default_factory=dict)
    series: dict[int, SeriesRow] = field(default_factory=dict)
    known: dict[int, str] = field(default_factory=dict)
    times: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        tenant: str,
        entity_id: str,
        attr: str,
        instance: Instance,
        types_json: str,
        *,
        written_us: int,
        deleted_us: int | None = None,
        series: bool = True,
    ) -> None:
        """Add one instance; ``written_us`` is its createdAt/modifiedAt in the history.

        ``series=False``: the instance is current in the store, whose attributes give its series
        (see :meth:`TemporalStorage.with_current`); its series row is left to
        :meth:`TemporalStorage.sync_series`.
        """
        dataset_id = instance.get("datasetId") or ""
        sid = series_id(tenant, entity_id, attr, dataset_id)
        if series and self.known.get(sid) != types_json and sid not in self.series:
            self.series[sid] = (sid, tenant, entity_id, attr, dataset_id, types_json)
        if deleted_us is not None:
            ts = deleted_us
        else:
            observed = instance.get("observedAt")
            if observed is None:
                ts = written_us
            else:
                parsed = self.times.get(observed)
                if parsed is None:
                    parsed = self.times[observed] = parse_time(observed, f"{attr}.observedAt")
                ts = parsed
        kind, num, value, observed_at, unit_code, extra = encode_instance(instance)
        self.rows[(sid, ts)] = (
            sid,
            ts,
            _getrandbits(63),
            kind,
            num,
            value,
            observed_at,
            unit_code,
            extra,
            written_us,
            written_us,
            deleted_us,
        )


# ---------------------------------------------------------------------------------------------
# Dialects
# ---------------------------------------------------------------------------------------------


class _Dialect:
    """SQLite: times are integer µs, JSON is text."""

    name = "sqlite"
    ph = "?"

    def t(self, column: str) -> str:
        """A time column as µs in a SELECT."""
        return column

    def tp(self) -> str:
        """A placeholder for a time given in µs."""
        return "?"

    def js(self, column: str) -> str:
        """A JSON column as text in a SELECT."""
        return column

    def text_value(self, column: str) -> str:
        """The SQL text of a JSON string value (for min, max, distinct)."""
        return f"json_extract({column}, '$')"

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)

    def bucket(self, column: str, origin: int, period: Duration) -> tuple[str, list[Any]]:
        """Start (µs) of the fixed-length period of ``column``, aligned on ``origin`` (floor)."""
        offset = f"({column} - ?)"
        return f"(? + {offset} - ((({offset} % ?) + ?) % ?))", [origin, origin, origin, *([period.micros] * 3)]

    def stddev(self) -> str | None:
        """An SQL sample standard deviation aggregate, None to compute it from the sums."""
        return None

    def write_series(self, cur: Cursor, rows: Sequence[SeriesRow]) -> None:
        cur.executemany(
            "INSERT INTO temporal_series (sid, tenant, entity_id, attr, dataset_id, types) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (sid) DO UPDATE SET types = excluded.types WHERE temporal_series.types <> excluded.types",
            rows,
        )

    def write_rows(self, cur: Cursor, rows: Sequence[Row]) -> None:
        cur.executemany(
            f"INSERT INTO temporal_instances ({_INSTANCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (sid, ts) DO UPDATE SET kind = excluded.kind, num = excluded.num, value = excluded.value, "
            "observed_at = excluded.observed_at, unit_code = excluded.unit_code, extra = excluded.extra, "
            "modified_at = excluded.modified_at, deleted_at = excluded.deleted_at",
            rows,
        )

    def types_match(self, type_iri: str) -> tuple[str, list[Any]]:
        return "EXISTS (SELECT 1 FROM json_each(s.types) j WHERE j.value = ?)", [type_iri]

    def types_none_of(self, type_iris: Sequence[str]) -> tuple[str, list[Any]]:
        if not type_iris:
            return "1 = 1", []
        marks = ", ".join("?" * len(type_iris))
        return f"NOT EXISTS (SELECT 1 FROM json_each(s.types) j WHERE j.value IN ({marks}))", list(type_iris)

    def new_iid(self) -> str:
        return "(random() & 9223372036854775807)"

    def attribute_listing(self) -> str:
        """SELECT (entity id, types, attribute, datasetId) of every attribute instance of ``entities e``."""
        return (
            "SELECT e.id, e.types, j.key, json_extract(k.value, '$.datasetId') "
            "FROM entities e, json_each(e.data) j, json_each(j.value) k"
        )

    def hour(self, column: str) -> str:
        return f"({column} - ({column} % 3600000000))"


_E = "(timestamptz 'epoch' + {} * interval '1 microsecond')"


class _PostgresDialect(_Dialect):
    """PostgreSQL: timestamptz and jsonb columns, converted from/to µs and text in SQL."""

    name = "postgres"
    ph = "%s"

    def t(self, column: str) -> str:
        return f"(extract(epoch FROM {column}) * 1000000)::bigint"

    def tp(self) -> str:
        return _E.format("%s::bigint")

    def js(self, column: str) -> str:
        return f"{column}::text"

    def text_value(self, column: str) -> str:
        return f"({column} #>> '{{}}')"

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(%s)", [list(values)]

    def bucket(self, column: str, origin: int, period: Duration) -> tuple[str, list[Any]]:
        return (
            f"(extract(epoch FROM date_bin(%s, {column}, {self.tp()})) * 1000000)::bigint",
            [timedelta(microseconds=period.micros), origin],
        )

    def stddev(self) -> str | None:
        return "stddev_samp(num)"

    def write_series(self, cur: Cursor, rows: Sequence[SeriesRow]) -> None:
        columns = [list(column) for column in zip(*rows, strict=True)]
        cur.execute(
            "INSERT INTO temporal_series (sid, tenant, entity_id, attr, dataset_id, types) "
            "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) "
            "ON CONFLICT (sid) DO UPDATE SET types = excluded.types WHERE temporal_series.types <> excluded.types",
            columns,
        )

    _UPSERT = (
        "ON CONFLICT (sid, ts) DO UPDATE SET kind = excluded.kind, num = excluded.num, value = excluded.value, "
        "observed_at = excluded.observed_at, unit_code = excluded.unit_code, extra = excluded.extra, "
        "modified_at = excluded.modified_at, deleted_at = excluded.deleted_at"
    )
    _SELECT = (
        "SELECT sid, {ts}, iid, kind, num, value::jsonb, observed_at, unit_code, extra::jsonb, {c}, {m}, {d} ".format(
            ts=_E.format("ts"), c=_E.format("c"), m=_E.format("m"), d=_E.format("d")
        )
    )

    def write_rows(self, cur: Cursor, rows: Sequence[Row]) -> None:
        import psycopg

        if len(rows) < COPY_THRESHOLD:
            columns = [list(column) for column in zip(*rows, strict=True)]
            cur.execute(
                f"INSERT INTO temporal_instances ({_INSTANCE_COLUMNS}) {self._SELECT}"
                "FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::smallint[], %s::float8[], %s::text[], "
                "%s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[]) "
                f"AS r(sid, ts, iid, kind, num, value, observed_at, unit_code, extra, c, m, d) {self._UPSERT}",
                columns,
            )
            return
        pg_cur: psycopg.Cursor[Any] = cur  # type: ignore[assignment]
        # Every time: a table created by a transaction that then rolled back would be gone.
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS staging_temporal (sid bigint, ts bigint, iid bigint, kind smallint, "
            "num float8, value text, observed_at text, unit_code text, extra text, c bigint, m bigint, d bigint)"
        )
        with pg_cur.copy("COPY staging_temporal FROM STDIN") as copy:
            write_row = copy.write_row
            for row in rows:
                write_row(row)
        # One round trip: move the rows, empty the staging table (kept for the connection's life).
        cur.execute(
            f"INSERT INTO temporal_instances ({_INSTANCE_COLUMNS}) {self._SELECT}FROM staging_temporal "
            f"{self._UPSERT}; TRUNCATE staging_temporal"
        )

    def types_match(self, type_iri: str) -> tuple[str, list[Any]]:
        return "s.types::jsonb ? %s", [type_iri]

    def types_none_of(self, type_iris: Sequence[str]) -> tuple[str, list[Any]]:
        if not type_iris:
            return "TRUE", []
        return "NOT (s.types::jsonb ?| %s::text[])", [list(type_iris)]

    def new_iid(self) -> str:
        return "(random() * 9.2e18)::bigint"

    def attribute_listing(self) -> str:
        return (
            "SELECT e.id, e.types, j.key, k.value ->> 'datasetId' FROM entities e "
            "CROSS JOIN LATERAL jsonb_each(e.data) AS j CROSS JOIN LATERAL jsonb_array_elements(j.value) AS k(value)"
        )

    def hour(self, column: str) -> str:
        return f"date_bin('1 hour', {column}, timestamptz 'epoch')"


# ---------------------------------------------------------------------------------------------
# The storage
# ---------------------------------------------------------------------------------------------


class TemporalStorage:
    """History of one :class:`SqlStore`; registered as its write hook by ``install_temporal``."""

    def __init__(self, store: SqlStore, *, delete_with_entity: bool = True) -> None:
        self.store = store
        self.delete_with_entity = delete_with_entity
        #: Record the instances of every write (the temporal API writes its own history regardless).
        self.enabled = True
        #: Series this process wrote, with the entity types written: their rows need no rewrite.
        self._known: dict[int, str] = {}
        self.dialect: _Dialect = _PostgresDialect() if store.backend == "postgres" else _Dialect()
        self._partitions: set[tuple[int, int]] = set()
        self._partitions_loaded = False

    @property
    def ph(self) -> str:
        return self.dialect.ph

    # --- the write hook ------------------------------------------------------------------------

    def batch(self, tenant: str) -> Batch:
        """A new batch of history rows for ``tenant``.

        The cache of known series is dropped when the store no longer knows the tenant (it was
        emptied behind the store's back, as tests do) and when it grows past ``MAX_KNOWN_SERIES``.
        """
        known_tenants = getattr(self.store, "_known_tenants", None)
        if (known_tenants is not None and tenant not in known_tenants) or len(self._known) > MAX_KNOWN_SERIES:
            self._known.clear()
        return Batch(known=self._known)

    def with_current(self, tenant: str, entity: Entity | None, series: Sequence[Series]) -> list[Series]:
        """``series`` plus those of the entity's current attribute instances (their keys are
        computed from the names), so that a current attribute's history is found even where its
        series row is missing (a store emptied behind this process's back)."""
        if entity is None:
            return list(series)
        found = {s.sid for s in series}
        out = list(series)
        types = tuple(entity["type"])
        for attr, instances in entity["attrs"].items():
            for instance in instances:
                dataset_id = instance.get("datasetId") or ""
                sid = series_id(tenant, entity["id"], attr, dataset_id)
                if sid not in found:
                    found.add(sid)
                    out.append(Series(sid, entity["id"], attr, dataset_id, types))
        return out

    def on_write(self, event: WriteEvent) -> None:
        """Record the instances a store write created, changed or deleted (in its transaction)."""
        intent = _INTENT.get()
        explicit = intent if intent is not None and intent.tenant == event.tenant else None
        skip = explicit.entity_ids if explicit is not None else frozenset()
        batch = self.batch(event.tenant)
        times = batch.times
        for entity in event.changes.upserts if self.enabled else ():
            if entity["id"] not in skip:
                self._diff(event.tenant, entity, event.previous.get(entity["id"]), batch, times)
        deleted = [eid for eid in dict.fromkeys(event.changes.deletes) if eid not in skip]
        if deleted:
            if self.delete_with_entity:
                self.delete_entities(event.cursor, event.tenant, {eid: event.previous.get(eid) for eid in deleted})
            elif self.enabled:
                now = parse_time(_now(), "now")
                for eid in deleted:
                    self._tombstones(event.tenant, event.previous.get(eid), batch, now)
        if explicit is not None:
            explicit.apply(event.cursor)
            explicit.applied = True
        self.write(event.cursor, batch)

    def _diff(self, tenant: str, entity: Entity, previous: Entity | None, batch: Batch, times: dict[str, int]) -> None:
        types_json = orjson.dumps(entity["type"]).decode()
        old_attrs: dict[str, list[Instance]] = previous["attrs"] if previous is not None else {}
        eid = entity["id"]
        for attr, instances in entity["attrs"].items():
            olds = old_attrs.get(attr)
            for instance in instances:
                modified = instance.get("modifiedAt") or entity["modifiedAt"]
                if olds:
                    dataset_id = instance.get("datasetId")
                    old = next((o for o in olds if o.get("datasetId") == dataset_id), None)
                    if old is not None and old.get("modifiedAt") == modified:
                        continue
                written = times.get(modified)
                if written is None:
                    written = times[modified] = parse_time(modified, "modifiedAt")
                batch.add(tenant, eid, attr, instance, types_json, written_us=written, series=False)
        if previous is None:
            return
        now: int | None = None
        for attr, olds in old_attrs.items():
            news = entity["attrs"].get(attr) or []
            for old in olds:
                dataset_id = old.get("datasetId")
                if any(n.get("datasetId") == dataset_id for n in news):
                    continue
                if now is None:
                    now = parse_time(entity["modifiedAt"], "modifiedAt")
                self._tombstone(tenant, eid, attr, old, types_json, batch, now)

    def _tombstones(self, tenant: str, previous: Entity | None, batch: Batch, now: int) -> None:
        if previous is None:
            return
        types_json = orjson.dumps(previous["type"]).decode()
        for attr, olds in previous["attrs"].items():
            for old in olds:
                self._tombstone(tenant, previous["id"], attr, old, types_json, batch, now)

    @staticmethod
    def _tombstone(
        tenant: str, entity_id: str, attr: str, old: Instance, types_json: str, batch: Batch, now: int
    ) -> None:
        gone = deletion_instance(old["type"])
        if old.get("datasetId"):
            gone["datasetId"] = old["datasetId"]
        batch.add(tenant, entity_id, attr, gone, types_json, written_us=now, deleted_us=now)

    @contextmanager
    def intent(self, intent: HistoryIntent) -> Iterator[HistoryIntent]:
        """Within the block, store writes of ``intent.tenant`` apply ``intent`` (once) in their transaction."""
        token = _INTENT.set(intent)
        try:
            yield intent
        finally:
            _INTENT.reset(token)

    # --- the bulk path ---------------------------------------------------------------------------

    def write(self, cur: Cursor, batch: Batch) -> None:
        """Write a batch's series and rows in the caller's transaction."""
        if not batch.rows and not batch.series:
            return
        if batch.series:
            self.dialect.write_series(cur, list(batch.series.values()))
            for sid, row in batch.series.items():
                self._known[sid] = row[5]
        if batch.rows:
            rows = list(batch.rows.values())
            if self.dialect.name == "postgres":
                self._ensure_partitions(cur, (row[1] for row in rows))
            self.dialect.write_rows(cur, rows)

    def append(self, tenant: str, items: Iterable[tuple[str, str, Instance, Sequence[str]]]) -> int:
        """Append instances (entity id, attribute IRI, instance, entity types) in one transaction.

        The bulk path of history imports and ingestion; returns the number of rows written.
        Instances without observedAt are timed now.
        """
        now = parse_time(_now(), "now")
        batch = self.batch(tenant)
        types_cache: dict[tuple[str, ...], str] = {}
        for entity_id, attr, instance, types in items:
            key = tuple(types)
            types_json = types_cache.get(key)
            if types_json is None:
                types_json = types_cache[key] = orjson.dumps(list(types)).decode()
            batch.add(tenant, entity_id, attr, instance, types_json, written_us=now)
        self.prepare_partitions(row[1] for row in batch.rows.values())
        with self.store.transaction() as cur:
            self.write(cur, batch)
        return len(batch.rows)

    # --- PostgreSQL partitions -------------------------------------------------------------------

    def _load_partitions(self, cur: Cursor) -> None:
        cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'temporal_instances'"
        )
        for (name,) in cur.fetchall():
            parsed = _partition_month(str(name))
            if parsed is not None:
                self._partitions.add(parsed)
        self._partitions_loaded = True

    def _ensure_partitions(self, cur: Cursor, times: Iterable[int]) -> None:
        """Create the monthly partitions the given times fall in (PostgreSQL), in ``cur``'s transaction.

        Only partitions seen committed are cached: one created here becomes known for sure on a
        later call, so a rolled-back creation is never taken for an existing partition.
        """
        if not self._partitions_loaded:
            self._load_partitions(cur)
        months = _months(times)
        missing = sorted(months - self._partitions)
        if not missing:
            return
        names = [_partition_name(year, month) for year, month in missing]
        cur.execute("SELECT name FROM unnest(%s::text[]) AS n(name) WHERE to_regclass(name) IS NOT NULL", (names,))
        existing = {str(row[0]) for row in cur.fetchall()}
        to_create = []
        for (year, month), name in zip(missing, names, strict=True):
            if name in existing:
                self._partitions.add((year, month))
            else:
                to_create.append((year, month, name))
        if not to_create:
            return
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        for year, month, name in to_create:
            low, high = month_bounds(year, month)
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF temporal_instances "
                f"FOR VALUES FROM ('{_pg_literal(low)}') TO ('{_pg_literal(high)}')"
            )
            log.info("Created history partition %s", name)

    def prepare_partitions(self, times: Iterable[int]) -> None:
        """Create missing partitions in a transaction of their own, before a large write."""
        if self.dialect.name != "postgres":
            return
        months = _months(times)
        if months and months <= self._partitions:
            return
        with self.store.transaction() as cur:
            self._ensure_partitions(cur, (month_bounds(year, month)[0] for year, month in months))
        with self.store.reader() as cur:
            self._load_partitions(cur)

    # --- deletions -----------------------------------------------------------------------------

    def delete_entities(self, cur: Cursor, tenant: str, entities: dict[str, Entity | None]) -> int:
        """Delete the history of entities (given with their last state, if known); returns the
        instances deleted.

        Series rows are kept (one small row per attribute): no process ever holds a stale
        "known series" entry, whichever process deletes.
        """
        deleted = 0
        ids = list(entities)
        for part in chunks(ids):
            clause, params = self.dialect.any_of("entity_id", part)
            sub = f"SELECT sid FROM temporal_series WHERE tenant = {self.ph} AND {clause}"
            cur.execute(f"DELETE FROM temporal_instances WHERE sid IN ({sub})", [tenant, *params])
            deleted += _rowcount(cur)
        current = [s.sid for entity in entities.values() for s in self.with_current(tenant, entity, [])]
        for start in range(0, len(current), ID_CHUNK):
            deleted += self.delete_series(cur, current[start : start + ID_CHUNK])
        return deleted

    def entity_series(self, tenant: str, entity_id: str, entity: Entity | None) -> list[Series]:
        """Every series of one entity: recorded ones and those of its current attributes."""
        return self.with_current(tenant, entity, self.series_of(tenant, [entity_id]).get(entity_id, []))

    def sync_series(self, page: int = 1000) -> int:
        """Write the series rows of current attribute instances that have none, or whose entity
        changed types (the write hook leaves them out, to stay cheap); returns the rows written.

        Run by the maintenance job before retention, which selects series by entity type.
        """
        d = self.dialect
        written = 0
        last = ("", "")
        while True:
            with self.store.reader() as cur:
                cur.execute(
                    f"SELECT tenant, id FROM entities WHERE (tenant, id) > ({self.ph}, {self.ph}) "
                    f"ORDER BY tenant, id LIMIT {self.ph}",
                    [last[0], last[1], page],
                )
                keys = [(str(row[0]), str(row[1])) for row in cur.fetchall()]
                if not keys:
                    return written
                last = keys[-1]
                rows: dict[int, SeriesRow] = {}
                for tenant in dict.fromkeys(t for t, _ in keys):
                    ids = [i for t, i in keys if t == tenant]
                    clause, params = d.any_of("e.id", ids)
                    cur.execute(f"{d.attribute_listing()} WHERE e.tenant = {self.ph} AND {clause}", [tenant, *params])
                    for entity_id, types, attr, dataset_id in cur.fetchall():
                        decoded = orjson.loads(types) if isinstance(types, str | bytes) else list(types)
                        sid = series_id(tenant, entity_id, attr, dataset_id or "")
                        rows[sid] = (sid, tenant, entity_id, attr, dataset_id or "", orjson.dumps(decoded).decode())
                if rows:
                    clause, params = d.any_of("sid", list(rows))
                    cur.execute(f"SELECT sid, types FROM temporal_series WHERE {clause}", params)
                    stored = {int(sid): types for sid, types in cur.fetchall()}
                    missing = [row for sid, row in rows.items() if stored.get(sid) != row[5]]
                else:
                    missing = []
            if missing:
                with self.store.transaction() as cur:
                    d.write_series(cur, missing)
                written += len(missing)

    def delete_series(self, cur: Cursor, sids: Sequence[int]) -> int:
        """Delete every instance of the given series (the series stay); returns the number deleted."""
        if not sids:
            return 0
        clause, params = self.dialect.any_of("sid", sids)
        cur.execute(f"DELETE FROM temporal_instances WHERE {clause}", params)
        return _rowcount(cur)

    def delete_instance(self, cur: Cursor, sids: Sequence[int], iid: int) -> bool:
        """Delete one instance by id among the given series; False if there is none."""
        if not sids:
            return False
        clause, params = self.dialect.any_of("sid", sids)
        cur.execute(f"DELETE FROM temporal_instances WHERE {clause} AND iid = {self.ph}", [*params, iid])
        return _rowcount(cur) > 0

    def find_instance(self, cur: Cursor, series: Sequence[Series], iid: int) -> tuple[Series, StoredInstance] | None:
        """One instance by id among the given series (read in ``cur``)."""
        by_sid = {s.sid: s for s in series}
        if not by_sid:
            return None
        clause, params = self.dialect.any_of("sid", list(by_sid))
        cur.execute(f"{self._select()} WHERE {clause} AND iid = {self.ph}", [*params, iid])
        row = cur.fetchone()
        if row is None:
            return None
        found = by_sid[int(row[0])]
        return found, self._stored(row, found.dataset_id)

    def replace_instance(self, cur: Cursor, series: Series, old_ts: int, row: Row) -> None:
        """Replace the instance at ``(series, old_ts)`` by ``row`` (same series, maybe another time)."""
        cur.execute(
            f"DELETE FROM temporal_instances WHERE sid = {self.ph} AND ts = {self.dialect.tp()}",
            [series.sid, old_ts],
        )
        if self.dialect.name == "postgres":
            self._ensure_partitions(cur, [row[1]])
        self.dialect.write_rows(cur, [row])

    # --- reads ---------------------------------------------------------------------------------

    def series_of(self, tenant: str, entity_ids: Sequence[str]) -> dict[str, list[Series]]:
        """The recorded series of each entity (attribute instances that have or had a history)."""
        found: dict[str, list[Series]] = {}
        with self.store.reader() as cur:
            for part in chunks(list(dict.fromkeys(entity_ids))):
                clause, params = self.dialect.any_of("entity_id", part)
                cur.execute(
                    "SELECT sid, entity_id, attr, dataset_id, types FROM temporal_series "
                    f"WHERE tenant = {self.ph} AND {clause} ORDER BY entity_id, attr, dataset_id",
                    [tenant, *params],
                )
                for sid, eid, attr, dataset_id, types in cur.fetchall():
                    decoded = orjson.loads(types) if isinstance(types, str | bytes) else list(types or [])
                    found.setdefault(eid, []).append(Series(int(sid), eid, attr, dataset_id or "", tuple(decoded)))
        return found

    def count_instances(self, sids: Sequence[int]) -> int:
        """Number of stored instances in the given series."""
        if not sids:
            return 0
        clause, params = self.dialect.any_of("sid", sids)
        with self.store.reader() as cur:
            cur.execute(f"SELECT count(*) FROM temporal_instances WHERE {clause}", params)
            return int(cur.fetchone()[0])

    def _select(self) -> str:
        d = self.dialect
        return (
            f"SELECT sid, {d.t('ts')}, iid, kind, num, {d.js('value')}, observed_at, unit_code, {d.js('extra')}, "
            f"{d.t('created_at')}, {d.t('modified_at')}, {d.t('deleted_at')} FROM temporal_instances"
        )

    @staticmethod
    def _stored(row: Sequence[Any], dataset_id: str) -> StoredInstance:
        kind = int(row[3])
        instance = decode_instance(kind, row[4], row[5], row[6], row[7], row[8], dataset_id)
        if kind & FLAG_DOWNSAMPLED and "observedAt" not in instance:
            instance["observedAt"] = format_time(int(row[1]))  # an hourly mean, timed at its hour
        return StoredInstance(
            ts=int(row[1]),
            iid=int(row[2]),
            instance=instance,
            created_at=int(row[9]),
            modified_at=int(row[10]),
            deleted_at=int(row[11]) if row[11] is not None else None,
        )

    def _filters(self, query: TemporalQuery, alias: str = "") -> tuple[str, list[Any], str]:
        """WHERE clauses of a temporal query (without the series) and its time column, both
        prefixed with the table ``alias`` (such as ``"i."``)."""
        column = alias + _TIME_COLUMNS[query.timeproperty]
        deleted = f"{alias}deleted_at"
        clauses = [f"{deleted} IS NOT NULL" if query.timeproperty == "deletedAt" else f"{deleted} IS NULL"]
        params: list[Any] = []
        low, high = query.bounds()
        if low is not None:
            clauses.append(f"{column} >= {self.dialect.tp()}")
            params.append(low)
        if high is not None:
            clauses.append(f"{column} < {self.dialect.tp()}")
            params.append(high)
        return " AND ".join(clauses), params, column

    def instances(
        self, series: Sequence[Series], query: TemporalQuery, limit: int, *, newest_first: bool
    ) -> dict[int, list[StoredInstance]]:
        """Up to ``limit`` instances of each series in the query's window, oldest (or newest) first."""
        where, params, column = self._filters(query)
        order = f"{column} {'DESC' if newest_first else 'ASC'}, ts {'DESC' if newest_first else 'ASC'}"
        by_sid = {s.sid: s for s in series}
        found: dict[int, list[StoredInstance]] = {}
        if not by_sid:
            return found
        with self.store.reader() as cur:
            if self.dialect.name == "postgres":
                d = self.dialect
                cur.execute(
                    f"SELECT s.sid, {d.t('i.ts')}, i.iid, i.kind, i.num, i.value::text, i.observed_at, i.unit_code, "
                    f"i.extra::text, {d.t('i.created_at')}, {d.t('i.modified_at')}, {d.t('i.deleted_at')} "
                    "FROM unnest(%s::bigint[]) AS s(sid) CROSS JOIN LATERAL ("
                    f"SELECT * FROM temporal_instances t WHERE t.sid = s.sid AND {where} ORDER BY {order} LIMIT %s) i",
                    [list(by_sid), *params, limit],
                )
                for row in cur.fetchall():
                    sid = int(row[0])
                    found.setdefault(sid, []).append(self._stored(row, by_sid[sid].dataset_id))
            else:
                for sid, item in by_sid.items():
                    cur.execute(
                        f"{self._select()} WHERE sid = ? AND {where} ORDER BY {order} LIMIT ?", [sid, *params, limit]
                    )
                    rows = cur.fetchall()
                    if rows:
                        found[sid] = [self._stored(row, item.dataset_id) for row in rows]
        return found

    def extent(self, series: Sequence[Series], query: TemporalQuery) -> dict[int, tuple[int, int]]:
        """(oldest, newest) time of each series inside the query's window (series without any: absent)."""
        if not series:
            return {}
        where, params, column = self._filters(query)
        clause, sid_params = self.dialect.any_of("sid", [s.sid for s in series])
        d = self.dialect
        with self.store.reader() as cur:
            cur.execute(
                f"SELECT sid, {d.t(f'min({column})')}, {d.t(f'max({column})')} FROM temporal_instances "
                f"WHERE {clause} AND {where} GROUP BY sid",
                [*sid_params, *params],
            )
            return {int(sid): (int(low), int(high)) for sid, low, high in cur.fetchall() if low is not None}

    def aggregate(
        self, series: Sequence[Series], query: TemporalQuery, origin: int | None, methods: Sequence[str]
    ) -> dict[int, list[tuple[int, int | None, tuple[Any, ...]]]]:
        """Aggregates per period of each series, computed in SQL (4.5.19).

        Returns, per series, ``(period start, period end or None, values)`` where values are
        ``(count, distinct, num_count, sum, sum of squares, min number, max number, min text,
        max text, stddev, smallest kind)``; the period end is only given for calendar durations. With a zero
        duration there is one period per series and start/end are its oldest/newest times.
        """
        if not series:
            return {}
        period = query.aggr_period or Duration(0, 0, "PT0S")
        where, params, column = self._filters(query, "i.")
        d = self.dialect
        clause, sid_params = d.any_of("i.sid", [s.sid for s in series])
        wants = set(methods)
        distinct = (
            f"count(DISTINCT coalesce(CAST(i.num AS TEXT), {d.js('i.value')}))" if "distinctCount" in wants else "NULL"
        )
        sums = bool(wants & {"sum", "avg", "stddev"})
        squares = bool(wants & {"sumsq", "stddev"})
        extremes = bool(wants & {"min", "max"})
        stddev = d.stddev() if "stddev" in wants else None
        text = d.text_value("i.value")
        selected = ", ".join(
            [
                "count(*)",
                distinct,
                "count(i.num)",
                "sum(i.num)" if sums else "NULL",
                "sum(i.num * i.num)" if squares else "NULL",
                "min(i.num), max(i.num)" if extremes else "NULL, NULL",
                f"min({text}), max({text})" if extremes else "NULL, NULL",
                stddev or "NULL",
                "min(i.kind)",
            ]
        )
        results: dict[int, list[tuple[int, int | None, tuple[Any, ...]]]] = {}
        with self.store.reader() as cur:
            if period.is_zero:
                cur.execute(
                    f"SELECT i.sid, {d.t(f'min({column})')}, {d.t(f'max({column})')}, {selected} "
                    f"FROM temporal_instances i WHERE {clause} AND {where} GROUP BY i.sid",
                    [*sid_params, *params],
                )
                for row in cur.fetchall():
                    results.setdefault(int(row[0]), []).append((int(row[1]), int(row[2]), tuple(row[3:])))
                return results
            if origin is None:
                return results
            if not period.is_calendar:
                bucket, bucket_params = d.bucket(column, origin, period)
                cur.execute(
                    f"SELECT i.sid, {bucket} AS b, {selected} FROM temporal_instances i "
                    f"WHERE {clause} AND {where} GROUP BY i.sid, b ORDER BY i.sid, b",
                    [*bucket_params, *sid_params, *params],
                )
                for row in cur.fetchall():
                    results.setdefault(int(row[0]), []).append((int(row[1]), None, tuple(row[2:])))
                return results
        extent = self.extent(series, query)
        if not extent:
            return results
        low = min(lo for lo, _ in extent.values())
        high = max(hi for _, hi in extent.values())
        buckets = calendar_buckets(origin, period, low, high, MAX_CALENDAR_PERIODS)
        starts = [b[0] for b in buckets]
        ends = [b[1] for b in buckets]
        with self.store.reader() as cur:
            if d.name == "postgres":
                periods = "WITH b(bs, be) AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[])) "
                period_params: list[Any] = [starts, ends]
                inside = f"{column} >= {_E.format('b.bs')} AND {column} < {_E.format('b.be')}"
            else:
                periods = "WITH b(bs, be) AS (VALUES " + ", ".join("(?, ?)" for _ in buckets) + ") "
                period_params = [v for pair in buckets for v in pair]
                inside = f"{column} >= b.bs AND {column} < b.be"
            cur.execute(
                f"{periods}SELECT i.sid, b.bs, b.be, {selected} FROM b JOIN temporal_instances i ON {inside} "
                f"WHERE {clause} AND {where} GROUP BY i.sid, b.bs, b.be ORDER BY i.sid, b.bs",
                [*period_params, *sid_params, *params],
            )
            for row in cur.fetchall():
                results.setdefault(int(row[0]), []).append((int(row[1]), int(row[2]), tuple(row[3:])))
        return results

    # --- retention -----------------------------------------------------------------------------

    def purge(
        self,
        tenant: str,
        type_clause: tuple[str, list[Any]],
        raw_before: int,
        aggregate_before: int | None,
        *,
        chunk: int = 500,
    ) -> tuple[int, int]:
        """Apply one retention policy to the series its clause selects (alias ``s``).

        Raw instances older than ``raw_before`` (µs) are replaced by hourly means when
        ``aggregate_before`` is given (means older than it are deleted), else deleted.
        Returns (raw instances removed, hourly means written). One transaction per ``chunk``
        series, so a large purge never holds one huge transaction.
        """
        sql, params = type_clause
        with self.store.reader() as cur:
            cur.execute(f"SELECT s.sid FROM temporal_series s WHERE s.tenant = {self.ph} AND {sql}", [tenant, *params])
            sids = [int(row[0]) for row in cur.fetchall()]
        removed = 0
        written = 0
        d = self.dialect
        for start in range(0, len(sids), chunk):
            part = sids[start : start + chunk]
            clause, sid_params = d.any_of("sid", part)
            with self.store.transaction() as cur:
                if aggregate_before is not None:
                    hour = d.hour("ts")
                    cur.execute(
                        f"INSERT INTO temporal_instances ({_INSTANCE_COLUMNS}) "
                        f"SELECT sid, {hour}, {d.new_iid()}, {FLAG_DOWNSAMPLED | 8}, avg(num), NULL, NULL, "
                        "max(unit_code), NULL, min(created_at), max(modified_at), NULL FROM temporal_instances "
                        f"WHERE {clause} AND ts < {d.tp()} AND deleted_at IS NULL AND (kind & 24) <> 0 "
                        f"AND (kind & {FLAG_DOWNSAMPLED}) = 0 GROUP BY sid, {hour} "
                        "ON CONFLICT (sid, ts) DO UPDATE SET kind = excluded.kind, num = excluded.num, "
                        "value = NULL, observed_at = NULL, unit_code = excluded.unit_code, extra = NULL, "
                        "deleted_at = NULL",
                        [*sid_params, raw_before],
                    )
                    written += _rowcount(cur)
                    cur.execute(
                        f"DELETE FROM temporal_instances WHERE {clause} AND ts < {d.tp()} "
                        f"AND (kind & {FLAG_DOWNSAMPLED}) <> 0",
                        [*sid_params, aggregate_before],
                    )
                cur.execute(
                    f"DELETE FROM temporal_instances WHERE {clause} AND ts < {d.tp()} "
                    f"AND (kind & {FLAG_DOWNSAMPLED}) = 0",
                    [*sid_params, raw_before],
                )
                removed += _rowcount(cur)
        return removed, written


def _now() -> str:
    from territoire.context.model import now_iso

    return now_iso()


def _rowcount(cur: Cursor) -> int:
    count = getattr(cur, "rowcount", -1)
    return int(count) if count is not None and count >= 0 else 0


def _months(times: Iterable[int]) -> set[tuple[int, int]]:
    """The (year, month) set of times; one conversion when a batch lies in a single month."""
    values = list(times)
    if not values:
        return set()
    low, high = min(values), max(values)
    first, last = month_start(low), month_start(high)
    if first == last:
        return {first}
    return {month_start(value) for value in values}


def _partition_name(year: int, month: int) -> str:
    return f"temporal_instances_y{year:04d}m{month:02d}"


def _partition_month(name: str) -> tuple[int, int] | None:
    prefix = "temporal_instances_y"
    if not name.startswith(prefix) or len(name) != len(prefix) + 7 or name[len(prefix) + 4] != "m":
        return None
    digits = name[len(prefix) :]
    try:
        return int(digits[:4]), int(digits[5:])
    except ValueError:
        return None


def _pg_literal(us: int) -> str:
    moment = from_us(us)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + "+00"
