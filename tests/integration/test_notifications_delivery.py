"""Notification delivery end to end, on both backends: a real HTTP receiver, a real MQTT broker.

The receiver (:class:`territoire.bench.notifications.Receiver`) is a real HTTP/1.1 server on the
loopback; MQTT goes through the local Mosquitto. The last test kills a real ``territoire serve``
process (SIGKILL) while notifications are pending and checks they all arrive after a restart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from territoire.app import create_app
from territoire.bench.notifications import Receiver
from territoire.config import Settings
from territoire.context.store import Store

BASE = "/ngsi-ld/v1"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"


@pytest.fixture
def app(store: Store, settings: Settings) -> FastAPI:
    app = create_app(settings, store=store)
    config = app.state.subscriptions.config
    config.backoff_base = 0.1
    config.backoff_max = 0.4
    config.poll_interval = 0.1
    config.timeout = 1.0
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def subscribe(client: TestClient, uri: str, *, tenant: str | None = None, **members: Any) -> str:
    body: dict[str, Any] = {
        "type": "Subscription",
        "entities": [{"type": "Streetlight"}],
        "notification": {"endpoint": {"uri": uri}},
    }
    notification = members.pop("notification", None)
    if notification:
        body["notification"].update(notification)
    body.update(members)
    headers = {"NGSILD-Tenant": tenant} if tenant else {}
    response = client.post(f"{BASE}/subscriptions", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.headers["location"].rsplit("/", 1)[1]


def streetlight(n: int, power: str = "on", **extra: Any) -> dict[str, Any]:
    entity = {
        "id": f"urn:ngsi-ld:Streetlight:{n}",
        "type": "Streetlight",
        "powerState": {"type": "Property", "value": power},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-0.554, 47.478]}},
    }
    entity.update(extra)
    return entity


def write(client: TestClient, entity: dict[str, Any], tenant: str | None = None) -> None:
    headers = {"NGSILD-Tenant": tenant} if tenant else {}
    response = client.post(f"{BASE}/entityOperations/upsert", json=[entity], headers=headers)
    assert response.status_code in (201, 204), response.text


def status(client: TestClient, sub_id: str, tenant: str | None = None) -> dict[str, Any]:
    headers = {"NGSILD-Tenant": tenant} if tenant else {}
    response = client.get(f"{BASE}/subscriptions/{sub_id}", headers=headers)
    assert response.status_code == 200, response.text
    notification: dict[str, Any] = response.json()["notification"]
    return notification


def wait_status(
    client: TestClient, sub_id: str, check: Any, timeout: float = 5.0, tenant: str | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = status(client, sub_id, tenant)
        if check(current) or time.monotonic() > deadline:
            return current
        time.sleep(0.05)


def test_http_notification_format_headers_and_status(client: TestClient, receiver: Receiver) -> None:
    sub_id = subscribe(
        client,
        f"{receiver.url}/notify?src=territoire",
        notification={
            "attributes": ["powerState"],
            "endpoint": {
                "uri": f"{receiver.url}/notify?src=territoire",
                "receiverInfo": [{"key": "X-Api-Key", "value": "s3cret"}],
            },
        },
    )
    started = time.monotonic()
    write(client, streetlight(1))
    got = receiver.wait_requests("/notify", 1)[0]
    assert time.monotonic() - started < 2.0
    assert got.method == "POST"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["link"] == f'<{CORE}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    assert got.headers["x-api-key"] == "s3cret"
    assert "ngsild-tenant" not in got.headers
    body = got.json()
    assert body["id"].startswith("urn:ngsi-ld:Notification:")
    assert body["type"] == "Notification"
    assert body["subscriptionId"] == sub_id
    assert body["notifiedAt"].endswith("Z")
    assert body["triggerReason"] == "attributeCreated"
    assert body["data"] == [
        {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight", "powerState": {"type": "Property", "value": "on"}}
    ]
    done = wait_status(client, sub_id, lambda s: s.get("timesSent") == 1)
    assert done["timesSent"] == 1
    assert done["timesFailed"] == 0
    assert done["status"] == "ok"
    assert done["lastSuccess"] == done["lastNotification"]
    assert "lastFailure" not in done


def test_failing_and_hanging_receivers_are_retried_without_delaying_others(client: TestClient) -> None:
    with Receiver() as good, Receiver() as broken, Receiver() as hanging:
        broken.behave("/n", status=500)
        hanging.behave("/n", delay=None)
        ok_id = subscribe(client, f"{good.url}/n")
        broken_id = subscribe(client, f"{broken.url}/n")
        hanging_id = subscribe(client, f"{hanging.url}/n")
        for n in range(3):
            started = time.monotonic()
            write(client, streetlight(n))
            good.wait_requests("/n", n + 1, timeout=2.0)
            assert time.monotonic() - started < 0.8, "a healthy endpoint waited for the failing ones"
        # The 500 receiver was retried (more attempts than changes) and its status says so.
        broken.wait_requests("/n", 4, timeout=5.0, ok_only=False)
        failed = wait_status(client, broken_id, lambda s: s.get("timesFailed", 0) >= 2)
        assert failed["status"] == "failed"
        assert failed["timesFailed"] >= 2
        assert "lastFailure" in failed and "lastSuccess" not in failed
        hung = wait_status(client, hanging_id, lambda s: s.get("timesFailed", 0) >= 1, timeout=5.0)
        assert hung["status"] == "failed"
        assert status(client, ok_id)["status"] == "ok"
        # Once the receiver recovers, every pending change is delivered, in order.
        broken.behave("/n", status=200)
        broken.wait_for(
            lambda: (
                {e["id"] for r in broken.received("/n") for e in r.json()["data"]}
                >= {f"urn:ngsi-ld:Streetlight:{n}" for n in range(3)}
            ),
            timeout=5.0,
        )
        delivered = [e["id"] for r in broken.received("/n") for e in r.json()["data"]]
        assert delivered == sorted(delivered, key=lambda i: int(i.rsplit(":", 1)[1]))
        recovered = wait_status(client, broken_id, lambda s: s.get("status") == "ok")
        assert recovered["status"] == "ok" and "lastSuccess" in recovered


def test_watched_attributes_q_and_geo_q_select_the_changes(client: TestClient, receiver: Receiver) -> None:
    subscribe(
        client,
        f"{receiver.url}/watched",
        watchedAttributes=["powerState"],
        q='powerState=="off"',
        geoQ={"georel": "near;maxDistance==500", "geometry": "Point", "coordinates": [-0.554, 47.478]},
    )
    write(client, streetlight(1, "on"))  # q does not match
    far = streetlight(2, "off")
    far["location"]["value"]["coordinates"] = [2.35, 48.85]
    write(client, far)  # geoQ does not match
    write(client, streetlight(3, "off"))  # matches
    entity = streetlight(3, "off")
    entity["dimming"] = {"type": "Property", "value": 40}
    client.post(f"{BASE}/entities/urn:ngsi-ld:Streetlight:3/attrs", json={"dimming": entity["dimming"]})  # unwatched
    client.patch(f"{BASE}/entities/urn:ngsi-ld:Streetlight:3/attrs", json={"powerState": {"value": "off"}})
    got = receiver.wait_requests("/watched", 2, timeout=3.0)
    time.sleep(0.3)
    got = receiver.received("/watched")
    assert [r.json()["data"][0]["id"] for r in got] == ["urn:ngsi-ld:Streetlight:3"] * 2
    assert [r.json()["triggerReason"] for r in got] == ["attributeCreated", "attributeUpdated"]


def test_throttling_delays_and_sends_the_last_state(client: TestClient, receiver: Receiver) -> None:
    subscribe(client, f"{receiver.url}/t", throttling=1, notification={"format": "keyValues"})
    write(client, streetlight(1, "on"))
    first = receiver.wait_requests("/t", 1)[0]
    for power in ("off", "on", "off"):
        write(client, streetlight(1, power))
    time.sleep(0.5)
    assert len(receiver.received("/t")) == 1, "throttling let a notification through too early"
    second = receiver.wait_requests("/t", 2, timeout=3.0)[1]
    assert second.at - first.at >= 0.95
    assert second.json()["data"] == [
        {
            "id": "urn:ngsi-ld:Streetlight:1",
            "type": "Streetlight",
            "powerState": "off",
            "location": {"type": "Point", "coordinates": [-0.554, 47.478]},
        }
    ]
    time.sleep(1.2)
    assert len(receiver.received("/t")) == 2


def test_time_interval_sends_the_matching_entities_periodically(client: TestClient, receiver: Receiver) -> None:
    write(client, streetlight(1, "on"))
    write(client, streetlight(2, "off"))
    subscribe(client, f"{receiver.url}/p", timeInterval=1, q='powerState=="on"')
    got = receiver.wait_requests("/p", 2, timeout=4.0)
    assert 0.8 <= got[1].at - got[0].at <= 2.0
    for request in got:
        assert [e["id"] for e in request.json()["data"]] == ["urn:ngsi-ld:Streetlight:1"]
        assert "triggerReason" not in request.json()


def test_show_changes_deletions_and_json_ld(client: TestClient, receiver: Receiver) -> None:
    subscribe(
        client,
        f"{receiver.url}/c",
        notificationTrigger=["attributeUpdated", "attributeDeleted", "entityDeleted"],
        notification={"showChanges": True, "endpoint": {"uri": f"{receiver.url}/c", "accept": "application/ld+json"}},
    )
    write(client, streetlight(1, "on"))  # created: not a trigger here
    client.patch(f"{BASE}/entities/urn:ngsi-ld:Streetlight:1/attrs", json={"powerState": {"value": "off"}})
    client.delete(f"{BASE}/entities/urn:ngsi-ld:Streetlight:1/attrs/powerState")
    client.delete(f"{BASE}/entities/urn:ngsi-ld:Streetlight:1")
    got = receiver.wait_requests("/c", 3, timeout=3.0)
    updated, attr_deleted, deleted = (r.json() for r in got[:3])
    assert "link" not in got[0].headers
    assert got[0].headers["content-type"] == "application/ld+json"
    assert updated["triggerReason"] == "attributeUpdated"
    assert updated["data"][0]["@context"] == CORE
    assert updated["data"][0]["powerState"] == {"type": "Property", "value": "off", "previousValue": "on"}
    assert attr_deleted["triggerReason"] == "attributeDeleted"
    assert attr_deleted["data"][0]["powerState"] == {
        "type": "Property",
        "value": "urn:ngsi-ld:null",
        "previousValue": "off",
    }
    assert deleted["triggerReason"] == "entityDeleted"
    item = deleted["data"][0]
    assert item["id"] == "urn:ngsi-ld:Streetlight:1" and "deletedAt" in item
    assert item["location"]["value"] == "urn:ngsi-ld:null"


def test_tenants_are_isolated(client: TestClient, receiver: Receiver) -> None:
    subscribe(client, f"{receiver.url}/a", tenant="angers")
    subscribe(client, f"{receiver.url}/default")
    write(client, streetlight(1), tenant="nantes")
    write(client, streetlight(2), tenant="angers")
    got = receiver.wait_requests("/a", 1)
    time.sleep(0.3)
    assert [r.json()["data"][0]["id"] for r in receiver.received("/a")] == ["urn:ngsi-ld:Streetlight:2"]
    assert got[0].headers["ngsild-tenant"] == "angers"
    assert receiver.received("/default") == []


def test_paused_and_expired_subscriptions_are_silent(client: TestClient, receiver: Receiver) -> None:
    paused = subscribe(client, f"{receiver.url}/paused", isActive=False)
    expiring = subscribe(client, f"{receiver.url}/expired", expiresAt="2099-01-01T00:00:00Z")
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1.2))
    assert client.patch(f"{BASE}/subscriptions/{expiring}", json={"expiresAt": soon}).status_code == 204
    time.sleep(1.5)
    write(client, streetlight(1))
    time.sleep(0.4)
    assert receiver.received() == []
    assert client.get(f"{BASE}/subscriptions/{expiring}").json()["status"] == "expired"
    assert client.patch(f"{BASE}/subscriptions/{paused}", json={"isActive": True}).status_code == 204
    write(client, streetlight(1, "off"))
    assert receiver.wait_requests("/paused", 1)[0].json()["subscriptionId"] == paused


def test_mqtt_notification_through_mosquitto(client: TestClient) -> None:
    topic = f"territoire/test/{uuid.uuid4().hex}"
    messages: list[mqtt.MQTTMessage] = []
    arrived = threading.Event()
    subscribed = threading.Event()

    def on_message(_client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        messages.append(message)
        arrived.set()

    listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    listener.on_message = on_message
    listener.on_subscribe = lambda *args: subscribed.set()
    try:
        listener.connect("127.0.0.1", 1883)
    except OSError as err:  # pragma: no cover - depends on the machine
        if os.environ.get("CI"):
            pytest.fail(f"CI must test MQTT: {err}")
        pytest.skip(f"no MQTT broker on 127.0.0.1:1883: {err}")
    listener.loop_start()
    try:
        listener.subscribe(topic, qos=1)
        assert subscribed.wait(5)
        sub_id = subscribe(
            client,
            f"mqtt://127.0.0.1:1883/{topic}",
            tenant="angers",
            notification={
                "endpoint": {
                    "uri": f"mqtt://127.0.0.1:1883/{topic}",
                    "notifierInfo": [{"key": "MQTT-QoS", "value": "1"}],
                    "receiverInfo": [{"key": "X-Source", "value": "territoire"}],
                }
            },
        )
        write(client, streetlight(7), tenant="angers")
        assert arrived.wait(5), "no MQTT notification"
        message = messages[0]
        assert message.qos == 1
        envelope = orjson.loads(message.payload)
        assert envelope["metadata"]["Content-Type"] == "application/json"
        assert envelope["metadata"]["NGSILD-Tenant"] == "angers"
        assert envelope["metadata"]["X-Source"] == "territoire"
        assert envelope["body"]["subscriptionId"] == sub_id
        assert envelope["body"]["data"][0]["id"] == "urn:ngsi-ld:Streetlight:7"
        done = wait_status(client, sub_id, lambda s: s.get("status") == "ok", tenant="angers")
        assert done["timesSent"] == 1 and done["status"] == "ok"
    finally:
        listener.loop_stop()
        listener.disconnect()


# --- durability ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_server(database_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TERRITOIRE_DATABASE_URL": database_url,
        "TERRITOIRE_NOTIFY_BACKOFF_BASE": "0.2",
        "TERRITOIRE_NOTIFY_BACKOFF_MAX": "0.5",
        "TERRITOIRE_NOTIFY_LEASE": "2",
        "TERRITOIRE_NOTIFY_POLL_INTERVAL": "0.2",
    }
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "territoire.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=output,
            stderr=output,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"territoire serve did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def test_pending_notifications_survive_sigkill(store: Store, tmp_path: Path) -> None:
    """Kill the server while notifications are pending; after a restart all of them arrive."""
    database_url = (
        f"sqlite:///{store.path}" if store.backend == "sqlite" else store.url  # type: ignore[attr-defined]
    )
    receiver_port = _free_port()  # nobody listens there yet: deliveries fail
    api_port = _free_port()
    log = tmp_path / "server.log"
    server = _start_server(database_url, api_port, log)
    try:
        api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}{BASE}", timeout=10.0)
        with api:
            ids = {}
            for tenant, path in (("angers", "/notify"), ("nantes", "/other")):
                response = api.post(
                    "/subscriptions",
                    headers={"NGSILD-Tenant": tenant},
                    json={
                        "type": "Subscription",
                        "entities": [{"type": "Streetlight"}],
                        "notification": {"endpoint": {"uri": f"http://127.0.0.1:{receiver_port}{path}"}},
                    },
                )
                assert response.status_code == 201, response.text
                ids[tenant] = response.headers["location"].rsplit("/", 1)[1]
            expected = {f"urn:ngsi-ld:Streetlight:{n}" for n in range(20)}
            for n in range(20):
                response = api.post("/entities", json=streetlight(n), headers={"NGSILD-Tenant": "angers"})
                assert response.status_code == 201, response.text
            deadline = time.monotonic() + 10
            while True:
                current = api.get(f"/subscriptions/{ids['angers']}", headers={"NGSILD-Tenant": "angers"}).json()
                if current["notification"]["timesFailed"] >= 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert current["notification"]["status"] == "failed"
        server.send_signal(signal.SIGKILL)
        server.wait()
        with Receiver(port=receiver_port) as receiver:
            server = _start_server(database_url, api_port, log)

            def delivered() -> set[str]:
                return {e["id"] for r in receiver.received("/notify") for e in r.json()["data"]}

            assert receiver.wait_for(lambda: delivered() >= expected, timeout=20.0), (
                f"missing after restart: {sorted(expected - delivered())}"
            )
            time.sleep(0.3)
            assert receiver.received("/other") == []
            for request in receiver.received("/notify"):
                assert request.headers["ngsild-tenant"] == "angers"
                assert request.json()["subscriptionId"] == ids["angers"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
