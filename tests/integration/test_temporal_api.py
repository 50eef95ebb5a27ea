"""The temporal API and the history, over HTTP, on both backends (the ``client`` fixture).

Covers: history written by every write path, deletions, the temporal create/upsert and bulk
import, the three representations, aggregation values computed by hand, pagination (206 and
Content-Range), queries, instance edits, retention with real rows, and bad input (400 naming
the parameter, never a 500).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import pytest
from fastapi.testclient import TestClient

from territoire.context.store import Store
from territoire.context.store.sql import SqlStore
from territoire.context.temporal import storage_for
from territoire.context.temporal.model import DAY_US, HOUR_US, parse_time
from territoire.context.temporal.retention import RetentionPolicy, drop_policy, list_policies, purge, set_policy

BASE = "/ngsi-ld/v1"
T = f"{BASE}/temporal/entities"
DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
SENSOR = "urn:ngsi-ld:Sensor:1"


def problem(response: Any, status: int, error: str, mentions: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == ERR + error, body
    if mentions is not None:
        assert mentions in body["detail"], body
    return body


def readings(values: list[Any], start: str = "2026-01-01T00:00:00Z", step_s: int = 600) -> list[dict[str, Any]]:
    t0 = parse_time(start, "t")
    out = []
    for index, value in enumerate(values):
        moment = t0 + index * step_s * 1_000_000
        out.append({"type": "Property", "value": value, "observedAt": _iso(moment)})
    return out


def _iso(us: int) -> str:
    from territoire.context.temporal.model import format_time

    return format_time(us)


def create_temporal(client: TestClient, entity_id: str = SENSOR, **attrs: Any) -> None:
    body = {"id": entity_id, "type": "Sensor", **attrs}
    response = client.post(T, json=body)
    assert response.status_code in (201, 204), response.text


def values(client: TestClient, entity_id: str, attr: str, **params: str) -> list[Any]:
    response = client.get(f"{T}/{entity_id}", params={"options": "temporalValues", **params})
    assert response.status_code == 200, response.text
    shown = response.json().get(attr)
    if shown is None:
        return []
    assert isinstance(shown, dict), shown
    return [pair[0] for pair in shown["values"]]


# --- history of every write path -----------------------------------------------------------------


def test_every_write_path_records_history(client: TestClient) -> None:
    entity = {"id": SENSOR, "type": "Sensor", "level": {"type": "Property", "value": 1}}
    assert client.post(f"{BASE}/entities", json=entity).status_code == 201  # create
    assert (
        client.patch(f"{BASE}/entities/{SENSOR}/attrs", json={"level": {"type": "Property", "value": 2}}).status_code
        == 204
    )
    assert client.patch(f"{BASE}/entities/{SENSOR}/attrs/level", json={"value": 3}).status_code == 204
    assert (
        client.post(f"{BASE}/entities/{SENSOR}/attrs", json={"level": {"type": "Property", "value": 4}}).status_code
        == 204
    )
    assert client.put(f"{BASE}/entities/{SENSOR}/attrs/level", json={"type": "Property", "value": 5}).status_code == 204
    assert (
        client.patch(f"{BASE}/entities/{SENSOR}", json={"level": {"type": "Property", "value": 6}}).status_code == 204
    )
    assert client.put(f"{BASE}/entities/{SENSOR}", json={"type": "Sensor", "level": 7}).status_code == 204
    batch = [{"id": SENSOR, "type": "Sensor", "level": {"type": "Property", "value": 8}}]
    assert client.post(f"{BASE}/entityOperations/upsert", json=batch).status_code == 204
    batch[0]["level"] = {"type": "Property", "value": 9}
    assert client.post(f"{BASE}/entityOperations/upsert", params={"options": "update"}, json=batch).status_code == 204
    batch[0]["level"] = {"type": "Property", "value": 10}
    assert client.post(f"{BASE}/entityOperations/update", json=batch).status_code == 204
    batch[0]["level"] = {"type": "Property", "value": 11}
    assert client.post(f"{BASE}/entityOperations/merge", json=batch).status_code == 204
    other = {"id": "urn:ngsi-ld:Sensor:2", "type": "Sensor", "level": 100}
    assert client.post(f"{BASE}/entityOperations/create", json=[other]).status_code == 201
    # Instances without observedAt are timed by their modifiedAt (see docs/temporal.md).
    assert values(client, SENSOR, "level", timeproperty="modifiedAt") == list(range(1, 12))
    assert values(client, SENSOR, "level") == list(range(1, 12))
    assert values(client, "urn:ngsi-ld:Sensor:2", "level") == [100]


def test_only_changed_instances_are_recorded(client: TestClient) -> None:
    entity = {
        "id": SENSOR,
        "type": "Sensor",
        "a": {"type": "Property", "value": 1, "observedAt": "2026-01-01T00:00:00Z"},
        "b": {"type": "Property", "value": "x"},
    }
    assert client.post(f"{BASE}/entities", json=entity).status_code == 201
    patch = {"a": {"type": "Property", "value": 2, "observedAt": "2026-01-01T00:10:00Z"}}
    assert client.patch(f"{BASE}/entities/{SENSOR}/attrs", json=patch).status_code == 204
    assert values(client, SENSOR, "a") == [1, 2]
    assert values(client, SENSOR, "b") == ["x"]
    # The same observation time again: a correction, it replaces the instance (5.6.11 upsert).
    patch = {"a": {"type": "Property", "value": 3, "observedAt": "2026-01-01T00:10:00Z"}}
    assert client.patch(f"{BASE}/entities/{SENSOR}/attrs", json=patch).status_code == 204
    assert values(client, SENSOR, "a") == [1, 3]


def test_deletions_are_recorded_and_entity_deletion_deletes_history(client: TestClient) -> None:
    entity = {
        "id": SENSOR,
        "type": "Sensor",
        "level": {"type": "Property", "value": 1, "observedAt": "2026-01-01T00:00:00Z"},
        "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"},
    }
    assert client.post(f"{BASE}/entities", json=entity).status_code == 201
    assert client.delete(f"{BASE}/entities/{SENSOR}/attrs/owner").status_code == 204
    deleted = client.get(f"{T}/{SENSOR}", params={"timeproperty": "deletedAt"}).json()
    assert list(deleted) == ["id", "type", "owner"]
    (gone,) = deleted["owner"]
    assert gone["object"] == "urn:ngsi-ld:null" and gone["deletedAt"].endswith("Z")
    pairs = client.get(f"{T}/{SENSOR}", params={"timeproperty": "deletedAt", "options": "temporalValues"}).json()
    assert pairs["owner"]["objects"][0][0] == "urn:ngsi-ld:null"
    # Deletion instances are not listed by observedAt (the default), live ones are.
    assert "owner" in client.get(f"{T}/{SENSOR}").json()
    assert client.delete(f"{BASE}/entities/{SENSOR}").status_code == 204
    problem(client.get(f"{T}/{SENSOR}"), 404, "ResourceNotFound")


def test_history_can_outlive_its_entity(client: TestClient) -> None:
    storage = client.app.state.temporal.storage  # type: ignore[attr-defined]
    storage.delete_with_entity = False
    try:
        entity = {"id": SENSOR, "type": "Sensor", "level": {"type": "Property", "value": 1}}
        assert client.post(f"{BASE}/entities", json=entity).status_code == 201
        patch = {"level": {"type": "Property", "value": 2}}
        assert client.patch(f"{BASE}/entities/{SENSOR}/attrs", json=patch).status_code == 204
        assert client.delete(f"{BASE}/entities/{SENSOR}").status_code == 204
        kept = client.get(f"{T}/{SENSOR}")
        assert kept.status_code == 200 and kept.json()["type"] == "Sensor"
        assert [i["value"] for i in kept.json()["level"]] == [1, 2]
        tombstones = client.get(f"{T}/{SENSOR}", params={"timeproperty": "deletedAt"}).json()
        assert tombstones["level"][0]["value"] == "urn:ngsi-ld:null"
        # The temporal delete removes it for good.
        assert client.delete(f"{T}/{SENSOR}").status_code == 204
        problem(client.get(f"{T}/{SENSOR}"), 404, "ResourceNotFound")
    finally:
        storage.delete_with_entity = True


# --- temporal provision --------------------------------------------------------------------------


def test_temporal_create_upsert_and_current_state(client: TestClient) -> None:
    first = client.post(T, json={"id": SENSOR, "type": "Sensor", "level": readings([1, 2, 3])})
    assert first.status_code == 201 and first.headers["location"] == f"{T}/{SENSOR}"
    current = client.get(f"{BASE}/entities/{SENSOR}").json()
    assert current["level"]["value"] == 3 and current["level"]["observedAt"] == "2026-01-01T00:20:00Z"
    # Older history imported later does not replace the newer current value, and is merged in.
    older = client.post(T, json={"id": SENSOR, "type": "Sensor", "level": readings([-2, -1], "2025-12-31T23:40:00Z")})
    assert older.status_code == 204
    assert client.get(f"{BASE}/entities/{SENSOR}").json()["level"]["value"] == 3
    assert values(client, SENSOR, "level") == [-2, -1, 1, 2, 3]
    # Same observation times again: replaced, not duplicated.
    assert client.post(T, json={"id": SENSOR, "type": "Sensor", "level": readings([10, 20])}).status_code == 204
    assert values(client, SENSOR, "level") == [-2, -1, 10, 20, 3]
    # Simplified temporal representation accepted as input too (4.5.9).
    simplified = {"type": "Property", "values": [[7, "2026-01-02T00:00:00Z"]]}
    assert client.post(f"{T}/{SENSOR}/attrs", json={"level": simplified}).status_code == 204
    assert values(client, SENSOR, "level")[-1] == 7
    assert client.get(f"{BASE}/entities/{SENSOR}").json()["level"]["value"] == 7
    problem(client.post(f"{T}/urn:ngsi-ld:Sensor:404/attrs", json={"level": simplified}), 404, "ResourceNotFound")


def test_bulk_import_of_past_history(client: TestClient, store: Store) -> None:
    count = 5000
    history = readings(list(range(count)), "1999-06-01T00:00:00Z", step_s=900)  # 52 days over two months
    assert client.post(T, json={"id": SENSOR, "type": "Sensor", "level": history}).status_code == 201
    total = client.get(
        f"{T}/{SENSOR}", params={"options": "aggregatedValues", "aggrMethods": "totalCount,sum,max"}
    ).json()["level"]
    assert total["totalCount"][0][0] == count
    assert total["sum"][0][0] == count * (count - 1) / 2
    assert total["max"][0][0] == count - 1
    assert total["totalCount"][0][1:] == ["1999-06-01T00:00:00Z", "1999-07-23T01:45:00Z"]
    if store.backend == "postgres":
        assert isinstance(store, SqlStore)
        with store.reader() as cur:
            cur.execute("SELECT to_regclass('temporal_instances_y1999m06'), to_regclass('temporal_instances_y1999m07')")
            assert all(cur.fetchone())


# --- representations and aggregation -------------------------------------------------------------


def test_aggregation_values_computed_by_hand(client: TestClient) -> None:
    hour1 = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]  # 00:00 .. 00:50, every 10 min
    hour2 = [5.0, 5.0, 8.0]  # 01:00 .. 01:20
    create_temporal(client, level=readings(hour1 + hour2))
    methods = "totalCount,distinctCount,sum,avg,min,max,stddev,sumsq"
    response = client.get(
        f"{T}/{SENSOR}",
        params={"options": "aggregatedValues", "aggrMethods": methods, "aggrPeriodDuration": "PT1H"},
    )
    assert response.status_code == 200, response.text
    level = response.json()["level"]
    assert level["type"] == "Property"
    periods = [("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"), ("2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z")]
    for index, data in enumerate([hour1, hour2]):
        expected = {
            "totalCount": len(data),
            "distinctCount": len(set(data)),
            "sum": sum(data),
            "avg": sum(data) / len(data),
            "min": min(data),
            "max": max(data),
            "stddev": statistics.stdev(data),
            "sumsq": sum(v * v for v in data),
        }
        for method, value in expected.items():
            got, start, end = level[method][index]
            assert (start, end) == periods[index]
            assert math.isclose(got, value, rel_tol=1e-9), (method, got, value)
    # aggrPeriodDuration omitted (PT0S): one period over the whole time range of the query.
    whole = client.get(
        f"{T}/{SENSOR}",
        params={
            "options": "aggregatedValues",
            "aggrMethods": "avg",
            "timerel": "between",
            "timeAt": "2025-12-31T00:00:00Z",
            "endTimeAt": "2026-01-02T00:00:00Z",
        },
    ).json()["level"]
    assert whole["avg"] == [[sum(hour1 + hour2) / 9, "2025-12-31T00:00:00Z", "2026-01-02T00:00:00Z"]]
    # Calendar duration (months) and a day-long one.
    month = client.get(
        f"{T}/{SENSOR}", params={"options": "aggregatedValues", "aggrMethods": "max", "aggrPeriodDuration": "P1M"}
    ).json()["level"]
    assert month["max"] == [[60.0, "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"]]
    # timeAt anchors the periods (after): 15-minute periods starting at 00:05.
    quarter = client.get(
        f"{T}/{SENSOR}",
        params={
            "format": "aggregatedValues",
            "aggrMethods": "totalCount",
            "aggrPeriodDuration": "PT15M",
            "timerel": "after",
            "timeAt": "2026-01-01T00:05:00Z",
        },
    ).json()["level"]
    assert [p[0] for p in quarter["totalCount"]] == [1, 2, 1, 2, 1, 1]
    assert quarter["totalCount"][0][1] == "2026-01-01T00:05:00Z"


def test_aggregation_of_booleans_strings_and_arrays(client: TestClient) -> None:
    create_temporal(
        client,
        on=readings([True, False, True]),
        status=readings(["ok", "ko", "ok"]),
        tags=readings([["a"], ["a", "b"], ["a", "b", "c"]]),
    )
    response = client.get(
        f"{T}/{SENSOR}", params={"options": "aggregatedValues", "aggrMethods": "sum,avg,min,max,distinctCount"}
    ).json()
    assert response["on"]["sum"][0][0] == 2 and math.isclose(response["on"]["avg"][0][0], 2 / 3)
    assert response["status"]["min"][0][0] == "ko" and response["status"]["max"][0][0] == "ok"
    assert response["status"]["distinctCount"][0][0] == 2 and response["status"]["avg"][0][0] is None
    assert response["tags"]["sum"][0][0] == 6 and response["tags"]["max"][0][0] == 3


def test_representations_of_other_attribute_types(client: TestClient) -> None:
    create_temporal(
        client,
        owner=[{"type": "Relationship", "object": "urn:ngsi-ld:P:1", "observedAt": "2026-01-01T00:00:00Z"}],
        name=[{"type": "LanguageProperty", "languageMap": {"fr": "Pont"}, "observedAt": "2026-01-01T00:00:00Z"}],
        spot=[
            {
                "type": "GeoProperty",
                "value": {"type": "Point", "coordinates": [-0.55, 47.47]},
                "observedAt": "2026-01-01T00:00:00Z",
            }
        ],
        reading=[
            {
                "type": "Property",
                "value": 4,
                "unitCode": "CEL",
                "observedAt": "2026-01-01T00:00:00Z",
                "accuracy": {"type": "Property", "value": 0.5},
            }
        ],
    )
    simple = client.get(f"{T}/{SENSOR}", params={"options": "temporalValues"}).json()
    assert simple["owner"] == {"type": "Relationship", "objects": [["urn:ngsi-ld:P:1", "2026-01-01T00:00:00Z"]]}
    assert simple["name"]["languageMaps"] == [[{"languageMap": {"fr": "Pont"}}, "2026-01-01T00:00:00Z"]]
    assert simple["spot"]["values"][0][0] == {"type": "Point", "coordinates": [-0.55, 47.47]}
    full = client.get(f"{T}/{SENSOR}", params={"options": "sysAttrs"}).json()
    (reading,) = full["reading"]
    assert reading["unitCode"] == "CEL" and reading["accuracy"] == {"type": "Property", "value": 0.5}
    assert reading["instanceId"].startswith("urn:ngsi-ld:Instance:")
    assert reading["createdAt"].endswith("Z") and reading["modifiedAt"].endswith("Z")
    ld = client.get(f"{T}/{SENSOR}", headers={"Accept": "application/ld+json"})
    assert ld.headers["content-type"].startswith("application/ld+json") and "@context" in ld.json()


# --- pagination (6.3.10) -------------------------------------------------------------------------


def test_pagination_206_with_content_range(client: TestClient) -> None:
    client.app.state.temporal.settings.temporal_max_instances = 4  # type: ignore[attr-defined]
    create_temporal(client, a=readings(list(range(10))), b=readings(list(range(3))))
    first = client.get(f"{T}/{SENSOR}", params={"options": "temporalValues"})
    assert first.status_code == 206
    assert first.headers["content-range"] == "date-time 2026-01-01T00:00:00Z-2026-01-01T00:30:00Z/*"
    assert [v[0] for v in first.json()["a"]["values"]] == [0, 1, 2, 3]
    assert [v[0] for v in first.json()["b"]["values"]] == [0, 1, 2]
    collected = [v[0] for v in first.json()["a"]["values"]]
    after = "2026-01-01T00:30:00Z"
    for _ in range(5):
        page = client.get(
            f"{T}/{SENSOR}", params={"options": "temporalValues", "attrs": "a", "timerel": "after", "timeAt": after}
        )
        got = [v for v in page.json()["a"]["values"] if v[1] != after]
        collected += [v[0] for v in got]
        if page.status_code == 200:
            break
        assert page.status_code == 206
        after = page.headers["content-range"].split(" ")[1].split("Z-")[1].split("/")[0]
    assert collected == list(range(10))
    # lastN below the maximum: all it asks for, 200; above it: 206 with the lastN size.
    assert client.get(f"{T}/{SENSOR}", params={"lastN": "2", "attrs": "a"}).status_code == 200
    backward = client.get(f"{T}/{SENSOR}", params={"lastN": "8", "attrs": "a", "options": "temporalValues"})
    assert backward.status_code == 206
    assert backward.headers["content-range"] == "date-time 2026-01-01T01:30:00Z-2026-01-01T01:00:00Z/8"
    assert [v[0] for v in backward.json()["a"]["values"]] == [6, 7, 8, 9]


def test_query_pagination_spans_entities(client: TestClient) -> None:
    client.app.state.temporal.settings.temporal_max_instances = 3  # type: ignore[attr-defined]
    create_temporal(client, "urn:ngsi-ld:Sensor:A", a=readings([1, 2, 3, 4, 5]))
    create_temporal(client, "urn:ngsi-ld:Sensor:B", a=readings([1, 2], "2026-01-01T00:05:00Z"))
    response = client.get(T, params={"type": "Sensor", "options": "temporalValues"})
    assert response.status_code == 206
    assert response.headers["content-range"] == "date-time 2026-01-01T00:00:00Z-2026-01-01T00:20:00Z/*"
    body = {e["id"]: [v[0] for v in e["a"]["values"]] for e in response.json()}
    assert body == {"urn:ngsi-ld:Sensor:A": [1, 2, 3], "urn:ngsi-ld:Sensor:B": [1, 2]}


# --- queries -------------------------------------------------------------------------------------


def test_query_by_type_q_geo_and_attrs(client: TestClient) -> None:
    for index, lon in enumerate([-0.55, 2.35]):
        body = {
            "id": f"urn:ngsi-ld:Sensor:{index}",
            "type": "Sensor",
            "level": readings([index, index + 1]),
            "location": [
                {
                    "type": "GeoProperty",
                    "value": {"type": "Point", "coordinates": [lon, 47.47]},
                    "observedAt": "2026-01-01T00:00:00Z",
                }
            ],
        }
        assert client.post(T, json=body).status_code == 201
    assert (
        client.post(T, json={"id": "urn:ngsi-ld:Other:1", "type": "Other", "level": readings([9])}).status_code == 201
    )
    response = client.get(T, params={"type": "Sensor", "attrs": "level", "count": "true"})
    assert response.status_code == 200
    assert response.headers["ngsild-results-count"] == "2"
    assert [e["id"] for e in response.json()] == ["urn:ngsi-ld:Sensor:0", "urn:ngsi-ld:Sensor:1"]
    assert all(set(e) == {"id", "type", "level"} for e in response.json())
    by_q = client.get(T, params={"type": "Sensor", "q": "level>1"}).json()
    assert [e["id"] for e in by_q] == ["urn:ngsi-ld:Sensor:1"]
    near = client.get(
        T,
        params={
            "type": "Sensor",
            "georel": "near;maxDistance==2000",
            "geometry": "Point",
            "coordinates": "[-0.551,47.471]",
            "timerel": "after",
            "timeAt": "2026-01-01T00:05:00Z",
            "options": "temporalValues",
        },
    ).json()
    assert [e["id"] for e in near] == ["urn:ngsi-ld:Sensor:0"]
    assert near[0]["level"]["values"] == [[1, "2026-01-01T00:10:00Z"]]
    paged = client.get(T, params={"type": "Sensor", "limit": "1"})
    assert [e["id"] for e in paged.json()] == ["urn:ngsi-ld:Sensor:0"] and 'rel="next"' in paged.headers["link"]
    posted = client.post(
        f"{BASE}/temporal/entityOperations/query",
        json={
            "type": "Query",
            "entities": [{"type": "Sensor"}],
            "attrs": ["level"],
            "temporalQ": {"timerel": "before", "timeAt": "2026-01-01T00:05:00Z", "lastN": 1},
        },
    )
    assert posted.status_code == 200
    assert [[i["value"] for i in e["level"]] for e in posted.json()] == [[0], [1]]
    problem(client.get(T, params={"timerel": "after", "timeAt": "2026-01-01T00:00:00Z"}), 400, "BadRequestData")


def test_dataset_ids_and_pick_omit(client: TestClient) -> None:
    speeds = readings([1, 2]) + [
        {**r, "datasetId": "urn:ngsi-ld:Dataset:gps"} for r in readings([10, 20], "2026-01-01T00:05:00Z")
    ]
    create_temporal(client, speed=speeds, fuel=readings([50]))
    gps = client.get(f"{T}/{SENSOR}", params={"datasetId": "urn:ngsi-ld:Dataset:gps", "options": "temporalValues"})
    assert gps.json()["speed"] == {
        "type": "Property",
        "datasetId": "urn:ngsi-ld:Dataset:gps",
        "values": [[10, "2026-01-01T00:05:00Z"], [20, "2026-01-01T00:15:00Z"]],
    }
    default = client.get(f"{T}/{SENSOR}", params={"datasetId": "@none", "attrs": "speed"}).json()
    assert [i["value"] for i in default["speed"]] == [1, 2]
    assert set(client.get(f"{T}/{SENSOR}", params={"pick": "id,fuel"}).json()) == {"id", "fuel"}
    assert set(client.get(f"{T}/{SENSOR}", params={"omit": "type,speed"}).json()) == {"id", "fuel"}
    problem(client.get(f"{T}/{SENSOR}", params={"pick": "fuel", "attrs": "speed"}), 400, "BadRequestData")
    problem(client.get(f"{T}/{SENSOR}", params={"pick": "nothing"}), 404, "ResourceNotFound")
    problem(client.get(f"{T}/{SENSOR}", params={"attrs": "unknown"}), 404, "ResourceNotFound")


# --- instances and deletion ----------------------------------------------------------------------


def test_modify_and_delete_instances(client: TestClient) -> None:
    create_temporal(client, level=readings([1, 2, 3]))
    instances = client.get(f"{T}/{SENSOR}").json()["level"]
    first = instances[0]["instanceId"]
    assert client.patch(f"{T}/{SENSOR}/attrs/level/{first}", json={"value": 100}).status_code == 204
    changed = client.get(f"{T}/{SENSOR}", params={"options": "sysAttrs"}).json()["level"]
    assert [i["value"] for i in changed] == [100, 2, 3]
    assert changed[0]["instanceId"] == first and changed[0]["observedAt"] == "2026-01-01T00:00:00Z"
    assert changed[0]["modifiedAt"] > changed[0]["createdAt"]
    moved = {"value": 101, "observedAt": "2026-01-01T01:00:00Z"}
    assert client.patch(f"{T}/{SENSOR}/attrs/level/{first}", json=moved).status_code == 204
    assert values(client, SENSOR, "level") == [2, 3, 101]
    assert client.delete(f"{T}/{SENSOR}/attrs/level/{first}").status_code == 204
    assert values(client, SENSOR, "level") == [2, 3]
    problem(client.delete(f"{T}/{SENSOR}/attrs/level/{first}"), 404, "ResourceNotFound")
    problem(
        client.patch(f"{T}/{SENSOR}/attrs/level/urn:ngsi-ld:Instance:nope", json={"value": 1}), 404, "ResourceNotFound"
    )
    problem(client.delete(f"{T}/{SENSOR}/attrs/level/not-a-uri"), 400, "BadRequestData")


def test_delete_temporal_attribute_and_entity(client: TestClient) -> None:
    ds = {**readings([9])[0], "datasetId": "urn:ngsi-ld:Dataset:x"}
    create_temporal(client, level=[*readings([1, 2]), ds], other=readings([5]))
    assert client.delete(f"{T}/{SENSOR}/attrs/level").status_code == 204
    remaining = client.get(f"{T}/{SENSOR}").json()
    assert [i["value"] for i in remaining["level"]] == [9]
    assert client.get(f"{BASE}/entities/{SENSOR}").json()["level"]["datasetId"] == "urn:ngsi-ld:Dataset:x"
    assert client.delete(f"{T}/{SENSOR}/attrs/level", params={"deleteAll": "true"}).status_code == 204
    assert "level" not in client.get(f"{T}/{SENSOR}").json()
    assert "level" not in client.get(f"{BASE}/entities/{SENSOR}").json()
    problem(client.delete(f"{T}/{SENSOR}/attrs/level"), 404, "ResourceNotFound")
    assert client.delete(f"{T}/{SENSOR}").status_code == 204
    problem(client.get(f"{BASE}/entities/{SENSOR}"), 404, "ResourceNotFound")
    problem(client.delete(f"{T}/{SENSOR}"), 404, "ResourceNotFound")


def test_tenants_are_isolated(client: TestClient) -> None:
    body = {"id": SENSOR, "type": "Sensor", "level": readings([1])}
    assert client.post(T, json=body, headers={"NGSILD-Tenant": "angers"}).status_code == 201
    problem(client.get(f"{T}/{SENSOR}"), 404, "ResourceNotFound")
    assert client.get(f"{T}/{SENSOR}", headers={"NGSILD-Tenant": "angers"}).status_code == 200
    problem(client.get(f"{T}/{SENSOR}", headers={"NGSILD-Tenant": "nantes"}), 404, "NonexistentTenant")


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"timerel": "whenever", "timeAt": "2026-01-01T00:00:00Z"}, "timerel"),
        ({"timerel": "after"}, "timeAt"),
        ({"timerel": "after", "timeAt": "yesterday"}, "timeAt"),
        ({"timerel": "between", "timeAt": "2026-01-01T00:00:00Z"}, "endTimeAt"),
        ({"timerel": "between", "timeAt": "2026-01-01T00:00:00Z", "endTimeAt": "2025-01-01T00:00:00Z"}, "endTimeAt"),
        ({"timerel": "between", "timeAt": "2026-01-01T00:00:00Z", "endTimeAt": "later"}, "endTimeAt"),
        ({"timeAt": "2026-01-01T00:00:00Z"}, "timerel"),
        ({"timeproperty": "expiresAt"}, "timeproperty"),
        ({"lastN": "0"}, "lastN"),
        ({"lastN": "ten"}, "lastN"),
        ({"options": "aggregatedValues"}, "aggrMethods"),
        ({"options": "aggregatedValues", "aggrMethods": "median"}, "aggrMethods"),
        ({"options": "aggregatedValues", "aggrMethods": "avg", "aggrPeriodDuration": "1 hour"}, "aggrPeriodDuration"),
        ({"options": "aggregatedValues", "aggrMethods": "avg", "aggrPeriodDuration": "P"}, "aggrPeriodDuration"),
        ({"datasetId": "not a uri"}, "datasetId"),
    ],
)
def test_bad_parameters_are_400_naming_them(client: TestClient, params: dict[str, str], named: str) -> None:
    create_temporal(client, level=readings([1]))
    problem(client.get(f"{T}/{SENSOR}", params=params), 400, "BadRequestData", named)
    problem(client.get(T, params={"type": "Sensor", **params}), 400, "BadRequestData", named)


def test_bad_bodies_are_400(client: TestClient) -> None:
    problem(client.post(T, json={"type": "Sensor", "level": readings([1])}), 400, "BadRequestData", "id")
    problem(client.post(T, json={"id": SENSOR, "level": readings([1])}), 400, "BadRequestData", "type")
    no_time = {"id": SENSOR, "type": "Sensor", "level": [{"type": "Property", "value": 1}]}
    problem(client.post(T, json=no_time), 400, "BadRequestData", "observedAt")
    bad_time = {"id": SENSOR, "type": "Sensor", "level": [{"value": 1, "observedAt": "noon"}]}
    problem(client.post(T, json=bad_time), 400, "BadRequestData", "observedAt")
    bad_pairs = {"id": SENSOR, "type": "Sensor", "level": {"type": "Property", "values": [[1]]}}
    problem(client.post(T, json=bad_pairs), 400, "BadRequestData", "pair")
    problem(client.post(T, content=b"{not json", headers={"Content-Type": "application/json"}), 400, "InvalidRequest")
    query = {"type": "Query", "entities": [{"type": "Sensor"}], "temporalQ": {"timerel": "after"}}
    problem(client.post(f"{BASE}/temporal/entityOperations/query", json=query), 400, "BadRequestData", "timeAt")
    query["temporalQ"] = {"lastN": 1.5}
    problem(client.post(f"{BASE}/temporal/entityOperations/query", json=query), 400, "BadRequestData", "lastN")
    problem(client.get(f"{T}/not-a-uri"), 400, "BadRequestData")
    problem(client.get(f"{T}/{SENSOR}", params={"format": "tabular"}), 400, "InvalidRequest")


# --- retention -----------------------------------------------------------------------------------


def _day(day: int, hour: int, minute: int) -> str:
    return _iso(parse_time("2026-01-01T00:00:00Z", "t") + day * DAY_US + hour * HOUR_US + minute * 60_000_000)


def test_retention_with_real_rows(client: TestClient, store: Store) -> None:
    assert isinstance(store, SqlStore)
    storage = storage_for(store)
    sensor = "https://uri.etsi.org/ngsi-ld/default-context/Sensor"
    old = [{"type": "Property", "value": v, "observedAt": _day(0, 10, m)} for v, m in ((10, 0), (20, 20), (60, 40))]
    old.append({"type": "Property", "value": 7, "observedAt": _day(0, 11, 0)})
    recent = [{"type": "Property", "value": 1, "observedAt": _day(500, 0, 0)}]
    body = {"id": SENSOR, "type": "Sensor", "level": old + recent, "state": readings(["on"], _day(0, 10, 5))}
    assert client.post(T, json=body).status_code == 201
    assert client.post(T, json={"id": "urn:ngsi-ld:Meter:1", "type": "Meter", "level": old}).status_code == 201

    set_policy(storage, RetentionPolicy("", sensor, raw_days=400, aggregate_days=600))
    set_policy(storage, RetentionPolicy("", "*", raw_days=10))
    assert [p.entity_type for p in list_policies(storage)] == ["*", sensor]
    now = parse_time(_day(501, 0, 0), "now")
    results = {r.policy.entity_type: r for r in purge(storage, now)}
    # Sensor: 4 old numbers -> 2 hourly means (10:00 avg 30, 11:00 avg 7), written over the two
    # instances timed at 10:00 and 11:00; the 2 others and the old string are deleted.
    assert results[sensor].hourly == 2 and results[sensor].removed == 3
    level = client.get(f"{T}/{SENSOR}", params={"options": "temporalValues", "attrs": "level"}).json()["level"]
    assert level["values"] == [[30.0, "2026-01-01T10:00:00Z"], [7.0, "2026-01-01T11:00:00Z"], [1, _day(500, 0, 0)]]
    assert "state" not in client.get(f"{T}/{SENSOR}").json()
    # Meter (covered by "*"): raw only, all older than 10 days deleted; the series of the Sensor are untouched by "*".
    assert results["*"].removed == 4 and results["*"].hourly == 0
    assert "level" not in client.get(f"{T}/urn:ngsi-ld:Meter:1").json()
    # Later, hourly means older than 600 days go too.
    purge(storage, parse_time(_day(700, 0, 0), "now"))
    assert values(client, SENSOR, "level") == [1]
    assert drop_policy(storage, "", "*") and not drop_policy(storage, "", "*")


def test_retention_of_entities_written_through_the_entity_api(client: TestClient, store: Store) -> None:
    """The write hook records no series rows for current attributes: retention syncs them first."""
    assert isinstance(store, SqlStore)
    storage = storage_for(store)
    old = {"type": "Property", "value": 5, "observedAt": "2020-01-01T00:00:00Z"}
    entity = {"id": "urn:ngsi-ld:Meter:7", "type": "Meter", "level": old}
    assert client.post(f"{BASE}/entities", json=entity).status_code == 201
    fresh = {"level": {"type": "Property", "value": 6, "observedAt": "2026-01-01T00:00:00Z"}}
    assert client.patch(f"{BASE}/entities/urn:ngsi-ld:Meter:7/attrs", json=fresh).status_code == 204
    assert values(client, "urn:ngsi-ld:Meter:7", "level") == [5, 6]
    set_policy(storage, RetentionPolicy("", DEFAULT + "Meter", raw_days=30))
    (result,) = purge(storage, parse_time("2026-01-10T00:00:00Z", "now"))
    assert result.removed == 1
    assert values(client, "urn:ngsi-ld:Meter:7", "level") == [6]


def test_retention_cli(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from territoire.context.store import open_store
    from territoire.context.temporal.cli import retention_app

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    result = runner.invoke(retention_app, ["set", "Sensor", "--raw-days", "10", "--database-url", url])
    assert result.exit_code == 0, result.output
    refused = runner.invoke(
        retention_app, ["set", "Sensor", "--raw-days", "10", "--aggregate-days", "5", "--database-url", url]
    )
    assert refused.exit_code == 2 and "aggregate_days" in refused.output
    listed = runner.invoke(retention_app, ["list", "--database-url", url])
    assert listed.exit_code == 0 and "History retention" in listed.output
    store = open_store(url)
    try:
        assert isinstance(store, SqlStore)
        storage = storage_for(store)
        assert list_policies(storage) == [RetentionPolicy("", DEFAULT + "Sensor", 10)]
        old = {"type": "Property", "value": 1, "observedAt": "2020-01-01T00:00:00Z"}
        storage.append("", [(SENSOR, DEFAULT + "level", old, [DEFAULT + "Sensor"])])
    finally:
        store.close()
    applied = runner.invoke(retention_app, ["apply", "--now", "2026-01-01T00:00:00Z", "--database-url", url])
    assert applied.exit_code == 0 and "1 raw instances removed" in " ".join(applied.output.split())
    assert runner.invoke(retention_app, ["drop", "Sensor", "--database-url", url]).exit_code == 0
    assert "No retention policy" in runner.invoke(retention_app, ["apply", "--database-url", url]).output


def test_concurrent_writers_create_a_partition_once(client: TestClient, store: Store) -> None:
    """Writers racing for a new month (PostgreSQL partitions) all succeed; SQLite needs no partition."""
    from concurrent.futures import ThreadPoolExecutor

    assert isinstance(store, SqlStore)
    storage = storage_for(store)

    def write(index: int) -> int:
        instance = {"type": "Property", "value": index, "observedAt": f"1987-03-{index + 1:02d}T00:00:00Z"}
        with store.transaction() as cur:
            batch = storage.batch("")
            batch.add("", f"urn:ngsi-ld:Sensor:{index}", DEFAULT + "level", instance, '["Sensor"]', written_us=0)
            storage.write(cur, batch)
        return index

    with ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(write, range(8))) == list(range(8))
    for index in range(8):
        assert values(client, f"urn:ngsi-ld:Sensor:{index}", "level") == [index]
