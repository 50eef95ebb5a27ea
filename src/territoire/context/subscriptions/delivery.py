"""Notification delivery: asyncio workers over the durable outbox (ETSI GS CIM 009 v1.8, 5.8.6,
the HTTP binding of clause 6 and the MQTT binding of annex C / 7.x).

:class:`DeliveryWorker` leases due outbox rows (:meth:`SubscriptionStorage.claim`), groups them
per subscription and sends one notification per subscription with the entities it has pending.
Each subscription has a *lane*: at most one notification in flight per subscription, in order;
lanes run concurrently, each endpoint (scheme, host, port) capped at a few concurrent requests, so
a slow or dead endpoint only ever occupies its own lanes. An endpoint that holds too many rows
gets its new rows pushed back to the database instead of taking the memory of others.

A row is deleted only after the receiver answered 2xx (HTTP) or the broker accepted the message
(MQTT, with the subscription's QoS): at-least-once. A failure (non-2xx, timeout, refused
connection) is recorded in the subscription's status (``timesFailed``, ``lastFailure``,
``status: failed``) and the subscription's rows are retried after an exponential backoff with
jitter, capped, and at least the endpoint's ``cooldown``. Throttling (5.8.6) delays, never drops:
when the window opens, the latest state of every pending entity goes out in one notification.

:class:`PeriodicScheduler` sends the matching entities of ``timeInterval`` subscriptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import orjson

from territoire.context import geo, qlang
from territoire.context.http import LINK_REL_CONTEXT, TENANT_HEADER
from territoire.context.model import Entity, now_iso
from territoire.context.store.base import EntityQuery
from territoire.context.store.sql import SqlStore
from territoire.context.subscriptions.hook import Registry
from territoire.context.subscriptions.model import PERIODIC, Compiled, Decision, EntityChange, notification_body
from territoire.context.subscriptions.storage import NewRow, OutboxRow, StatusUpdate, SubscriptionStorage

log = logging.getLogger("territoire.subscriptions")

JSON_LD = "application/ld+json"


@dataclass
class DeliveryConfig:
    """Tuning of delivery; each field can be set from ``TERRITOIRE_NOTIFY_<FIELD>`` (upper case)."""

    poll_interval: float = 1.0  # [s] safety net: rows written by other processes, retries due
    lease: float = 30.0  # [s] how long claimed rows stay reserved without a sign of life
    batch: int = 500  # rows per claim
    max_held: int = 20_000  # rows held in memory by all lanes
    endpoint_concurrency: int = 8  # concurrent requests per endpoint (scheme, host, port)
    endpoint_held: int = 2_000  # rows held per endpoint before new ones are pushed back
    hold_limit: float = 2.0  # [s] a lane waits this long at most for its gate, else releases its rows
    timeout: float = 10.0  # [s] request timeout when the endpoint gives none
    backoff_base: float = 0.5  # [s] first retry delay
    backoff_max: float = 300.0  # [s] longest retry delay
    max_entities: int = 1000  # entities per notification
    flush_interval: float = 0.02  # [s] outcomes are written in batches this often

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeliveryConfig:
        env = os.environ if environ is None else environ
        config = cls()
        for item in fields(cls):
            raw = env.get(f"TERRITOIRE_NOTIFY_{item.name.upper()}")
            if raw is not None:
                current = getattr(config, item.name)
                setattr(config, item.name, type(current)(raw))
        return config


class DeliveryError(Exception):
    """A notification was not accepted (the reason goes to the log)."""


def endpoint_key(uri: str) -> str:
    parts = urlsplit(uri)
    default = {"http": 80, "https": 443, "mqtt": 1883, "mqtts": 8883}.get(parts.scheme, 0)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or default}"


def _option(info: Sequence[Mapping[str, str]] | None, key: str, default: str) -> str:
    for item in info or ():
        if item["key"] == key:
            return item["value"]
    return default


@dataclass
class Lane:
    """The pending rows of one subscription and its delivery state in this process."""

    key: tuple[str, str]
    sub: Compiled
    endpoint: str
    rows: list[OutboxRow] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    throttle_until: float = 0.0
    backoff_until: float = 0.0
    failures: int = 0
    #: Rows of this subscription wait in the database until then: newer ones must wait too (order).
    parked_until: float = 0.0


@dataclass
class _Outcomes:
    delivered: list[int] = field(default_factory=list)
    retries: list[tuple[float, int, list[int]]] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.delivered or self.retries or self.statuses)


class HttpConnections:
    """A lean HTTP/1.1 client for notifications: keep-alive connections per endpoint.

    Notification POSTs are small and many; a general-purpose client (httpx) spends more time
    managing its pool than sending at the rates aimed at here (thousands per second on one core).
    This one keeps idle connections per (scheme, host, port) and speaks just what a POST with a
    JSON body needs: ``Content-Length`` or chunked responses, ``Connection: close``. Concurrency
    per endpoint is capped by the caller.
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, uri: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        """POST ``body``; the response status (raises on connection errors and timeouts)."""
        parts = urlsplit(uri)
        https = parts.scheme == "https"
        host = parts.hostname or "localhost"
        port = parts.port or (443 if https else 80)
        key = (parts.scheme, host, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = host if parts.port is None else f"{host}:{port}"
        lines = [f"POST {target} HTTP/1.1", f"Host: {host_header}", f"Content-Length: {len(body)}"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        async with asyncio.timeout(timeout):
            idle = self._idle.get(key)
            while idle:
                reader, writer = idle.pop()
                if reader.at_eof() or writer.is_closing():
                    writer.close()
                    continue
                try:
                    return await self._exchange(key, reader, writer, request)
                except _StaleConnection:
                    continue  # closed by the server while idle: nothing was processed
            if https and self._tls is None:
                self._tls = ssl.create_default_context()
            reader, writer = await asyncio.open_connection(host, port, ssl=self._tls if https else None)
            try:
                return await self._exchange(key, reader, writer, request)
            except _StaleConnection:
                raise ConnectionError("the endpoint closed the connection without answering") from None

    async def _exchange(
        self,
        key: tuple[str, str, int],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: bytes,
    ) -> int:
        try:
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
            if not status_line:
                raise _StaleConnection()
            fields = status_line.split(None, 2)
            if len(fields) < 2 or not fields[0].startswith(b"HTTP/"):
                raise ConnectionError(f"not an HTTP response: {status_line[:80]!r}")
            status = int(fields[1])
            length: int | None = None
            chunked = False
            close = fields[0] == b"HTTP/1.0"
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n"):
                    break
                if not line:
                    raise ConnectionError("the response headers were cut short")
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                value = value.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value:
                    chunked = True
                elif name == b"connection":
                    close = value == b"close" or (close and value != b"keep-alive")
            if chunked:
                while True:
                    size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            elif length is not None:
                await reader.readexactly(length)
            elif status not in (204, 304) and not 100 <= status < 200:
                await reader.read()
                close = True
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self._idle.setdefault(key, []).append((reader, writer))
        return status

    async def close(self) -> None:
        for connections in self._idle.values():
            for _, writer in connections:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        self._idle.clear()


class _StaleConnection(Exception):
    """A kept-alive connection was closed by the server before it answered."""


class MqttConnections:
    """One connected client per broker (and credentials / protocol), reconnected on failure."""

    def __init__(self) -> None:
        self._clients: dict[tuple[Any, ...], aiomqtt.Client] = {}
        self._locks: dict[tuple[Any, ...], asyncio.Lock] = {}

    async def publish(self, uri: str, payload: bytes, qos: int, version: str, timeout: float) -> None:
        parts = urlsplit(uri)
        topic = unquote(parts.path.lstrip("/"))
        key = (parts.scheme, parts.hostname, parts.port, parts.username, parts.password, version)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            client = self._clients.get(key)
            if client is None:
                client = aiomqtt.Client(
                    parts.hostname or "localhost",
                    parts.port or (8883 if parts.scheme == "mqtts" else 1883),
                    username=unquote(parts.username) if parts.username else None,
                    password=unquote(parts.password) if parts.password else None,
                    identifier=f"territoire-{uuid.uuid4().hex[:12]}",
                    protocol=aiomqtt.ProtocolVersion.V5 if version == "mqtt5.0" else aiomqtt.ProtocolVersion.V311,
                    tls_context=ssl.create_default_context() if parts.scheme == "mqtts" else None,
                    timeout=timeout,
                )
                async with asyncio.timeout(timeout):
                    await client.__aenter__()
                self._clients[key] = client
        try:
            async with asyncio.timeout(timeout):
                await client.publish(topic, payload, qos=qos)
        except BaseException:
            await self._drop(key)
            raise

    async def _drop(self, key: tuple[Any, ...]) -> None:
        client = self._clients.pop(key, None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def close(self) -> None:
        for key in list(self._clients):
            await self._drop(key)


def notification_batches(rows: Sequence[OutboxRow], max_entities: int) -> list[list[OutboxRow]]:
    """Split a lane's rows (in order) into notifications: consecutive rows share one notification
    while they have the same trigger reason (a notification has one ``triggerReason``), name each
    entity at most once (two changes of one entity are two notifications, in order), and number at
    most ``max_entities``."""
    batches: list[list[OutboxRow]] = []
    current: list[OutboxRow] = []
    entities: set[str] = set()
    for row in rows:
        if current and (row.reason != current[0].reason or row.entity_id in entities or len(current) >= max_entities):
            batches.append(current)
            current, entities = [], set()
        current.append(row)
        entities.add(row.entity_id)
    if current:
        batches.append(current)
    return batches


class DeliveryWorker:
    """See module docstring. ``run`` is the background task; ``wake`` may be called from any thread."""

    def __init__(self, storage: SubscriptionStorage, registry: Registry, config: DeliveryConfig) -> None:
        self.storage = storage
        self.registry = registry
        self.config = config
        self.owner = uuid.uuid4().hex
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._lanes: dict[tuple[str, str], Lane] = {}
        self._held = 0
        self._endpoint_held: Counter[str] = Counter()
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._outcomes = _Outcomes()
        self._http = HttpConnections()
        self._mqtt = MqttConnections()
        #: Notifications sent by this process (successful ones), for the benchmark and tests.
        self.sent = 0

    # --- waking ---------------------------------------------------------------------------------

    def wake(self) -> None:
        """Rows were (or are about to be) committed: look at the outbox soon."""
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    async def _sleep(self) -> bool:
        """Wait for a wake-up or the next due row; True if woken by :meth:`wake`."""
        assert self._event is not None
        timeout = self.config.poll_interval
        if self._held < self.config.max_held:
            next_due = await asyncio.to_thread(self.storage.next_due)
            if next_due is not None:
                timeout = min(timeout, max(0.005, next_due - time.time()))
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True

    # --- main loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        helpers = [
            asyncio.create_task(self._flush_loop(), name="notification-outcomes"),
            asyncio.create_task(self._lease_loop(), name="notification-leases"),
        ]
        try:
            woken, retries = False, 0
            while True:
                claimed = await self._pump()
                if woken and not claimed and retries < 5:
                    # A wake-up comes from inside a write transaction, possibly before its commit:
                    # look again shortly rather than waiting for the next poll.
                    retries += 1
                    await asyncio.sleep(0.005 * retries)
                    continue
                retries = 0
                woken = await self._sleep()
        finally:
            lanes = [lane.task for lane in self._lanes.values() if lane.task is not None]
            for task in [*lanes, *helpers]:
                task.cancel()
            await asyncio.gather(*lanes, *helpers, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._flush()
            await self._http.close()
            await self._mqtt.close()
            self._loop = None

    async def _pump(self) -> int:
        """Claim and dispatch due rows while there is room; the number of rows claimed."""
        total = 0
        while self._held < self.config.max_held:
            now = time.time()
            try:
                rows = await asyncio.to_thread(
                    self.storage.claim, self.owner, now, now + self.config.lease, self.config.batch
                )
            except Exception:
                log.exception("Could not claim notifications; retrying")
                return total
            if not rows:
                break
            total += len(rows)
            await self._dispatch(rows)
            if len(rows) < self.config.batch:
                break
        return total

    async def _dispatch(self, rows: list[OutboxRow]) -> None:
        groups: dict[tuple[str, str], list[OutboxRow]] = {}
        for row in rows:
            groups.setdefault((row.tenant, row.subscription_id), []).append(row)
        fresh = [key for key in groups if key not in self._lanes]
        try:
            compiled = await asyncio.to_thread(self.registry.lookup, list(groups))
            gates = await asyncio.to_thread(self.storage.gates, time.time()) if fresh else {}
        except Exception:
            log.exception("Could not load subscriptions; their notifications are retried")
            self._outcomes.retries.append((time.time() + 1.0, 0, [r.seq for r in rows]))
            return
        later = time.time() + 1.0
        for key, group in groups.items():
            sub = compiled.get(key)
            if sub is None:  # deleted meanwhile: its rows are acknowledged
                self._outcomes.delivered.extend(r.seq for r in group)
                continue
            lane = self._lanes.get(key)
            if lane is None:
                # Another process (or this one before a restart) may have notified it last.
                lane = Lane(key, sub, endpoint_key(sub.endpoint["uri"]), throttle_until=gates.get(key, 0.0))
                self._lanes[key] = lane
            else:
                lane.sub = sub  # the latest definition (its accounting stays on the first endpoint)
            if lane.parked_until > time.time():
                self._outcomes.retries.append((lane.parked_until, 0, [r.seq for r in group]))
                continue
            if self._endpoint_held[lane.endpoint] >= self.config.endpoint_held:
                self._outcomes.retries.append((later, 0, [r.seq for r in group]))
                continue
            lane.rows.extend(group)
            self._held += len(group)
            self._endpoint_held[lane.endpoint] += len(group)
            if lane.task is None:
                lane.task = asyncio.create_task(self._run_lane(lane), name=f"notify {key[1]}")

    def _take(self, lane: Lane, rows: Sequence[OutboxRow]) -> None:
        self._held -= len(rows)
        self._endpoint_held[lane.endpoint] -= len(rows)

    # --- one subscription ------------------------------------------------------------------------

    async def _run_lane(self, lane: Lane) -> None:
        try:
            while lane.rows:
                gate = max(lane.throttle_until, lane.backoff_until)
                wait = gate - time.time()
                if wait > self.config.hold_limit:
                    rows, lane.rows = lane.rows, []
                    self._take(lane, rows)
                    self._outcomes.retries.append((gate, 0, [r.seq for r in rows]))
                    lane.parked_until = gate
                    break
                if wait > 0:
                    await asyncio.sleep(wait)
                rows, lane.rows = lane.rows, []
                rows.sort(key=lambda r: r.seq)
                if lane.sub.throttling is not None:
                    rows = self._latest_per_entity(rows)
                start = 0
                for batch in notification_batches(rows, self.config.max_entities):
                    ok = await self._deliver(lane, batch)
                    self._take(lane, batch)
                    start += len(batch)
                    if not ok:
                        rest = rows[start:] + lane.rows
                        lane.rows = []
                        self._take(lane, rest)
                        self._outcomes.retries.append(
                            (lane.backoff_until, 1, [r.seq for r in batch] + [r.seq for r in rest])
                        )
                        lane.parked_until = lane.backoff_until
                        break
        finally:
            lane.task = None
            self._prune()
            if self._event is not None:
                self._event.set()

    def _prune(self) -> None:
        """Forget idle lanes, but keep a subscription's throttling window and retry state as long
        as they matter (the backoff keeps growing over consecutive failures)."""
        now = time.time()
        for key, lane in list(self._lanes.items()):
            if lane.task is None and not lane.rows:
                horizon = max(lane.throttle_until, lane.parked_until)
                if lane.failures:
                    horizon = max(horizon, lane.backoff_until + self.config.backoff_max)
                if horizon <= now:
                    del self._lanes[key]

    def _latest_per_entity(self, rows: list[OutboxRow]) -> list[OutboxRow]:
        """Throttled subscriptions send the last state of each entity; older rows are superseded."""
        latest: dict[str, OutboxRow] = {}
        for row in rows:
            previous = latest.get(row.entity_id)
            if previous is not None:
                self._outcomes.delivered.append(previous.seq)
            latest[row.entity_id] = row
        return sorted(latest.values(), key=lambda r: r.seq)

    async def _deliver(self, lane: Lane, rows: Sequence[OutboxRow]) -> bool:
        sub = lane.sub
        started = time.time()
        notified_at = now_iso()
        semaphore = self._semaphores.setdefault(lane.endpoint, asyncio.Semaphore(self.config.endpoint_concurrency))
        try:
            async with semaphore:
                await self._send(sub, rows, notified_at)
            ok = True
        except Exception as err:
            log.warning("Notification of subscription %s to %s failed: %r", sub.id, sub.endpoint["uri"], err)
            ok = False
        now = time.time()
        if ok:
            lane.failures = 0
            lane.backoff_until = 0.0
            if sub.throttling is not None:
                lane.throttle_until = started + sub.throttling
            self._outcomes.delivered.extend(r.seq for r in rows)
            self.sent += 1
        else:
            lane.failures += 1
            delay = min(self.config.backoff_max, self.config.backoff_base * 2 ** (lane.failures - 1))
            cooldown = sub.endpoint.get("cooldown")
            if cooldown is not None:
                delay = max(delay, float(cooldown) / 1000.0)
            lane.backoff_until = now + delay * (0.5 + random.random() / 2)
        self._outcomes.statuses.append(
            StatusUpdate(
                tenant=sub.tenant,
                subscription_id=sub.id,
                sent=1,
                failed=0 if ok else 1,
                last_notification=notified_at,
                last_success=notified_at if ok else None,
                last_failure=None if ok else notified_at,
                status="ok" if ok else "failed",
                consecutive_failures=lane.failures,
                not_before=max(lane.throttle_until, lane.backoff_until),
            )
        )
        return ok

    # --- the bindings ---------------------------------------------------------------------------

    def _body(self, sub: Compiled, rows: Sequence[OutboxRow], notified_at: str) -> bytes:
        head = notification_body(sub.id, [], [r.reason for r in rows], notified_at)
        del head["data"]
        if sub.media_type() == JSON_LD:
            context = sub.response_context()
            items = [orjson.dumps({**orjson.loads(r.payload), "@context": context}) for r in rows]
        else:
            items = [r.payload for r in rows]
        return orjson.dumps(head)[:-1] + b',"data":[' + b",".join(items) + b"]}"

    def _headers(self, sub: Compiled) -> dict[str, str]:
        media = sub.media_type()
        headers = {"Content-Type": media}
        if media != JSON_LD:
            headers["Link"] = f'<{sub.json_ld_context}>; rel="{LINK_REL_CONTEXT}"; type="{JSON_LD}"'
        if sub.tenant:
            headers[TENANT_HEADER] = sub.tenant
        for item in sub.endpoint.get("receiverInfo", ()):
            headers[item["key"]] = item["value"]
        return headers

    def _timeout(self, sub: Compiled) -> float:
        given = sub.endpoint.get("timeout")
        return float(given) / 1000.0 if given is not None else self.config.timeout

    async def _send(self, sub: Compiled, rows: Sequence[OutboxRow], notified_at: str) -> None:
        body = self._body(sub, rows, notified_at)
        headers = self._headers(sub)
        uri: str = sub.endpoint["uri"]
        if uri.startswith(("mqtt://", "mqtts://")):
            info = sub.endpoint.get("notifierInfo")
            message = b'{"metadata":' + orjson.dumps(headers) + b',"body":' + body + b"}"
            qos = int(_option(info, "MQTT-QoS", "0"))
            await self._mqtt.publish(uri, message, qos, _option(info, "MQTT-Version", "mqtt3.1.1"), self._timeout(sub))
            return
        status = await self._http.post(uri, body, headers, self._timeout(sub))
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}")

    # --- outcomes and leases ----------------------------------------------------------------------

    async def _flush(self) -> None:
        if not self._outcomes:
            return
        outcomes, self._outcomes = self._outcomes, _Outcomes()
        try:
            await asyncio.to_thread(
                self.storage.complete, self.owner, outcomes.delivered, outcomes.retries, outcomes.statuses
            )
        except Exception:
            log.exception("Could not record notification outcomes; will retry")
            self._outcomes.delivered[:0] = outcomes.delivered
            self._outcomes.retries[:0] = outcomes.retries
            self._outcomes.statuses[:0] = outcomes.statuses
            raise

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            with contextlib.suppress(Exception):
                await self._flush()

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease / 3)
            if self._held:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.storage.extend_leases, self.owner, time.time() + self.config.lease)

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until this worker holds nothing and has recorded every outcome (tests, benchmark)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._held and not self._outcomes and not self._lanes:
                return True
            await asyncio.sleep(0.01)
        return False


