"""Query, batch operations and discovery over HTTP, on both backends."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

BASE = "/ngsi-ld/v1"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"

# Points around Angers: the town hall, ~330 m east, ~2.2 km north.
HALL = (-0.5540, 47.4710)
EAST = (-0.5496, 47.4710)
NORTH = (-0.5540, 47.4910)


def entity(kind: str, n: int, point: tuple[float, float], **attrs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"urn:ngsi-ld:{kind}:{n}",
        "type": kind,
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": list(point)}},
    }
    for name, value in attrs.items():
        body[name] = value if isinstance(value, dict) or name == "scope" else {"type": "Property", "value": value}
    return body


def seed(client: TestClient) -> None:
    entities = [
        entity(
            "WasteContainer",
            1,
            HALL,
            fillingLevel=0.2,
            wasteType="glass",
            isle={"type": "Relationship", "object": "urn:ngsi-ld:WasteContainerIsle:A"},
        ),
        entity(
            "WasteContainer",
            2,
            EAST,
            fillingLevel=0.85,
            wasteType="paper",
            isle={"type": "Relationship", "object": "urn:ngsi-ld:WasteContainerIsle:B"},
        ),
        entity(
            "WasteContainer",
            3,
            NORTH,
            fillingLevel=0.95,
            wasteType="glass",
            address={"type": "Property", "value": {"addressLocality": "Angers", "postalCode": "49000"}},
        ),
        entity("Streetlight", 1, HALL, powerState="on", dimmingLevel=80),
        entity("Streetlight", 2, NORTH, powerState="off", dimmingLevel=0, scope="/Angers/Nord"),
    ]
    response = client.post(f"{BASE}/entityOperations/create", json=entities)
    assert response.status_code == 201, response.text
    assert sorted(response.json()) == sorted(e["id"] for e in entities)


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(e["id"] for e in response.json())


def test_query_by_type_id_and_pattern(client: TestClient) -> None:
    seed(client)
    assert len(ids(client.get(f"{BASE}/entities", params={"type": "WasteContainer"}))) == 3
    assert len(ids(client.get(f"{BASE}/entities", params={"type": "WasteContainer,Streetlight"}))) == 5
    assert len(ids(client.get(f"{BASE}/entities", params={"type": "WasteContainer|Streetlight"}))) == 5
    assert ids(client.get(f"{BASE}/entities", params={"type": "WasteContainer;Streetlight"})) == []
    by_id = {"type": "Streetlight,WasteContainer", "id": "urn:ngsi-ld:Streetlight:2,urn:ngsi-ld:WasteContainer:1"}
    assert ids(client.get(f"{BASE}/entities", params=by_id)) == [
        "urn:ngsi-ld:Streetlight:2",
        "urn:ngsi-ld:WasteContainer:1",
    ]
    by_pattern = {"type": "Streetlight,WasteContainer", "idPattern": "^urn:ngsi-ld:Streetlight:.*"}
    assert ids(client.get(f"{BASE}/entities", params=by_pattern)) == [
        "urn:ngsi-ld:Streetlight:1",
        "urn:ngsi-ld:Streetlight:2",
    ]
    # 5.7.2.4: id, idPattern or nothing alone select no entity type: refused.
    for params in ({}, {"id": "urn:ngsi-ld:Streetlight:2"}, {"idPattern": ".*"}):
        response = client.get(f"{BASE}/entities", params=params)
        assert response.status_code == 400 and response.json()["type"] == ERR + "BadRequestData"
    assert ids(client.get(f"{BASE}/entities", params={"id": "urn:ngsi-ld:Streetlight:2", "local": "true"})) == [
        "urn:ngsi-ld:Streetlight:2"
    ]
    response = client.get(f"{BASE}/entities", params={"type": "Streetlight", "idPattern": "(["})
    assert response.status_code == 400


def test_q_language(client: TestClient) -> None:
    seed(client)

    def q(text: str, kind: str = "WasteContainer") -> list[str]:
        return [i.rsplit(":", 1)[1] for i in ids(client.get(f"{BASE}/entities", params={"type": kind, "q": text}))]

    assert q("fillingLevel>0.5") == ["2", "3"]
    assert q('fillingLevel>=0.85;wasteType=="glass"') == ["3"]
    assert q('fillingLevel<0.5|wasteType=="paper"') == ["1", "2"]
    assert q('(fillingLevel<0.5|fillingLevel>0.9);wasteType=="glass"') == ["1", "3"]
    assert q("fillingLevel==0.1..0.9") == ["1", "2"]
    assert q('wasteType=="glass","paper"') == ["1", "2", "3"]
    assert q('wasteType!="glass"') == ["2"]
    assert q('wasteType~="^gl"') == ["1", "3"]
    assert q("isle==urn:ngsi-ld:WasteContainerIsle:B") == ["2"]
    assert q('address[addressLocality]=="Angers"') == ["3"]
    assert q("address") == ["3"]
    assert q("fillingLevel.unitCode") == []
    assert q('powerState=="on";dimmingLevel>50', "Streetlight") == ["1"]
    response = client.get(f"{BASE}/entities", params={"type": "WasteContainer", "q": "fillingLevel>>1"})
    assert response.status_code == 400 and response.json()["type"] == ERR + "BadRequestData"


def test_scope_q(client: TestClient) -> None:
    seed(client)
    assert ids(client.get(f"{BASE}/entities", params={"type": "Streetlight", "scopeQ": "/Angers/#"})) == [
        "urn:ngsi-ld:Streetlight:2"
    ]


def test_attrs_pick_omit(client: TestClient) -> None:
    seed(client)
    body = client.get(f"{BASE}/entities", params={"type": "WasteContainer", "attrs": "address"}).json()
    assert [e["id"] for e in body] == ["urn:ngsi-ld:WasteContainer:3"]
    assert set(body[0]) == {"id", "type", "address"}
    picked = client.get(
        f"{BASE}/entities", params={"type": "Streetlight", "pick": "id,powerState", "options": "keyValues"}
    ).json()
    assert picked == [
        {"id": "urn:ngsi-ld:Streetlight:1", "powerState": "on"},
        {"id": "urn:ngsi-ld:Streetlight:2", "powerState": "off"},
    ]
    omitted = client.get(f"{BASE}/entities", params={"type": "Streetlight", "omit": "location,dimmingLevel"}).json()
    assert set(omitted[0]) == {"id", "type", "powerState"}


def test_geo_queries(client: TestClient) -> None:
    seed(client)

    def geo(georel: str, geometry: str, coordinates: str, kind: str = "WasteContainer") -> list[str]:
        params = {"type": kind, "georel": georel, "geometry": geometry, "coordinates": coordinates}
        return [i.rsplit(":", 1)[1] for i in ids(client.get(f"{BASE}/entities", params=params))]

    assert geo("near;maxDistance==100", "Point", "[-0.5540,47.4710]") == ["1"]
    assert geo("near;maxDistance==500", "Point", "[-0.5540,47.4710]") == ["1", "2"]
    assert geo("near;minDistance==500", "Point", "[-0.5540,47.4710]") == ["3"]
    box = "[[[-0.56,47.46],[-0.55,47.46],[-0.55,47.48],[-0.56,47.48],[-0.56,47.46]]]"
    assert geo("within", "Polygon", box) == ["1"]
    assert geo("intersects", "Polygon", box) == ["1"]
    assert geo("disjoint", "Polygon", box) == ["2", "3"]
    assert geo("equals", "Point", "[-0.5540,47.4910]") == ["3"]
    line = "[[-0.5540,47.4700],[-0.5540,47.4720]]"
    assert geo("intersects", "LineString", line) == ["1"]
    multi = "[[[[-0.56,47.46],[-0.55,47.46],[-0.55,47.48],[-0.56,47.48],[-0.56,47.46]]]]"
    assert geo("within", "MultiPolygon", multi) == ["1"]
    response = client.get(
        f"{BASE}/entities",
        params={"type": "WasteContainer", "georel": "near;maxDistance==100", "geometry": "Point", "coordinates": "[1]"},
    )
    assert response.status_code == 400
    response = client.get(
        f"{BASE}/entities",
        params={
            "type": "WasteContainer",
            "georel": "within",
            "geometry": "Polygon",
            "coordinates": "[[[0,0],[1,0],[1,1],[0,0.5]]]",
        },
    )
    assert response.status_code == 400


def test_pagination_and_count(client: TestClient) -> None:
    batch = [entity("ParkingSpot", n, HALL, status="free") for n in range(25)]
    assert client.post(f"{BASE}/entityOperations/create", json=batch).status_code == 201
    first = client.get(f"{BASE}/entities", params={"type": "ParkingSpot", "limit": 10, "count": "true"})
    assert first.headers["NGSILD-Results-Count"] == "25"
    assert len(first.json()) == 10
    assert 'rel="next"' in first.headers["link"]
    last = client.get(f"{BASE}/entities", params={"type": "ParkingSpot", "limit": 10, "offset": 20})
    assert len(last.json()) == 5 and 'rel="prev"' in last.headers["link"] and 'rel="next"' not in last.headers["link"]
    only_count = client.get(f"{BASE}/entities", params={"type": "ParkingSpot", "limit": 0, "count": "true"})
    assert only_count.json() == [] and only_count.headers["NGSILD-Results-Count"] == "25"
    assert client.get(f"{BASE}/entities", params={"type": "ParkingSpot", "limit": 0}).status_code == 400
    too_many = client.get(f"{BASE}/entities", params={"type": "ParkingSpot", "limit": 5000})
    assert too_many.status_code == 403 and too_many.json()["type"] == ERR + "TooManyResults"
    all_ids = set()
    for offset in range(0, 30, 10):
        page = client.get(f"{BASE}/entities", params={"type": "ParkingSpot", "limit": 10, "offset": offset})
        all_ids.update(e["id"] for e in page.json())
    assert len(all_ids) == 25


def test_post_query(client: TestClient) -> None:
    seed(client)
    body = {
        "type": "Query",
        "entities": [{"type": "WasteContainer"}],
        "q": "fillingLevel>0.5",
        "geoQ": {"georel": "near;maxDistance==500", "geometry": "Point", "coordinates": [-0.5540, 47.4710]},
    }
    response = client.post(f"{BASE}/entityOperations/query", json=body)
    assert ids(response) == ["urn:ngsi-ld:WasteContainer:2"]
    bad = client.post(f"{BASE}/entityOperations/query", json={"entities": []})
    assert bad.status_code == 400


def test_batch_operations(client: TestClient) -> None:
    seed(client)
    mixed = [
        entity("WasteContainer", 1, HALL, fillingLevel=0.3),
        {"id": "bad id", "type": "WasteContainer"},
    ]
    response = client.post(f"{BASE}/entityOperations/create", json=mixed)
    assert response.status_code == 207
    body = response.json()
    assert body["success"] == []
    assert {e["entityId"] for e in body["errors"]} == {"urn:ngsi-ld:WasteContainer:1", "bad id"}
    assert {e["error"]["type"] for e in body["errors"]} == {ERR + "AlreadyExists", ERR + "BadRequestData"}

    upsert = [entity("WasteContainer", 1, HALL, fillingLevel=0.33), entity("WasteContainer", 9, HALL, fillingLevel=0)]
    response = client.post(f"{BASE}/entityOperations/upsert", json=upsert)
    assert response.status_code == 201 and response.json() == ["urn:ngsi-ld:WasteContainer:9"]
    got = client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1").json()
    assert got["fillingLevel"]["value"] == 0.33 and "wasteType" not in got  # replace by default
    response = client.post(
        f"{BASE}/entityOperations/upsert",
        params={"options": "update"},
        json=[{"id": "urn:ngsi-ld:WasteContainer:1", "type": "WasteContainer", "wasteType": "glass"}],
    )
    assert response.status_code == 204
    got = client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1").json()
    assert got["fillingLevel"]["value"] == 0.33 and got["wasteType"]["value"] == "glass"

    response = client.post(
        f"{BASE}/entityOperations/update",
        params={"options": "noOverwrite"},
        json=[
            {"id": "urn:ngsi-ld:WasteContainer:1", "wasteType": "paper", "colour": "green"},
            {"id": "urn:ngsi-ld:WasteContainer:404", "colour": "red"},
        ],
    )
    assert response.status_code == 207
    body = response.json()
    # 5.6.9: the entity whose wasteType was kept (noOverwrite) is reported, though colour was added.
    assert body["success"] == []
    errors = {e["entityId"]: e["error"]["type"] for e in body["errors"]}
    assert errors == {
        "urn:ngsi-ld:WasteContainer:1": ERR + "AlreadyExists",
        "urn:ngsi-ld:WasteContainer:404": ERR + "ResourceNotFound",
    }
    got = client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1").json()
    assert got["wasteType"]["value"] == "glass" and got["colour"]["value"] == "green"

    response = client.post(
        f"{BASE}/entityOperations/merge",
        json=[{"id": "urn:ngsi-ld:WasteContainer:1", "colour": "urn:ngsi-ld:null", "fillingLevel": {"value": 0.4}}],
    )
    assert response.status_code == 204, response.text
    got = client.get(f"{BASE}/entities/urn:ngsi-ld:WasteContainer:1").json()
    assert "colour" not in got and got["fillingLevel"]["value"] == 0.4

    response = client.post(
        f"{BASE}/entityOperations/delete", json=["urn:ngsi-ld:WasteContainer:1", "urn:ngsi-ld:WasteContainer:404"]
    )
    assert response.status_code == 207
    assert response.json()["success"] == ["urn:ngsi-ld:WasteContainer:1"]
    assert client.post(f"{BASE}/entityOperations/delete", json=["urn:ngsi-ld:WasteContainer:9"]).status_code == 204
    assert client.post(f"{BASE}/entityOperations/create", json={"not": "a list"}).status_code == 400


def test_discovery(client: TestClient) -> None:
    seed(client)
    types = client.get(f"{BASE}/types").json()
    assert types["type"] == "EntityTypeList" and sorted(types["typeList"]) == ["Streetlight", "WasteContainer"]
    details = client.get(f"{BASE}/types", params={"details": "true"}).json()
    street = next(d for d in details if d["typeName"] == "Streetlight")
    assert set(street["attributeNames"]) == {"location", "powerState", "dimmingLevel"}
    info = client.get(f"{BASE}/types/WasteContainer").json()
    assert info["entityCount"] == 3 and info["type"] == "EntityTypeInfo"
    kinds = {a["attributeName"]: a["attributeTypes"] for a in info["attributeDetails"]}
    assert kinds["isle"] == ["Relationship"] and kinds["location"] == ["GeoProperty"]
    attributes = client.get(f"{BASE}/attributes").json()
    assert "fillingLevel" in attributes["attributeList"]
    attr = client.get(f"{BASE}/attributes/location").json()
    assert sorted(attr["typeNames"]) == ["Streetlight", "WasteContainer"] and attr["attributeCount"] == 5
    assert client.get(f"{BASE}/types/Nothing").status_code == 404
    assert client.get(f"{BASE}/attributes/nothing").status_code == 404
