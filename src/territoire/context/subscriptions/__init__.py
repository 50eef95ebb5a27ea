"""NGSI-LD subscriptions and notifications (ETSI GS CIM 009 v1.8, 5.2.12, 5.2.14, 5.8).

- :mod:`.model`: parsing and validation, the matching decision, payloads (pure);
- :mod:`.storage`: the subscription tables and the notification outbox (SQLite and PostgreSQL);
- :mod:`.hook`: the entity write hook that fills the outbox in the write's own transaction;
- :mod:`.delivery`: the asyncio delivery worker (HTTP, MQTT) and the periodic scheduler;
- :mod:`.api`: the routes.

:func:`install_subscriptions` wires them into the application. See ``docs/subscriptions.md``.
"""

from __future__ import annotations

from fastapi import FastAPI

from territoire.context.jsonld import ContextResolver
from territoire.context.store.sql import SqlStore
from territoire.context.subscriptions.delivery import DeliveryConfig, DeliveryWorker, PeriodicScheduler
from territoire.context.subscriptions.hook import OutboxHook, Registry
from territoire.context.subscriptions.storage import SubscriptionStorage

__all__ = ["DeliveryConfig", "SubscriptionService", "install_subscriptions"]

NGSI_LD_PREFIX = "/ngsi-ld/v1"


class SubscriptionService:
    """Everything subscriptions need for one application: storage, hook, worker, scheduler."""

    def __init__(self, store: SqlStore, resolver: ContextResolver, config: DeliveryConfig | None = None) -> None:
        self.store = store
        self.config = config or DeliveryConfig.from_env()
        self.storage = SubscriptionStorage(store)
        self.registry = Registry(self.storage, resolver)
        self.delivery = DeliveryWorker(self.storage, self.registry, self.config)
        self.periodic = PeriodicScheduler(store, self.storage, self.registry, self.delivery.wake)
        self.hook = OutboxHook(self.storage, self.registry, self.delivery.wake)

    def changed(self, tenant: str) -> None:
        """A subscription of ``tenant`` was created, updated or deleted (in this process)."""
        self.registry.invalidate(tenant)
        self.periodic.wake()

    def close(self) -> None:
        """Detach the write hook (the store may outlive the application, e.g. in tests)."""
        self.store.remove_write_hook(self.hook)


def install_subscriptions(app: FastAPI) -> SubscriptionService:
    """Routes under ``/ngsi-ld/v1``, the outbox write hook, the delivery worker and the periodic
    scheduler (``app.state.background``), and their clean-up (``app.state.on_close``)."""
    from territoire.context.subscriptions.api import router

    store = app.state.store
    if not isinstance(store, SqlStore):  # pragma: no cover - every store is an SqlStore today
        raise TypeError("subscriptions need an SQL store")
    service = SubscriptionService(store, app.state.resolver)
    app.state.subscriptions = service
    app.include_router(router, prefix=NGSI_LD_PREFIX, tags=["NGSI-LD subscriptions"])
    store.add_write_hook(service.hook)
    app.state.background.append(("subscriptions-delivery", service.delivery.run))
    app.state.background.append(("subscriptions-periodic", service.periodic.run))
    app.state.on_close.append(service.close)
    return service
