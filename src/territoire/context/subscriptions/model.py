"""NGSI-LD subscriptions, pure part: parsing and validation, the matching decision, payloads.

ETSI GS CIM 009 v1.8 references:

- 5.2.12 *Subscription* and 5.2.14 *NotificationParams* (with 5.2.15 *Endpoint*, 5.2.22
  *KeyValuePair*): :func:`parse_subscription` turns a request body into the internal form (names
  expanded with the request's @context, like entities) and refuses what the tables forbid with
  BadRequestData naming the member; :func:`merge_fragment` implements 5.8.2 (update);
  :func:`render_subscription` is the representation returned by 5.8.3 / 5.8.4.
- 5.8.6 *notification behaviour*: :func:`diff_entity` computes what a write changed (created,
  updated and deleted attributes, compared instance by instance through ``modifiedAt``);
  :meth:`Compiled.decide` applies a subscription's entity selectors, ``notificationTrigger``,
  ``watchedAttributes``, ``q`` (4.9), ``geoQ`` (4.10), ``scopeQ`` (4.19), ``datasetId``, status
  and ``expiresAt``; :meth:`Compiled.render_item` renders the entity as the subscription asks
  (``format``, ``attributes``, ``pick`` / ``omit``, ``sysAttrs``, ``lang``, ``showChanges`` with
  ``previousValue`` & co., deleted attributes as ``urn:ngsi-ld:null``, ``deletedAt``).
- 5.3.1 *Notification*: :func:`notification_body`.

No I/O here: the write hook, storage, delivery and API modules call these functions.

The internal form of a subscription (stored as JSON) keeps the members of 5.2.12 as given, except
that entity types, ``watchedAttributes`` and ``notification.attributes`` hold expanded IRIs
(``entities[].type`` is a type expression whose names are IRIs), ``q`` is percent-decoded, and
``jsonldContext`` is always set (the creation request's @context when the member is absent).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from territoire.context import geo, model, qlang
from territoire.context.errors import BadRequestData
from territoire.context.jsonld import CORE_CONTEXT_URL, TermMap, is_core_context_url
from territoire.context.model import NULL_URI, VALUE_MEMBER, Entity, Instance, Terms
from territoire.context.store.base import TypeExpr

TRIGGERS = (
    "entityCreated",
    "entityUpdated",
    "entityDeleted",
    "attributeCreated",
    "attributeUpdated",
    "attributeDeleted",
)
#: 5.2.12: ``notificationTrigger`` when absent.
DEFAULT_TRIGGERS = ("attributeCreated", "attributeUpdated")
#: 5.2.14 ``format`` values (``simplified`` is the synonym of ``keyValues``, 4.5.3).
FORMATS: dict[str, model.Format] = {
    "normalized": "normalized",
    "keyValues": "keyValues",
    "simplified": "keyValues",
    "concise": "concise",
}
ACCEPTS = ("application/json", "application/ld+json")
SCHEMES = ("http", "https", "mqtt", "mqtts")
MQTT_VERSIONS = ("mqtt3.1.1", "mqtt5.0")
#: The trigger reason of periodic (``timeInterval``) notifications, for the outbox.
PERIODIC = "timeInterval"

_TOP_LEVEL = frozenset(
    {
        "id",
        "type",
        "subscriptionName",
        "description",
        "entities",
        "watchedAttributes",
        "notificationTrigger",
        "timeInterval",
        "q",
        "geoQ",
        "scopeQ",
        "lang",
        "isActive",
        "notification",
        "expiresAt",
        "throttling",
        "datasetId",
        "jsonldContext",
        "@context",
        # read-only members (ignored on input, 5.2.12)
        "status",
        "createdAt",
        "modifiedAt",
    }
)
_UNSUPPORTED = {
    "csf": "context source filters (csf) are not supported: this broker has no context source registrations",
    "temporalQ": "temporalQ is not supported in subscriptions",
    "join": "linked entity retrieval (join) is not supported in subscriptions",
    "joinLevel": "linked entity retrieval (joinLevel) is not supported in subscriptions",
}
_NOTIFICATION = frozenset(
    {
        "attributes",
        "sysAttrs",
        "format",
        "showChanges",
        "pick",
        "omit",
        "endpoint",
        # read-only (5.2.14)
        "status",
        "timesSent",
        "timesFailed",
        "lastNotification",
        "lastSuccess",
        "lastFailure",
    }
)
_ENDPOINT = frozenset({"uri", "accept", "timeout", "cooldown", "receiverInfo", "notifierInfo"})
_READ_ONLY_NOTIFICATION = ("status", "timesSent", "timesFailed", "lastNotification", "lastSuccess", "lastFailure")
#: The ``previous...`` member carrying an instance's former value, per value member (5.2.14 showChanges).
PREVIOUS_MEMBER = {member: "previous" + member[0].upper() + member[1:] for member in set(VALUE_MEMBER.values())}


def _bad(member: str, message: str) -> BadRequestData:
    return BadRequestData(f"{member}: {message}", member=member)


def epoch_of(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 date-time (a naive time is read as UTC)."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def iso_of(epoch: float) -> str:
    """The fixed-width UTC ISO 8601 string of an epoch time (system timestamps' format)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------------------------------------
# Parsing (5.2.12, 5.8.1, 5.8.2)
# ---------------------------------------------------------------------------------------------


def _string(value: Any, member: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(member, f"must be a non-empty string, got {value!r}")
    return value


def _bool(value: Any, member: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(member, f"must be true or false, got {value!r}")
    return value


def _positive(value: Any, member: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _bad(member, f"must be a number greater than 0, got {value!r}")
    return float(value) if isinstance(value, float) else value


def _names(value: Any, member: str, terms: Terms) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _bad(member, "must be a non-empty array of attribute names")
    out: list[str] = []
    for name in value:
        if not isinstance(name, str):
            raise _bad(member, f"must hold attribute names, got {name!r}")
        try:
            iri = terms.expand(model.check_name(name, "attribute"))
        except BadRequestData as err:
            raise _bad(member, err.detail) from None
        if iri not in out:
            out.append(iri)
    return out


def parse_type_text(text: str, terms: Terms) -> TypeExpr:
    """Entity type selection (4.17): ``A``, ``A,B`` / ``A|B`` (or), ``A;B`` (and), parentheses."""
    from territoire.context.api import parse_type_expr

    parsed = parse_type_expr(text, terms)
    assert parsed is not None
    return parsed


def type_text(expr: TypeExpr, name: Callable[[str], str] = str) -> str:
    """A type expression as text, each name passed through ``name`` (e.g. compaction)."""
    groups = [";".join(name(t) for t in group) for group in expr.any_of]
    if len(groups) == 1:
        return groups[0]
    return "|".join(f"({g})" if ";" in g else g for g in groups)


def _entities(value: Any, terms: Terms) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _bad("entities", "must be a non-empty array of entity selectors {id?, idPattern?, type}")
    out: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        where = f"entities[{index}]"
        if not isinstance(item, dict):
            raise _bad(where, "must be an object {id?, idPattern?, type}")
        unknown = [k for k in item if k not in ("id", "idPattern", "type", "@context")]
        if unknown:
            raise _bad(where, f"unknown member(s) {', '.join(map(repr, unknown))}")
        if "type" not in item:
            raise _bad(f"{where}.type", "is mandatory (5.2.8)")
        raw_type = _string(item["type"], f"{where}.type")
        try:
            expr = parse_type_text(raw_type, terms)
        except BadRequestData as err:
            raise _bad(f"{where}.type", err.detail) from None
        selector: dict[str, Any] = {"type": type_text(expr)}
        if item.get("id") is not None:
            if not model.is_uri(item["id"]):
                raise _bad(f"{where}.id", f"must be a URI, got {item['id']!r}")
            selector["id"] = item["id"]
        if item.get("idPattern") is not None:
            pattern = _string(item["idPattern"], f"{where}.idPattern")
            try:
                re.compile(pattern)
            except re.error as err:
                raise _bad(f"{where}.idPattern", f"is not a valid regular expression: {err}") from None
            selector["idPattern"] = pattern
        out.append(selector)
    return out


def _key_values(value: Any, member: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _bad(member, "must be a non-empty array of {key, value}")
    out = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"key", "value"}:
            raise _bad(f"{member}[{index}]", "must be an object with exactly the members key and value")
        key = _string(item["key"], f"{member}[{index}].key")
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", key):
            raise _bad(f"{member}[{index}].key", f"{key!r} is not a valid header / metadata name")
        if not isinstance(item["value"], str) or "\n" in item["value"] or "\r" in item["value"]:
            raise _bad(f"{member}[{index}].value", "must be a string on one line")
        out.append({"key": key, "value": item["value"]})
    return out


def _endpoint(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad("notification.endpoint", "is mandatory and must be an object {uri, accept?, ...}")
    unknown = [k for k in value if k not in _ENDPOINT]
    if unknown:
        raise _bad("notification.endpoint", f"unknown member(s) {', '.join(map(repr, unknown))}")
    uri = value.get("uri")
    if not isinstance(uri, str) or not model.is_uri(uri):
        raise _bad("notification.endpoint.uri", f"must be an absolute URI, got {uri!r}")
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise _bad("notification.endpoint.uri", f"must be an http, https, mqtt or mqtts URL with a host, got {uri!r}")
    if parts.scheme.startswith("mqtt") and not parts.path.strip("/"):
        raise _bad("notification.endpoint.uri", "an MQTT endpoint needs a topic: mqtt://host[:port]/topic")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise _bad("notification.endpoint.uri", f"has an invalid port: {uri!r}") from None
    out: dict[str, Any] = {"uri": uri}
    if value.get("accept") is not None:
        if value["accept"] not in ACCEPTS:
            raise _bad("notification.endpoint.accept", f"must be one of {', '.join(ACCEPTS)}, got {value['accept']!r}")
        out["accept"] = value["accept"]
    for name in ("timeout", "cooldown"):
        if value.get(name) is not None:
            out[name] = _positive(value[name], f"notification.endpoint.{name}")
    if value.get("receiverInfo") is not None:
        out["receiverInfo"] = _key_values(value["receiverInfo"], "notification.endpoint.receiverInfo")
    if value.get("notifierInfo") is not None:
        info = _key_values(value["notifierInfo"], "notification.endpoint.notifierInfo")
        for item in info:
            if item["key"] == "MQTT-QoS" and item["value"] not in ("0", "1", "2"):
                raise _bad("notification.endpoint.notifierInfo", "MQTT-QoS must be 0, 1 or 2")
            if item["key"] == "MQTT-Version" and item["value"] not in MQTT_VERSIONS:
                raise _bad("notification.endpoint.notifierInfo", f"MQTT-Version must be one of {MQTT_VERSIONS}")
        out["notifierInfo"] = info
    return out


def _notification(value: Any, terms: Terms) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad("notification", "is mandatory and must be an object (NotificationParams, 5.2.14)")
    unknown = [k for k in value if k not in _NOTIFICATION]
    if unknown:
        raise _bad("notification", f"unknown member(s) {', '.join(map(repr, unknown))}")
    out: dict[str, Any] = {}
    if value.get("attributes") is not None:
        out["attributes"] = _names(value["attributes"], "notification.attributes", terms)
    if value.get("sysAttrs") is not None:
        out["sysAttrs"] = _bool(value["sysAttrs"], "notification.sysAttrs")
    if value.get("format") is not None:
        if value["format"] not in FORMATS:
            raise _bad("notification.format", f"must be one of {', '.join(FORMATS)}, got {value['format']!r}")
        out["format"] = value["format"]
    if value.get("showChanges") is not None:
        out["showChanges"] = _bool(value["showChanges"], "notification.showChanges")
        if out["showChanges"] and FORMATS.get(out.get("format", "normalized")) == "keyValues":
            raise _bad("notification.showChanges", "cannot be true with the keyValues (simplified) format")
    for name in ("pick", "omit"):
        if value.get(name) is not None:
            items = value[name]
            if isinstance(items, str):
                items = [i.strip() for i in items.split(",") if i.strip()]
            if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
                raise _bad(f"notification.{name}", "must be a non-empty array of entity member names")
            out[name] = list(dict.fromkeys(items))
    if "pick" in out and "omit" in out:
        both = sorted(set(out["pick"]) & set(out["omit"]))
        raise _bad("notification.pick", f"pick and omit cannot be used together (both name {both or 'members'})")
    for name in ("pick", "omit"):
        if name in out and "attributes" in out:
            raise _bad(f"notification.{name}", f"{name} and attributes cannot be used together (4.21)")
    out["endpoint"] = _endpoint(value.get("endpoint"))
    return out


def decode_q(text: str) -> str:
    """``q`` as written in a URL: subscriptions carry it percent-encoded too (``%20``)."""
    return unquote(text) if "%" in text else text


def parse_subscription(
    body: Any, terms: Terms, *, json_ld_context: str, now: str, check_expiry: bool = True
) -> dict[str, Any]:
    """Validate a Subscription (5.2.12) and return its internal form.

    ``json_ld_context`` is the URL of the @context to store when the body has no ``jsonldContext``
    member. ``check_expiry``: an ``expiresAt`` in the past is refused (5.8.1, and 5.8.2 when the
    update carries it). The ``id`` is generated when absent.
    """
    if not isinstance(body, dict):
        raise BadRequestData("The subscription must be a JSON object")
    if not body or set(body) <= {"@context"}:
        raise BadRequestData("The subscription is empty: id?, type, entities or watchedAttributes, notification")
    for name, reason in _UNSUPPORTED.items():
        if name in body:
            raise _bad(name, reason)
    unknown = [k for k in body if k not in _TOP_LEVEL]
    if unknown:
        raise _bad(unknown[0], f"is not a member of Subscription (5.2.12); unknown: {', '.join(map(repr, unknown))}")
    if body.get("type") != "Subscription":
        raise _bad("type", f'must be "Subscription", got {body.get("type")!r}')
    sub: dict[str, Any] = {"type": "Subscription"}
    raw_id = body.get("id")
    if raw_id is None:
        sub["id"] = f"urn:ngsi-ld:Subscription:{uuid.uuid4()}"
    elif not model.is_uri(raw_id):
        raise _bad("id", f"must be a URI, got {raw_id!r}")
    else:
        sub["id"] = raw_id
    for name in ("subscriptionName", "description", "lang"):
        if body.get(name) is not None:
            sub[name] = _string(body[name], name)
    if body.get("entities") is not None:
        sub["entities"] = _entities(body["entities"], terms)
    if body.get("watchedAttributes") is not None:
        sub["watchedAttributes"] = _names(body["watchedAttributes"], "watchedAttributes", terms)
    if "entities" not in sub and "watchedAttributes" not in sub:
        raise _bad("entities", "a subscription needs entities or watchedAttributes (or both)")
    if body.get("notificationTrigger") is not None:
        triggers = body["notificationTrigger"]
        if not isinstance(triggers, list) or not triggers or any(t not in TRIGGERS for t in triggers):
            raise _bad("notificationTrigger", f"must be a non-empty array of {', '.join(TRIGGERS)}")
        sub["notificationTrigger"] = list(dict.fromkeys(triggers))
    if body.get("timeInterval") is not None:
        sub["timeInterval"] = _positive(body["timeInterval"], "timeInterval")
        if "watchedAttributes" in sub:
            raise _bad("timeInterval", "cannot be used together with watchedAttributes")
    if body.get("throttling") is not None:
        sub["throttling"] = _positive(body["throttling"], "throttling")
        if "timeInterval" in sub:
            raise _bad("throttling", "cannot be used together with timeInterval")
    if body.get("q") is not None:
        text = decode_q(_string(body["q"], "q"))
        try:
            qlang.parse_q(text)
        except BadRequestData as err:
            raise _bad("q", err.detail) from None
        sub["q"] = text
    if body.get("geoQ") is not None:
        try:
            parsed = geo.parse_geo_q(body["geoQ"])
        except BadRequestData as err:
            raise _bad("geoQ", err.detail) from None
        sub["geoQ"] = parsed.as_geo_q()
    if body.get("scopeQ") is not None:
        text = _string(body["scopeQ"], "scopeQ")
        try:
            qlang.parse_scope_q(text)
        except BadRequestData as err:
            raise _bad("scopeQ", err.detail) from None
        sub["scopeQ"] = text
    if body.get("isActive") is not None:
        sub["isActive"] = _bool(body["isActive"], "isActive")
    if body.get("expiresAt") is not None:
        text = model.parse_datetime(body["expiresAt"], "expiresAt")
        if check_expiry and epoch_of(text) <= epoch_of(now):
            raise _bad("expiresAt", f"must be in the future, got {text}")
        sub["expiresAt"] = text
    if body.get("datasetId") is not None:
        ids = body["datasetId"] if isinstance(body["datasetId"], list) else [body["datasetId"]]
        if not ids or not all(i == "@none" or model.is_uri(i) for i in ids):
            raise _bad("datasetId", "must be a URI, @none, or a non-empty array of them")
        sub["datasetId"] = list(dict.fromkeys(ids))
    sub["notification"] = _notification(body.get("notification"), terms)
    if body.get("jsonldContext") is not None:
        context = body["jsonldContext"]
        if not isinstance(context, str) or not model.is_uri(context):
            raise _bad("jsonldContext", f"must be the URI of a JSON-LD @context, got {context!r}")
        sub["jsonldContext"] = context
    else:
        sub["jsonldContext"] = json_ld_context
    return sub


def to_raw(sub: Mapping[str, Any]) -> dict[str, Any]:
    """The internal form as a request body (names are IRIs, which expand to themselves)."""
    raw = {k: v for k, v in sub.items() if k not in ("createdAt", "modifiedAt")}
    raw["notification"] = dict(sub["notification"])
    return raw


def merge_fragment(current: Mapping[str, Any], fragment: Any) -> tuple[dict[str, Any], bool]:
    """Apply a Subscription fragment (5.8.2) to the current internal form, as a request body.

    Top-level members replace the current ones, ``null`` removes them; ``notification`` merges
    member by member (``endpoint`` is replaced whole). Returns the body to validate again with
    :func:`parse_subscription`, and whether the fragment sets ``expiresAt`` (checked then).
    Mandatory members cannot be removed (BadRequestData).
    """
    if not isinstance(fragment, dict) or not fragment:
        raise BadRequestData("The subscription fragment must be a non-empty JSON object")
    if fragment.get("id") not in (None, current["id"]):
        raise _bad("id", "cannot be changed by an update")
    if "type" in fragment and fragment["type"] != "Subscription":
        raise _bad("type", f'must be "Subscription", got {fragment["type"]!r}')
    raw = to_raw(current)
    for name, value in fragment.items():
        if name in ("id", "@context", "status", "createdAt", "modifiedAt"):
            continue
        if name == "notification":
            if not isinstance(value, dict):
                raise _bad("notification", "is mandatory and cannot be removed; give an object of members to change")
            merged = dict(raw["notification"])
            for key, item in value.items():
                if key in _READ_ONLY_NOTIFICATION:
                    continue
                if item is None:
                    if key == "endpoint":
                        raise _bad("notification.endpoint", "is mandatory and cannot be removed")
                    merged.pop(key, None)
                else:
                    merged[key] = item
            raw["notification"] = merged
        elif value is None:
            if name == "type":
                raise _bad("type", "is mandatory and cannot be removed")
            raw.pop(name, None)
        else:
            raw[name] = value
    return raw, fragment.get("expiresAt") is not None


def status_of(sub: Mapping[str, Any], now_epoch: float) -> str:
    """``active``, ``paused`` or ``expired`` (5.2.12 status)."""
    expires = sub.get("expiresAt")
    if expires is not None and epoch_of(expires) <= now_epoch:
        return "expired"
    if sub.get("isActive") is False:
        return "paused"
    return "active"


@dataclass(frozen=True)
class DeliveryStatus:
    """The notification status members of 5.2.14, kept apart from the definition."""

    times_sent: int = 0
    times_failed: int = 0
    last_notification: str | None = None
    last_success: str | None = None
    last_failure: str | None = None
    status: str | None = None


def render_subscription(
    sub: Mapping[str, Any],
    delivery: DeliveryStatus,
    terms: Terms,
    now_epoch: float,
    *,
    sys_attrs: bool = False,
    created_at: str | None = None,
    modified_at: str | None = None,
) -> dict[str, Any]:
    """The Subscription as returned by retrieve / query (5.8.3, 5.8.4), names compacted with ``terms``.

    Members are those given at creation (defaults are not echoed, except ``notificationTrigger``),
    plus ``status``, ``jsonldContext`` and the notification status (``timesSent``, ``timesFailed``,
    and ``status``, ``lastNotification``, ``lastSuccess``, ``lastFailure`` once they exist).
    """
    out: dict[str, Any] = {"id": sub["id"], "type": "Subscription"}
    for name in ("subscriptionName", "description"):
        if name in sub:
            out[name] = sub[name]
    if "entities" in sub:
        entities = []
        for selector in sub["entities"]:
            item: dict[str, Any] = {}
            if "id" in selector:
                item["id"] = selector["id"]
            if "idPattern" in selector:
                item["idPattern"] = selector["idPattern"]
            item["type"] = type_text(parse_type_text(selector["type"], terms), terms.compact)
            entities.append(item)
        out["entities"] = entities
    if "watchedAttributes" in sub:
        out["watchedAttributes"] = [terms.compact(i) for i in sub["watchedAttributes"]]
    out["notificationTrigger"] = list(sub.get("notificationTrigger", DEFAULT_TRIGGERS))
    for name in ("timeInterval", "q", "geoQ", "scopeQ", "lang", "isActive", "expiresAt", "throttling", "datasetId"):
        if name in sub:
            out[name] = sub[name]
    out["status"] = status_of(sub, now_epoch)
    notification: dict[str, Any] = {}
    params = sub["notification"]
    if "attributes" in params:
        notification["attributes"] = [terms.compact(i) for i in params["attributes"]]
    for name in ("sysAttrs", "format", "showChanges", "pick", "omit", "endpoint"):
        if name in params:
            notification[name] = params[name]
    notification["timesSent"] = delivery.times_sent
    notification["timesFailed"] = delivery.times_failed
    for name, value in (
        ("status", delivery.status),
        ("lastNotification", delivery.last_notification),
        ("lastSuccess", delivery.last_success),
        ("lastFailure", delivery.last_failure),
    ):
        if value is not None:
            notification[name] = value
    out["notification"] = notification
    out["jsonldContext"] = sub["jsonldContext"]
    if sys_attrs:
        if created_at is not None:
            out["createdAt"] = created_at
        if modified_at is not None:
            out["modifiedAt"] = modified_at
    return out


# ---------------------------------------------------------------------------------------------
# What a write changed (5.8.6)
# ---------------------------------------------------------------------------------------------


@dataclass
class EntityChange:
    """One entity of a write: its state before and after, and the attributes that changed.

    Attribute sets hold IRIs. ``instance_deletions`` lists instances removed from attributes that
    still exist (multi-attributes, 4.5.5). ``changed_instances`` maps an attribute to the datasetIds
    (``None``: default instance) of its created, updated or removed instances.
    """

    entity_id: str
    before: Entity | None
    after: Entity | None
    created: set[str] = field(default_factory=set)
    updated: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    instance_deletions: dict[str, list[Instance]] = field(default_factory=dict)
    changed_instances: dict[str, set[str | None]] = field(default_factory=dict)

    @property
    def is_creation(self) -> bool:
        return self.before is None and self.after is not None

    @property
    def is_deletion(self) -> bool:
        return self.after is None

    @property
    def current(self) -> Entity:
        entity = self.after if self.after is not None else self.before
        assert entity is not None
        return entity

    def any_change(self) -> set[str]:
        return self.created | self.updated | self.deleted | set(self.instance_deletions)


def _by_dataset(instances: Iterable[Instance]) -> dict[str | None, Instance]:
    return {i.get("datasetId"): i for i in instances}


def diff_entity(entity_id: str, before: Entity | None, after: Entity | None) -> EntityChange:
    """Compare the stored entity with the written one, attribute by attribute, instance by instance.

    An instance changed when it is new or its ``modifiedAt`` differs (every update stamps it, even
    with the same value: NGSI-LD notifies updates, not only value changes).
    """
    change = EntityChange(entity_id, before, after)
    old_attrs: Mapping[str, list[Instance]] = before["attrs"] if before is not None else {}
    new_attrs: Mapping[str, list[Instance]] = after["attrs"] if after is not None else {}
    for iri, instances in new_attrs.items():
        old = old_attrs.get(iri)
        if not old:
            change.created.add(iri)
            change.changed_instances[iri] = {i.get("datasetId") for i in instances}
            continue
        old_by = _by_dataset(old)
        new_by = _by_dataset(instances)
        touched: set[str | None] = set()
        for dataset_id, instance in new_by.items():
            previous = old_by.get(dataset_id)
            if previous is None or previous.get("modifiedAt") != instance.get("modifiedAt") or previous != instance:
                touched.add(dataset_id)
        removed = [i for d, i in old_by.items() if d not in new_by]
        if removed:
            change.instance_deletions[iri] = removed
            touched.update(i.get("datasetId") for i in removed)
        if touched - {i.get("datasetId") for i in removed}:
            change.updated.add(iri)
        if touched:
            change.changed_instances[iri] = touched
    for iri, old in old_attrs.items():
        if iri not in new_attrs:
            change.deleted.add(iri)
            change.changed_instances[iri] = {i.get("datasetId") for i in old}
    return change


def entity_changes(
    previous: Mapping[str, Entity], upserts: Sequence[Entity], deletes: Sequence[str]
) -> list[EntityChange]:
    """The changes of one :class:`~territoire.context.store.base.ChangeSet` (deletes after upserts)."""
    changes = [diff_entity(e["id"], previous.get(e["id"]), e) for e in upserts]
    written = {e["id"] for e in upserts}
    for entity_id in dict.fromkeys(deletes):
        if entity_id in previous and entity_id not in written:
            changes.append(diff_entity(entity_id, previous[entity_id], None))
    return changes


# ---------------------------------------------------------------------------------------------
# A subscription ready to match (5.8.6)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    entity_id: str | None
    id_pattern: re.Pattern[str] | None
    types: TypeExpr

    def matches(self, entity: Entity) -> bool:
        if self.entity_id is not None and entity["id"] != self.entity_id:
            return False
        if self.id_pattern is not None and self.id_pattern.fullmatch(entity["id"]) is None:
            return False
        types = entity["type"]
        return any(all(t in types for t in group) for group in self.types.any_of)


@dataclass(frozen=True)
class Decision:
    """Why a change is notified: the trigger reason reported, and the attributes concerned."""

    reason: str
    attributes: frozenset[str]


class Compiled:
    """A subscription compiled for matching and rendering (its @context resolved once)."""

    def __init__(self, tenant: str, sub: Mapping[str, Any], terms: TermMap) -> None:
        self.tenant = tenant
        self.sub = sub
        self.id: str = sub["id"]
        self.terms = terms
        self.selectors = [
            Selector(
                s.get("id"),
                re.compile(s["idPattern"]) if "idPattern" in s else None,
                parse_type_text(s["type"], terms),
            )
            for s in sub.get("entities", ())
        ]
        self.watched: frozenset[str] | None = (
            frozenset(sub["watchedAttributes"]) if "watchedAttributes" in sub else None
        )
        self.triggers = frozenset(sub.get("notificationTrigger", DEFAULT_TRIGGERS))
        self.periodic: float | None = sub.get("timeInterval")
        self.throttling: float | None = sub.get("throttling")
        self.q: Callable[[Mapping[str, Any]], bool] | None = (
            qlang.compile_matcher(qlang.parse_q(sub["q"]), terms.expand) if "q" in sub else None
        )
        self.geo: geo.GeoQuery | None = None
        self.geoproperty = ""
        self._geo_lock = threading.Lock()
        if "geoQ" in sub:
            self.geo = geo.parse_geo_q(sub["geoQ"])
            self.geoproperty = terms.expand(self.geo.geoproperty)
            self.geo.prepared  # noqa: B018 - build the prepared geometry once, before threads share it
        self.scope = qlang.parse_scope_q(sub["scopeQ"]) if "scopeQ" in sub else None
        self.dataset_ids: frozenset[str | None] | None = (
            frozenset(None if d == "@none" else d for d in sub["datasetId"]) if "datasetId" in sub else None
        )
        self.is_active = sub.get("isActive", True) is not False
        self.expires_at = epoch_of(sub["expiresAt"]) if "expiresAt" in sub else None
        params = sub["notification"]
        self.format: model.Format = FORMATS[params.get("format", "normalized")]
        self.attrs: list[str] | None = params.get("attributes")
        self.sys_attrs = bool(params.get("sysAttrs", False))
        self.show_changes = bool(params.get("showChanges", False))
        self.pick: set[str] | None = set(params["pick"]) if "pick" in params else None
        self.omit: set[str] | None = set(params["omit"]) if "omit" in params else None
        self.lang: str | None = sub.get("lang")
        self.endpoint: dict[str, Any] = params["endpoint"]
        self.json_ld_context: str = sub["jsonldContext"]

    # -- selection ------------------------------------------------------------------------------

    def index_keys(self) -> tuple[list[str], list[str], bool]:
        """``(entity ids, type IRIs, wildcard)`` under which the write hook indexes this subscription."""
        if not self.selectors:
            return [], [], True
        ids: list[str] = []
        types: list[str] = []
        for selector in self.selectors:
            if selector.entity_id is not None:
                ids.append(selector.entity_id)
            else:
                types.extend(group[0] for group in selector.types.any_of)
        return ids, types, False

    def active_at(self, now_epoch: float) -> bool:
        return self.is_active and (self.expires_at is None or self.expires_at > now_epoch)

    def selects(self, entity: Entity) -> bool:
        """Entity selectors, q, geoQ and scopeQ (5.8.6) on one entity state."""
        if self.selectors and not any(s.matches(entity) for s in self.selectors):
            return False
        if self.q is not None and not self.q(entity):
            return False
        if self.scope is not None and not qlang.matches_scope(self.scope, entity.get("scope")):
            return False
        if self.geo is not None:
            instances = entity["attrs"].get(self.geoproperty) or []
            with self._geo_lock:
                if not any(
                    i.get("type") == "GeoProperty"
                    and isinstance(i.get("value"), dict)
                    and geo.geo_matches(self.geo, i["value"])
                    for i in instances
                ):
                    return False
        return True

    def _relevant(self, attrs: Iterable[str], change: EntityChange) -> set[str]:
        out = set(attrs)
        if self.watched is not None:
            out &= self.watched
        if self.dataset_ids is not None:
            out = {a for a in out if change.changed_instances.get(a, set()) & self.dataset_ids}
        return out

    def decide(self, change: EntityChange, now_epoch: float) -> Decision | None:
        """Whether ``change`` is notified to this subscription, and with which trigger reason.

        Periodic subscriptions (``timeInterval``) are never notified on change. The entity is
        matched in its state after the write (before it, for a deletion).
        """
        if self.periodic is not None or not self.active_at(now_epoch):
            return None
        if not self.selects(change.current):
            return None
        if change.is_creation and "entityCreated" in self.triggers:
            relevant = self._relevant(change.created, change)
            if self.watched is None or relevant:
                return Decision("entityCreated", frozenset(relevant))
        if change.is_deletion and "entityDeleted" in self.triggers:
            relevant = self._relevant(change.deleted, change)
            if self.watched is None or relevant:
                return Decision("entityDeleted", frozenset(relevant))
        for reason, attrs in (
            ("attributeCreated", change.created),
            ("attributeUpdated", change.updated),
            ("attributeDeleted", change.deleted | set(change.instance_deletions)),
        ):
            if reason in self.triggers:
                relevant = self._relevant(attrs, change)
                if relevant:
                    return Decision(reason, frozenset(relevant))
        if "entityUpdated" in self.triggers and not change.is_creation and not change.is_deletion:
            relevant = self._relevant(change.any_change(), change)
            if relevant or (self.watched is None and self.dataset_ids is None):
                return Decision("entityUpdated", frozenset(relevant))
        return None

    # -- rendering ------------------------------------------------------------------------------

    def render_item(self, change: EntityChange, decision: Decision, now: str) -> dict[str, Any]:
        """The entity as it goes in the notification's ``data`` (5.3.1), in this subscription's form."""
        terms = self.terms
        deletes = "attributeDeleted" in self.triggers or decision.reason == "entityDeleted"
        if change.after is None:
            before = change.current
            item: dict[str, Any] = {"id": before["id"], "type": model.compact_types(before["type"], terms)}
            item["deletedAt"] = now
            if self.show_changes or decision.reason == "attributeDeleted":
                shown = [a for a in before["attrs"] if self.show_changes or a in decision.attributes]
                for iri in shown:
                    if self.attrs is not None and iri not in self.attrs:
                        continue
                    rendered = [self._null_instance(i) for i in before["attrs"][iri]]
                    item[terms.compact(iri)] = rendered[0] if len(rendered) == 1 else rendered
            return item
        entity = change.after
        item = model.render_entity(
            entity,
            terms,
            self.format,
            sys_attrs=self.sys_attrs,
            attrs=self.attrs,
            lang=self.lang,
            pick=self.pick,
            omit=self.omit,
        )
        if self.show_changes and change.before is not None:
            for iri in change.updated:
                self._add_previous(item, iri, change.before["attrs"].get(iri, []), entity["attrs"][iri], change)
        if deletes:
            for iri in sorted(change.deleted):
                if iri not in decision.attributes and decision.reason == "attributeDeleted":
                    continue
                if not self._shown(iri):
                    continue
                rendered = [self._null_instance(i) for i in (change.before or {"attrs": {}})["attrs"].get(iri, [])]
                if rendered:
                    item[terms.compact(iri)] = rendered[0] if len(rendered) == 1 else rendered
            for iri, removed in change.instance_deletions.items():
                name = terms.compact(iri)
                if not self._shown(iri) or name not in item:
                    continue
                current = item[name] if isinstance(item[name], list) else [item[name]]
                item[name] = current + [self._null_instance(i) for i in removed]
        return item

    def _shown(self, iri: str) -> bool:
        if self.attrs is not None and iri not in self.attrs:
            return False
        name = self.terms.compact(iri)
        if self.pick is not None and name not in self.pick:
            return False
        return not (self.omit is not None and name in self.omit)

    def _null_instance(self, previous: Instance) -> Any:
        """A deleted attribute instance: its value member set to ``urn:ngsi-ld:null`` (5.8.6)."""
        if self.format == "keyValues":
            return NULL_URI
        kind = previous.get("type", "Property")
        member = VALUE_MEMBER.get(kind, "value")
        out: dict[str, Any] = {"type": kind, member: NULL_URI}
        if "datasetId" in previous:
            out["datasetId"] = previous["datasetId"]
        if self.show_changes and member in previous:
            out[PREVIOUS_MEMBER[member]] = self._value_of(previous, member)
        return out

    def _value_of(self, instance: Instance, member: str) -> Any:
        value = instance[member]
        if instance.get("type") == "VocabProperty":
            return [self.terms.compact(v) for v in value] if isinstance(value, list) else self.terms.compact(value)
        return value

    def _add_previous(
        self, item: dict[str, Any], iri: str, old: list[Instance], new: list[Instance], change: EntityChange
    ) -> None:
        name = self.terms.compact(iri)
        if name not in item:
            return
        old_by = _by_dataset(old)
        touched = change.changed_instances.get(iri, set())
        rendered = item[name] if isinstance(item[name], list) else [item[name]]
        out = []
        for instance, shown in zip(new, rendered, strict=False):
            dataset_id = instance.get("datasetId")
            previous = old_by.get(dataset_id)
            member = VALUE_MEMBER.get(instance.get("type", "Property"), "value")
            if previous is not None and dataset_id in touched and member in previous:
                if not isinstance(shown, dict):
                    shown = {member: shown}
                shown = {**shown, PREVIOUS_MEMBER[member]: self._value_of(previous, member)}
            out.append(shown)
        item[name] = out[0] if len(out) == 1 else out

    # -- delivery -------------------------------------------------------------------------------

    def media_type(self) -> str:
        return str(self.endpoint.get("accept", "application/json"))

    def response_context(self) -> str | list[str]:
        """The ``@context`` put in each entity of an ``application/ld+json`` notification."""
        url = self.json_ld_context
        return url if is_core_context_url(url) else [url, CORE_CONTEXT_URL]


def notification_body(subscription_id: str, items: Sequence[Any], reasons: Sequence[str], now: str) -> dict[str, Any]:
    """A Notification (5.3.1): ``id``, ``type``, ``subscriptionId``, ``notifiedAt``, ``data``.

    ``triggerReason`` is added when every entity was notified for the same reason.
    """
    body: dict[str, Any] = {
        "id": f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
        "type": "Notification",
        "subscriptionId": subscription_id,
        "notifiedAt": now,
        "data": list(items),
    }
    distinct = set(reasons)
    if len(distinct) == 1:
        reason = next(iter(distinct))
        if reason != PERIODIC:
            body["triggerReason"] = reason
    return body
