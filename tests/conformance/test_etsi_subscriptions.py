"""ETSI NGSI-LD conformance tests for subscriptions, ported from the suite's Robot Framework cases.

``TP/NGSI-LD/ContextInformation/Subscription/{Create,Update,Retrieve,Query,Delete}Subscription``
and ``SubscriptionNotificationBehaviour`` (including the MQTT binding): same payloads (see
``data/subscriptions/README.md``), same requests and checks, against a real HTTP receiver and the
local Mosquitto broker, on SQLite and PostgreSQL. Waiting times of the suite are shortened where
the behaviour under test allows (a 1 s ``timeInterval`` instead of 10 s).
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from territoire.app import create_app
from territoire.bench.notifications import Received, Receiver
from territoire.config import Settings
from territoire.context.store import Store

DATA = Path(__file__).parent / "data" / "subscriptions"
URL = "/ngsi-ld/v1"
SUITE_CONTEXT = (
    "https://forge.etsi.org/rep/cim/ngsi-ld-test-suite/-/raw/develop/resources/jsonld-contexts/"
    "ngsi-ld-test-suite-compound.jsonld"
)
JSON = "application/json"
JSON_LD = "application/ld+json"
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
# Keys the suite leaves out of subscription comparisons (AssertionUtils.resource).
IGNORED = {"@context", "jsonldContext", "timesFailed", "timesSent", "notificationTrigger"}


@pytest.fixture
def settings() -> Settings:
    return Settings(database_url="sqlite:///unused.db", context_fetch_timeout=2.0, context_dir=DATA / "contexts")


@pytest.fixture
def app(store: Store, settings: Settings) -> FastAPI:
    app = create_app(settings, store=store)
    config = app.state.subscriptions.config
    config.backoff_base, config.backoff_max, config.poll_interval = 0.1, 0.3, 0.1
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def server() -> Iterator[Receiver]:
    """``Start Local Server``: the notification receiver."""
    with Receiver() as receiver:
        yield receiver


# --- keywords ----------------------------------------------------------------------------------


def load(path: str) -> Any:
    return json.loads((DATA / path).read_text())


def random_id(prefix: str) -> str:
    return prefix + "".join(random.choice("0123456789") for _ in range(16))


def link(context: str = SUITE_CONTEXT) -> str:
    return f'<{context}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'


def subscription_sample(path: str, sub_id: str, endpoint: str | None = None, entity_id: str | None = None) -> Any:
    """``Load Subscription Sample With Reachable Endpoint`` + ``Set Entity Id In Subscription``."""
    payload = load(path)
    payload["id"] = sub_id
    if endpoint is not None:
        payload["notification"]["endpoint"]["uri"] = endpoint
    if entity_id is not None:
        payload["entities"][0]["id"] = entity_id
    return payload


def create_subscription(
    client: TestClient, payload: Any, content_type: str = JSON_LD, context: str | None = None
) -> Any:
    headers = {"Content-Type": content_type}
    if context:
        headers["Link"] = link(context)
    return client.post(f"{URL}/subscriptions/", content=json.dumps(payload), headers=headers)


def create_entity(client: TestClient, path: str, entity_id: str) -> None:
    entity = load(path)
    entity["id"] = entity_id
    response = client.post(f"{URL}/entities/", content=json.dumps(entity), headers={"Content-Type": JSON_LD})
    assert response.status_code == 201, response.text


def update_attributes(client: TestClient, entity_id: str, fragment: str) -> None:
    response = client.patch(
        f"{URL}/entities/{entity_id}/attrs/", content=(DATA / fragment).read_bytes(), headers={"Content-Type": JSON_LD}
    )
    assert response.status_code == 204, response.text


def retrieve(client: TestClient, sub_id: str, accept: str | None = None, context: str | None = None) -> Any:
    headers = {"Content-Type": JSON}
    if accept:
        headers["Accept"] = accept
    if context:
        headers["Link"] = link(context)
    return client.get(f"{URL}/subscriptions/{sub_id}", headers=headers)


def update_subscription(client: TestClient, sub_id: str, fragment: Any, context: str | None = None) -> Any:
    headers = {"Content-Type": JSON}
    if context:
        headers["Link"] = link(context)
    payload = load(fragment) if isinstance(fragment, str) else fragment
    return client.patch(f"{URL}/subscriptions/{sub_id}", content=json.dumps(payload), headers=headers)


def check_problem(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["type"] == ERRORS + error
    assert response.json()["title"]


def strip(value: Any, ignored: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: strip(v, ignored) for k, v in value.items() if k not in ignored}
    if isinstance(value, list):
        return [strip(v, ignored) for v in value]
    return value


def same(expected: Any, actual: Any, ignored: set[str] = IGNORED) -> None:
    """``Compare Dictionaries Ignoring Keys`` (list order matters for none of the cases here)."""
    assert strip(actual, ignored) == strip(expected, ignored)


def wait_notification(server: Receiver, timeout: float = 5.0) -> tuple[Any, dict[str, str]]:
    """``Wait for notification``: the next notification not yet looked at."""
    seen = getattr(server, "_seen", 0)
    got: list[Received] = server.wait_requests("/notify", seen + 1, timeout)
    server._seen = seen + 1  # type: ignore[attr-defined]
    return got[seen].json(), got[seen].headers


def wait_no_notification(server: Receiver, timeout: float = 2.0) -> None:
    seen = getattr(server, "_seen", 0)
    time.sleep(timeout)
    assert len(server.received("/notify")) == seen, "unexpected notification"


def notified_subscription(
    client: TestClient,
    server: Receiver,
    payload_path: str,
    entity_path: str = "entities/building-simple-attributes.jsonld",
) -> tuple[str, str]:
    """The usual set-up: an entity, then a subscription to it notifying the local server."""
    sub_id = random_id("urn:ngsi-ld:Subscription:")
    entity_id = random_id("urn:ngsi-ld:Building:")
    create_entity(client, entity_path, entity_id)
    payload = subscription_sample(payload_path, sub_id, f"{server.url}/notify", entity_id)
    response = create_subscription(client, payload)
    assert response.status_code == 201, response.text
    return sub_id, entity_id


# --- CreateSubscription ---------------------------------------------------------------------------


def test_028_01_create_subscription(client: TestClient) -> None:
    sub_id = random_id("urn:ngsi-ld:Subscription:")
    assert create_subscription(client, subscription_sample("subscription.jsonld", sub_id)).status_code == 201
    expected = load("expectations/subscription-028-01.jsonld")
    expected["id"] = sub_id
    same(expected, retrieve(client, sub_id, JSON_LD, SUITE_CONTEXT).json())


@pytest.mark.parametrize(
    ("filename", "error"),
    [("subscription-invalid-json.jsonld", "InvalidRequest"), ("subscription-empty.jsonld", "BadRequestData")],
)
def test_028_02_create_with_invalid_request(client: TestClient, filename: str, error: str) -> None:
    response = client.post(
        f"{URL}/subscriptions/", content=(DATA / filename).read_bytes(), headers={"Content-Type": JSON_LD}
    )
    check_problem(response, 400, error)


@pytest.mark.parametrize("sub_id", ["invalidId", ""])
def test_028_03_create_with_invalid_or_empty_id(client: TestClient, sub_id: str) -> None:
    check_problem(
        create_subscription(client, subscription_sample("subscription.jsonld", sub_id)), 400, "BadRequestData"
    )


def test_028_04_create_with_existing_id(client: TestClient) -> None:
    sub_id = random_id("urn:ngsi-ld:Subscription:")
    assert create_subscription(client, subscription_sample("subscription.jsonld", sub_id)).status_code == 201
    check_problem(create_subscription(client, subscription_sample("subscription.jsonld", sub_id)), 409, "AlreadyExists")


@pytest.mark.parametrize(
    "filename",
    [
        "subscription-invalid-throttling-timeInterval.jsonld",
        "subscription-invalid-negative-throttling.jsonld",
        "subscription-building-with-invalid-jsonldContext.jsonld",
        "subscription-invalid-same-member-pick-omit.json",
    ],
)
def test_028_05_07_08_create_with_invalid_members(client: TestClient, filename: str) -> None:
    response = create_subscription(client, subscription_sample(filename, random_id("urn:ngsi-ld:Subscription:")))
    check_problem(response, 400, "BadRequestData")


# --- UpdateSubscription ---------------------------------------------------------------------------


def _created(client: TestClient, path: str = "subscription.jsonld") -> str:
    sub_id = random_id("urn:ngsi-ld:Subscription:")
    assert create_subscription(client, subscription_sample(path, sub_id)).status_code == 201
    return sub_id


def test_029_01_update_with_missing_or_invalid_id(client: TestClient) -> None:
    assert update_subscription(client, "", "fragments/subscription-update.json").status_code == 405
    check_problem(
        update_subscription(client, "InvalidUri", "fragments/subscription-update.json"), 400, "BadRequestData"
    )


def test_029_02_update_unknown_subscription(client: TestClient) -> None:
    response = update_subscription(
        client, "urn:ngsi-ld:Subscription:unknowSubscription", "fragments/subscription-update.json"
    )
    check_problem(response, 404, "ResourceNotFound")


def test_029_04_update_removing_mandatory_members(client: TestClient) -> None:
    sub_id = _created(client)
    response = update_subscription(client, sub_id, "fragments/subscription-null-properties-update.json")
    check_problem(response, 400, "BadRequestData")


def test_029_05_update_observes_term_expansion(client: TestClient) -> None:
    sub_id = _created(client)
    response = update_subscription(client, sub_id, "fragments/subscription-vehicle-entities.json", SUITE_CONTEXT)
    assert response.status_code == 204 and response.text == ""
    for context, expectation in (
        (SUITE_CONTEXT, "expectations/subscription-vehicle.jsonld"),
        (None, "expectations/subscription-vehicle-expanded-types.jsonld"),
    ):
        expected = load(expectation)
        expected["id"] = sub_id
        same(expected, retrieve(client, sub_id, context=context).json())


def test_029_06_update_subscription(client: TestClient) -> None:
    sub_id = _created(client)
    response = update_subscription(client, sub_id, "fragments/subscription-update.json", SUITE_CONTEXT)
    assert response.status_code == 204 and response.text == ""
    expected = subscription_sample("subscription.jsonld", sub_id)
    expected.update(load("fragments/subscription-update.json"))
    same(expected, retrieve(client, sub_id, JSON_LD, SUITE_CONTEXT).json(), IGNORED | {"status"})


def test_029_07_09_update_is_active(client: TestClient) -> None:
    paused = _created(client, "subscription-inactive.jsonld")
    assert update_subscription(client, paused, "fragments/subscription-isActive-true-update.json").status_code == 204
    assert retrieve(client, paused).json()["status"] == "active"
    active = _created(client)
    assert update_subscription(client, active, "fragments/subscription-isActive-false-update.json").status_code == 204
    assert retrieve(client, active).json()["status"] == "paused"


def test_029_11_update_with_expires_at_in_the_past(client: TestClient) -> None:
    sub_id = _created(client)
    response = update_subscription(client, sub_id, "fragments/subscription-expiresAt-update.json")
    check_problem(response, 400, "BadRequestData")


# --- RetrieveSubscription, QuerySubscriptions, DeleteSubscription ------------------------------------


def test_030_03_retrieve_subscription(client: TestClient) -> None:
    sub_id = _created(client)
    response = retrieve(client, sub_id, context=SUITE_CONTEXT)
    assert response.status_code == 200
    expected = load("expectations/subscription-028-01.jsonld")
    expected["id"] = sub_id
    same(expected, response.json())


def _three(client: TestClient) -> list[str]:
    return [
        _created(client, path)
        for path in ("subscription.jsonld", "subscription-watchedAttributes.jsonld", "subscription-inactive.jsonld")
    ]


def test_031_01_query_subscriptions(client: TestClient) -> None:
    ids = _three(client)
    response = client.get(f"{URL}/subscriptions/", headers={"Link": link()})
    assert response.status_code == 200
    expected = load("expectations/subscriptions-031-01.json")
    for item, sub_id in zip(expected, ids, strict=True):
        item["id"] = sub_id
    by_id = {s["id"]: s for s in response.json()}
    for item in expected:
        same(item, by_id[item["id"]])


@pytest.mark.parametrize(
    ("limit", "offset", "number", "prev", "next_"),
    [
        (
            1,
            1,
            1,
            '</ngsi-ld/v1/subscriptions?limit=1&offset=0>;rel="prev";type="application/ld+json"',
            '</ngsi-ld/v1/subscriptions?limit=1&offset=2>;rel="next";type="application/ld+json"',
        ),
        (1, 2, 1, '</ngsi-ld/v1/subscriptions?limit=1&offset=1>;rel="prev";type="application/ld+json"', None),
        (15, 0, 3, None, None),
    ],
)
def test_031_02_query_pagination(
    client: TestClient, limit: int, offset: int, number: int, prev: str | None, next_: str | None
) -> None:
    _three(client)
    response = client.get(
        f"{URL}/subscriptions/",
        params={"limit": limit, "offset": offset},
        headers={"Link": link(), "Accept": JSON_LD},
    )
    assert response.status_code == 200
    assert len(response.json()) == number
    assert all(s["type"] == "Subscription" for s in response.json())
    links = response.headers.get("link", "")
    for expected in (prev, next_):
        if expected is not None:
            assert expected in links
    if prev is None:
        assert 'rel="prev"' not in links
    if next_ is None:
        assert 'rel="next"' not in links


def test_032_delete_subscription(client: TestClient) -> None:
    sub_id = _created(client)
    assert client.delete(f"{URL}/subscriptions/{sub_id}").status_code == 204
    check_problem(retrieve(client, sub_id), 404, "ResourceNotFound")
    check_problem(client.delete(f"{URL}/subscriptions/{sub_id}"), 404, "ResourceNotFound")
    check_problem(client.delete(f"{URL}/subscriptions/invalidId"), 400, "BadRequestData")


# --- SubscriptionNotificationBehaviour ------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "subscription-building-entities-active.jsonld",  # 046_01
        "subscription-building-entities-default.jsonld",  # 046_03
        "subscription-building-entities-active-watchedAttributes.jsonld",  # 046_04
        "subscription-building-entities-active-watchedAttributes-query.jsonld",  # 046_05
    ],
)
def test_046_01_03_04_05_notification_on_change(client: TestClient, server: Receiver, payload: str) -> None:
    sub_id, entity_id = notified_subscription(client, server, payload)
    update_attributes(client, entity_id, "entities/airQualityLevel-fragment.jsonld")
    notification, _ = wait_notification(server)
    assert notification["subscriptionId"] == sub_id
    assert notification["data"][0]["id"] == entity_id
    assert notification["data"][0]["airQualityLevel"]["value"] == 5
    assert notification["data"][0]["name"]["value"] == "Eiffel Tower"


def test_046_02_time_interval(client: TestClient, server: Receiver) -> None:
    sub_id = random_id("urn:ngsi-ld:Subscription:")
    entity_id = random_id("urn:ngsi-ld:Building:")
    payload = subscription_sample("subscription-timeInterval.jsonld", sub_id, f"{server.url}/notify", entity_id)
    payload["timeInterval"] = 1
    create_entity(client, "entities/building-simple-attributes.jsonld", entity_id)
    assert create_subscription(client, payload).status_code == 201
    wait_notification(server)
    notification, _ = wait_notification(server, 3.0)
    assert notification["subscriptionId"] == sub_id
    assert notification["data"][0]["id"] == entity_id
    assert notification["data"][0]["airQualityLevel"]["value"] == 4
    assert notification["data"][0]["name"]["value"] == "Eiffel Tower"


def test_046_06_entity_created(client: TestClient, server: Receiver) -> None:
    sub_id = random_id("urn:ngsi-ld:Subscription:")
    payload = subscription_sample("subscription-building-entities-entityCreated.jsonld", sub_id, f"{server.url}/notify")
    assert create_subscription(client, payload).status_code == 201
    entity_id = random_id("urn:ngsi-ld:Building:")
    create_entity(client, "entities/building-location-attribute.jsonld", entity_id)
    notification, _ = wait_notification(server)
    assert notification["subscriptionId"] == sub_id and notification["data"][0]["id"] == entity_id


def test_046_07_notification_structure_attributes_and_expansion(client: TestClient, server: Receiver) -> None:
    sub_id, entity_id = notified_subscription(client, server, "subscription-building-entities-active.jsonld")
    update_attributes(client, entity_id, "entities/airQualityLevel-fragment.jsonld")
    notification, _ = wait_notification(server)
    assert notification["type"] == "Notification" and notification["subscriptionId"] == sub_id
    assert notification["notifiedAt"]
    _, entity_id = notified_subscription(
        client, server, "subscription-building-entities-active-notificationAttributes.jsonld"
    )
    update_attributes(client, entity_id, "entities/airQualityLevel-fragment.jsonld")
    notification, _ = wait_notification(server)
    assert "name" not in notification["data"][0] and "airQualityLevel" in notification["data"][0]
    _, entity_id = notified_subscription(client, server, "subscription-building-entities-active-default-context.jsonld")
    update_attributes(client, entity_id, "entities/airQualityLevel-fragment.jsonld")
    notification, _ = wait_notification(server)
    assert "https://ngsi-ld-test-suite/context#airQualityLevel" in notification["data"][0]


@pytest.mark.parametrize("key_values", [False, True])
def test_046_08_all_attributes(client: TestClient, server: Receiver, key_values: bool) -> None:
    sub_id = random_id("urn:ngsi-ld:Subscription:")
    entity_id = random_id("urn:ngsi-ld:Building:")
    payload = subscription_sample(
        "subscription-building-entities-active.jsonld", sub_id, f"{server.url}/notify", entity_id
    )
    if key_values:
        payload["notification"]["format"] = "keyValues"
    create_entity(client, "entities/building-simple-attributes.jsonld", entity_id)
    assert create_subscription(client, payload).status_code == 201
    update_attributes(client, entity_id, "entities/airQualityLevel-fragment.jsonld")
    notification, _ = wait_notification(server)
    item = notification["data"][0]
    if key_values:
        assert item["name"] == "Eiffel Tower"
    else:
        assert item["name"]["value"] == "Eiffel Tower"
        assert {"almostFull", "airQualityLevel", "subCategory"} <= set(item)


def test_046_09_receiver_info_headers(client: TestClient, server: Receiver) -> None:
    _, entity_id = notified_subscription(client, server, "subscription-building-entities-active-endpoint-info.jsonld")
    update_attributes(client, entity_id, "entities/airQualityLevel-fragment.jsonld")
    _, headers = wait_notification(server)
    assert headers["x-additional-key"] == "Value"


def test_046_10_json_with_link_header(client: TestClient, server: Receiver) -> None:
    _, entity_id = notified_subscription(client, server, "subscription-building-entities-default.jsonld")
    update_attributes(client, entity_id, "entities/airQualityLevel-fragment.jsonld")
    notification, headers = wait_notification(server)
    assert headers["link"] == link()
    assert "@context" not in notification["data"][0]


def test_046_11_12_times_sent_and_last_success(client: TestClient, server: Receiver) -> None:
    sub_id, entity_id = notified_subscription(client, server, "subscription-building-entities-active.jsonld")
    update_attributes(client, entity_id, "entities/airQualityLevel-fragment.jsonld")
    wait_notification(server)
    deadline = time.monotonic() + 3
    while (info := retrieve(client, sub_id, JSON_LD, SUITE_CONTEXT).json()["notification"])["timesSent"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert info["timesSent"] == 1
    assert info["status"] == "ok" and info["lastNotification"] and info["lastSuccess"]


def test_046_13_last_failure(client: TestClient) -> None:
    with Receiver() as unreachable:
        endpoint = f"{unreachable.url}/notify"
    sub_id = random_id("urn:ngsi-ld:Subscription:")
    assert (
        create_subscription(
            client, subscription_sample("subscription-building-entities-active.jsonld", sub_id, endpoint)
        ).status_code
        == 201
    )
    create_entity(client, "entities/building-simple-attributes.jsonld", random_id("urn:ngsi-ld:Building:"))
    deadline = time.monotonic() + 5
    while "lastFailure" not in (info := retrieve(client, sub_id, JSON_LD, SUITE_CONTEXT).json()["notification"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert info["status"] == "failed"


def test_046_14_json_ld_notification(client: TestClient, server: Receiver) -> None:
    _, entity_id = notified_subscription(client, server, "subscription-building-entities-accept-jsonld.jsonld")
    update_attributes(client, entity_id, "entities/airQualityLevel-fragment.jsonld")
    notification, headers = wait_notification(server)
    assert "link" not in headers
    assert "@context" in notification["data"][0]


def test_046_15_throttling(client: TestClient, server: Receiver) -> None:
    _, entity_id = notified_subscription(client, server, "subscription-valid-throttling.jsonld")
    update_attributes(client, entity_id, "entities/airQualityLevel-fragment.jsonld")
    wait_notification(server)
    update_attributes(client, entity_id, "entities/airQualityLevel-fragment.jsonld")
    wait_no_notification(server)


def test_046_16_01_entity_type_selection(client: TestClient, server: Receiver) -> None:
    sub_id = random_id("urn:ngsi-ld:Subscription:")
    payload = subscription_sample(
        "subscription-building-entities-type-selection.jsonld", sub_id, f"{server.url}/notify"
    )
    assert create_subscription(client, payload).status_code == 201
    entity_id = random_id("urn:ngsi-ld:Building:")
    create_entity(client, "entities/building-simple-attributes.jsonld", entity_id)
    notification, _ = wait_notification(server)
    assert notification["subscriptionId"] == sub_id and notification["data"][0]["id"] == entity_id


def test_046_17_sys_attrs(client: TestClient, server: Receiver) -> None:
    _, entity_id = notified_subscription(client, server, "subscription-with-true-sysAttrs-parameter.jsonld")
    update_attributes(client, entity_id, "entities/airQualityLevel-fragment.jsonld")
    notification, _ = wait_notification(server)
    assert "createdAt" in notification["data"][0] and "modifiedAt" in notification["data"][0]


def test_046_21_01_entity_deleted(client: TestClient, server: Receiver) -> None:
    sub_id, entity_id = notified_subscription(
        client,
        server,
        "subscription-building-entities-entityDeleted.jsonld",
        "entities/building-location-attribute.jsonld",
    )
    assert client.delete(f"{URL}/entities/{entity_id}").status_code == 204
    notification, _ = wait_notification(server)
    assert notification["subscriptionId"] == sub_id
    assert len(notification["data"]) == 1
    item = notification["data"][0]
    assert len(item) == 3 and item["id"] == entity_id and item["deletedAt"]


def test_046_22_01_attribute_deleted_key_values(client: TestClient, server: Receiver) -> None:
    sub_id, entity_id = notified_subscription(
        client, server, "subscription-building-entities-attributeDeleted-keyValues.jsonld"
    )
    response = client.delete(f"{URL}/entities/{entity_id}/attrs/name", headers={"Link": link()})
    assert response.status_code == 204
    notification, _ = wait_notification(server)
    assert notification["subscriptionId"] == sub_id
    expected = load("expectations/entity-deleted-name-attribute-keyValues.json")
    expected["id"] = entity_id
    same(expected, notification["data"][0])


@pytest.mark.parametrize(
    ("fragment", "attribute", "expected"),
    [
        (
            "entities/name-fragment.jsonld",
            "name",
            {"type": "Property", "value": "Tour Eiffel", "previousValue": "Eiffel Tower"},
        ),
        (
            "entities/locatedAt-fragment.jsonld",
            "locatedAt",
            {"type": "Relationship", "object": "urn:ngsi-ld:City:Nantes", "previousObject": "urn:ngsi-ld:City:Paris"},
        ),
    ],
)
def test_046_31_show_changes(
    client: TestClient, server: Receiver, fragment: str, attribute: str, expected: dict[str, Any]
) -> None:
    sub_id = random_id("urn:ngsi-ld:Subscription:")
    entity_id = "urn:ngsi-ld:Building:046_31"
    create_entity(client, "entities/building-different-attributes-types.jsonld", entity_id)
    payload = subscription_sample("subscription-building-entities-show-changes.jsonld", sub_id, f"{server.url}/notify")
    assert create_subscription(client, payload).status_code == 201
    update_attributes(client, entity_id, fragment)
    notification, _ = wait_notification(server)
    item = notification["data"][0]
    assert item[attribute] == expected
    unchanged = {"name", "locatedAt"} - {attribute}
    for other in unchanged:
        assert not any(key.startswith("previous") for key in item[other])


def test_058_01_01_mqtt_notification(client: TestClient) -> None:
    topic = f"ngsild-test-suite/{uuid.uuid4().hex}"
    received: list[bytes] = []
    arrived, subscribed = threading.Event(), threading.Event()
    listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    listener.on_message = lambda _c, _u, message: (received.append(message.payload), arrived.set())
    listener.on_subscribe = lambda *args: subscribed.set()
    listener.connect("127.0.0.1", 1883)
    listener.loop_start()
    try:
        listener.subscribe(topic, qos=1)
        assert subscribed.wait(5)
        sub_id = random_id("urn:ngsi-ld:Subscription:")
        entity_id = random_id("urn:ngsi-ld:Building:")
        create_entity(client, "entities/building-simple-attributes.jsonld", entity_id)
        payload = subscription_sample(
            "subscription-building-entities-default.jsonld", sub_id, f"mqtt://127.0.0.1/{topic}", entity_id
        )
        assert create_subscription(client, copy.deepcopy(payload)).status_code == 201
        update_attributes(client, entity_id, "entities/airQualityLevel-fragment.jsonld")
        assert arrived.wait(5)
        time.sleep(0.3)
        assert len(received) == 1  # "Check Messages Contain One Instance"
        message = json.loads(received[0])
        assert message["body"]["subscriptionId"] == sub_id
        assert message["body"]["data"][0]["id"] == entity_id
        assert message["metadata"]["Link"] == link()
    finally:
        listener.loop_stop()
        listener.disconnect()
