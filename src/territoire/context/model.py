"""NGSI-LD entities: parsing request payloads into the internal form, and rendering it back.

The internal form ("expanded normalized", see ``docs/dev/internal-format.md``) has full IRIs for
every type and attribute name and a list of instances per attribute. Parsing accepts the
normalized and concise representations (ETSI GS CIM 009 v1.8, clauses 4.5.1 and 4.5.18);
rendering produces normalized, concise and keyValues (simplified, 4.5.4), and GeoJSON (4.5.16).

Pure functions only: no I/O. Name expansion and compaction go through a :class:`Terms` object
built from the request's @context.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from territoire.context import geo
from territoire.context.errors import BadRequestData

Entity = dict[str, Any]
Instance = dict[str, Any]
Format = Literal["normalized", "concise", "keyValues"]

NGSI_LD = "https://uri.etsi.org/ngsi-ld/"
LOCATION = NGSI_LD + "location"
NULL_URI = "urn:ngsi-ld:null"
#: Transient member of a parsed fragment instance meaning "delete this instance" (an NGSI-LD Null,
#: 4.5.x). Only ever seen by the service layer; never stored.
NULL_MARK = "@null"
SCOPE = NGSI_LD + "scope"

ATTRIBUTE_TYPES = frozenset(
    {
        "Property",
        "Relationship",
        "GeoProperty",
        "LanguageProperty",
        "ListProperty",
        "JsonProperty",
        "VocabProperty",
        "ListRelationship",
    }
)
#: The member holding each attribute type's value.
VALUE_MEMBER: dict[str, str] = {
    "Property": "value",
    "GeoProperty": "value",
    "Relationship": "object",
    "LanguageProperty": "languageMap",
    "ListProperty": "valueList",
    "JsonProperty": "json",
    "VocabProperty": "vocab",
    "ListRelationship": "objectList",
}
#: Concise input: the member that reveals the attribute type when "type" is omitted (4.5.18).
CONCISE_MARKERS: tuple[tuple[str, str], ...] = (
    ("object", "Relationship"),
    ("languageMap", "LanguageProperty"),
    ("valueList", "ListProperty"),
    ("json", "JsonProperty"),
    ("vocab", "VocabProperty"),
    ("objectList", "ListRelationship"),
    ("value", "Property"),
)
METADATA = frozenset({"observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt", "deletedAt", "lang"})
RESERVED_INSTANCE_KEYS = frozenset({"type", *VALUE_MEMBER.values(), *METADATA, "@context"})
ENTITY_RESERVED = frozenset({"id", "@id", "type", "@type", "scope", "@context", "createdAt", "modifiedAt", "deletedAt"})
GEOMETRY_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "GeometryCollection"}
)
#: Characters NGSI-LD forbids in entity type and attribute names (clause 4.6.2).
_FORBIDDEN_NAME = re.compile(r"[\s<>\"'=;()\\]|[\x00-\x1f\x7f]")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]*$")


class Terms(Protocol):
    """Name expansion and compaction with one request's @context (see ``jsonld.TermMap``)."""

    def expand(self, term: str) -> str: ...

    def compact(self, iri: str) -> str: ...


