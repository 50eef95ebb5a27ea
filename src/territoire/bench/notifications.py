"""``territoire bench notifications``: notifications delivered per second with 1,000 subscriptions.

A real ``territoire serve`` process runs on a fresh database; 1,000 subscriptions each watch one
entity (``entities: [{id, type}]``, ``notificationTrigger: [attributeUpdated]``) and notify a local
receiver (:class:`Receiver`, a keep-alive HTTP/1.1 server on the loopback in this process). The
benchmark then updates every entity ``rounds`` times through batch updates of 1,000 entities and
measures, end to end, from the first update until the receiver has every change: entity changes
delivered per second (the figure compared with the 2,000/s target) and HTTP notifications per
second (a notification carries several changes of its subscription when they queue up).

:class:`Receiver` is also the HTTP receiver of the subscription tests: it records requests and
can answer an error status or hang, per path.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table

from territoire.bench.context import _fresh_postgres, serve

_REASONS = {200: b"OK", 204: b"No Content", 500: b"Internal Server Error", 503: b"Service Unavailable"}


@dataclass(frozen=True)
class Received:
    """One request the receiver got, with the status it answered."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int
    at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return orjson.loads(self.body)


class Receiver:
    """A small asyncio HTTP/1.1 server (keep-alive) in a thread of its own, recording requests.

    ``behave(path, status=..., delay=...)`` makes requests to ``path`` answer ``status`` after
    ``delay`` seconds (``delay=None``: hang until the receiver is closed). With ``record=False``
    only counters are kept (benchmark).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, record: bool = True) -> None:
        self.host = host
        self.port = port
        self.record = record
        self.requests: list[Received] = []
        self.count = 0  # 2xx requests
        self.entities = 0  # data items of 2xx notifications
        self._behaviour: dict[str, tuple[int, float | None]] = {}
        self._condition = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def behave(self, path: str, status: int = 200, delay: float | None = 0.0) -> None:
        self._behaviour[path] = (status, delay)

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> Receiver:
        self._thread = threading.Thread(target=self._serve, name="notification-receiver", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the notification receiver did not start")
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._server = await asyncio.start_server(self._accept, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- HTTP -----------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError, ValueError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                raw = await reader.readline()
                if raw in (b"\r\n", b"\n", b""):
                    break
                name, _, value = raw.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            body = await reader.readexactly(length) if length else b""
            path = target.split("?", 1)[0]
            status, delay = self._behaviour.get(path, (200, 0.0))
            self._record(Received(method, path, headers, body, status))
            if delay is None:
                await asyncio.Event().wait()  # hang until closed
            elif delay:
                await asyncio.sleep(delay)
            reason = _REASONS.get(status, b"Status")
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\n\r\n" % (status, reason))
            await writer.drain()

    def _record(self, request: Received) -> None:
        ok = 200 <= request.status < 300
        items = 0
        if ok and request.body:
            with contextlib.suppress(Exception):
                body = orjson.loads(request.body)
                data = body.get("body", body).get("data", []) if isinstance(body, dict) else []
                items = len(data)
        with self._condition:
            if self.record:
                self.requests.append(request)
            if ok:
                self.count += 1
                self.entities += items
            self._condition.notify_all()

    # --- inspection -----------------------------------------------------------------------------

    def received(self, path: str | None = None, *, ok_only: bool = True) -> list[Received]:
        with self._condition:
            return [
                r for r in self.requests if (path is None or r.path == path) and (not ok_only or 200 <= r.status < 300)
            ]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._condition:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
        return True

    def wait_requests(
        self, path: str | None, count: int, timeout: float = 10.0, *, ok_only: bool = True
    ) -> list[Received]:
        """The first ``count`` requests to ``path`` (AssertionError if they do not come in time)."""
        arrived = self.wait_for(lambda: len(self.received(path, ok_only=ok_only)) >= count, timeout)
        got = self.received(path, ok_only=ok_only)
        assert arrived, f"expected {count} notification(s) on {path}, got {len(got)} in {timeout} s"
        return got


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------

BENCH_TYPE = "BenchSensor"


def _entity(index: int, value: int) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:{BENCH_TYPE}:{index:05d}",
        "type": BENCH_TYPE,
        "temperature": {"type": "Property", "value": value, "unitCode": "CEL"},
    }


def _batches(items: list[dict[str, Any]], size: int = 1000) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def bench_backend(
    database_url: str, subscriptions: int, rounds: int, console: Console, workers: int = 1, timeout: float = 600.0
) -> dict[str, Any]:
    """Run the benchmark against one fresh database; the figures as a dict."""
    with (
        Receiver(record=False) as receiver,
        serve(database_url, workers) as base,
        httpx.Client(base_url=f"{base}/ngsi-ld/v1", timeout=120.0) as client,
    ):
        entities = [_entity(i, 0) for i in range(subscriptions)]
        for batch in _batches(entities):
            response = client.post("/entityOperations/create", json=batch)
            if response.status_code not in (200, 201, 204):
                raise RuntimeError(f"creating entities: {response.status_code} {response.text[:300]}")
        for index in range(subscriptions):
            response = client.post(
                "/subscriptions",
                json={
                    "id": f"urn:ngsi-ld:Subscription:bench-{index:05d}",
                    "type": "Subscription",
                    "entities": [{"id": entities[index]["id"], "type": BENCH_TYPE}],
                    "notificationTrigger": ["attributeUpdated"],
                    "notification": {"endpoint": {"uri": f"{receiver.url}/notify", "accept": "application/json"}},
                },
            )
            if response.status_code != 201:
                raise RuntimeError(f"creating subscriptions: {response.status_code} {response.text[:300]}")
        console.print(f"  {subscriptions:,} entities and subscriptions created; {rounds} rounds of updates")
        expected = subscriptions * rounds
        started = time.perf_counter()
        for round_ in range(1, rounds + 1):
            for batch in _batches([_entity(i, round_) for i in range(subscriptions)]):
                response = client.post("/entityOperations/update", json=batch)
                if response.status_code != 204:
                    raise RuntimeError(f"updating: {response.status_code} {response.text[:300]}")
        writes_s = time.perf_counter() - started
        done = receiver.wait_for(lambda: receiver.entities >= expected, timeout)
        elapsed = time.perf_counter() - started
        if not done:
            raise RuntimeError(f"only {receiver.entities} of {expected} changes arrived in {timeout} s")
    return {
        "subscriptions": subscriptions,
        "entity_changes": expected,
        "http_notifications": receiver.count,
        "writes_s": round(writes_s, 2),
        "elapsed_s": round(elapsed, 2),
        "changes_per_s": round(expected / elapsed),
        "notifications_per_s": round(receiver.count / elapsed),
    }


def run_notification_bench(
    *,
    subscriptions: int = 1000,
    rounds: int = 20,
    backends: list[str] | None = None,
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/territoire_bench",
    console: Console | None = None,
    workers: int = 1,
) -> dict[str, dict[str, Any]]:
    """Notifications delivered per second to a local receiver, per backend (see module docstring)."""
    console = console or Console()
    results: dict[str, dict[str, Any]] = {}
    for backend in backends or ["sqlite", "postgres"]:
        with tempfile.TemporaryDirectory() as folder:
            if backend == "sqlite":
                url = f"sqlite:///{Path(folder) / 'bench.db'}"
            elif backend == "postgres":
                _fresh_postgres(postgres_url)
                url = postgres_url
            else:
                raise ValueError(f"unknown backend {backend}")
            console.print(f"[bold]{backend}[/bold]: {subscriptions:,} subscriptions, {rounds} updates each")
            results[backend] = bench_backend(url, subscriptions, rounds, console, workers)
    table = Table(title=f"territoire bench notifications — {subscriptions:,} active subscriptions")
    table.add_column("measure")
    for backend in results:
        table.add_column(backend, justify="right")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("entity changes delivered", lambda r: f"{r['entity_changes']:,}"),
        ("end to end [s]", lambda r: f"{r['elapsed_s']}"),
        ("changes delivered / s", lambda r: f"{r['changes_per_s']:,}"),
        ("HTTP notifications / s", lambda r: f"{r['notifications_per_s']:,}"),
    ]
    for label, cell in rows:
        table.add_row(label, *[cell(r) for r in results.values()])
    console.print(table)
    console.print_json(orjson.dumps(results).decode())
    return results
