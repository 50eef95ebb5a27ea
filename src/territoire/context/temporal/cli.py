"""Command line of the history: ``territoire retention ...`` and ``territoire bench temporal``.

The main ``territoire`` command mounts :data:`retention_app` as ``retention`` and registers
:func:`bench_temporal` as ``bench temporal``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.table import Table

from territoire.config import Settings
from territoire.context.errors import NgsiLdError
from territoire.context.store.sql import SqlStore
from territoire.context.temporal import TemporalSettings, TemporalStorage, storage_for
from territoire.context.temporal.model import parse_time
from territoire.context.temporal.retention import (
    ANY_TYPE,
    RetentionPolicy,
    drop_policy,
    list_policies,
    maintain,
    set_policy,
)

retention_app = typer.Typer(
    help="History retention per tenant and entity type: raw values N days, then hourly means.",
    no_args_is_help=True,
)
console = Console()


def _settings(database_url: str | None) -> Settings:
    settings = Settings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    return settings


@contextmanager
def _storage(database_url: str | None) -> Iterator[tuple[TemporalStorage, Settings]]:
    from territoire.context.store import open_store

    settings = _settings(database_url)
    store = open_store(settings.database_url)
    try:
        if not isinstance(store, SqlStore):  # pragma: no cover - every store is a SQL store
            raise typer.BadParameter("the history needs a SQL store")
        yield storage_for(store, TemporalSettings()), settings
    finally:
        store.close()


def _type_iri(entity_type: str, settings: Settings) -> str:
    """``*``, a full IRI, or a type name expanded with the core @context."""
    if entity_type == ANY_TYPE:
        return ANY_TYPE
    from territoire.context.jsonld import ContextResolver

    resolver = ContextResolver(settings.context_dir, settings.context_fetch_timeout)
    return resolver.resolve(None).expand(entity_type)


@retention_app.command("set")
def retention_set(
    entity_type: str = typer.Argument(..., help="Entity type name (or IRI), or * for the tenant's other types."),
    raw_days: int = typer.Option(..., "--raw-days", min=1, help="Days raw instances are kept."),
    aggregate_days: int | None = typer.Option(
        None, "--aggregate-days", help="Days hourly means of numeric values are kept (longer than --raw-days)."
    ),
    tenant: str = typer.Option("", help="Tenant (NGSILD-Tenant); default tenant if empty."),
    database_url: str | None = typer.Option(None, "--database-url", help="Overrides TERRITOIRE_DATABASE_URL."),
) -> None:
    """Set the retention of one entity type of a tenant."""
    with _storage(database_url) as (storage, settings):
        iri = _type_iri(entity_type, settings)
        try:
            set_policy(storage, RetentionPolicy(tenant, iri, raw_days, aggregate_days))
        except NgsiLdError as err:
            console.print(f"[red]{err.detail}[/red]")
            raise typer.Exit(2) from None
    then = f", then hourly means until {aggregate_days} days" if aggregate_days else ""
    console.print(f"History of {entity_type} ({iri}) in tenant {tenant or '(default)'}: raw {raw_days} days{then}.")


@retention_app.command("drop")
def retention_drop(
    entity_type: str,
    tenant: str = typer.Option(""),
    database_url: str | None = typer.Option(None, "--database-url"),
) -> None:
    """Remove the retention of one entity type (its history is then kept forever)."""
    with _storage(database_url) as (storage, settings):
        removed = drop_policy(storage, tenant, _type_iri(entity_type, settings))
    console.print("Policy removed." if removed else "There was no such policy.")


@retention_app.command("list")
def retention_list(
    tenant: str | None = typer.Option(None, help="Only this tenant."),
    database_url: str | None = typer.Option(None, "--database-url"),
) -> None:
    """List the retention policies."""
    with _storage(database_url) as (storage, _):
        policies = list_policies(storage, tenant)
    table = Table(title="History retention")
    for column in ("tenant", "entity type", "raw [days]", "hourly means [days]"):
        table.add_column(column, overflow="fold")
    for policy in policies:
        table.add_row(
            policy.tenant or "(default)",
            policy.entity_type,
            str(policy.raw_days),
            str(policy.aggregate_days) if policy.aggregate_days is not None else "-",
        )
    console.print(table)


@retention_app.command("apply")
def retention_apply(
    now: str | None = typer.Option(None, help="Apply as of this ISO 8601 time instead of now."),
    database_url: str | None = typer.Option(None, "--database-url"),
) -> None:
    """Apply every policy now (what the server's background job does periodically)."""
    with _storage(database_url) as (storage, _):
        try:
            now_us = parse_time(now, "--now") if now is not None else None
        except NgsiLdError as err:
            console.print(f"[red]{err.detail}[/red]")
            raise typer.Exit(2) from None
        results = maintain(storage, now_us)
    for result in results:
        policy = result.policy
        console.print(
            f"{policy.tenant or '(default)'} / {policy.entity_type}: {result.removed:,} raw instances removed, "
            f"{result.hourly:,} hourly means written"
        )
    if not results:
        console.print("No retention policy.")


def bench_temporal(
    sensors: int = typer.Option(1000, help="Sensor entities."),
    readings_postgres: int = typer.Option(10_000, help="Readings per sensor on PostgreSQL."),
    readings_sqlite: int = typer.Option(2_000, help="Readings per sensor on SQLite."),
    span_days: float = typer.Option(30.0, help="Days the readings span [days]."),
    batch: int = typer.Option(20_000, help="Instances per bulk append."),
    backend: list[str] = typer.Option(["sqlite", "postgres"], help="Backends to measure."),
    postgres_url: str = typer.Option("postgresql://postgres@127.0.0.1:5432/territoire_bench_temporal"),
    queries: int = typer.Option(200, help="Repetitions per timed query."),
) -> None:
    """History benchmark: bulk append instances/s, hourly average over 30 days p95, lastN=100 p95."""
    from territoire.bench.temporal import run_temporal_bench

    run_temporal_bench(
        sensors=sensors,
        readings_postgres=readings_postgres,
        readings_sqlite=readings_sqlite,
        span_days=span_days,
        batch=batch,
        backends=backend,
        postgres_url=postgres_url,
        repetitions=queries,
        console=console,
    )
