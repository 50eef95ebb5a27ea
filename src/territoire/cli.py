"""The ``territoire`` command."""

from __future__ import annotations

import typer
from rich.console import Console

from territoire.config import Settings
from territoire.context.temporal.cli import bench_temporal, retention_app

app = typer.Typer(help="Territoire: the territorial data platform a local authority runs itself.", no_args_is_help=True)
validation_app = typer.Typer(help="Smart Data Models validation required per tenant and entity type.")
bench_app = typer.Typer(help="Reproducible benchmarks; figures go to docs/benchmarks.md.")
app.add_typer(validation_app, name="validation")
app.add_typer(bench_app, name="bench")
app.add_typer(retention_app, name="retention")
bench_app.command("temporal")(bench_temporal)
console = Console()


def _settings(database_url: str | None) -> Settings:
    settings = Settings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    return settings


@app.command()
def init(
    database_url: str | None = typer.Option(None, "--database-url", help="Overrides TERRITOIRE_DATABASE_URL."),
) -> None:
    """Create the database schema or apply pending migrations."""
    from territoire.context.store import open_store

    settings = _settings(database_url)
    store = open_store(settings.database_url, migrate=False)
    try:
        applied = store.migrate()
        version = store.schema_version()
    finally:
        store.close()
    if applied:
        console.print(f"Applied migrations {applied}; schema is at version {version} ({store.backend}).")
    else:
        console.print(f"Schema is up to date at version {version} ({store.backend}).")


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default 127.0.0.1, TERRITOIRE_HOST)."),
    port: int | None = typer.Option(None, help="Port (default 8000, TERRITOIRE_PORT)."),
    database_url: str | None = typer.Option(None, "--database-url", help="Overrides TERRITOIRE_DATABASE_URL."),
    workers: int = typer.Option(1, min=1, help="Worker processes."),
) -> None:
    """Serve the API (NGSI-LD under /ngsi-ld/v1). Migrations are applied at start."""
    import os

    import uvicorn

    settings = _settings(database_url)
    if database_url:
        os.environ["TERRITOIRE_DATABASE_URL"] = database_url
    bind_host = host or settings.host
    bind_port = port or settings.port
    console.print(
        f"Territoire on http://{bind_host}:{bind_port}/ngsi-ld/v1 — database {settings.database_url} "
        f"(docs at http://{bind_host}:{bind_port}/docs)"
    )
    uvicorn.run(
        "territoire.app:create_app",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=workers,
        log_level="info",
    )


@validation_app.command("require")
def validation_require(
    entity_type: str = typer.Argument(..., help="Entity type name (a Smart Data Models type, e.g. WasteContainer)."),
    tenant: str = typer.Option("", help="Tenant (NGSILD-Tenant); default tenant if empty."),
    schema: str | None = typer.Option(None, help="Schema name if it differs from the type name."),
    database_url: str | None = typer.Option(None, "--database-url"),
) -> None:
    """Require entities of a type to validate against their Smart Data Models schema."""
    from territoire.context.jsonld import ContextResolver
    from territoire.context.store import open_store
    from territoire.context.validation import SchemaValidator

    settings = _settings(database_url)
    schema_name = schema or entity_type
    if not SchemaValidator().has_schema(schema_name):
        console.print(f"[red]No Smart Data Models schema is bundled for {schema_name}.[/red]")
        raise typer.Exit(2)
    store = open_store(settings.database_url)
    try:
        iri = ContextResolver(settings.context_dir, settings.context_fetch_timeout).resolve(None).expand(entity_type)
        store.set_validation(tenant, iri, schema_name)
    finally:
        store.close()
    console.print(f"Entities of type {entity_type} ({iri}) must now validate against {schema_name}.")


@validation_app.command("drop")
def validation_drop(
    entity_type: str,
    tenant: str = typer.Option(""),
    database_url: str | None = typer.Option(None, "--database-url"),
) -> None:
    """Stop validating a type."""
    from territoire.context.jsonld import ContextResolver
    from territoire.context.store import open_store

    settings = _settings(database_url)
    store = open_store(settings.database_url)
    try:
        iri = ContextResolver(settings.context_dir, settings.context_fetch_timeout).resolve(None).expand(entity_type)
        store.set_validation(tenant, iri, None)
    finally:
        store.close()
    console.print(f"Entities of type {entity_type} are no longer validated.")


@bench_app.command("context")
def bench_context(
    entities: int = typer.Option(100_000, help="Entities in the generated territory."),
    backend: list[str] = typer.Option(["sqlite", "postgres"], help="Backends to measure."),
    postgres_url: str = typer.Option("postgresql://postgres@127.0.0.1:5432/territoire_bench"),
    queries: int = typer.Option(200, help="Repetitions per timed query."),
    workers: int = typer.Option(1, min=1, help="Server worker processes (2 uses both cores of the reference machine)."),
) -> None:
    """Context broker benchmark: batch upsert, GET by id, type+q query, geo near, count."""
    from territoire.bench.context import run_context_bench

    run_context_bench(
        entities=entities,
        backends=backend,
        postgres_url=postgres_url,
        repetitions=queries,
        console=console,
        workers=workers,
    )


@bench_app.command("notifications")
def bench_notifications(
    subscriptions: int = typer.Option(1000, help="Active subscriptions, each watching one entity."),
    rounds: int = typer.Option(20, help="Updates of every entity."),
    backend: list[str] = typer.Option(["sqlite", "postgres"], help="Backends to measure."),
    postgres_url: str = typer.Option("postgresql://postgres@127.0.0.1:5432/territoire_bench"),
) -> None:
    """Notifications delivered per second to a local receiver, with 1,000 active subscriptions."""
    from territoire.bench.notifications import run_notification_bench

    run_notification_bench(
        subscriptions=subscriptions, rounds=rounds, backends=backend, postgres_url=postgres_url, console=console
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
