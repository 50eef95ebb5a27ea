"""The write hook: match every entity write against the tenant's subscriptions, fill the outbox.

It runs inside the entity write's transaction (:meth:`SqlStore.add_write_hook`), so a
notification is queued if and only if the write commits (transactional outbox). Matching uses
an in-memory copy of the tenant's compiled subscriptions, indexed by entity id and type; each
write re-reads the tenant's subscription version (one primary-key lookup) so that changes made
by other processes are seen at once. A tenant without subscriptions costs that lookup only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from territoire.context.jsonld import ContextResolver
from territoire.context.model import Entity, now_iso
from territoire.context.store.sql import Cursor, WriteEvent
from territoire.context.subscriptions.model import Compiled, entity_changes
from territoire.context.subscriptions.storage import NewRow, SubscriptionStorage

log = logging.getLogger("territoire.subscriptions")


@dataclass
class TenantSubscriptions:
    """One tenant's compiled subscriptions at one version, indexed for candidate lookup."""

    version: int
    all: list[Compiled] = field(default_factory=list)
    by_id: dict[str, list[Compiled]] = field(default_factory=dict)
    by_type: dict[str, list[Compiled]] = field(default_factory=dict)
    wildcard: list[Compiled] = field(default_factory=list)
    periodic_only: bool = True

    def add(self, sub: Compiled) -> None:
        self.all.append(sub)
        if sub.periodic is None:
            self.periodic_only = False
        ids, types, wildcard = sub.index_keys()
        if wildcard:
            self.wildcard.append(sub)
        for entity_id in ids:
            self.by_id.setdefault(entity_id, []).append(sub)
        for type_iri in types:
            self.by_type.setdefault(type_iri, []).append(sub)

    def candidates(self, entity: Entity) -> Iterable[Compiled]:
        """The subscriptions that may select ``entity`` (each once), in a stable order."""
        found: dict[int, Compiled] = {}
        for sub in self.by_id.get(entity["id"], ()):
            found.setdefault(id(sub), sub)
        for type_iri in entity["type"]:
            for sub in self.by_type.get(type_iri, ()):
                found.setdefault(id(sub), sub)
        for sub in self.wildcard:
            found.setdefault(id(sub), sub)
        return found.values()


class Registry:
    """Compiled subscriptions per tenant, shared by the hook, the worker and the scheduler."""

    def __init__(self, storage: SubscriptionStorage, resolver: ContextResolver) -> None:
        self.storage = storage
        self.resolver = resolver
        self._cache: dict[str, TenantSubscriptions] = {}
        self._lock = threading.Lock()

    def compile(self, tenant: str, sub: dict[str, Any]) -> Compiled:
        return Compiled(tenant, sub, self.resolver.resolve(sub["jsonldContext"]))

    def for_tenant(self, cur: Cursor, tenant: str) -> TenantSubscriptions | None:
        """The tenant's subscriptions as of this transaction (None: it never had any)."""
        version = self.storage.read_version(cur, tenant)
        if version is None:
            return None
        cached = self._cache.get(tenant)
        if cached is not None and cached.version == version:
            return cached
        loaded = TenantSubscriptions(version)
        for sub in self.storage.load_tenant(cur, tenant):
            try:
                loaded.add(self.compile(tenant, sub))
            except Exception:  # a subscription that cannot be compiled must not block entity writes
                log.exception("Subscription %s of tenant %r cannot be compiled; it is skipped", sub.get("id"), tenant)
        with self._lock:
            current = self._cache.get(tenant)
            if current is None or current.version < version:
                self._cache[tenant] = loaded
        return loaded

    def lookup(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Compiled]:
        """Current compiled subscriptions for ``(tenant, id)`` keys (absent: deleted)."""
        wanted = set(keys)
        tenants = {tenant for tenant, _ in wanted}
        out: dict[tuple[str, str], Compiled] = {}
        with self.storage.store.reader() as cur:
            for tenant in tenants:
                subs = self.for_tenant(cur, tenant)
                if subs is None:
                    continue
                for sub in subs.all:
                    if (tenant, sub.id) in wanted:
                        out[(tenant, sub.id)] = sub
        return out

    def invalidate(self, tenant: str) -> None:
        with self._lock:
            self._cache.pop(tenant, None)


class OutboxHook:
    """The :data:`~territoire.context.store.sql.WriteHook` of subscriptions (see module docstring)."""

    def __init__(self, storage: SubscriptionStorage, registry: Registry, on_enqueue: Callable[[], None]) -> None:
        self.storage = storage
        self.registry = registry
        self.on_enqueue = on_enqueue

    def __call__(self, event: WriteEvent) -> None:
        subs = self.registry.for_tenant(event.cursor, event.tenant)
        if subs is None or not subs.all or subs.periodic_only:
            return
        now_epoch = time.time()
        now = now_iso()
        rows: list[NewRow] = []
        for change in entity_changes(event.previous, event.changes.upserts, event.changes.deletes):
            for sub in subs.candidates(change.current):
                try:
                    decision = sub.decide(change, now_epoch)
                    if decision is None:
                        continue
                    item = sub.render_item(change, decision, now)
                except Exception:  # never fail the entity write because of one subscription
                    log.exception("Subscription %s could not be evaluated on %s", sub.id, change.entity_id)
                    continue
                rows.append(NewRow(event.tenant, sub.id, change.entity_id, decision.reason, orjson.dumps(item)))
        if rows:
            self.storage.enqueue(event.cursor, rows, now_epoch)
            self.on_enqueue()
