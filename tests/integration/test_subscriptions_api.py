"""The subscription API (ETSI GS CIM 009 v1.8, 5.8.1 - 5.8.5) on both backends."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from territoire.context.http import LINK_REL_CONTEXT

BASE = "/ngsi-ld/v1"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
SDM = "https://raw.githubusercontent.com/smart-data-models/dataModel.Streetlighting/master/context.jsonld"
ENDPOINT = {"uri": "http://127.0.0.1:9/notify", "accept": "application/json"}


def subscription(**members: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "urn:ngsi-ld:Subscription:1",
        "type": "Subscription",
        "entities": [{"type": "Streetlight"}],
        "notification": {"endpoint": dict(ENDPOINT)},
    }
    body.update(members)
    return body


def problem(response: Any, status: int, error: str, mentions: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == ERR + error, body
    assert body["title"] and body["detail"]
    if mentions is not None:
        assert mentions in body["detail"], body["detail"]


def link(context: str) -> dict[str, str]:
    return {"Link": f'<{context}>; rel="{LINK_REL_CONTEXT}"; type="application/ld+json"'}


def test_create_retrieve_and_location(client: TestClient) -> None:
    body = subscription(
        subscriptionName="lights",
        watchedAttributes=["powerState"],
        q="powerState==%22off%22",
        throttling=5,
        expiresAt="2099-01-01T00:00:00Z",
        notification={"attributes": ["powerState"], "format": "keyValues", "endpoint": dict(ENDPOINT)},
    )
    response = client.post(f"{BASE}/subscriptions", json=body, headers=link(SDM))
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/ngsi-ld/v1/subscriptions/urn:ngsi-ld:Subscription:1"
    got = client.get(f"{BASE}/subscriptions/urn:ngsi-ld:Subscription:1", headers=link(SDM))
    assert got.status_code == 200
    assert got.headers["link"] == link(SDM)["Link"]
    assert got.json() == {
        "id": "urn:ngsi-ld:Subscription:1",
        "type": "Subscription",
        "subscriptionName": "lights",
        "entities": [{"type": "Streetlight"}],
        "watchedAttributes": ["powerState"],
        "notificationTrigger": ["attributeCreated", "attributeUpdated"],
        "q": 'powerState=="off"',
        "expiresAt": "2099-01-01T00:00:00Z",
        "throttling": 5,
        "status": "active",
        "notification": {
            "attributes": ["powerState"],
            "format": "keyValues",
            "endpoint": ENDPOINT,
            "timesSent": 0,
            "timesFailed": 0,
        },
        "jsonldContext": SDM,
    }
    # Without the @context, names come back expanded.
    expanded = client.get(f"{BASE}/subscriptions/urn:ngsi-ld:Subscription:1").json()
    assert expanded["entities"] == [{"type": "https://smartdatamodels.org/dataModel.Streetlighting/Streetlight"}]
    assert expanded["watchedAttributes"] == ["https://smartdatamodels.org/dataModel.Streetlighting/powerState"]
    as_ld = client.get(
        f"{BASE}/subscriptions/urn:ngsi-ld:Subscription:1", headers={**link(SDM), "Accept": "application/ld+json"}
    )
    assert as_ld.headers["content-type"] == "application/ld+json"
    assert as_ld.json()["@context"] == SDM
    with_sys = client.get(f"{BASE}/subscriptions/urn:ngsi-ld:Subscription:1?options=sysAttrs").json()
    assert with_sys["createdAt"].endswith("Z") and with_sys["modifiedAt"] == with_sys["createdAt"]


def test_generated_id_and_conflict(client: TestClient) -> None:
    body = subscription()
    del body["id"]
    response = client.post(f"{BASE}/subscriptions", json=body)
    assert response.status_code == 201
    assert response.headers["location"].startswith("/ngsi-ld/v1/subscriptions/urn:ngsi-ld:Subscription:")
    assert client.post(f"{BASE}/subscriptions", json=subscription()).status_code == 201
    problem(client.post(f"{BASE}/subscriptions", json=subscription()), 409, "AlreadyExists")


@pytest.mark.parametrize(
    ("members", "mentions"),
    [
        ({"id": "not a uri"}, "id"),
        ({"type": "Registration"}, "type"),
        ({"entities": None}, "entities"),
        ({"entities": []}, "entities"),
        ({"entities": [{"id": "urn:ngsi-ld:X:1"}]}, "entities[0].type"),
        ({"entities": [{"type": "A", "idPattern": "(("}]}, "entities[0].idPattern"),
        ({"watchedAttributes": []}, "watchedAttributes"),
        ({"timeInterval": 5, "watchedAttributes": ["a"]}, "timeInterval"),
        ({"timeInterval": 5, "throttling": 2}, "throttling"),
        ({"throttling": -1}, "throttling"),
        ({"timeInterval": 0}, "timeInterval"),
        ({"expiresAt": "2000-01-01T00:00:00Z"}, "expiresAt"),
        ({"expiresAt": "tomorrow"}, "expiresAt"),
        ({"q": "powerState=="}, "q"),
        ({"geoQ": {"georel": "near", "geometry": "Point", "coordinates": [1, 2]}}, "geoQ"),
        ({"scopeQ": "no-slash"}, "scopeQ"),
        ({"isActive": "yes"}, "isActive"),
        ({"notificationTrigger": ["entityChanged"]}, "notificationTrigger"),
        ({"notification": None}, "notification"),
        ({"notification": {"format": "normalized"}}, "notification.endpoint"),
        ({"notification": {"endpoint": {"uri": "not a uri"}}}, "notification.endpoint.uri"),
        ({"notification": {"endpoint": {"uri": "ftp://host/x"}}}, "notification.endpoint.uri"),
        ({"notification": {"endpoint": {"uri": "mqtt://broker"}}}, "notification.endpoint.uri"),
        ({"notification": {"endpoint": {**ENDPOINT, "accept": "text/plain"}}}, "notification.endpoint.accept"),
        ({"notification": {"endpoint": {**ENDPOINT, "receiverInfo": [{"key": "X"}]}}}, "receiverInfo[0]"),
        (
            {"notification": {"endpoint": {**ENDPOINT, "notifierInfo": [{"key": "MQTT-QoS", "value": "3"}]}}},
            "notifierInfo",
        ),
        ({"notification": {"endpoint": ENDPOINT, "format": "compact"}}, "notification.format"),
        ({"notification": {"endpoint": ENDPOINT, "attributes": []}}, "notification.attributes"),
        ({"notification": {"endpoint": ENDPOINT, "format": "keyValues", "showChanges": True}}, "showChanges"),
        ({"notification": {"endpoint": ENDPOINT, "pick": ["id"], "omit": ["id"]}}, "notification.pick"),
        ({"notification": {"endpoint": ENDPOINT, "pick": ["id"], "attributes": ["a"]}}, "notification.pick"),
        ({"notification": {"endpoint": ENDPOINT, "every": 1}}, "notification"),
        ({"jsonldContext": "unknownContext"}, "jsonldContext"),
        ({"datasetId": ["not a uri"]}, "datasetId"),
        ({"csf": "a==b"}, "csf"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_subscriptions_are_400_naming_the_member(
    client: TestClient, members: dict[str, Any], mentions: str
) -> None:
    body = subscription(**members)
    if "watchedAttributes" in members and members.get("entities", 1) is not None:
        body.pop("entities")
    problem(client.post(f"{BASE}/subscriptions", json=body), 400, "BadRequestData", mentions)


def test_malformed_and_empty_bodies(client: TestClient) -> None:
    response = client.post(f"{BASE}/subscriptions", content=b"{", headers={"Content-Type": "application/json"})
    problem(response, 400, "InvalidRequest")
    problem(client.post(f"{BASE}/subscriptions", json={}), 400, "BadRequestData")
    problem(
        client.post(f"{BASE}/subscriptions", json={"type": "Subscription", "notification": {"endpoint": ENDPOINT}}),
        400,
        "BadRequestData",
        "entities",
    )


def test_unknown_and_invalid_ids(client: TestClient) -> None:
    missing = f"{BASE}/subscriptions/urn:ngsi-ld:Subscription:missing"
    problem(client.get(missing), 404, "ResourceNotFound")
    problem(client.delete(missing), 404, "ResourceNotFound")
    problem(client.patch(missing, json={"type": "Subscription", "isActive": False}), 404, "ResourceNotFound")
    problem(client.get(f"{BASE}/subscriptions/invalid"), 400, "BadRequestData")
    assert client.patch(f"{BASE}/subscriptions/", json={"isActive": False}).status_code == 405


def test_query_paginates_and_counts(client: TestClient) -> None:
    for n in range(3):
        assert (
            client.post(f"{BASE}/subscriptions", json=subscription(id=f"urn:ngsi-ld:Subscription:{n}")).status_code
            == 201
        )
    everything = client.get(f"{BASE}/subscriptions/")
    assert [s["id"] for s in everything.json()] == [f"urn:ngsi-ld:Subscription:{n}" for n in range(3)]
    page = client.get(f"{BASE}/subscriptions?limit=1&offset=1&count=true", headers={"Accept": "application/ld+json"})
    assert [s["id"] for s in page.json()] == ["urn:ngsi-ld:Subscription:1"]
    assert page.headers["ngsild-results-count"] == "3"
    assert page.headers["link"] == (
        '</ngsi-ld/v1/subscriptions?count=true&limit=1&offset=0>;rel="prev";type="application/ld+json", '
        '</ngsi-ld/v1/subscriptions?count=true&limit=1&offset=2>;rel="next";type="application/ld+json"'
    )
    problem(client.get(f"{BASE}/subscriptions?limit=5000"), 403, "TooManyResults")


def test_subscriptions_belong_to_their_tenant(client: TestClient) -> None:
    angers = {"NGSILD-Tenant": "angers"}
    assert client.post(f"{BASE}/subscriptions", json=subscription(), headers=angers).status_code == 201
    assert client.get(f"{BASE}/subscriptions/urn:ngsi-ld:Subscription:1", headers=angers).status_code == 200
    problem(client.get(f"{BASE}/subscriptions/urn:ngsi-ld:Subscription:1"), 404, "ResourceNotFound")
    assert client.get(f"{BASE}/subscriptions").json() == []
    problem(client.get(f"{BASE}/subscriptions", headers={"NGSILD-Tenant": "nantes"}), 404, "NonexistentTenant")
    problem(client.delete(f"{BASE}/subscriptions/urn:ngsi-ld:Subscription:1"), 404, "ResourceNotFound")
    # The same id may exist in another tenant.
    assert client.post(f"{BASE}/subscriptions", json=subscription()).status_code == 201


def test_update_merges_fragment_and_status(client: TestClient) -> None:
    url = f"{BASE}/subscriptions/urn:ngsi-ld:Subscription:1"
    assert client.post(f"{BASE}/subscriptions", json=subscription(throttling=3)).status_code == 201
    response = client.patch(
        url, json={"type": "Subscription", "isActive": False, "notification": {"format": "concise"}}
    )
    assert response.status_code == 204 and response.content == b""
    got = client.get(url).json()
    assert got["status"] == "paused" and got["isActive"] is False
    assert got["notification"]["format"] == "concise" and got["notification"]["endpoint"] == ENDPOINT
    assert client.patch(url, json={"isActive": True, "throttling": None}).status_code == 204
    got = client.get(url).json()
    assert got["status"] == "active" and "throttling" not in got
    problem(client.patch(url, json={"expiresAt": "2020-08-01T22:07:00Z"}), 400, "BadRequestData", "expiresAt")
    problem(client.patch(url, json={"notification": {"endpoint": None}}), 400, "BadRequestData", "endpoint")
    problem(client.patch(url, json={"notification": None}), 400, "BadRequestData", "notification")
    problem(client.patch(url, json={"timeInterval": 10, "throttling": 2}), 400, "BadRequestData", "throttling")
    problem(client.patch(url, json={"id": "urn:ngsi-ld:Subscription:2"}), 400, "BadRequestData", "id")
    # Names in the fragment are expanded with the update's @context.
    assert client.patch(url, json={"entities": [{"type": "Streetlight"}]}, headers=link(SDM)).status_code == 204
    assert client.get(url, headers=link(SDM)).json()["entities"] == [{"type": "Streetlight"}]
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
    assert client.patch(url, json={"expiresAt": soon}).status_code == 204
    time.sleep(1.1)
    assert client.get(url).json()["status"] == "expired"
    assert client.patch(url, json={"expiresAt": "2099-01-01T00:00:00Z"}).status_code == 204
    assert client.get(url).json()["status"] == "active"


def test_delete(client: TestClient) -> None:
    url = f"{BASE}/subscriptions/urn:ngsi-ld:Subscription:1"
    assert client.post(f"{BASE}/subscriptions", json=subscription()).status_code == 201
    response = client.delete(url)
    assert response.status_code == 204 and response.content == b""
    problem(client.get(url), 404, "ResourceNotFound")


def test_inline_context_becomes_a_stored_json_ld_context(client: TestClient) -> None:
    body = subscription(**{"@context": [{"lamp": "https://example.org/Lamp"}, CORE]})
    body["entities"] = [{"type": "lamp"}]
    response = client.post(f"{BASE}/subscriptions", json=body, headers={"Content-Type": "application/ld+json"})
    assert response.status_code == 201, response.text
    got = client.get(f"{BASE}/subscriptions/urn:ngsi-ld:Subscription:1").json()
    assert got["entities"] == [{"type": "https://example.org/Lamp"}]
    served = got["jsonldContext"]
    assert "/ngsi-ld/v1/jsonldContexts/" in served
    stored = client.get(f"{BASE}/jsonldContexts/{served.rsplit('/', 1)[1]}")
    assert stored.status_code == 200
    assert stored.json()["@context"] == [{"lamp": "https://example.org/Lamp"}, CORE]


def test_unavailable_json_ld_context_is_503(client: TestClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    body = subscription(jsonldContext=f"http://127.0.0.1:{port}/missing-context.jsonld")
    started = time.monotonic()
    problem(client.post(f"{BASE}/subscriptions", json=body), 503, "LdContextNotAvailable")
    assert time.monotonic() - started < 5
