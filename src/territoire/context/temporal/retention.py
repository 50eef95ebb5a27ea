"""Retention of the history, per tenant and entity type, applied by a purge job.

A policy says: keep raw instances ``raw_days`` days; then, if ``aggregate_days`` is set, keep
hourly means of the numeric values until ``aggregate_days`` days (the non-numeric instances
are dropped at ``raw_days``), else drop everything older than ``raw_days``. A policy applies
to the entities having its type; the type ``*`` applies to the tenant's entities that no other
policy of the tenant names. Days are 86,400 s.

The purge runs from the application's background job every ``TERRITOIRE_RETENTION_INTERVAL_S``
seconds and from ``territoire retention apply``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from territoire.context.errors import BadRequestData
from territoire.context.model import now_iso
from territoire.context.temporal.model import DAY_US, month_bounds, month_start, parse_time
from territoire.context.temporal.storage import TemporalStorage

log = logging.getLogger("territoire.temporal")
ANY_TYPE = "*"


@dataclass(frozen=True)
class RetentionPolicy:
    """Retention for one tenant and entity type (expanded IRI, or ``*``); durations in days."""

    tenant: str
    entity_type: str
    raw_days: int
    aggregate_days: int | None = None

    def check(self) -> None:
        if self.raw_days < 1:
            raise BadRequestData(f"raw_days must be at least 1 day, got {self.raw_days}")
        if self.aggregate_days is not None and self.aggregate_days <= self.raw_days:
            raise BadRequestData(
                f"aggregate_days ({self.aggregate_days}) must be longer than raw_days ({self.raw_days})"
            )


@dataclass(frozen=True)
class PurgeResult:
    """What one policy removed: raw instances deleted and hourly means written."""

    policy: RetentionPolicy
    removed: int
    hourly: int


def set_policy(storage: TemporalStorage, policy: RetentionPolicy) -> None:
    """Create or replace the policy of (tenant, entity type)."""
    policy.check()
    ph = storage.ph
    with storage.store.transaction() as cur:
        cur.execute(
            f"DELETE FROM temporal_retention WHERE tenant = {ph} AND entity_type = {ph}",
            (policy.tenant, policy.entity_type),
        )
        cur.execute(
            "INSERT INTO temporal_retention (tenant, entity_type, raw_days, aggregate_days) "
            f"VALUES ({ph}, {ph}, {ph}, {ph})",
            (policy.tenant, policy.entity_type, policy.raw_days, policy.aggregate_days),
        )


def drop_policy(storage: TemporalStorage, tenant: str, entity_type: str) -> bool:
    """Remove a policy; False if there was none."""
    ph = storage.ph
    with storage.store.transaction() as cur:
        cur.execute(f"DELETE FROM temporal_retention WHERE tenant = {ph} AND entity_type = {ph}", (tenant, entity_type))
        count = getattr(cur, "rowcount", 0)
    return bool(count and count > 0)


def list_policies(storage: TemporalStorage, tenant: str | None = None) -> list[RetentionPolicy]:
    """The policies (of one tenant, or all), ordered by tenant and type."""
    sql = "SELECT tenant, entity_type, raw_days, aggregate_days FROM temporal_retention"
    params: tuple[str, ...] = ()
    if tenant is not None:
        sql += f" WHERE tenant = {storage.ph}"
        params = (tenant,)
    with storage.store.reader() as cur:
        cur.execute(sql + " ORDER BY tenant, entity_type", params)
        return [
            RetentionPolicy(row[0], row[1], int(row[2]), int(row[3]) if row[3] is not None else None)
            for row in cur.fetchall()
        ]


def purge(storage: TemporalStorage, now_us: int | None = None) -> list[PurgeResult]:
    """Apply every policy once, as of ``now_us`` (µs since the epoch; default: now)."""
    now = now_us if now_us is not None else parse_time(now_iso(), "now")
    policies = list_policies(storage)
    if policies:
        storage.sync_series()  # policies select series by entity type
    named: dict[str, list[str]] = {}
    for policy in policies:
        if policy.entity_type != ANY_TYPE:
            named.setdefault(policy.tenant, []).append(policy.entity_type)
    results = []
    for policy in policies:
        if policy.entity_type == ANY_TYPE:
            clause = storage.dialect.types_none_of(named.get(policy.tenant, []))
        else:
            clause = storage.dialect.types_match(policy.entity_type)
        raw_before = now - policy.raw_days * DAY_US
        aggregate_before = now - policy.aggregate_days * DAY_US if policy.aggregate_days is not None else None
        removed, hourly = storage.purge(policy.tenant, clause, raw_before, aggregate_before)
        results.append(PurgeResult(policy, removed, hourly))
        if removed or hourly:
            log.info(
                "Retention %s/%s: %d raw instances removed, %d hourly means written",
                policy.tenant or "(default)",
                policy.entity_type,
                removed,
                hourly,
            )
    return results


def maintain(storage: TemporalStorage, now_us: int | None = None) -> list[PurgeResult]:
    """The periodic work: create this month's and next month's partitions, then purge."""
    now = now_us if now_us is not None else parse_time(now_iso(), "now")
    year, month = month_start(now)
    next_month = month_bounds(year, month)[1]
    storage.prepare_partitions([now, next_month])
    return purge(storage, now)


def retention_job(storage: TemporalStorage, interval_s: float) -> Callable[[], Awaitable[None]]:
    """The background job: :func:`maintain` every ``interval_s`` seconds, first after one interval."""

    async def job() -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(maintain, storage)
            except Exception:
                log.exception("The history retention job failed; it will run again in %s s", interval_s)

    return job
