"""The storage interface on both backends: bulk paths, migrations, atomicity, concurrency."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from territoire.context import geo, model, qlang, service
from territoire.context.errors import AlreadyExists, BadRequestData
from territoire.context.jsonld import ContextResolver
from territoire.context.store import EntityQuery, Store, TypeExpr
from territoire.context.store.base import ChangeSet

TERMS = ContextResolver(None, 2.0).resolve(None)


def parse(body: dict[str, Any]) -> model.Entity:
    return model.parse_entity(body, TERMS, model.now_iso())


def point_entity(n: int, kind: str = "Streetlight", lon: float = -0.55, lat: float = 47.47) -> model.Entity:
    return parse(
        {
            "id": f"urn:ngsi-ld:{kind}:{n:05d}",
            "type": kind,
            "level": {"type": "Property", "value": n},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon + n * 1e-4, lat]}},
        }
    )


def query(store: Store, **kwargs: Any) -> list[str]:
    kwargs.setdefault("limit", 1000)
    result = store.query("", EntityQuery(expand=TERMS.expand, **kwargs))
    return [e["id"] for e in result.entities]


def test_migrations_are_idempotent(store: Store) -> None:
    version = store.schema_version()
    assert version >= 1
    assert store.migrate() == []
    assert store.schema_version() == version


def test_bulk_create_then_bulk_replace_with_new_geometries_and_types(store: Store) -> None:
    entities = [point_entity(n) for n in range(300)]
    result = service.batch_upsert(store, "", entities)
    assert len(result.created) == 300 and not result.errors
    near = geo.parse_geo_query("near;maxDistance==50", "Point", "[-0.55,47.47]", None)
    location = TERMS.expand("location")
    # 1e-4 degree of longitude is 7.5 m at this latitude: 0..6 are within 50 m.
    assert query(store, geo=near, geoproperty=location) == [f"urn:ngsi-ld:Streetlight:{n:05d}" for n in range(7)]
    # Replace 200 of them: polygons instead of points, a second type, new values.
    replaced = []
    for n in range(200):
        lon = -0.60 + n * 1e-3
        square = [[[lon, 47.40], [lon + 5e-4, 47.40], [lon + 5e-4, 47.4005], [lon, 47.4005], [lon, 47.40]]]
        replaced.append(
            parse(
                {
                    "id": f"urn:ngsi-ld:Streetlight:{n:05d}",
                    "type": ["Streetlight", "Asset"],
                    "level": {"type": "Property", "value": -n},
                    "location": {"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": square}},
                }
            )
        )
    result = service.batch_upsert(store, "", replaced)
    assert result.created == [] and len(result.success) == 200
    assert query(store, geo=near, geoproperty=location) == []
    box = geo.parse_geo_query(
        "intersects",
        "Polygon",
        "[[[-0.601,47.39],[-0.5985,47.39],[-0.5985,47.41],[-0.601,47.41],[-0.601,47.39]]]",
        None,
    )
    assert query(store, geo=box, geoproperty=location) == [f"urn:ngsi-ld:Streetlight:{n:05d}" for n in range(2)]
    assets = query(store, types=TypeExpr(((TERMS.expand("Asset"),),)))
    assert len(assets) == 200
    both = TypeExpr(((TERMS.expand("Asset"), TERMS.expand("Streetlight")),))
    assert len(query(store, types=both)) == 200
    negative = qlang.parse_q("level<0")
    assert len(query(store, types=TypeExpr(((TERMS.expand("Streetlight"),),)), q=negative)) == 199
    stored = store.get_entity("", "urn:ngsi-ld:Streetlight:00007")
    assert stored is not None and stored["attrs"][TERMS.expand("level")][0]["value"] == -7


def test_failed_mutation_writes_nothing(store: Store) -> None:
    service.create_entity(store, "", point_entity(1))

    def half_then_fail(existing: dict[str, model.Entity]) -> ChangeSet:
        raise BadRequestData("refused")

    with pytest.raises(BadRequestData):
        store.modify("", ["urn:ngsi-ld:Streetlight:00002"], half_then_fail)
    with pytest.raises(AlreadyExists):
        service.create_entity(store, "", point_entity(1))
    assert store.get_entity("", "urn:ngsi-ld:Streetlight:00002") is None
    assert query(store, types=TypeExpr(((TERMS.expand("Streetlight"),),))) == ["urn:ngsi-ld:Streetlight:00001"]


def test_tenants_are_created_on_first_write_and_isolated(store: Store) -> None:
    assert not store.tenant_exists("angers")
    service.create_entity(store, "angers", point_entity(1))
    assert store.tenant_exists("angers") and "angers" in store.list_tenants()
    assert store.get_entity("", "urn:ngsi-ld:Streetlight:00001") is None
    assert store.get_entity("angers", "urn:ngsi-ld:Streetlight:00001") is not None


def test_concurrent_merges_lose_no_update(store: Store) -> None:
    """Read-modify-write under the store's lock: 4 threads x 10 appends all land."""
    service.create_entity(store, "", point_entity(1))
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for step in range(10):
                fragment = {"id": "urn:ngsi-ld:Streetlight:00001", "attrs": {}}
                name = f"w{worker}s{step}"
                fragment["attrs"] = model.parse_attributes({name: 1}, TERMS, model.now_iso())
                service.append_attributes(store, "", "urn:ngsi-ld:Streetlight:00001", fragment, no_overwrite=False)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    stored = store.get_entity("", "urn:ngsi-ld:Streetlight:00001")
    assert stored is not None
    assert sum(1 for iri in stored["attrs"] if "/w" in iri) == 40


def test_discovery_counts(store: Store) -> None:
    service.batch_upsert(store, "", [point_entity(n) for n in range(5)] + [point_entity(9, "ParkingSpot")])
    infos = {TERMS.compact(i.type_name): i for i in store.type_infos("")}
    assert infos["Streetlight"].entity_count == 5 and infos["ParkingSpot"].entity_count == 1
    attrs = {TERMS.compact(a.attribute): a for a in store.attribute_infos("")}
    assert attrs["location"].attribute_types == ("GeoProperty",) and attrs["location"].count == 6
