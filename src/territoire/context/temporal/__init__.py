"""Temporal NGSI-LD: the history of every attribute value, the temporal API and retention.

``install_temporal(app)`` wires it into an application: the router under ``/ngsi-ld/v1``, the
store's write hook that records history in each write's transaction, and the retention job.
Settings come from the environment (prefix ``TERRITOIRE_``), see :class:`TemporalSettings`.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from territoire.context.store.sql import SqlStore
from territoire.context.temporal.storage import TemporalStorage

__all__ = ["TemporalRuntime", "TemporalSettings", "TemporalStorage", "install_temporal", "storage_for"]

log = logging.getLogger("territoire.temporal")
NGSI_LD_PREFIX = "/ngsi-ld/v1"


class TemporalSettings(BaseSettings):
    """Temporal settings, read from ``TERRITOIRE_*`` environment variables or ``.env``."""

    model_config = SettingsConfigDict(env_prefix="TERRITOIRE_", env_file=".env", extra="ignore")

    temporal_max_instances: int = Field(
        default=1000,
        ge=1,
        description="Most instances of one attribute in one temporal response; beyond it the response is "
        "206 Partial Content with a Content-Range (clause 6.3.10).",
    )
    history_enabled: bool = Field(
        default=True, description="Record a temporal instance for every attribute value written."
    )
    history_delete_with_entity: bool = Field(
        default=True,
        description="Deleting an entity deletes its history; if false the history is kept, with one "
        "deletion instance (deletedAt) per attribute.",
    )
    retention_interval_s: float = Field(
        default=3600.0, gt=0, description="Seconds between two runs of the retention job [s]."
    )


@dataclass
class TemporalRuntime:
    """What the temporal routes use: the store's history and the settings (``app.state.temporal``)."""

    storage: TemporalStorage
    settings: TemporalSettings


_STORAGES: weakref.WeakKeyDictionary[SqlStore, TemporalStorage] = weakref.WeakKeyDictionary()


def storage_for(store: SqlStore, settings: TemporalSettings | None = None) -> TemporalStorage:
    """The history of ``store``, created once per store with its write hook registered.

    Several applications may share one store (tests do): the hook is registered once and
    follows the settings of the last installation.
    """
    settings = settings or TemporalSettings()
    storage = _STORAGES.get(store)
    if storage is None:
        storage = TemporalStorage(store)
        _STORAGES[store] = storage
        store.add_write_hook(storage.on_write)
    storage.delete_with_entity = settings.history_delete_with_entity
    storage.enabled = settings.history_enabled
    return storage


def install_temporal(app: FastAPI) -> None:
    """Add the temporal API, the history write hook and the retention job to ``app``.

    Uses ``app.state.store`` (a SQL store), appends ``("temporal-retention", job)`` to
    ``app.state.background`` and sets ``app.state.temporal`` (a :class:`TemporalRuntime`).
    """
    from territoire.context.temporal.api import router
    from territoire.context.temporal.retention import retention_job

    store = app.state.store
    if not isinstance(store, SqlStore):
        log.warning("The temporal API needs a SQL store; %s has none", type(store).__name__)
        return
    settings = TemporalSettings()
    storage = storage_for(store, settings)
    app.state.temporal = TemporalRuntime(storage=storage, settings=settings)
    app.include_router(router, prefix=NGSI_LD_PREFIX, tags=["NGSI-LD temporal"])
    app.state.background.append(("temporal-retention", retention_job(storage, settings.retention_interval_s)))
