"""``territoire bench context``: the context broker on a generated 100,000-entity territory.

A real ``territoire serve`` process (uvicorn, one worker) is started per backend on a fresh
database; a client in this process drives it over HTTP on the loopback, so the figures include
HTTP, JSON and @context handling — what an NGSI-LD client sees. Measured: batch upsert
entities/s (batches of 1,000), GET by id, type + q query returning 100 rows, geo ``near`` query,
and count (type + q, count=true, limit=0); p50 / p95 over ``repetitions`` requests each.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from territoire.bench.stats import summary_ms

#: Angers, the territory's centre [deg]; entities spread over about 12 km x 12 km.
CENTRE = (-0.5540, 47.4784)
SPREAD_DEG = (0.08, 0.055)
BATCH = 1000
SEED = 20261122


def generate_entities(count: int, seed: int = SEED) -> Iterator[dict[str, Any]]:
    """Streetlights, waste containers and parking spots in thirds, with plausible attributes."""
    rng = random.Random(seed)
    kinds = ("Streetlight", "WasteContainer", "ParkingSpot")
    for index in range(count):
        kind = kinds[index % 3]
        lon = CENTRE[0] + rng.uniform(-SPREAD_DEG[0], SPREAD_DEG[0])
        lat = CENTRE[1] + rng.uniform(-SPREAD_DEG[1], SPREAD_DEG[1])
        entity: dict[str, Any] = {
            "id": f"urn:ngsi-ld:{kind}:bench-{index:07d}",
            "type": kind,
            "location": {
                "type": "GeoProperty",
                "value": {"type": "Point", "coordinates": [round(lon, 6), round(lat, 6)]},
            },
        }
        if kind == "Streetlight":
            entity["powerState"] = {"type": "Property", "value": rng.choice(["on", "off"])}
            entity["dimmingLevel"] = {"type": "Property", "value": rng.randint(0, 100), "unitCode": "P1"}
            entity["status"] = {"type": "Property", "value": rng.choices(["ok", "defectiveLamp"], [0.97, 0.03])[0]}
        elif kind == "WasteContainer":
            entity["fillingLevel"] = {
                "type": "Property",
                "value": round(rng.random(), 3),
                "observedAt": "2026-11-22T08:00:00Z",
            }
            entity["wasteType"] = {"type": "Property", "value": rng.choice(["glass", "paper", "household"])}
            entity["refWasteContainerIsle"] = {
                "type": "Relationship",
                "object": f"urn:ngsi-ld:WasteContainerIsle:bench-{index // 12:06d}",
            }
        else:
            entity["status"] = {"type": "Property", "value": rng.choice(["free", "occupied"])}
            entity["category"] = {"type": "Property", "value": ["onStreet", rng.choice(["forDisabled", "public"])]}
        yield entity


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(database_url: str, workers: int = 1) -> Iterator[str]:
    """Run ``territoire serve`` on a free port until the block ends; yield its base URL."""
    port = _free_port()
    env = {**os.environ, "TERRITOIRE_DATABASE_URL": database_url, "TERRITOIRE_MAX_LIMIT": "1000"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "territoire.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"territoire serve did not start on {database_url}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _fresh_postgres(url: str) -> None:
    base, _, dbname = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')


def _timed(client: httpx.Client, url: str, params: Any, repetitions: int, expect: int = 200) -> list[float]:
    samples = []
    for index in range(repetitions):
        chosen = params(index) if callable(params) else params
        start = time.perf_counter()
        response = client.get(url, params=chosen)
        samples.append(time.perf_counter() - start)
        if response.status_code != expect:
            raise RuntimeError(f"GET {url} {chosen} -> {response.status_code}: {response.text[:300]}")
    return samples


def bench_backend(base: str, entities: int, repetitions: int, console: Console, senders: int = 1) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with httpx.Client(base_url=f"{base}/ngsi-ld/v1", timeout=120.0) as client:
        batches: list[tuple[int, bytes]] = []
        batch: list[dict[str, Any]] = []
        for entity in generate_entities(entities):
            batch.append(entity)
            if len(batch) == BATCH:
                batches.append((len(batch), orjson.dumps(batch)))
                batch = []
        if batch:
            batches.append((len(batch), orjson.dumps(batch)))
        # One sender per server worker, as concurrent ingest clients would be.
        with Progress(console=console, transient=True) as progress, ThreadPoolExecutor(senders) as pool:
            task = progress.add_task("batch upsert", total=entities)
            start = time.perf_counter()
            for done in pool.map(lambda item: _upsert(client, *item), batches):
                progress.advance(task, done)
            upsert_seconds = time.perf_counter() - start
        results["upsert_entities_per_s"] = round(entities / upsert_seconds)

        rng = random.Random(SEED + 1)
        ids = [
            f"urn:ngsi-ld:WasteContainer:bench-{rng.randrange(entities // 3) * 3 + 1:07d}" for _ in range(repetitions)
        ]
        _timed(client, f"/entities/{ids[0]}", None, 20)  # warm-up
        results["get_by_id"] = summary_ms(
            [s for i in range(repetitions) for s in _timed(client, f"/entities/{ids[i]}", None, 1)]
        )
        q_params = {"type": "WasteContainer", "q": 'fillingLevel>0.5;wasteType=="glass"', "limit": "100"}
        _timed(client, "/entities", q_params, 10)
        results["type_q_100_rows"] = summary_ms(_timed(client, "/entities", q_params, repetitions))

        def near(index: int) -> dict[str, str]:
            lon = CENTRE[0] + rng.uniform(-SPREAD_DEG[0], SPREAD_DEG[0]) * 0.9
            lat = CENTRE[1] + rng.uniform(-SPREAD_DEG[1], SPREAD_DEG[1]) * 0.9
            return {
                "type": "WasteContainer,Streetlight,ParkingSpot",
                "georel": "near;maxDistance==200",
                "geometry": "Point",
                "coordinates": f"[{lon:.6f},{lat:.6f}]",
                "limit": "100",
            }

        _timed(client, "/entities", near, 10)
        results["geo_near_200m"] = summary_ms(_timed(client, "/entities", near, repetitions))
        sizes = [len(client.get("/entities", params=near(i)).json()) for i in range(20)]
        results["geo_near_mean_rows"] = round(sum(sizes) / len(sizes), 1)
        count_params = {"type": "WasteContainer", "q": "fillingLevel>0.5", "count": "true", "limit": "0"}
        response = client.get("/entities", params=count_params)
        results["count_value"] = int(response.headers["NGSILD-Results-Count"])
        results["count"] = summary_ms(_timed(client, "/entities", count_params, max(10, repetitions // 5)))
        returned = client.get("/entities", params=q_params).json()
        results["type_q_rows_returned"] = len(returned)
    return results


def _upsert(client: httpx.Client, size: int, body: bytes) -> int:
    """POST one batch of ``size`` entities; return ``size``."""
    response = client.post("/entityOperations/upsert", content=body, headers={"Content-Type": "application/json"})
    if response.status_code not in (201, 204):
        raise RuntimeError(f"upsert -> {response.status_code}: {response.text[:500]}")
    return size


def run_context_bench(
    *,
    entities: int,
    backends: list[str],
    postgres_url: str,
    repetitions: int,
    console: Console,
    workers: int = 1,
) -> dict[str, dict[str, Any]]:
    all_results: dict[str, dict[str, Any]] = {}
    for backend in backends:
        with tempfile.TemporaryDirectory() as folder:
            if backend == "sqlite":
                url = f"sqlite:///{Path(folder) / 'bench.db'}"
            elif backend == "postgres":
                _fresh_postgres(postgres_url)
                url = postgres_url
            else:
                raise ValueError(f"unknown backend {backend}")
            console.print(
                f"[bold]{backend}[/bold]: {entities:,} entities, {repetitions} requests per query, "
                f"{workers} server worker(s)"
            )
            with serve(url, workers) as base:
                all_results[backend] = bench_backend(base, entities, repetitions, console, workers)
    table = Table(title=f"territoire bench context — {entities:,} entities, {workers} worker(s)")
    table.add_column("measure")
    for backend in all_results:
        table.add_column(backend, justify="right")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("batch upsert [entities/s]", lambda r: f"{r['upsert_entities_per_s']:,}"),
        ("GET by id p50 / p95 [ms]", lambda r: f"{r['get_by_id']['p50_ms']} / {r['get_by_id']['p95_ms']}"),
        (
            "type + q, 100 rows p50 / p95 [ms]",
            lambda r: f"{r['type_q_100_rows']['p50_ms']} / {r['type_q_100_rows']['p95_ms']}",
        ),
        (
            "geo near 200 m p50 / p95 [ms]",
            lambda r: (
                f"{r['geo_near_200m']['p50_ms']} / {r['geo_near_200m']['p95_ms']} ({r['geo_near_mean_rows']} rows)"
            ),
        ),
        ("count p50 / p95 [ms]", lambda r: f"{r['count']['p50_ms']} / {r['count']['p95_ms']} (= {r['count_value']:,})"),
    ]
    for label, cell in rows:
        table.add_row(label, *[cell(r) for r in all_results.values()])
    console.print(table)
    console.print_json(orjson.dumps(all_results).decode())
    return all_results