class PeriodicScheduler:
    """Sends the current matching entities of ``timeInterval`` subscriptions (5.8.6) on time.

    Claiming a due subscription moves its next time on in the same statement, so with several
    processes each period is handled once.
    """

    #: Entities per periodic notification at most (pages of the query).
    MAX_ENTITIES = 10_000

    def __init__(
        self, store: SqlStore, storage: SubscriptionStorage, registry: Registry, on_enqueue: Callable[[], None]
    ) -> None:
        self.store = store
        self.storage = storage
        self.registry = registry
        self.on_enqueue = on_enqueue
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def wake(self) -> None:
        loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        try:
            while True:
                try:
                    due = await asyncio.to_thread(self.storage.claim_periodic, time.time())
                    for tenant, sub in due:
                        await asyncio.to_thread(self._notify, tenant, sub)
                    next_time = await asyncio.to_thread(self.storage.next_periodic)
                except Exception:
                    log.exception("Periodic notifications failed; retrying")
                    next_time = None
                timeout = 1.0 if next_time is None else min(1.0, max(0.02, next_time - time.time()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._event.wait()
                self._event.clear()
        finally:
            self._loop = None

    def matching_entities(self, sub: Compiled) -> list[Entity]:
        """The entities a periodic subscription selects now (entity selectors, q, geoQ, scopeQ)."""
        found: dict[str, Entity] = {}
        raw = sub.sub
        for index, selector in enumerate(sub.selectors):
            offset = 0
            while len(found) < self.MAX_ENTITIES:
                query = EntityQuery(
                    ids=[selector.entity_id] if selector.entity_id is not None else None,
                    id_pattern=raw["entities"][index].get("idPattern"),
                    types=selector.types,
                    q=qlang.parse_q(raw["q"]) if "q" in raw else None,
                    scope_q=sub.scope,
                    geo=geo.parse_geo_q(raw["geoQ"]) if "geoQ" in raw else None,
                    geoproperty=sub.geoproperty or None,
                    expand=sub.terms.expand,
                    limit=1000,
                    offset=offset,
                )
                page = self.store.query(sub.tenant, query).entities
                for entity in page:
                    found.setdefault(entity["id"], entity)
                if len(page) < 1000:
                    break
                offset += 1000
        return list(found.values())[: self.MAX_ENTITIES]

    def _notify(self, tenant: str, raw: dict[str, Any]) -> None:
        try:
            sub = self.registry.compile(tenant, raw)
        except Exception:
            log.exception("Periodic subscription %s cannot be compiled", raw.get("id"))
            return
        now = now_iso()
        decision = Decision(PERIODIC, frozenset())
        rows = []
        for entity in self.matching_entities(sub):
            item = sub.render_item(EntityChange(entity["id"], entity, entity), decision, now)
            rows.append(NewRow(tenant, sub.id, entity["id"], PERIODIC, orjson.dumps(item)))
        if rows:
            with self.store.transaction() as cur:
                self.storage.enqueue(cur, rows, time.time())
            self.on_enqueue()