def now_iso() -> str:
    """The current UTC time as the fixed-width ISO 8601 string used for system timestamps."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def is_uri(text: Any) -> bool:
    """True if ``text`` is an absolute URI (RFC 3986 scheme followed by ':')."""
    return isinstance(text, str) and len(text) < 2048 and _URI.match(text) is not None


def check_entity_id(entity_id: Any, where: str = "id") -> str:
    if not isinstance(entity_id, str) or not is_uri(entity_id):
        raise BadRequestData(f"{where} must be a URI (for example urn:ngsi-ld:Type:1), got {entity_id!r}")
    return entity_id


def check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or _FORBIDDEN_NAME.search(name):
        raise BadRequestData(f"Invalid {what} name {name!r}: names may not be empty nor contain spaces or <>\"'=;()")
    return name


def parse_datetime(text: Any, where: str) -> str:
    """Validate an ISO 8601 date-time; the string is kept as given (clients compare it verbatim)."""
    if not isinstance(text, str):
        raise BadRequestData(f"{where} must be an ISO 8601 date-time string, got {text!r}")
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise BadRequestData(f"{where} is not a valid ISO 8601 date-time: {text!r}") from None
    # A naive time is read as UTC (NGSI-LD times are UTC) rather than rejected.
    return text


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def expand_types(raw: Any, terms: Terms, where: str = "type") -> list[str]:
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names:
        raise BadRequestData(f"{where} must be a type name or a non-empty list of type names")
    out: list[str] = []
    for name in names:
        check_name(name, "entity type")
        iri = terms.expand(name)
        if iri.startswith("@") or ":" not in iri:
            raise BadRequestData(f"Invalid entity type {name!r}: it expands to {iri!r}, not to an IRI")
        if iri not in out:
            out.append(iri)
    return out


def parse_scopes(raw: Any) -> list[str]:
    scopes = [raw] if isinstance(raw, str) else raw
    if not isinstance(scopes, list):
        raise BadRequestData("scope must be a string or a list of strings")
    for scope in scopes:
        if not isinstance(scope, str) or not re.fullmatch(r"(/[^/#+\s]+)+", scope):
            raise BadRequestData(f"Invalid scope {scope!r}: expected a path such as /Angers/Centre")
    return list(dict.fromkeys(scopes))


def parse_entity(
    body: Any,
    terms: Terms,
    now: str,
    *,
    require_id: bool = True,
    require_type: bool = True,
    allow_null: bool = False,
) -> Entity:
    """Parse an entity payload (normalized or concise) into the internal form.

    Raises :class:`BadRequestData` naming the offending member. ``now`` stamps createdAt/modifiedAt.
    """
    if not isinstance(body, dict):
        raise BadRequestData("The entity must be a JSON object")
    entity: Entity = {"attrs": {}}
    raw_id = body.get("id", body.get("@id"))
    if raw_id is not None or require_id:
        entity["id"] = check_entity_id(raw_id)
    raw_type = body.get("type", body.get("@type"))
    if raw_type is not None or require_type:
        if raw_type is None:
            raise BadRequestData("The entity has no type")
        entity["type"] = expand_types(raw_type, terms)
    if "scope" in body:
        entity["scope"] = parse_scopes(body["scope"])
    entity["createdAt"] = now
    entity["modifiedAt"] = now
    entity["attrs"] = parse_attributes(body, terms, now, skip=ENTITY_RESERVED, allow_null=allow_null)
    return entity


def parse_attributes(
    body: Mapping[str, Any], terms: Terms, now: str, *, skip: frozenset[str] = ENTITY_RESERVED, allow_null: bool = False
) -> dict[str, list[Instance]]:
    """Parse the attribute members of an entity or fragment into ``{IRI: [instances]}``.

    With ``allow_null`` (merge-patch and update operations), an instance whose value is NGSI-LD Null
    (``urn:ngsi-ld:null``, clause 4.5.x) becomes a *null instance* ``{"type": ...,
    NULL_MARK: True[, "datasetId": ...]}`` meaning "delete the instance with this datasetId".
    """
    attrs: dict[str, list[Instance]] = {}
    for name, raw in body.items():
        if name in skip:
            continue
        check_name(name, "attribute")
        iri = terms.expand(name)
        raw_list = raw if isinstance(raw, list) and raw and all(isinstance(x, dict) for x in raw) else [raw]
        instances = []
        for item in raw_list:
            if allow_null and is_null_instance(item):
                instances.append(null_instance(item, name))
            else:
                instances.append(parse_instance(item, name, terms, now, top_level=True))
        check_dataset_ids(instances, name)
        attrs[iri] = instances
    return attrs


def is_null_instance(raw: Any) -> bool:
    """True if ``raw`` (one attribute instance, any representation) carries the NGSI-LD Null.

    The NGSI-LD Null is the string ``urn:ngsi-ld:null`` (4.5.x): JSON-LD drops JSON ``null``, so a
    JSON null value stays invalid input (BadRequestData), as in every other operation.
    """
    if raw == NULL_URI:
        return True
    if not isinstance(raw, dict):
        return False
    for member in ("value", "object", "languageMap", "valueList", "json", "vocab", "objectList"):
        if member in raw:
            value = raw[member]
            if member == "languageMap" and isinstance(value, dict) and value:
                # A LanguageProperty is nulled with {"@none": "urn:ngsi-ld:null"} (4.5.18).
                return all(text == NULL_URI for text in value.values())
            return bool(value == NULL_URI)
    return False


def null_instance(raw: Any, name: str) -> Instance:
    """The null instance (see :func:`parse_attributes`) of a raw NGSI-LD Null attribute."""
    instance: Instance = {"type": "Property", NULL_MARK: True}
    if isinstance(raw, dict):
        declared = raw.get("type")
        if isinstance(declared, str) and declared in ATTRIBUTE_TYPES:
            instance["type"] = declared
        if "datasetId" in raw:
            instance["datasetId"] = check_entity_id(raw["datasetId"], f"{name}.datasetId")
    return instance


def check_dataset_ids(instances: list[Instance], name: str) -> None:
    seen: set[str | None] = set()
    for instance in instances:
        dataset_id = instance.get("datasetId")
        if dataset_id in seen:
            which = "the default instance" if dataset_id is None else f"datasetId {dataset_id}"
            raise BadRequestData(f"Attribute {name!r} has {which} more than once")
        seen.add(dataset_id)


def infer_type(raw: Any) -> str:
    """The attribute type of a concise (or normalized) attribute value."""
    if not isinstance(raw, dict):
        return "Property"
    declared = raw.get("type")
    if isinstance(declared, str) and declared in ATTRIBUTE_TYPES:
        return declared
    if (declared in GEOMETRY_TYPES and "coordinates" in raw) or declared == "GeometryCollection":
        return "GeoProperty(concise)"
    for member, attr_type in CONCISE_MARKERS:
        if member in raw:
            if attr_type == "Property" and _looks_geometry(raw["value"]):
                return "GeoProperty"
            return attr_type
    return "Property(object)"


def _looks_geometry(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("type") in GEOMETRY_TYPES
        and ("coordinates" in value or "geometries" in value)
    )


def parse_instance(raw: Any, name: str, terms: Terms, now: str, *, top_level: bool) -> Instance:
    """Parse one attribute instance (normalized or concise) into the internal form."""
    kind = infer_type(raw)
    if kind == "Property(object)" or not isinstance(raw, dict):
        if isinstance(raw, dict) and "type" in raw:
            raise BadRequestData(f"Attribute {name!r} has an unknown type {raw['type']!r}")
        if raw is None:
            raise BadRequestData(f"Attribute {name!r} has a null value")
        value = raw
        instance: Instance = {"type": "Property", "value": value}
        if top_level:
            instance["createdAt"] = now
            instance["modifiedAt"] = now
        return instance
    if kind == "GeoProperty(concise)":
        raw = {"type": "GeoProperty", "value": raw}
        kind = "GeoProperty"
    instance = {"type": kind}
    member = VALUE_MEMBER[kind]
    if member not in raw:
        raise BadRequestData(f"Attribute {name!r} of type {kind} needs a {member!r} member")
    instance[member] = _parse_value(kind, raw[member], name, terms)
    for key, item in raw.items():
        if key in ("type", member, "createdAt", "modifiedAt", "deletedAt", "@context"):
            continue
        if key == "observedAt":
            instance["observedAt"] = parse_datetime(item, f"{name}.observedAt")
        elif key == "unitCode":
            if not isinstance(item, str) or not item:
                raise BadRequestData(f"{name}.unitCode must be a non-empty string")
            instance["unitCode"] = item
        elif key == "datasetId":
            if not top_level:
                raise BadRequestData(f"Sub-attribute {name!r} may not have a datasetId")
            instance["datasetId"] = check_entity_id(item, f"{name}.datasetId")
        elif key == "lang":
            if not isinstance(item, str):
                raise BadRequestData(f"{name}.lang must be a language tag")
        elif key in VALUE_MEMBER.values():
            raise BadRequestData(f"Attribute {name!r} of type {kind} may not have a {key!r} member")
        else:
            check_name(key, "sub-attribute")
            if key in ("id", "@id", "@type"):
                raise BadRequestData(f"Attribute {name!r} may not have a sub-attribute named {key!r}")
            sub_name = f"{name}.{key}"
            instance[terms.expand(key)] = parse_instance(item, sub_name, terms, now, top_level=False)
    if top_level:
        instance["createdAt"] = now
        instance["modifiedAt"] = now
    return instance


def _parse_value(kind: str, value: Any, name: str, terms: Terms) -> Any:
    if value is None:
        raise BadRequestData(f"Attribute {name!r} has a null value")
    if kind == "GeoProperty":
        if not isinstance(value, dict):
            raise BadRequestData(f"GeoProperty {name!r} must hold a GeoJSON geometry object")
        geo.check_geometry(value, name)
        return value
    if kind == "Relationship":
        targets = value if isinstance(value, list) else [value]
        for target in targets:
            check_entity_id(target, f"{name}.object")
        return value
    if kind == "ListRelationship":
        if not isinstance(value, list):
            raise BadRequestData(f"{name}.objectList must be a list of URIs")
        out = []
        for item in value:
            target = item.get("object") if isinstance(item, dict) else item
            out.append(check_entity_id(target, f"{name}.objectList item"))
        return out
    if kind == "LanguageProperty":
        if not isinstance(value, dict) or not value:
            raise BadRequestData(f"{name}.languageMap must be an object of language tag -> string")
        for tag, text in value.items():
            ok = isinstance(text, str) or (isinstance(text, list) and all(isinstance(t, str) for t in text))
            if not re.fullmatch(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*|@none", tag) or not ok:
                raise BadRequestData(f"{name}.languageMap has an invalid entry {tag!r}: {text!r}")
        return value
    if kind == "ListProperty":
        if not isinstance(value, list):
            raise BadRequestData(f"{name}.valueList must be a list")
        return value
    if kind == "VocabProperty":
        names = value if isinstance(value, list) else [value]
        if not names or not all(isinstance(v, str) and v for v in names):
            raise BadRequestData(f"{name}.vocab must be a term or a list of terms")
        expanded = [terms.expand(v) for v in names]
        return expanded if isinstance(value, list) else expanded[0]
    return value


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def compact_types(types: list[str], terms: Terms) -> str | list[str]:
    names = [terms.compact(t) for t in types]
    return names[0] if len(names) == 1 else names


def render_entity(
    entity: Entity,
    terms: Terms,
    fmt: Format = "normalized",
    *,
    sys_attrs: bool = False,
    attrs: Iterable[str] | None = None,
    lang: str | None = None,
    pick: set[str] | None = None,
    omit: set[str] | None = None,
    dataset_ids: set[str | None] | None = None,
) -> dict[str, Any]:
    """Render an internal entity with compacted names.

    ``attrs`` (expanded IRIs) restricts the attributes shown; ``pick`` / ``omit`` (compacted names,
    including ``id`` and ``type``) implement the v1.8 projection parameters; ``dataset_ids`` keeps
    only the instances with these datasetIds (``None`` standing for the default instance, 4.5.5).
    """
    out: dict[str, Any] = {}
    if _shown("id", pick, omit):
        out["id"] = entity["id"]
    if _shown("type", pick, omit):
        out["type"] = compact_types(entity["type"], terms)
    if "scope" in entity and _shown("scope", pick, omit):
        scopes = entity["scope"]
        out["scope"] = scopes[0] if len(scopes) == 1 else list(scopes)
    wanted = set(attrs) if attrs is not None else None
    for iri, instances in entity["attrs"].items():
        if wanted is not None and iri not in wanted:
            continue
        name = terms.compact(iri)
        if not _shown(name, pick, omit):
            continue
        if dataset_ids is not None:
            instances = [i for i in instances if i.get("datasetId") in dataset_ids]
            if not instances:
                continue
        rendered = [render_instance(i, terms, fmt, sys_attrs=sys_attrs, lang=lang) for i in instances]
        out[name] = rendered[0] if len(rendered) == 1 else rendered
    if sys_attrs and fmt != "keyValues":
        out["createdAt"] = entity["createdAt"]
        out["modifiedAt"] = entity["modifiedAt"]
    return out


def _shown(name: str, pick: set[str] | None, omit: set[str] | None) -> bool:
    if pick is not None and name not in pick:
        return False
    return not (omit is not None and name in omit)


def simplified_value(instance: Instance, terms: Terms, lang: str | None = None) -> Any:
    """The keyValues value of an instance (4.5.4)."""
    kind = instance["type"]
    member = VALUE_MEMBER[kind]
    value = instance[member]
    if kind == "LanguageProperty" and lang is not None:
        return pick_language(value, lang)[0]
    if kind == "VocabProperty":
        return [terms.compact(v) for v in value] if isinstance(value, list) else terms.compact(value)
    if kind == "LanguageProperty":
        return {"languageMap": value}
    return value


def pick_language(language_map: dict[str, Any], lang: str) -> tuple[Any, str]:
    """Choose a language per the ``lang`` query parameter (4.15): exact, ``*``, else @none/first."""
    preferences = [p.split(";")[0].strip() for p in lang.split(",") if p.strip()]
    for pref in preferences:
        if pref == "*":
            break
        if pref in language_map:
            return language_map[pref], pref
        for tag, text in language_map.items():
            if tag.split("-")[0] == pref.split("-")[0]:
                return text, tag
    if "@none" in language_map:
        return language_map["@none"], "@none"
    tag = next(iter(language_map))
    return language_map[tag], tag


def render_instance(
    instance: Instance, terms: Terms, fmt: Format, *, sys_attrs: bool = False, lang: str | None = None
) -> Any:
    kind = instance["type"]
    if fmt == "keyValues":
        return simplified_value(instance, terms, lang)
    member = VALUE_MEMBER[kind]
    out: dict[str, Any] = {}
    if kind == "LanguageProperty" and lang is not None:
        value, tag = pick_language(instance[member], lang)
        out["type"] = "Property"
        out["value"] = value
        out["lang"] = tag
    else:
        out["type"] = kind
        value = instance[member]
        if kind == "VocabProperty":
            value = [terms.compact(v) for v in value] if isinstance(value, list) else terms.compact(value)
        out[member] = value
    for key, item in instance.items():
        if key in ("type", member):
            continue
        if key in ("createdAt", "modifiedAt"):
            if sys_attrs:
                out[key] = item
        elif key in METADATA:
            out[key] = item
        else:
            out[terms.compact(key)] = render_instance(item, terms, fmt, sys_attrs=sys_attrs, lang=lang)
    if fmt == "concise":
        return _concise(out)
    return out


def _concise(out: dict[str, Any]) -> Any:
    """Drop what the concise representation (4.5.18) lets a reader infer."""
    kind = out.pop("type")
    if kind == "Property" and len(out) == 1 and not isinstance(out["value"], dict | list):
        return out["value"]
    if kind == "GeoProperty" and len(out) == 1:
        return out["value"]
    if kind == "Property" and (_looks_geometry(out["value"]) or isinstance(out["value"], dict | list)):
        out = {"type": kind, **out} if _looks_geometry(out["value"]) else out
    return out


def to_geojson_feature(rendered: dict[str, Any], entity: Entity, geoproperty: str) -> dict[str, Any]:
    """Wrap a rendered entity as a GeoJSON Feature (4.5.16); ``geoproperty`` is an expanded IRI."""
    geometry = None
    instances = entity["attrs"].get(geoproperty)
    if instances:
        first = instances[0]
        if first["type"] == "GeoProperty":
            geometry = first["value"]
    properties = {k: v for k, v in rendered.items() if k != "id"}
    return {"id": entity["id"], "type": "Feature", "geometry": geometry, "properties": properties}


# ---------------------------------------------------------------------------------------------
# Merging fragments into entities (pure; the store persists the result)
# ---------------------------------------------------------------------------------------------


def find_instance(instances: list[Instance], dataset_id: str | None) -> int | None:
    for index, instance in enumerate(instances):
        if instance.get("datasetId") == dataset_id:
            return index
    return None


def put_instance(entity: Entity, iri: str, new: Instance, now: str) -> None:
    """Add or replace the instance with the same datasetId, keeping its createdAt."""
    instances = entity["attrs"].setdefault(iri, [])
    index = find_instance(instances, new.get("datasetId"))
    new = dict(new)
    new["modifiedAt"] = now
    if index is None:
        new["createdAt"] = now
        instances.append(new)
    else:
        new["createdAt"] = instances[index].get("createdAt", now)
        instances[index] = new


def merge_instance(old: Instance, patch: Instance, now: str) -> Instance:
    """Merge-patch one instance (5.6.17 / 5.6.4): members of ``patch`` replace those of ``old``;
    sub-attributes merge recursively; a sub-attribute set to null is removed."""
    merged = dict(old)
    if patch["type"] != old["type"]:
        # Changing the attribute type replaces the value member too.
        for member in VALUE_MEMBER.values():
            merged.pop(member, None)
    for key, item in patch.items():
        if key in ("createdAt", "modifiedAt"):
            continue
        if isinstance(item, dict) and key not in RESERVED_INSTANCE_KEYS and isinstance(old.get(key), dict):
            merged[key] = merge_instance(old[key], item, now)
        else:
            merged[key] = item
    merged["createdAt"] = old.get("createdAt", now)
    merged["modifiedAt"] = now
    return merged


def geo_instances(entity: Entity) -> list[tuple[str, dict[str, Any]]]:
    """(attribute IRI, GeoJSON geometry) of every GeoProperty instance, for the spatial index."""
    out: list[tuple[str, dict[str, Any]]] = []
    for iri, instances in entity["attrs"].items():
        for instance in instances:
            if instance["type"] == "GeoProperty" and isinstance(instance.get("value"), dict):
                out.append((iri, instance["value"]))
    return out
