"""The pure part of subscriptions: validation, change detection, the matching decision, payloads."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from territoire.context.errors import BadRequestData
from territoire.context.jsonld import ContextResolver, TermMap
from territoire.context.model import Entity
from territoire.context.subscriptions import DeliveryConfig
from territoire.context.subscriptions.delivery import endpoint_key
from territoire.context.subscriptions.model import (
    Compiled,
    DeliveryStatus,
    diff_entity,
    entity_changes,
    merge_fragment,
    notification_body,
    parse_subscription,
    render_subscription,
    status_of,
)

NOW = "2026-11-22T09:00:00.000000Z"
LATER = "2026-11-22T09:05:00.000000Z"
V = "https://uri.etsi.org/ngsi-ld/default-context/"
NOW_EPOCH = 1795338000.0  # 2026-11-22T09:00:00Z


@pytest.fixture(scope="module")
def terms() -> TermMap:
    return ContextResolver(None, 1.0).resolve(None)


def compile_sub(terms: TermMap, **members: Any) -> Compiled:
    body: dict[str, Any] = {
        "type": "Subscription",
        "entities": [{"type": "Lamp"}],
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}},
    }
    body.update(members)
    return Compiled(
        "", parse_subscription(body, terms, json_ld_context="https://example.org/ctx.jsonld", now=NOW), terms
    )


def lamp(power: str = "on", at: str = NOW, **attrs: Any) -> Entity:
    entity: Entity = {
        "id": "urn:ngsi-ld:Lamp:1",
        "type": [V + "Lamp"],
        "createdAt": NOW,
        "modifiedAt": at,
        "attrs": {
            V + "power": [{"type": "Property", "value": power, "createdAt": NOW, "modifiedAt": at}],
            "https://uri.etsi.org/ngsi-ld/location": [
                {
                    "type": "GeoProperty",
                    "value": {"type": "Point", "coordinates": [-0.554, 47.478]},
                    "createdAt": NOW,
                    "modifiedAt": NOW,
                }
            ],
        },
    }
    entity["attrs"].update(attrs)
    return entity


def test_parse_expands_names_and_keeps_the_rest(terms: TermMap) -> None:
    sub = parse_subscription(
        {
            "type": "Subscription",
            "entities": [{"type": "Lamp|Pole", "idPattern": "urn:.*"}],
            "watchedAttributes": ["power"],
            "q": "power==%22on%22",
            "notification": {"attributes": ["power"], "endpoint": {"uri": "http://h/n"}},
        },
        terms,
        json_ld_context="https://example.org/ctx.jsonld",
        now=NOW,
    )
    assert sub["id"].startswith("urn:ngsi-ld:Subscription:")
    assert sub["entities"] == [{"type": f"{V}Lamp|{V}Pole", "idPattern": "urn:.*"}]
    assert sub["watchedAttributes"] == [V + "power"]
    assert sub["q"] == 'power=="on"'
    assert sub["notification"]["attributes"] == [V + "power"]
    assert sub["jsonldContext"] == "https://example.org/ctx.jsonld"


def test_parse_errors_name_the_member(terms: TermMap) -> None:
    with pytest.raises(BadRequestData) as err:
        parse_subscription(
            {"type": "Subscription", "entities": [{"type": "A"}], "notification": {"endpoint": {"uri": "x"}}},
            terms,
            json_ld_context="c",
            now=NOW,
        )
    assert err.value.detail.startswith("notification.endpoint.uri:")
    assert err.value.extra == {"member": "notification.endpoint.uri"}


def test_merge_fragment_replaces_removes_and_merges_notification(terms: TermMap) -> None:
    sub = compile_sub(terms, throttling=2, notification={"format": "keyValues", "endpoint": {"uri": "http://h/n"}}).sub
    raw, expiry = merge_fragment(sub, {"throttling": None, "notification": {"format": "concise"}, "status": "x"})
    again = parse_subscription(raw, terms, json_ld_context="unused", now=NOW, check_expiry=expiry)
    assert "throttling" not in again and again["notification"]["format"] == "concise"
    assert again["notification"]["endpoint"] == {"uri": "http://h/n"}
    assert again["jsonldContext"] == "https://example.org/ctx.jsonld" and again["id"] == sub["id"]
    assert expiry is False
    with pytest.raises(BadRequestData):
        merge_fragment(sub, {"notification": {"endpoint": None}})
    with pytest.raises(BadRequestData):
        merge_fragment(sub, {"type": None})


def test_status_and_representation(terms: TermMap) -> None:
    sub = compile_sub(terms, isActive=False, expiresAt="2026-11-22T10:00:00Z").sub
    assert status_of(sub, NOW_EPOCH) == "paused"
    assert status_of(sub, NOW_EPOCH + 7200) == "expired"
    shown = render_subscription(sub, DeliveryStatus(3, 1, NOW, NOW, None, "ok"), terms, NOW_EPOCH)
    assert shown["entities"] == [{"type": "Lamp"}]
    assert shown["notification"] == {
        "endpoint": {"uri": "http://127.0.0.1:9/n"},
        "timesSent": 3,
        "timesFailed": 1,
        "status": "ok",
        "lastNotification": NOW,
        "lastSuccess": NOW,
    }


def test_diff_entity_instance_by_instance() -> None:
    before = lamp("on")
    after = lamp("off", LATER)
    after["attrs"][V + "colour"] = [{"type": "Property", "value": "red", "createdAt": LATER, "modifiedAt": LATER}]
    del after["attrs"]["https://uri.etsi.org/ngsi-ld/location"]
    change = diff_entity("urn:ngsi-ld:Lamp:1", before, after)
    assert change.created == {V + "colour"}
    assert change.updated == {V + "power"}
    assert change.deleted == {"https://uri.etsi.org/ngsi-ld/location"}
    assert not diff_entity("urn:ngsi-ld:Lamp:1", before, copy.deepcopy(before)).any_change()
    created = entity_changes({}, [before], [])[0]
    assert created.is_creation and created.created == {V + "power", "https://uri.etsi.org/ngsi-ld/location"}
    deleted = entity_changes({"urn:ngsi-ld:Lamp:1": before}, [], ["urn:ngsi-ld:Lamp:1"])[0]
    assert deleted.is_deletion and deleted.deleted == {V + "power", "https://uri.etsi.org/ngsi-ld/location"}


def test_multi_attribute_instance_removal() -> None:
    red = {
        "type": "Property",
        "value": "red",
        "datasetId": "urn:ngsi-ld:Dataset:a",
        "createdAt": NOW,
        "modifiedAt": NOW,
    }
    before = lamp(**{V + "colour": [{"type": "Property", "value": "x", "createdAt": NOW, "modifiedAt": NOW}, red]})
    after = lamp(**{V + "colour": [{"type": "Property", "value": "x", "createdAt": NOW, "modifiedAt": NOW}]})
    change = diff_entity("urn:ngsi-ld:Lamp:1", before, after)
    assert change.instance_deletions == {V + "colour": [red]}
    assert change.updated == set()
    assert change.changed_instances[V + "colour"] == {"urn:ngsi-ld:Dataset:a"}


def test_decide_triggers_watched_q_geo_and_status(terms: TermMap) -> None:
    update = diff_entity("urn:ngsi-ld:Lamp:1", lamp("on"), lamp("off", LATER))
    creation = diff_entity("urn:ngsi-ld:Lamp:1", None, lamp("on"))
    deletion = diff_entity("urn:ngsi-ld:Lamp:1", lamp("on"), None)
    default = compile_sub(terms)
    assert default.decide(update, NOW_EPOCH).reason == "attributeUpdated"  # type: ignore[union-attr]
    assert default.decide(creation, NOW_EPOCH).reason == "attributeCreated"  # type: ignore[union-attr]
    assert default.decide(deletion, NOW_EPOCH) is None
    assert compile_sub(terms, notificationTrigger=["entityDeleted"]).decide(deletion, NOW_EPOCH) is not None
    assert compile_sub(terms, notificationTrigger=["entityCreated"]).decide(update, NOW_EPOCH) is None
    assert compile_sub(terms, watchedAttributes=["colour"]).decide(update, NOW_EPOCH) is None
    assert compile_sub(terms, q='power=="on"').decide(update, NOW_EPOCH) is None
    assert compile_sub(terms, q='power=="off"').decide(update, NOW_EPOCH) is not None
    assert compile_sub(terms, entities=[{"type": "Pole"}]).decide(update, NOW_EPOCH) is None
    assert compile_sub(terms, entities=[{"type": "Lamp", "id": "urn:ngsi-ld:Lamp:2"}]).decide(update, NOW_EPOCH) is None
    assert compile_sub(terms, entities=[{"type": "Lamp", "idPattern": ".*:1"}]).decide(update, NOW_EPOCH) is not None
    near = {"georel": "near;maxDistance==100", "geometry": "Point", "coordinates": [-0.554, 47.478]}
    far = {"georel": "near;maxDistance==100", "geometry": "Point", "coordinates": [2.35, 48.85]}
    assert compile_sub(terms, geoQ=near).decide(update, NOW_EPOCH) is not None
    assert compile_sub(terms, geoQ=far).decide(update, NOW_EPOCH) is None
    assert compile_sub(terms, isActive=False).decide(update, NOW_EPOCH) is None
    expired = compile_sub(terms, expiresAt="2099-01-01T00:00:00Z")
    assert expired.decide(update, 4102444800.0 + 1) is None
    assert compile_sub(terms, timeInterval=5).decide(update, NOW_EPOCH) is None


def test_render_item_formats_changes_and_deletions(terms: TermMap) -> None:
    update = diff_entity("urn:ngsi-ld:Lamp:1", lamp("on"), lamp("off", LATER))
    shown = compile_sub(
        terms, notification={"showChanges": True, "attributes": ["power"], "endpoint": {"uri": "http://h/n"}}
    )
    decision = shown.decide(update, NOW_EPOCH)
    assert decision is not None
    assert shown.render_item(update, decision, LATER) == {
        "id": "urn:ngsi-ld:Lamp:1",
        "type": "Lamp",
        "power": {"type": "Property", "value": "off", "previousValue": "on"},
    }
    key_values = compile_sub(terms, notification={"format": "keyValues", "endpoint": {"uri": "http://h/n"}})
    assert key_values.render_item(update, decision, LATER)["power"] == "off"
    removal = diff_entity("urn:ngsi-ld:Lamp:1", lamp("on"), {**lamp("on"), "attrs": {}})
    deletes = compile_sub(terms, notificationTrigger=["attributeDeleted"])
    reason = deletes.decide(removal, NOW_EPOCH)
    assert reason is not None and reason.reason == "attributeDeleted"
    assert deletes.render_item(removal, reason, LATER)["power"] == {"type": "Property", "value": "urn:ngsi-ld:null"}
    gone = diff_entity("urn:ngsi-ld:Lamp:1", lamp("on"), None)
    entity_deleted = compile_sub(terms, notificationTrigger=["entityDeleted"])
    why = entity_deleted.decide(gone, NOW_EPOCH)
    assert why is not None
    assert entity_deleted.render_item(gone, why, LATER) == {
        "id": "urn:ngsi-ld:Lamp:1",
        "type": "Lamp",
        "deletedAt": LATER,
    }


def test_notification_body_and_helpers() -> None:
    body = notification_body("urn:ngsi-ld:Subscription:1", [{"id": "x"}], ["attributeUpdated"], NOW)
    assert body["id"].startswith("urn:ngsi-ld:Notification:") and body["type"] == "Notification"
    assert body["triggerReason"] == "attributeUpdated" and body["notifiedAt"] == NOW
    assert "triggerReason" not in notification_body("s", [], ["attributeUpdated", "attributeCreated"], NOW)
    assert endpoint_key("http://h/n") == "http://h:80"
    assert endpoint_key("mqtt://user:pw@b:1884/t") == "mqtt://b:1884"
    config = DeliveryConfig.from_env({"TERRITOIRE_NOTIFY_BACKOFF_MAX": "2.5", "TERRITOIRE_NOTIFY_BATCH": "10"})
    assert config.backoff_max == 2.5 and config.batch == 10


def test_notification_batches_keep_one_reason_and_one_change_per_entity() -> None:
    from territoire.context.subscriptions.delivery import notification_batches
    from territoire.context.subscriptions.storage import OutboxRow

    def row(seq: int, entity: str, reason: str) -> OutboxRow:
        return OutboxRow(seq, "", "urn:s", entity, reason, b"{}", 0, 0.0)

    rows = [
        row(1, "urn:a", "attributeUpdated"),
        row(2, "urn:b", "attributeUpdated"),
        row(3, "urn:a", "attributeUpdated"),  # second change of urn:a: a new notification
        row(4, "urn:a", "attributeDeleted"),  # another reason: a new notification
        row(5, "urn:a", "entityDeleted"),
        row(6, "urn:c", "entityDeleted"),
        row(7, "urn:d", "entityDeleted"),
    ]
    batches = notification_batches(rows, max_entities=2)
    assert [[r.seq for r in batch] for batch in batches] == [[1, 2], [3], [4], [5, 6], [7]]
