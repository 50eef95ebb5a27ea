"""NGSI-LD entity operations over HTTP, on both backends (the ``client`` fixture is parametrized)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from territoire.context.http import LINK_REL_CONTEXT

BASE = "/ngsi-ld/v1"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"


def container(n: int = 1, level: float = 0.5, **extra: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "id": f"urn:ngsi-ld:WasteContainer:{n}",
        "type": "WasteContainer",
        "fillingLevel": {"type": "Property", "value": level, "unitCode": "P1", "observedAt": "2026-11-22T08:00:00Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-0.554, 47.478]}},
    }
    entity.update(extra)
    return entity


def create(client: TestClient, entity: dict[str, Any], **headers: str) -> None:
    response = client.post(f"{BASE}/entities", json=entity, headers=headers)
    assert response.status_code == 201, response.text


def problem(response: Any, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == ERR + error, body
    assert body["status"] == status
    assert body["detail"]
    return body


def test_create_and_retrieve_normalized(client: TestClient) -> None:
    response = client.post(f"{BASE}/entities", json=container())
    assert response.status_code == 201
    assert response.headers["location"] == "/ngsi-ld/v1/entities/urn:ngsi-ld:WasteContainer:1"
    got = client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1")
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("application/json")
    assert LINK_REL_CONTEXT in got.headers["link"]
    body = got.json()
    assert body == {
        "id": "urn:ngsi-ld:WasteContainer:1",
        "type": "WasteContainer",
        "fillingLevel": {"type": "Property", "value": 0.5, "unitCode": "P1", "observedAt": "2026-11-22T08:00:00Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-0.554, 47.478]}},
    }


def test_create_twice_is_conflict(client: TestClient) -> None:
    create(client, container())
    problem(client.post(f"{BASE}/entities", json=container()), 409, "AlreadyExists")


def test_sys_attrs_and_representations(client: TestClient) -> None:
    create(client, container())
    url = f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1"
    with_sys = client.get(url, params={"options": "sysAttrs"}).json()
    assert with_sys["createdAt"].endswith("Z") and with_sys["modifiedAt"] >= with_sys["createdAt"]
    assert "createdAt" in with_sys["fillingLevel"]
    key_values = client.get(url, params={"options": "keyValues"}).json()
    assert key_values == {
        "id": "urn:ngsi-ld:WasteContainer:1",
        "type": "WasteContainer",
        "fillingLevel": 0.5,
        "location": {"type": "Point", "coordinates": [-0.554, 47.478]},
    }
    assert client.get(url, params={"format": "simplified"}).json() == key_values
    concise = client.get(url, params={"format": "concise"}).json()
    assert concise["fillingLevel"] == {"value": 0.5, "unitCode": "P1", "observedAt": "2026-11-22T08:00:00Z"}
    assert concise["location"] == {"type": "Point", "coordinates": [-0.554, 47.478]}
    problem(client.get(url, params={"options": "fancy"}), 400, "InvalidRequest")


def test_concise_input_round_trips(client: TestClient) -> None:
    concise = {
        "id": "urn:ngsi-ld:Streetlight:c1",
        "type": "Streetlight",
        "powerState": "on",
        "lampWattage": {"value": 70, "unitCode": "WTT"},
        "refStreetlightGroup": {"object": "urn:ngsi-ld:StreetlightGroup:g1"},
        "location": {"type": "Point", "coordinates": [-0.55, 47.47]},
        "name": {"languageMap": {"fr": "Lampadaire", "en": "Street light"}},
        "tags": {"valueList": ["a", "b"]},
        "config": {"json": {"profile": {"dusk": 20}}},
    }
    create(client, concise)
    got = client.get(f"{BASE}/entities/urn:ngsi-ld:Streetlight:c1").json()
    assert got["powerState"] == {"type": "Property", "value": "on"}
    assert got["refStreetlightGroup"] == {"type": "Relationship", "object": "urn:ngsi-ld:StreetlightGroup:g1"}
    assert got["location"]["type"] == "GeoProperty"
    assert got["name"] == {"type": "LanguageProperty", "languageMap": {"fr": "Lampadaire", "en": "Street light"}}
    assert got["tags"] == {"type": "ListProperty", "valueList": ["a", "b"]}
    assert got["config"] == {"type": "JsonProperty", "json": {"profile": {"dusk": 20}}}
    back = client.get(f"{BASE}/entities/urn:ngsi-ld:Streetlight:c1", params={"format": "concise"}).json()
    assert back["powerState"] == "on"
    french = client.get(f"{BASE}/entities/urn:ngsi-ld:Streetlight:c1", params={"lang": "fr"}).json()
    assert french["name"] == {"type": "Property", "value": "Lampadaire", "lang": "fr"}


def test_sub_properties_and_multi_attributes(client: TestClient) -> None:
    entity = container(
        temperature=[
            {
                "type": "Property",
                "value": 12.5,
                "datasetId": "urn:ngsi-ld:Dataset:sensorA",
                "accuracy": {"type": "Property", "value": 0.2},
            },
            {"type": "Property", "value": 13.1, "datasetId": "urn:ngsi-ld:Dataset:sensorB"},
        ]
    )
    create(client, entity)
    got = client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1").json()
    assert isinstance(got["temperature"], list) and len(got["temperature"]) == 2
    assert got["temperature"][0]["accuracy"] == {"type": "Property", "value": 0.2}
    duplicated = container(2, temperature=[{"type": "Property", "value": 1}, {"type": "Property", "value": 2}])
    problem(client.post(f"{BASE}/entities", json=duplicated), 400, "BadRequestData")
    # delete one dataset, then all
    url = f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1/attrs/temperature"
    assert client.delete(url, params={"datasetId": "urn:ngsi-ld:Dataset:sensorA"}).status_code == 204
    got = client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1").json()
    assert got["temperature"]["datasetId"] == "urn:ngsi-ld:Dataset:sensorB"
    problem(client.delete(url), 404, "ResourceNotFound")  # no default instance
    assert client.delete(url, params={"deleteAll": "true"}).status_code == 204
    assert "temperature" not in client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1").json()


def test_delete_entity(client: TestClient) -> None:
    create(client, container())
    assert client.delete(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1").status_code == 204
    problem(client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1"), 404, "ResourceNotFound")
    problem(client.delete(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1"), 404, "ResourceNotFound")


def test_replace_entity_keeps_created_at(client: TestClient) -> None:
    create(client, container())
    url = f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1"
    before = client.get(url, params={"options": "sysAttrs"}).json()
    response = client.put(url, json={"type": "WasteContainer", "status": {"type": "Property", "value": "ok"}})
    assert response.status_code == 204, response.text
    after = client.get(url, params={"options": "sysAttrs"}).json()
    assert "fillingLevel" not in after and after["status"]["value"] == "ok"
    assert after["createdAt"] == before["createdAt"]
    problem(client.put(f"{BASE}/entities/urn:ngsi-ld:X:none", json={"type": "X"}), 404, "ResourceNotFound")
    problem(client.put(url, json={"id": "urn:ngsi-ld:Other:1", "type": "X"}), 400, "BadRequestData")


def test_merge_entity(client: TestClient) -> None:
    create(client, container(status={"type": "Property", "value": "ok"}))
    url = f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1"
    patch = {
        "fillingLevel": {"value": 0.9},
        "status": "urn:ngsi-ld:null",
        "wasteType": {"type": "Property", "value": "glass"},
    }
    assert client.patch(url, json=patch).status_code == 204
    got = client.get(url).json()
    assert got["fillingLevel"]["value"] == 0.9
    assert got["fillingLevel"]["unitCode"] == "P1"  # merge keeps the members not given
    assert "status" not in got
    assert got["wasteType"]["value"] == "glass"


def test_append_update_and_partial_update(client: TestClient) -> None:
    create(client, container())
    attrs = f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1/attrs"
    response = client.post(attrs, json={"wasteType": {"type": "Property", "value": "paper"}})
    assert response.status_code == 204
    response = client.post(
        attrs, params={"options": "noOverwrite"}, json={"fillingLevel": {"type": "Property", "value": 0.1}}
    )
    assert response.status_code == 207
    # A 207 body has no @context: names are fully qualified (6.3.6).
    fill = "https://uri.etsi.org/ngsi-ld/default-context/fillingLevel"
    assert response.json()["notUpdated"][0]["attributeName"] == fill
    response = client.patch(attrs, json={"fillingLevel": {"type": "Property", "value": 0.7}, "nope": 1})
    assert response.status_code == 207
    body = response.json()
    assert body["updated"] == [fill]
    assert body["notUpdated"][0]["attributeName"] == "https://uri.etsi.org/ngsi-ld/default-context/nope"
    response = client.patch(f"{attrs}/fillingLevel", json={"value": 0.8, "observedAt": "2026-11-22T09:00:00Z"})
    assert response.status_code == 204, response.text
    got = client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1").json()
    # PATCH /attrs replaced the whole attribute (unitCode gone); the partial update kept the rest.
    assert got["fillingLevel"] == {"type": "Property", "value": 0.8, "observedAt": "2026-11-22T09:00:00Z"}
    problem(client.patch(f"{attrs}/unknown", json={"value": 1}), 404, "ResourceNotFound")
    response = client.put(f"{attrs}/fillingLevel", json={"type": "Property", "value": 0.3})
    assert response.status_code == 204
    got = client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1").json()
    assert got["fillingLevel"] == {"type": "Property", "value": 0.3}


def test_bad_input_never_500(client: TestClient) -> None:
    problem(
        client.post(f"{BASE}/entities", content=b"{not json", headers={"Content-Type": "application/json"}),
        400,
        "InvalidRequest",
    )
    response = client.post(f"{BASE}/entities", content=b"{}", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    problem(client.post(f"{BASE}/entities", json={"id": "not a uri", "type": "T"}), 400, "BadRequestData")
    problem(client.post(f"{BASE}/entities", json={"id": "urn:x:1"}), 400, "BadRequestData")
    problem(client.post(f"{BASE}/entities", json=[1, 2]), 400, "BadRequestData")
    problem(
        client.post(f"{BASE}/entities", json={"id": "urn:x:1", "type": "T", "a": {"type": "Property"}}),
        400,
        "BadRequestData",
    )
    bad_geo = {"id": "urn:x:2", "type": "T", "location": {"type": "GeoProperty", "value": {"type": "Point"}}}
    problem(client.post(f"{BASE}/entities", json=bad_geo), 400, "BadRequestData")
    bad_rel = {"id": "urn:x:3", "type": "T", "r": {"type": "Relationship", "object": "no uri"}}
    problem(client.post(f"{BASE}/entities", json=bad_rel), 400, "BadRequestData")
    problem(client.get(f"{BASE}/entities/notauri"), 400, "BadRequestData")
    response = client.get(f"{BASE}/entities", params={"type": "T", "limit": "abc"})
    problem(response, 400, "BadRequestData")
    response = client.get(f"{BASE}/entities/urn:x:1", headers={"Accept": "text/csv"})
    assert response.status_code == 406
    ld_with_link = client.post(
        f"{BASE}/entities",
        json={"id": "urn:x:4", "type": "T", "@context": CORE},
        headers={"Content-Type": "application/ld+json", "Link": f'<{CORE}>; rel="{LINK_REL_CONTEXT}"'},
    )
    problem(ld_with_link, 400, "BadRequestData")
    json_with_context = client.post(f"{BASE}/entities", json={"id": "urn:x:5", "type": "T", "@context": CORE})
    problem(json_with_context, 400, "BadRequestData")


def test_body_size_limit(client: TestClient) -> None:
    big = {"id": "urn:x:big", "type": "T", "blob": {"type": "Property", "value": "x" * (9 * 1024 * 1024)}}
    response = client.post(f"{BASE}/entities", json=big)
    assert response.status_code == 413


def test_ld_json_body_and_accept(client: TestClient) -> None:
    entity = container()
    entity["@context"] = [
        "https://smart-data-models.github.io/dataModel.WasteManagement/context.jsonld",
        CORE,
    ]
    response = client.post(f"{BASE}/entities", json=entity, headers={"Content-Type": "application/ld+json"})
    assert response.status_code == 201, response.text
    # Without the context the names come back expanded (default-context is not the SDM vocabulary).
    plain = client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1").json()
    assert "fillingLevel" not in plain
    link = f'<https://smart-data-models.github.io/dataModel.WasteManagement/context.jsonld>; rel="{LINK_REL_CONTEXT}"'
    with_link = client.get(
        f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1",
        headers={"Link": link, "Accept": "application/ld+json"},
    )
    assert with_link.headers["content-type"].startswith("application/ld+json")
    body = with_link.json()
    assert body["fillingLevel"]["value"] == 0.5 and body["type"] == "WasteContainer"
    assert "@context" in body


def test_geojson_representation(client: TestClient) -> None:
    create(client, container())
    response = client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1", headers={"Accept": "application/geo+json"})
    assert response.headers["content-type"].startswith("application/geo+json")
    feature = response.json()
    assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Point"
    assert feature["properties"]["fillingLevel"]["value"] == 0.5
    collection = client.get(
        f"{BASE}/entities", params={"type": "WasteContainer"}, headers={"Accept": "application/geo+json"}
    ).json()
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 1


def test_tenants_are_isolated(client: TestClient) -> None:
    create(client, container(), **{"NGSILD-Tenant": "angers"})
    assert client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1").status_code == 404
    got = client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1", headers={"NGSILD-Tenant": "angers"})
    assert got.status_code == 200
    problem(
        client.get(f"{BASE}/entities", params={"type": "WasteContainer"}, headers={"NGSILD-Tenant": "nowhere"}),
        404,
        "NonexistentTenant",
    )
    problem(client.get(f"{BASE}/types", headers={"NGSILD-Tenant": "bad tenant!"}), 400, "BadRequestData")
