"""The NGSI-LD entity operations, as functions over a :class:`Store`.

The API, the CLI, ingestion and the smart services all call these, so the semantics of each
operation (ETSI GS CIM 009 v1.8, clause 5.6 and 5.9) live in one place. Inputs are already in
the internal form (names expanded); every write is one atomic :meth:`Store.modify`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from territoire.context.errors import AlreadyExists, NgsiLdError, ResourceNotFound
from territoire.context.model import (
    NULL_MARK,
    SCOPE,
    Entity,
    Instance,
    find_instance,
    merge_instance,
    now_iso,
    put_instance,
)
from territoire.context.store.base import ChangeSet, Store

#: Called on every entity about to be written (e.g. Smart Data Models validation); raises to refuse.
EntityCheck = Callable[[Entity], None]


def no_check(entity: Entity) -> None:
    """The default :data:`EntityCheck`: accept everything."""


@dataclass
class UpdateResult:
    """Outcome of an attribute-level update (5.2.18): attribute IRIs updated or not, with reasons."""

    updated: list[str] = field(default_factory=list)
    not_updated: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class BatchResult:
    """Outcome of a batch operation (5.2.17): ids that succeeded, and per-entity errors."""

    success: list[str] = field(default_factory=list)
    errors: list[tuple[str, NgsiLdError]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


def _missing(entity_id: str) -> ResourceNotFound:
    return ResourceNotFound(f"Entity {entity_id} does not exist", id=entity_id)


def _require(existing: dict[str, Entity], entity_id: str) -> Entity:
    entity = existing.get(entity_id)
    if entity is None:
        raise _missing(entity_id)
    return entity


# --- single entity ---------------------------------------------------------------------------------


def create_entity(store: Store, tenant: str, entity: Entity, check: EntityCheck = no_check) -> None:
    """Create an entity; AlreadyExists (409) if the id is taken."""

    def mutation(existing: dict[str, Entity]) -> ChangeSet:
        if entity["id"] in existing:
            raise AlreadyExists(f"Entity {entity['id']} already exists", id=entity["id"])
        check(entity)
        return ChangeSet(upserts=[entity])

    store.modify(tenant, [entity["id"]], mutation)


def delete_entity(store: Store, tenant: str, entity_id: str) -> None:
    def mutation(existing: dict[str, Entity]) -> ChangeSet:
        _require(existing, entity_id)
        return ChangeSet(deletes=[entity_id])

    store.modify(tenant, [entity_id], mutation)


def _replaced(old: Entity, new: Entity, now: str) -> Entity:
    """``new`` with the identity and createdAt of ``old`` (replace keeps the entity's history)."""
    result = dict(new)
    result["id"] = old["id"]
    result["createdAt"] = old["createdAt"]
    result["modifiedAt"] = now
    if "type" not in result:
        result["type"] = old["type"]
    attrs: dict[str, list[Instance]] = {}
    for iri, instances in new["attrs"].items():
        olds = old["attrs"].get(iri, [])
        attrs[iri] = []
        for instance in instances:
            index = find_instance(olds, instance.get("datasetId"))
            stamped = dict(instance)
            stamped["createdAt"] = olds[index]["createdAt"] if index is not None else now
            stamped["modifiedAt"] = now
            attrs[iri].append(stamped)
    result["attrs"] = attrs
    return result


def replace_entity(store: Store, tenant: str, entity_id: str, new: Entity, check: EntityCheck = no_check) -> None:
    """PUT /entities/{id} (5.6.18): all attributes replaced, createdAt kept."""

    def mutation(existing: dict[str, Entity]) -> ChangeSet:
        old = _require(existing, entity_id)
        entity = _replaced(old, new, now_iso())
        check(entity)
        return ChangeSet(upserts=[entity])

    store.modify(tenant, [entity_id], mutation)


def _delete_instance(entity: Entity, iri: str, dataset_id: str | None) -> bool:
    """Remove the instance of ``iri`` with ``dataset_id`` (None: the default one); False if absent."""
    instances = entity["attrs"].get(iri, [])
    index = find_instance(instances, dataset_id)
    if index is None:
        return False
    instances.pop(index)
    if not instances:
        del entity["attrs"][iri]
    return True


def _merge_into(entity: Entity, fragment: Entity, now: str) -> None:
    """Merge-patch ``fragment`` into ``entity`` in place (5.6.17).

    An NGSI-LD Null instance deletes the instance with the same datasetId (the default instance if
    it has none), 4.5.x / 5.6.17.4.
    """
    for type_iri in fragment.get("type", []):
        if type_iri not in entity["type"]:
            entity["type"].append(type_iri)
    if "scope" in fragment:
        entity["scope"] = fragment["scope"]
    for iri, instances in fragment["attrs"].items():
        for instance in instances:
            if instance.get(NULL_MARK):
                _delete_instance(entity, iri, instance.get("datasetId"))
                continue
            olds = entity["attrs"].setdefault(iri, [])
            index = find_instance(olds, instance.get("datasetId"))
            if index is None:
                put_instance(entity, iri, instance, now)
            else:
                olds[index] = merge_instance(olds[index], instance, now)
    entity["modifiedAt"] = now


def merge_entity(store: Store, tenant: str, entity_id: str, fragment: Entity, check: EntityCheck = no_check) -> None:
    """PATCH /entities/{id} (5.6.17)."""

    def mutation(existing: dict[str, Entity]) -> ChangeSet:
        entity = _require(existing, entity_id)
        _merge_into(entity, fragment, now_iso())
        check(entity)
        return ChangeSet(upserts=[entity])

    store.modify(tenant, [entity_id], mutation)


def _append_into(entity: Entity, fragment: Entity, no_overwrite: bool, now: str) -> UpdateResult:
    result = UpdateResult()
    for type_iri in fragment.get("type", []):
        if type_iri not in entity["type"]:
            entity["type"].append(type_iri)
    if "scope" in fragment:
        # 5.6.3.4: with overwrite the fragment's scope replaces the entity's; otherwise it is added.
        if no_overwrite:
            entity["scope"] = list(dict.fromkeys([*entity.get("scope", []), *fragment["scope"]]))
        else:
            entity["scope"] = list(fragment["scope"])
    for iri, instances in fragment["attrs"].items():
        for instance in instances:
            olds = entity["attrs"].get(iri, [])
            if no_overwrite and find_instance(olds, instance.get("datasetId")) is not None:
                result.not_updated.append((iri, "Attribute exists and options=noOverwrite was given"))
                continue
            put_instance(entity, iri, instance, now)
            if iri not in result.updated:
                result.updated.append(iri)
    entity["modifiedAt"] = now
    return result


def append_attributes(
    store: Store, tenant: str, entity_id: str, fragment: Entity, *, no_overwrite: bool, check: EntityCheck = no_check
) -> UpdateResult:
    """POST /entities/{id}/attrs (5.6.3)."""
    outcome = UpdateResult()

    def mutation(existing: dict[str, Entity]) -> ChangeSet:
        nonlocal outcome
        entity = _require(existing, entity_id)
        outcome = _append_into(entity, fragment, no_overwrite, now_iso())
        check(entity)
        return ChangeSet(upserts=[entity])

    store.modify(tenant, [entity_id], mutation)
    return outcome


def _update_into(entity: Entity, fragment: Entity, now: str) -> tuple[UpdateResult, bool]:
    """Update existing attributes only (5.6.2): absent ones are reported, not created.

    Returns the outcome and whether the entity changed. Types in the fragment are added; a scope
    replaces the entity's scope only if it has one (else it is reported as not updated); an NGSI-LD
    Null deletes the matching instance.
    """
    result = UpdateResult()
    changed = False
    for type_iri in fragment.get("type", []):
        if type_iri not in entity["type"]:
            entity["type"].append(type_iri)
            changed = True
    if "scope" in fragment:
        if entity.get("scope"):
            entity["scope"] = list(fragment["scope"])
            result.updated.append(SCOPE)
            changed = True
        else:
            result.not_updated.append((SCOPE, "The entity has no scope to update"))
    for iri, instances in fragment["attrs"].items():
        for instance in instances:
            olds = entity["attrs"].get(iri, [])
            if find_instance(olds, instance.get("datasetId")) is None:
                which = "" if "datasetId" not in instance else f" with datasetId {instance['datasetId']}"
                result.not_updated.append((iri, f"Attribute{which} does not exist"))
                continue
            if instance.get(NULL_MARK):
                _delete_instance(entity, iri, instance.get("datasetId"))
            else:
                put_instance(entity, iri, instance, now)
            changed = True
            if iri not in result.updated:
                result.updated.append(iri)
    if changed:
        entity["modifiedAt"] = now
    return result, changed


def update_attributes(
    store: Store, tenant: str, entity_id: str, fragment: Entity, check: EntityCheck = no_check
) -> UpdateResult:
    """PATCH /entities/{id}/attrs (5.6.2)."""
    outcome = UpdateResult()

    def mutation(existing: dict[str, Entity]) -> ChangeSet:
        nonlocal outcome
        entity = _require(existing, entity_id)
        outcome, changed = _update_into(entity, fragment, now_iso())
        if not changed:
            return ChangeSet()
        check(entity)
        return ChangeSet(upserts=[entity])

    store.modify(tenant, [entity_id], mutation)
    return outcome


def _attr_instances(entity: Entity, iri: str, name: str) -> list[Instance]:
    instances: list[Instance] | None = entity["attrs"].get(iri)
    if not instances:
        raise ResourceNotFound(f"Entity {entity['id']} has no attribute {name}")
    return instances


def partial_attribute_update(
    store: Store, tenant: str, entity_id: str, iri: str, name: str, patch: Instance, check: EntityCheck = no_check
) -> None:
    """PATCH /entities/{id}/attrs/{attrId} (5.6.4): merge the given members into one instance."""

    def mutation(existing: dict[str, Entity]) -> ChangeSet:
        entity = _require(existing, entity_id)
        instances = _attr_instances(entity, iri, name)
        index = find_instance(instances, patch.get("datasetId"))
        if index is None:
            raise ResourceNotFound(f"Attribute {name} has no instance with datasetId {patch.get('datasetId')}")
        now = now_iso()
        instances[index] = merge_instance(instances[index], patch, now)
        entity["modifiedAt"] = now
        check(entity)
        return ChangeSet(upserts=[entity])

    store.modify(tenant, [entity_id], mutation)


def replace_attribute(
    store: Store,
    tenant: str,
    entity_id: str,
    iri: str,
    name: str,
    instances: list[Instance],
    check: EntityCheck = no_check,
) -> None:
    """PUT /entities/{id}/attrs/{attrId} (5.6.19): replace the instance(s) with the same datasetId."""

    def mutation(existing: dict[str, Entity]) -> ChangeSet:
        entity = _require(existing, entity_id)
        olds = _attr_instances(entity, iri, name)
        now = now_iso()
        for instance in instances:
            if find_instance(olds, instance.get("datasetId")) is None:
                raise ResourceNotFound(f"Attribute {name} has no instance with datasetId {instance.get('datasetId')}")
            put_instance(entity, iri, instance, now)
        entity["modifiedAt"] = now
        check(entity)
        return ChangeSet(upserts=[entity])

    store.modify(tenant, [entity_id], mutation)


def delete_attribute(
    store: Store,
    tenant: str,
    entity_id: str,
    iri: str,
    name: str,
    *,
    dataset_id: str | None = None,
    delete_all: bool = False,
    check: EntityCheck = no_check,
) -> None:
    """DELETE /entities/{id}/attrs/{attrId} (5.6.5), with datasetId or deleteAll."""

    def mutation(existing: dict[str, Entity]) -> ChangeSet:
        entity = _require(existing, entity_id)
        if iri == SCOPE:
            # 5.6.5.4: deleting the scope "attribute" removes the entity's scope.
            if not entity.get("scope"):
                raise ResourceNotFound(f"Entity {entity_id} has no scope")
            del entity["scope"]
            entity["modifiedAt"] = now_iso()
            check(entity)
            return ChangeSet(upserts=[entity])
        instances = _attr_instances(entity, iri, name)
        if delete_all:
            del entity["attrs"][iri]
        else:
            index = find_instance(instances, dataset_id)
            if index is None:
                which = "a default instance" if dataset_id is None else f"an instance with datasetId {dataset_id}"
                raise ResourceNotFound(f"Attribute {name} has no {which}")
            instances.pop(index)
            if not instances:
                del entity["attrs"][iri]
        entity["modifiedAt"] = now_iso()
        check(entity)
        return ChangeSet(upserts=[entity])

    store.modify(tenant, [entity_id], mutation)


# --- batch operations ------------------------------------------------------------------------------


class PartlyApplied(AlreadyExists):
    """A batch step that wrote part of its entity (noOverwrite kept some attributes): the entity is
    written and also reported among the errors, as 5.6.9 asks."""

    def __init__(self, detail: str, entity: Entity) -> None:
        super().__init__(detail, id=entity["id"])
        self.entity = entity


def _batch(
    store: Store,
    tenant: str,
    ids: Sequence[str],
    step: Callable[[Entity | None, str, int], tuple[Entity | None, bool, bool]],
) -> BatchResult:
    """Run ``step`` per entity inside one transaction; collect successes and per-entity errors.

    ``step(existing, id, position)`` returns (entity to write or None, delete?, created?). A
    step that raises NgsiLdError fails that entity only; the others are written.
    """
    result = BatchResult()

    def mutation(existing: dict[str, Entity]) -> ChangeSet:
        changes = ChangeSet()
        written: dict[str, Entity] = {}
        succeeded: set[str] = set()
        for position, entity_id in enumerate(ids):
            current = written.get(entity_id, existing.get(entity_id))
            try:
                entity, delete, created = step(current, entity_id, position)
            except PartlyApplied as partly:
                written[entity_id] = partly.entity
                result.errors.append((entity_id, partly))
                continue
            except NgsiLdError as err:
                result.errors.append((entity_id, err))
                continue
            if delete:
                changes.deletes.append(entity_id)
                written.pop(entity_id, None)
                existing.pop(entity_id, None)
            elif entity is not None:
                written[entity_id] = entity
                if created:
                    result.created.append(entity_id)
            if entity_id not in succeeded:
                succeeded.add(entity_id)
                result.success.append(entity_id)
        changes.upserts = list(written.values())
        changes.deletes = [d for d in changes.deletes if d not in written]
        return changes

    store.modify(tenant, list(ids), mutation)
    return result


def batch_create(store: Store, tenant: str, entities: Sequence[Entity], check: EntityCheck = no_check) -> BatchResult:
    """POST /entityOperations/create (5.6.7)."""

    def step(current: Entity | None, entity_id: str, position: int) -> tuple[Entity | None, bool, bool]:
        if current is not None:
            raise AlreadyExists(f"Entity {entity_id} already exists", id=entity_id)
        entity = entities[position]
        check(entity)
        return entity, False, True

    return _batch(store, tenant, [e["id"] for e in entities], step)


def batch_upsert(
    store: Store,
    tenant: str,
    entities: Sequence[Entity],
    mode: Literal["replace", "update"] = "replace",
    check: EntityCheck = no_check,
) -> BatchResult:
    """POST /entityOperations/upsert (5.6.8): create, or replace / update existing entities."""
    now = now_iso()

    def step(current: Entity | None, entity_id: str, position: int) -> tuple[Entity | None, bool, bool]:
        entity = entities[position]
        if current is None:
            check(entity)
            return entity, False, True
        if mode == "replace":
            merged = _replaced(current, entity, now)
            merged["type"] = entity["type"]
        else:
            merged = current
            _append_into(merged, entity, False, now)
        check(merged)
        return merged, False, False

    return _batch(store, tenant, [e["id"] for e in entities], step)


def batch_update(
    store: Store, tenant: str, entities: Sequence[Entity], *, no_overwrite: bool, check: EntityCheck = no_check
) -> BatchResult:
    """POST /entityOperations/update (5.6.9): append attributes to existing entities."""
    now = now_iso()

    def step(current: Entity | None, entity_id: str, position: int) -> tuple[Entity | None, bool, bool]:
        if current is None:
            raise _missing(entity_id)
        outcome = _append_into(current, entities[position], no_overwrite, now)
        if outcome.not_updated:
            names = ", ".join(iri for iri, _ in outcome.not_updated)
            if not outcome.updated:
                raise AlreadyExists(f"No attribute updated (noOverwrite): {names}", id=entity_id)
            check(current)
            raise PartlyApplied(f"Attributes kept (noOverwrite): {names}", current)
        check(current)
        return current, False, False

    return _batch(store, tenant, [e["id"] for e in entities], step)


def batch_merge(store: Store, tenant: str, entities: Sequence[Entity], check: EntityCheck = no_check) -> BatchResult:
    """POST /entityOperations/merge (5.6.20)."""
    now = now_iso()

    def step(current: Entity | None, entity_id: str, position: int) -> tuple[Entity | None, bool, bool]:
        if current is None:
            raise _missing(entity_id)
        _merge_into(current, entities[position], now)
        check(current)
        return current, False, False

    return _batch(store, tenant, [e["id"] for e in entities], step)


def batch_delete(store: Store, tenant: str, ids: Sequence[str]) -> BatchResult:
    """POST /entityOperations/delete (5.6.10)."""

    def step(current: Entity | None, entity_id: str, position: int) -> tuple[Entity | None, bool, bool]:
        if current is None:
            raise _missing(entity_id)
        return None, True, False

    return _batch(store, tenant, ids, step)
