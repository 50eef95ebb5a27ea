"""Subscriptions, their status and the notification outbox in the entity store's database.

The same statements run on SQLite and PostgreSQL (``store.ph`` placeholders); the only dialect
difference is row claiming, which uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so that several
processes share the outbox without waiting on one another (SQLite has one writer at a time).

Outbox rows move through three states, all in ``available_at``:

- due (``available_at <= now``): written by the write hook, or released after a failure with
  ``available_at`` = the retry time;
- leased (``available_at`` = end of the lease, ``claimed_by`` = the worker): being delivered; the
  worker extends its leases while it works, so a lease only runs out when its worker died, and the
  rows become due again (at-least-once delivery: nothing is lost, a row may be sent twice);
- gone: deleted once the receiver acknowledged the notification.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from territoire.context.errors import AlreadyExists
from territoire.context.store.sql import ID_CHUNK, Cursor, SqlStore
from territoire.context.subscriptions.model import DeliveryStatus, epoch_of

_STATUS_COLUMNS = (
    "times_sent, times_failed, last_notification, last_success, last_failure, notify_status, created_at, modified_at"
)


@dataclass(frozen=True)
class StoredSubscription:
    """A subscription row: its definition (internal form), delivery status and system times."""

    tenant: str
    sub: dict[str, Any]
    delivery: DeliveryStatus
    created_at: str
    modified_at: str


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    tenant: str
    subscription_id: str
    entity_id: str
    reason: str
    payload: bytes
    attempts: int
    created_at: float


@dataclass(frozen=True)
class NewRow:
    """An outbox row to insert: ``(tenant, subscription, entity, reason, payload JSON)``."""

    tenant: str
    subscription_id: str
    entity_id: str
    reason: str
    payload: bytes


@dataclass(frozen=True)
class StatusUpdate:
    """The outcome of notifications of one subscription, for its status columns (5.2.14)."""

    tenant: str
    subscription_id: str
    sent: int
    failed: int
    last_notification: str
    last_success: str | None
    last_failure: str | None
    status: str
    consecutive_failures: int
    not_before: float


def _rowcount(cur: Cursor) -> int:
    return int(getattr(cur, "rowcount", -1))


def chunks(items: Sequence[int], size: int = ID_CHUNK) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _decode(data: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(data) if isinstance(data, str | bytes) else data
    return decoded


def _payload_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, memoryview):
        return value.tobytes()
    return str(value).encode()


class SubscriptionStorage:
    """SQL access to the subscription tables of ``0003_subscriptions.sql``."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.ph = store.ph
        self.postgres = store.backend == "postgres"

    # --- versions (cache invalidation across processes) ---------------------------------------

    def read_version(self, cur: Cursor, tenant: str) -> int | None:
        cur.execute(f"SELECT version FROM subscription_versions WHERE tenant = {self.ph}", (tenant,))
        row = cur.fetchone()
        return None if row is None else int(row[0])

    def _bump(self, cur: Cursor, tenant: str) -> None:
        cur.execute(
            f"INSERT INTO subscription_versions (tenant, version) VALUES ({self.ph}, 1) "
            "ON CONFLICT (tenant) DO UPDATE SET version = subscription_versions.version + 1",
            (tenant,),
        )

    def load_tenant(self, cur: Cursor, tenant: str) -> list[dict[str, Any]]:
        """Every subscription definition of ``tenant`` (for the write hook's cache)."""
        cur.execute(f"SELECT data FROM subscriptions WHERE tenant = {self.ph} ORDER BY id", (tenant,))
        return [_decode(row[0]) for row in cur.fetchall()]

    # --- CRUD (5.8.1 - 5.8.5) ---------------------------------------------------------------

    def _columns(self, sub: dict[str, Any]) -> tuple[Any, ...]:
        expires = epoch_of(sub["expiresAt"]) if "expiresAt" in sub else None
        return (
            orjson.dumps(sub).decode(),
            sub.get("isActive", True) is not False,
            expires,
            sub.get("timeInterval"),
        )

    def insert(self, tenant: str, sub: dict[str, Any], now: str, now_epoch: float) -> None:
        """Create; AlreadyExists (409) if the tenant has a subscription with this id."""
        p = self.ph
        with self.store.transaction() as cur:
            data, active, expires, interval = self._columns(sub)
            cur.execute(
                "INSERT INTO subscriptions (tenant, id, data, created_at, modified_at, is_active, expires_at, "
                f"time_interval, next_periodic) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}) "
                "ON CONFLICT (tenant, id) DO NOTHING",
                (tenant, sub["id"], data, now, now, active, expires, interval, now_epoch if interval else None),
            )
            if _rowcount(cur) == 0:
                raise AlreadyExists(f"Subscription {sub['id']} already exists", id=sub["id"])
            cur.execute(
                f"INSERT INTO tenants (name, created_at) VALUES ({p}, {p}) ON CONFLICT (name) DO NOTHING", (tenant, now)
            )
            self._bump(cur, tenant)

    def replace(self, tenant: str, sub: dict[str, Any], now: str, now_epoch: float) -> bool:
        """Store the updated definition; False if it does not exist (any more)."""
        p = self.ph
        with self.store.transaction() as cur:
            data, active, expires, interval = self._columns(sub)
            cur.execute(
                f"UPDATE subscriptions SET data = {p}, modified_at = {p}, is_active = {p}, expires_at = {p}, "
                f"time_interval = {p}, next_periodic = {p} WHERE tenant = {p} AND id = {p}",
                (data, now, active, expires, interval, now_epoch if interval else None, tenant, sub["id"]),
            )
            if _rowcount(cur) == 0:
                return False
            self._bump(cur, tenant)
        return True

    def delete(self, tenant: str, subscription_id: str) -> bool:
        """Delete the subscription and its pending notifications; False if it does not exist."""
        p = self.ph
        with self.store.transaction() as cur:
            cur.execute(f"DELETE FROM subscriptions WHERE tenant = {p} AND id = {p}", (tenant, subscription_id))
            if _rowcount(cur) == 0:
                return False
            cur.execute(
                f"DELETE FROM notification_outbox WHERE tenant = {p} AND subscription_id = {p}",
                (tenant, subscription_id),
            )
            self._bump(cur, tenant)
        return True

    def _row(self, tenant: str, row: Sequence[Any]) -> StoredSubscription:
        return StoredSubscription(
            tenant=tenant,
            sub=_decode(row[0]),
            delivery=DeliveryStatus(int(row[1]), int(row[2]), row[3], row[4], row[5], row[6]),
            created_at=row[7],
            modified_at=row[8],
        )

    def get(self, tenant: str, subscription_id: str) -> StoredSubscription | None:
        with self.store.reader() as cur:
            cur.execute(
                f"SELECT data, {_STATUS_COLUMNS} FROM subscriptions WHERE tenant = {self.ph} AND id = {self.ph}",
                (tenant, subscription_id),
            )
            row = cur.fetchone()
        return None if row is None else self._row(tenant, row)

    def page(self, tenant: str, limit: int, offset: int) -> tuple[list[StoredSubscription], int]:
        """A page of the tenant's subscriptions (ordered by id) and their total number."""
        p = self.ph
        with self.store.reader() as cur:
            cur.execute(f"SELECT count(*) FROM subscriptions WHERE tenant = {p}", (tenant,))
            total = int(cur.fetchone()[0])
            rows: list[Any] = []
            if limit > 0:
                cur.execute(
                    f"SELECT data, {_STATUS_COLUMNS} FROM subscriptions WHERE tenant = {p} ORDER BY id "
                    f"LIMIT {p} OFFSET {p}",
                    (tenant, limit, offset),
                )
                rows = cur.fetchall()
        return [self._row(tenant, row) for row in rows], total

    def tenant_has_subscriptions(self, tenant: str) -> bool:
        with self.store.reader() as cur:
            return self.read_version(cur, tenant) is not None

    # --- the outbox ---------------------------------------------------------------------------

    def enqueue(self, cur: Cursor, rows: Sequence[NewRow], now_epoch: float) -> None:
        """Insert outbox rows, due now (inside the entity write's transaction)."""
        p = self.ph
        cur.executemany(
            "INSERT INTO notification_outbox (tenant, subscription_id, entity_id, trigger_reason, payload, "
            f"created_at, available_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
            [
                (r.tenant, r.subscription_id, r.entity_id, r.reason, r.payload.decode(), now_epoch, now_epoch)
                for r in rows
            ],
        )

    def claim(self, owner: str, now_epoch: float, lease_until: float, limit: int) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows, oldest first (the worker applies each subscription's
        throttling and retry gate, see :meth:`gates`)."""
        p = self.ph
        lock = " FOR UPDATE SKIP LOCKED" if self.postgres else ""
        with self.store.transaction() as cur:
            cur.execute(
                f"UPDATE notification_outbox SET available_at = {p}, claimed_by = {p} WHERE seq IN ("
                f"SELECT seq FROM notification_outbox WHERE available_at <= {p} ORDER BY available_at, seq "
                f"LIMIT {p}{lock}) RETURNING seq, tenant, subscription_id, entity_id, trigger_reason, payload, "
                "attempts, created_at",
                (lease_until, owner, now_epoch, limit),
            )
            rows = [
                OutboxRow(int(r[0]), r[1], r[2], r[3], r[4], _payload_bytes(r[5]), int(r[6]), float(r[7]))
                for r in cur.fetchall()
            ]
            if not rows:
                return []
        rows.sort(key=lambda r: r.seq)
        return rows

    def gates(self, now_epoch: float) -> dict[tuple[str, str], float]:
        """``not_before`` of the subscriptions whose throttling window or retry backoff is running
        (written by whichever process notified them last)."""
        with self.store.reader() as cur:
            cur.execute(f"SELECT tenant, id, not_before FROM subscriptions WHERE not_before > {self.ph}", (now_epoch,))
            return {(r[0], r[1]): float(r[2]) for r in cur.fetchall()}

    def _set_available(self, cur: Cursor, seqs: Sequence[int], when: float, owner: str | None, attempts: int) -> None:
        p = self.ph
        for part in chunks(seqs):
            marks = ", ".join([p] * len(part))
            where = f"seq IN ({marks})" + (f" AND claimed_by = {p}" if owner is not None else "")
            params: list[Any] = [when, attempts, *part]
            if owner is not None:
                params.append(owner)
            cur.execute(
                f"UPDATE notification_outbox SET available_at = {p}, claimed_by = NULL, attempts = attempts + {p} "
                f"WHERE {where}",
                params,
            )

    def complete(
        self,
        owner: str,
        delivered: Sequence[int],
        retries: Iterable[tuple[float, int, Sequence[int]]],
        statuses: Sequence[StatusUpdate],
    ) -> None:
        """Record outcomes in one transaction: delete delivered rows, release the others at their
        retry time (``(when, attempts increment, seqs)``), update the subscriptions' status."""
        p = self.ph
        with self.store.transaction() as cur:
            for part in chunks(delivered):
                cur.execute(f"DELETE FROM notification_outbox WHERE seq IN ({', '.join([p] * len(part))})", part)
            for when, increment, seqs in retries:
                self._set_available(cur, seqs, when, owner, increment)
            if statuses:
                cur.executemany(
                    f"UPDATE subscriptions SET times_sent = times_sent + {p}, times_failed = times_failed + {p}, "
                    f"last_notification = {p}, last_success = coalesce({p}, last_success), "
                    f"last_failure = coalesce({p}, last_failure), notify_status = {p}, consecutive_failures = {p}, "
                    f"not_before = {p} WHERE tenant = {p} AND id = {p}",
                    [
                        (
                            s.sent,
                            s.failed,
                            s.last_notification,
                            s.last_success,
                            s.last_failure,
                            s.status,
                            s.consecutive_failures,
                            s.not_before,
                            s.tenant,
                            s.subscription_id,
                        )
                        for s in statuses
                    ],
                )

    def extend_leases(self, owner: str, until: float) -> None:
        """Keep this worker's leases alive while it is working on them."""
        with self.store.transaction() as cur:
            cur.execute(
                f"UPDATE notification_outbox SET available_at = {self.ph} WHERE claimed_by = {self.ph} "
                f"AND available_at < {self.ph}",
                (until, owner, until),
            )

    def next_due(self) -> float | None:
        """When the earliest row becomes due (None: the outbox is empty)."""
        with self.store.reader() as cur:
            cur.execute("SELECT min(available_at) FROM notification_outbox")
            row = cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def pending(self, tenant: str | None = None) -> int:
        """Rows not yet acknowledged (all tenants when ``tenant`` is None)."""
        with self.store.reader() as cur:
            if tenant is None:
                cur.execute("SELECT count(*) FROM notification_outbox")
            else:
                cur.execute(f"SELECT count(*) FROM notification_outbox WHERE tenant = {self.ph}", (tenant,))
            return int(cur.fetchone()[0])

    # --- periodic notifications (timeInterval) ------------------------------------------------

    def claim_periodic(self, now_epoch: float, limit: int = 100) -> list[tuple[str, dict[str, Any]]]:
        """The active periodic subscriptions whose time has come, their next time moved on."""
        p = self.ph
        lock = " FOR UPDATE SKIP LOCKED" if self.postgres else ""
        with self.store.transaction() as cur:
            cur.execute(
                f"SELECT tenant, id FROM subscriptions WHERE time_interval IS NOT NULL AND next_periodic <= {p} "
                f"AND is_active AND (expires_at IS NULL OR expires_at > {p}) ORDER BY next_periodic LIMIT {p}{lock}",
                (now_epoch, now_epoch, limit),
            )
            keys = [(r[0], r[1]) for r in cur.fetchall()]
            out = []
            for tenant, subscription_id in keys:
                cur.execute(
                    f"UPDATE subscriptions SET next_periodic = {p} + time_interval WHERE tenant = {p} AND id = {p} "
                    "RETURNING data",
                    (now_epoch, tenant, subscription_id),
                )
                row = cur.fetchone()
                if row is not None:
                    out.append((tenant, _decode(row[0])))
        return out

    def next_periodic(self) -> float | None:
        with self.store.reader() as cur:
            cur.execute("SELECT min(next_periodic) FROM subscriptions WHERE time_interval IS NOT NULL AND is_active")
            row = cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])
