"""``territoire bench temporal``: history at volume, on each backend.

1. ``sensors`` entities are created through the store (their first values go through the
   write hook, as any write).
2. ``readings`` instances per sensor are appended through the bulk path
   (:meth:`TemporalStorage.append`, the path of ``POST /temporal/entities`` imports and of
   ingestion), in batches of ``batch`` instances, time-major (every sensor reports each period),
   readings spread over ``span_days`` days. Reported: instances/s of the append calls
   (encoding + SQL; generating the readings is not timed).
3. A real ``territoire serve`` process answers, over HTTP: the hourly average over the 30 days of
   one attribute of one (random) entity (``aggrMethods=avg&aggrPeriodDuration=PT1H``) and
   ``lastN=100``; p50 / p95 over ``repetitions`` requests.

Defaults follow issue 3: 1,000 sensors x 10,000 readings on PostgreSQL, x 2,000 on SQLite.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from territoire.bench.context import _fresh_postgres, _timed, serve
from territoire.bench.stats import summary_ms
from territoire.context import service
from territoire.context.model import Entity, now_iso
from territoire.context.store import open_store
from territoire.context.store.sql import SqlStore
from territoire.context.temporal import TemporalSettings, storage_for

SEED = 20261122
ENTITY_TYPE = "https://smartdatamodels.org/dataModel.Environment/AirQualityObserved"
ATTRIBUTE = "https://smartdatamodels.org/dataModel.Environment/temperature"
#: Start of the generated history (crosses a month boundary: two PostgreSQL partitions).
START = datetime(2026, 10, 15, tzinfo=UTC)


def sensor_id(index: int) -> str:
    return f"urn:ngsi-ld:AirQualityObserved:bench-{index:05d}"


def _observed(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def create_sensors(store: SqlStore, sensors: int) -> None:
    """The sensor entities, created 1,000 per batch through the store (and its write hook)."""
    now = now_iso()
    for first in range(0, sensors, 1000):
        entities: list[Entity] = []
        for index in range(first, min(first + 1000, sensors)):
            instance = {"type": "Property", "value": 12.5, "unitCode": "CEL", "createdAt": now, "modifiedAt": now}
            entities.append(
                {
                    "id": sensor_id(index),
                    "type": [ENTITY_TYPE],
                    "createdAt": now,
                    "modifiedAt": now,
                    "attrs": {ATTRIBUTE: [instance]},
                }
            )
        service.batch_upsert(store, "", entities)


def reading_batches(
    sensors: int, readings: int, span_days: float, batch: int
) -> Iterator[list[tuple[str, str, dict[str, Any], list[str]]]]:
    """Batches of (entity id, attribute, instance, types), time-major, about ``batch`` long."""
    rng = random.Random(SEED)
    step = timedelta(days=span_days) / readings
    ids = [sensor_id(i) for i in range(sensors)]
    types = [ENTITY_TYPE]
    per_batch = max(1, batch // sensors)
    for first in range(0, readings, per_batch):
        items = []
        for k in range(first, min(first + per_batch, readings)):
            observed = _observed(START + step * k)
            base = 12.0 + 6.0 * ((k % 96) / 96.0)
            for entity_id in ids:
                value = round(base + rng.uniform(-1.5, 1.5), 2)
                items.append(
                    (
                        entity_id,
                        ATTRIBUTE,
                        {"type": "Property", "value": value, "observedAt": observed, "unitCode": "CEL"},
                        types,
                    )
                )
        yield items


def load(
    store: SqlStore, sensors: int, readings: int, span_days: float, batch: int, console: Console
) -> dict[str, Any]:
    """Append the readings through the bulk path; returns the instances written and seconds spent."""
    storage = storage_for(store, TemporalSettings())
    total = 0
    seconds = 0.0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("bulk append", total=sensors * readings)
        for items in reading_batches(sensors, readings, span_days, batch):
            start = time.perf_counter()
            total += storage.append("", items)
            seconds += time.perf_counter() - start
            progress.advance(task, len(items))
    with store.reader() as cur:
        if store.backend == "postgres":
            cur.execute("VACUUM ANALYZE temporal_instances")
        else:
            cur.execute("ANALYZE")
    return {"instances": total, "append_seconds": round(seconds, 2), "instances_per_s": round(total / seconds)}


def _database_size(store: SqlStore, url: str) -> int:
    if store.backend == "postgres":
        with store.reader() as cur:
            cur.execute("SELECT pg_database_size(current_database())")
            return int(cur.fetchone()[0])
    path = Path(url[len("sqlite:///") :])
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def query_bench(base: str, sensors: int, span_days: float, repetitions: int) -> dict[str, Any]:
    """p50 / p95 of the hourly average over the whole span and of lastN=100, over HTTP."""
    rng = random.Random(SEED + 1)
    end = START + timedelta(days=span_days)
    results: dict[str, Any] = {}
    with httpx.Client(base_url=f"{base}/ngsi-ld/v1", timeout=120.0) as client:

        def aggregated(index: int) -> dict[str, str]:
            return {
                "attrs": ATTRIBUTE,
                "options": "aggregatedValues",
                "aggrMethods": "avg",
                "aggrPeriodDuration": "PT1H",
                "timerel": "between",
                "timeAt": _observed(START),
                "endTimeAt": _observed(end),
            }

        ids = [sensor_id(rng.randrange(sensors)) for _ in range(repetitions)]
        url = "/temporal/entities/{}"
        sample = client.get(url.format(ids[0]), params=aggregated(0))
        if sample.status_code != 200:
            raise RuntimeError(f"aggregated query -> {sample.status_code}: {sample.text[:300]}")
        periods = sample.json()[ATTRIBUTE]["avg"]
        results["aggregated_periods"] = len(periods)
        for i in range(10):
            _timed(client, url.format(ids[i % len(ids)]), aggregated(i), 1)
        results["aggregated_hourly_avg"] = summary_ms(
            [s for i in range(repetitions) for s in _timed(client, url.format(ids[i]), aggregated(i), 1)]
        )
        last_n = {"attrs": ATTRIBUTE, "lastN": "100"}
        sample = client.get(url.format(ids[0]), params=last_n)
        results["last_n_returned"] = len(sample.json()[ATTRIBUTE])
        for i in range(10):
            _timed(client, url.format(ids[i % len(ids)]), last_n, 1)
        results["last_n_100"] = summary_ms(
            [s for i in range(repetitions) for s in _timed(client, url.format(ids[i]), last_n, 1)]
        )
    return results


def run_temporal_bench(
    *,
    sensors: int = 1000,
    readings_postgres: int = 10_000,
    readings_sqlite: int = 2_000,
    span_days: float = 30.0,
    batch: int = 20_000,
    backends: list[str] | None = None,
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/territoire_bench_temporal",
    repetitions: int = 200,
    console: Console | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the benchmark on each backend, print a table, return the figures."""
    console = console or Console()
    all_results: dict[str, dict[str, Any]] = {}
    for backend in backends or ["sqlite", "postgres"]:
        readings = readings_postgres if backend == "postgres" else readings_sqlite
        with tempfile.TemporaryDirectory() as folder:
            if backend == "sqlite":
                url = f"sqlite:///{Path(folder) / 'bench.db'}"
            elif backend == "postgres":
                _fresh_postgres(postgres_url)
                url = postgres_url
            else:
                raise ValueError(f"unknown backend {backend}")
            console.print(
                f"[bold]{backend}[/bold]: {sensors:,} sensors x {readings:,} readings over {span_days:g} days, "
                f"batches of {batch:,}"
            )
            store = open_store(url)
            assert isinstance(store, SqlStore)
            try:
                create_sensors(store, sensors)
                results = load(store, sensors, readings, span_days, batch, console)
                results["database_bytes"] = _database_size(store, url)
            finally:
                store.close()
            with serve(url) as base:
                results.update(query_bench(base, sensors, span_days, repetitions))
            all_results[backend] = results
    table = Table(title=f"territoire bench temporal — {sensors:,} sensors, hourly avg over {span_days:g} days")
    table.add_column("measure")
    for backend in all_results:
        table.add_column(backend, justify="right")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("instances appended", lambda r: f"{r['instances']:,}"),
        ("bulk append [instances/s]", lambda r: f"{r['instances_per_s']:,}"),
        (
            "hourly avg, one attribute p50 / p95 [ms]",
            lambda r: (
                f"{r['aggregated_hourly_avg']['p50_ms']} / {r['aggregated_hourly_avg']['p95_ms']} "
                f"({r['aggregated_periods']} periods)"
            ),
        ),
        ("lastN=100 p50 / p95 [ms]", lambda r: f"{r['last_n_100']['p50_ms']} / {r['last_n_100']['p95_ms']}"),
        ("database size [MB]", lambda r: f"{r['database_bytes'] / 1e6:,.0f}"),
    ]
    for label, cell in rows:
        table.add_row(label, *[cell(r) for r in all_results.values()])
    console.print(table)
    console.print_json(orjson.dumps(all_results).decode())
    return all_results
