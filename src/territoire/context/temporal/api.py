"""The temporal NGSI-LD API under ``/ngsi-ld/v1`` (ETSI GS CIM 009 v1.8, clauses 6.18-6.24).

Operations: create or update a temporal entity (5.6.11, appending past history through the
bulk path), add attributes (5.6.12), delete an attribute's history (5.6.13), modify and delete
one instance (5.6.14, 5.6.15), delete a temporal entity (5.6.16), retrieve (5.7.3) and query
(5.7.4, also as POST /temporal/entityOperations/query).

Entities are selected on their **current** state (the store's query: type, id, idPattern, q,
geo-query, scopeQ), then their history is read by entity id — as Stellio does. The history of a
deleted entity (kept when ``TERRITOIRE_HISTORY_DELETE_WITH_ENTITY=false``) is therefore reached
with GET /temporal/entities/{id}, not by queries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from territoire.context import api as context_api
from territoire.context import geo, model
from territoire.context.errors import BadRequestData, ResourceNotFound
from territoire.context.http import (
    RawBody,
    RequestContext,
    json_response,
    negotiate,
    page_links,
    parse_json,
    raw_body,
    request_context,
    split_list,
    tenant_of,
)
from territoire.context.model import Entity, Instance, Terms, find_instance, now_iso, put_instance
from territoire.context.service import EntityCheck
from territoire.context.store.base import ChangeSet, Store
from territoire.context.store.sql import Cursor
from territoire.context.temporal import TemporalRuntime
from territoire.context.temporal.model import (
    ATTRIBUTE_TYPES,
    SIMPLIFIED_KEYS,
    Representation,
    SeriesResult,
    Stats,
    TemporalQuery,
    TimeRange,
    encode_instance,
    merge_ranges,
    page_range,
    parse_instance_uri,
    parse_representation,
    parse_temporal_query,
    parse_time,
    project,
    render_temporal_entity,
    settle_range,
    trim,
)
from territoire.context.temporal.storage import HistoryIntent, Series

router = APIRouter()
BodyDep = Depends(raw_body)
StoreDep = Depends(context_api.store_dependency)
_SIMPLIFIED_MEMBERS = {key: attr_type for attr_type, key in SIMPLIFIED_KEYS.items() if attr_type != "GeoProperty"}


def runtime(request: Request) -> TemporalRuntime:
    temporal: TemporalRuntime = request.app.state.temporal
    return temporal


# --- paths -------------------------------------------------------------------------------------


def _entity_path(entity_id: str) -> str:
    """The entity id of a path: a URI, and not a mangled sub-resource path (``.../attrs/...``)."""
    if entity_id == "":
        raise StarletteHTTPException(405)
    if "/attrs/" in entity_id or entity_id.endswith("/attrs"):
        raise BadRequestData(f"Malformed path: {entity_id!r} is not an entity id")
    return model.check_entity_id(entity_id, "The entity id in the path")


def _attribute_name(name: str) -> str:
    """An attribute name of a path (4.6.2): a term starting with a letter, or an IRI."""
    model.check_name(name, "attribute")
    if not (name[0].isalpha() or ":" in name):
        raise BadRequestData(f"Invalid attribute name {name!r}: a name starts with a letter")
    return name


# --- parsing -----------------------------------------------------------------------------------


def _simplified_instances(raw: dict[str, Any], name: str, terms: Terms, now: str) -> list[Instance]:
    """Instances of an attribute in the simplified temporal representation (4.5.9)."""
    key = next(k for k in _SIMPLIFIED_MEMBERS if k in raw)
    attr_type = raw.get("type") or _SIMPLIFIED_MEMBERS[key]
    if attr_type not in ATTRIBUTE_TYPES or SIMPLIFIED_KEYS.get(attr_type) != key:
        raise BadRequestData(f"Attribute {name!r}: {key} does not go with type {attr_type!r}")
    pairs = raw[key]
    if not isinstance(pairs, list):
        raise BadRequestData(f"Attribute {name!r}: {key} must be a list of [value, time] pairs")
    member = model.VALUE_MEMBER[attr_type]
    instances = []
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            raise BadRequestData(f"Attribute {name!r}: each item of {key} must be a [value, time] pair")
        value, observed = pair
        if (
            isinstance(value, dict)
            and member in value
            and attr_type in ("LanguageProperty", "JsonProperty", "VocabProperty")
        ):
            value = value[member]
        item: dict[str, Any] = {"type": attr_type, member: value, "observedAt": observed}
        if "datasetId" in raw:
            item["datasetId"] = raw["datasetId"]
        instances.append(model.parse_instance(item, name, terms, now, top_level=True))
    return instances


def parse_temporal_attributes(
    body: dict[str, Any], terms: Terms, now: str, *, skip: frozenset[str] = model.ENTITY_RESERVED
) -> dict[str, list[Instance]]:
    """The attributes of an EntityTemporal (5.2.20): instances in the temporal representation
    (4.5.7) or pairs in the simplified one (4.5.9). Every instance needs an observedAt."""
    attrs: dict[str, list[Instance]] = {}
    for name, raw in body.items():
        if name in skip:
            continue
        model.check_name(name, "attribute")
        iri = terms.expand(name)
        items = raw if isinstance(raw, list) else [raw]
        instances: list[Instance] = []
        for item in items:
            if isinstance(item, dict) and any(key in item for key in _SIMPLIFIED_MEMBERS):
                instances.extend(_simplified_instances(item, name, terms, now))
                continue
            instance = model.parse_instance(item, name, terms, now, top_level=True)
            if "observedAt" not in instance:
                raise BadRequestData(f"Attribute {name!r}: every temporal instance needs an observedAt")
            instances.append(instance)
        if not instances:
            raise BadRequestData(f"Attribute {name!r} has no instance")
        attrs.setdefault(iri, []).extend(instances)
    return attrs


def _projection(
    ctx: RequestContext, attrs: str | None, pick: str | None, omit: str | None
) -> tuple[list[str] | None, set[str] | None, set[str] | None]:
    """attrs as IRIs, pick and omit as names (4.21); attrs cannot be combined with them."""
    pick_names = split_list(pick)
    omit_names = split_list(omit)
    if pick_names is not None and omit_names is not None:
        raise BadRequestData("pick and omit cannot be used together")
    if attrs is not None and (pick_names is not None or omit_names is not None):
        raise BadRequestData("attrs cannot be used together with pick or omit")
    for names in (pick_names, omit_names):
        for member in names or []:
            if "{" in member or "}" in member:
                raise BadRequestData("Linked entity projections ({...}) do not apply to temporal entities")
    return (
        context_api.expand_names(split_list(attrs), ctx.terms),
        set(pick_names) if pick_names is not None else None,
        set(omit_names) if omit_names is not None else None,
    )


def _dataset_filter(raw: str | None) -> set[str] | None:
    """datasetId query parameter: a list of URIs, ``@none`` meaning the default instance."""
    names = split_list(raw)
    if names is None:
        return None
    chosen: set[str] = set()
    for name in names:
        if name == "@none":
            chosen.add("")
        else:
            chosen.add(model.check_entity_id(name, "datasetId"))
    return chosen


def _select(series: Sequence[Series], attrs: Sequence[str] | None, datasets: set[str] | None) -> list[Series]:
    wanted = set(attrs) if attrs is not None else None
    return [
        s for s in series if (wanted is None or s.attr in wanted) and (datasets is None or s.dataset_id in datasets)
    ]


# --- reading -----------------------------------------------------------------------------------


@dataclass
class Selected:
    """One entity of a temporal response: its id, types and the series to read."""

    entity_id: str
    types: list[str]
    series: list[Series]


def _stats(row: tuple[int, int | None, tuple[Any, ...]], query: TemporalQuery) -> Stats:
    start, end, values = row
    count, distinct, num_count, total, total_sq, min_num, max_num, min_text, max_text, stddev, _ = values
    period = query.aggr_period
    if period is None or period.is_zero:
        if query.timerel in ("after", "between") and query.time_at is not None:
            start = query.time_at
        if query.timerel == "between" and query.end_time_at is not None:
            end = query.end_time_at
        elif query.timerel == "before" and query.time_at is not None:
            end = query.time_at
    elif end is None:
        end = period.add(start)
    numeric = bool(num_count)
    return Stats(
        start=start,
        end=end if end is not None else start,
        count=int(count),
        distinct=int(distinct) if distinct is not None else None,
        num_count=int(num_count or 0),
        total=float(total) if total is not None else None,
        total_sq=float(total_sq) if total_sq is not None else None,
        minimum=min_num if numeric else min_text,
        maximum=max_num if numeric else max_text,
        stddev=float(stddev) if stddev is not None else None,
    )


def _aggregated(
    runtime_: TemporalRuntime, selected: Sequence[Selected], query: TemporalQuery
) -> list[list[SeriesResult]]:
    storage = runtime_.storage
    everything = [s for item in selected for s in item.series]
    period = query.aggr_period
    groups: dict[int | None, list[Series]] = {}
    if query.timerel is not None and query.time_at is not None:
        groups[query.time_at] = everything
    elif period is None or period.is_zero:
        groups[None] = everything
    else:
        extent = storage.extent(everything, query)
        for item in selected:
            lows = [extent[s.sid][0] for s in item.series if s.sid in extent]
            if lows:
                groups.setdefault(min(lows), []).extend(item.series)
    rows: dict[int, list[tuple[int, int | None, tuple[Any, ...]]]] = {}
    for origin, members in groups.items():
        rows.update(storage.aggregate(members, query, origin, query.aggr_methods))
    results: list[list[SeriesResult]] = []
    for item in selected:
        series_results = []
        for s in item.series:
            periods = rows.get(s.sid)
            if not periods:
                continue
            kind = int(periods[0][2][-1])
            series_results.append(
                SeriesResult(
                    attr=s.attr,
                    dataset_id=s.dataset_id or None,
                    attr_type=ATTRIBUTE_TYPES[kind & 7],
                    periods=[_stats(row, query) for row in periods],
                )
            )
        results.append(series_results)
    return results


def _instances(
    runtime_: TemporalRuntime, selected: Sequence[Selected], query: TemporalQuery
) -> tuple[list[list[SeriesResult]], TimeRange | None]:
    """Instances of each entity's series, cut per the server maximum (6.3.10)."""
    maximum = runtime_.settings.temporal_max_instances
    newest_first = query.last_n is not None
    limit = min(query.last_n, maximum) if query.last_n is not None else maximum
    server_cut = query.last_n is None or query.last_n > maximum
    everything = [s for item in selected for s in item.series]
    found = runtime_.storage.instances(everything, query, limit + 1, newest_first=newest_first)
    results: list[list[SeriesResult]] = []
    ranges: list[TimeRange] = []
    for item in selected:
        series_results: list[SeriesResult] = []
        cut: list[tuple[int, int]] = []
        spans: list[tuple[int, int]] = []
        for s in item.series:
            stored = found.get(s.sid)
            if not stored:
                continue
            truncated = len(stored) > limit and server_cut
            stored = stored[:limit]
            times = [x.time(query.timeproperty) for x in stored]
            spans.append((min(times), max(times)))
            if truncated:
                cut.append((min(times), max(times)))
            series_results.append(
                SeriesResult(s.attr, s.dataset_id or None, stored[0].instance["type"], instances=stored)
            )
        page = page_range(cut, spans, query)
        if page is not None:
            ranges.append(page)
        results.append(series_results)
    merged = merge_ranges(ranges, query)
    if merged is not None:
        shown: list[int] = []
        for series_results in results:
            for result in series_results:
                result.instances = trim(result.instances, merged, query)
                shown.extend(s.time(query.timeproperty) for s in result.instances)
        merged = settle_range(merged, shown, query)
    return results, merged


def _read(
    runtime_: TemporalRuntime, selected: Sequence[Selected], query: TemporalQuery, representation: Representation
) -> tuple[list[list[SeriesResult]], TimeRange | None]:
    if representation == "aggregatedValues":
        return _aggregated(runtime_, selected, query), None
    return _instances(runtime_, selected, query)


@dataclass
class Rendering:
    """How to render a temporal response."""

    representation: Representation
    sys_attrs: bool
    lang: str | None
    pick: set[str] | None
    omit: set[str] | None


def _render(
    selected: Sequence[Selected],
    results: Sequence[Sequence[SeriesResult]],
    ctx: RequestContext,
    query: TemporalQuery,
    how: Rendering,
) -> list[dict[str, Any]]:
    rendered = []
    for item, series_results in zip(selected, results, strict=True):
        entity = render_temporal_entity(
            item.entity_id,
            item.types,
            series_results,
            ctx.terms,
            how.representation,
            timeproperty=query.timeproperty,
            aggr_methods=query.aggr_methods,
            sys_attrs=how.sys_attrs,
            lang=how.lang,
        )
        rendered.append(project(entity, how.pick, how.omit))
    return rendered


def _respond(
    request: Request,
    content: Any,
    ctx: RequestContext,
    media: str,
    page: TimeRange | None,
    headers: dict[str, str] | None = None,
) -> Response:
    extra = dict(headers or {})
    status = 200
    if page is not None:
        status = 206
        extra["Content-Range"] = page.header()
    return json_response(request, content, ctx, media, status=status, headers=extra)


def _temporal_query(
    *,
    representation: Representation,
    timerel: str | None,
    time_at: str | None,
    end_time_at: str | None,
    timeproperty: str | None,
    last_n: Any,
    aggr_methods: Any,
    aggr_period: str | None,
) -> TemporalQuery:
    return parse_temporal_query(
        {
            "timerel": timerel,
            "timeAt": time_at,
            "endTimeAt": end_time_at,
            "timeproperty": timeproperty,
            "lastN": last_n,
            "aggrMethods": aggr_methods,
            "aggrPeriodDuration": aggr_period,
        },
        aggregated=representation == "aggregatedValues",
    )


# --- retrieve (5.7.3, 6.19.3.1) ------------------------------------------------------------------


@router.get("/temporal/entities/{entity_id:path}/attrs/{attr_id}/{instance_id}", include_in_schema=False)
def _no_get_instance(entity_id: str, attr_id: str, instance_id: str) -> Response:
    raise ResourceNotFound("GET on an attribute instance is not an NGSI-LD operation; use GET /temporal/entities/{id}")


@router.get("/temporal/entities/{entity_id:path}")
def retrieve_temporal_entity(
    request: Request,
    entity_id: str,
    attrs: str | None = None,
    pick: str | None = None,
    omit: str | None = None,
    options: list[str] = Query(default=[]),
    format: str | None = None,
    lang: str | None = None,
    timerel: str | None = None,
    timeAt: str | None = None,
    endTimeAt: str | None = None,
    timeproperty: str | None = None,
    lastN: str | None = None,
    aggrMethods: str | None = None,
    aggrPeriodDuration: str | None = None,
    datasetId: str | None = None,
    store: Store = StoreDep,
) -> Response:
    """Retrieve the temporal evolution of an entity (5.7.3)."""
    _entity_path(entity_id)
    representation, sys_attrs = parse_representation(options, format)
    query = _temporal_query(
        representation=representation,
        timerel=timerel,
        time_at=timeAt,
        end_time_at=endTimeAt,
        timeproperty=timeproperty,
        last_n=lastN,
        aggr_methods=aggrMethods,
        aggr_period=aggrPeriodDuration,
    )
    media = negotiate(request)
    ctx = request_context(request, context_api.get_resolver(request))
    tenant = tenant_of(request, store, write=False)
    attr_iris, pick_set, omit_set = _projection(ctx, attrs, pick, omit)
    datasets = _dataset_filter(datasetId)
    runtime_ = runtime(request)
    entity = store.get_entity(tenant, entity_id)
    series = runtime_.storage.series_of(tenant, [entity_id]).get(entity_id, [])
    series = runtime_.storage.with_current(tenant, entity, series)
    if entity is None and not runtime_.storage.count_instances([s.sid for s in series]):
        raise ResourceNotFound(f"Entity {entity_id} has no temporal representation", id=entity_id)
    if attr_iris and not any(s.attr in attr_iris for s in series):
        raise ResourceNotFound(f"Entity {entity_id} has no history of {attrs}", id=entity_id)
    types = list(entity["type"]) if entity is not None else list(series[0].types)
    selected = [Selected(entity_id, types, _select(series, attr_iris, datasets))]
    results, page = _read(runtime_, selected, query, representation)
    how = Rendering(representation, sys_attrs, lang, pick_set, omit_set)
    content = _render(selected, results, ctx, query, how)[0]
    if not content:
        raise ResourceNotFound(f"Nothing of entity {entity_id} is left after pick/omit", id=entity_id)
    return _respond(request, content, ctx, media, page)


# --- query (5.7.4, 6.18.3.2, 6.24.3.1) -----------------------------------------------------------


def _query_response(
    request: Request,
    store: Store,
    tenant: str,
    ctx: RequestContext,
    entity_query: Any,
    query: TemporalQuery,
    how: Rendering,
    *,
    attrs: list[str] | None,
    datasets: set[str] | None,
) -> Response:
    media = negotiate(request)
    runtime_ = runtime(request)
    result = store.query(tenant, entity_query)
    ids = [e["id"] for e in result.entities]
    series = runtime_.storage.series_of(tenant, ids)
    storage = runtime_.storage
    selected = [
        Selected(
            e["id"],
            list(e["type"]),
            _select(storage.with_current(tenant, e, series.get(e["id"], [])), attrs, datasets),
        )
        for e in result.entities
    ]
    results, page = _read(runtime_, selected, query, how.representation)
    content = _render(selected, results, ctx, query, how)
    headers: dict[str, str] = {}
    if result.count is not None:
        headers["NGSILD-Results-Count"] = str(result.count)
    links = page_links(request, entity_query.offset, entity_query.limit, result.count, len(result.entities))
    response = _respond(request, content, ctx, media, page, headers)
    if links:
        existing = response.headers.get("Link")
        response.headers["Link"] = f"{existing}, {links}" if existing else links
    return response


@router.get("/temporal/entities")
def query_temporal_entities(
    request: Request,
    id: str | None = None,
    idPattern: str | None = None,
    type: str | None = None,
    attrs: str | None = None,
    pick: str | None = None,
    omit: str | None = None,
    q: str | None = None,
    scopeQ: str | None = None,
    georel: str | None = None,
    geometry: str | None = None,
    coordinates: str | None = None,
    geoproperty: str | None = None,
    lang: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    count: bool = False,
    options: list[str] = Query(default=[]),
    format: str | None = None,
    timerel: str | None = None,
    timeAt: str | None = None,
    endTimeAt: str | None = None,
    timeproperty: str | None = None,
    lastN: str | None = None,
    aggrMethods: str | None = None,
    aggrPeriodDuration: str | None = None,
    datasetId: str | None = None,
    store: Store = StoreDep,
) -> Response:
    """Query the temporal evolution of entities (5.7.4)."""
    representation, sys_attrs = parse_representation(options, format)
    query = _temporal_query(
        representation=representation,
        timerel=timerel,
        time_at=timeAt,
        end_time_at=endTimeAt,
        timeproperty=timeproperty,
        last_n=lastN,
        aggr_methods=aggrMethods,
        aggr_period=aggrPeriodDuration,
    )
    negotiate(request)
    page = context_api.check_pagination(request, limit, offset, count)
    ctx = request_context(request, context_api.get_resolver(request))
    tenant = tenant_of(request, store, write=False)
    attr_iris, pick_set, omit_set = _projection(ctx, attrs, pick, omit)
    datasets = _dataset_filter(datasetId)
    entity_query = context_api.build_query(
        ctx,
        ids=context_api.parse_ids(id),
        id_pattern=idPattern,
        type_text=type,
        attrs=attr_iris,
        q=q,
        scope_q=scopeQ,
        geo_query=geo.parse_geo_query(georel, geometry, coordinates, geoproperty),
        limit=page,
        offset=offset,
        count=count,
    )
    how = Rendering(representation, sys_attrs, lang, pick_set, omit_set)
    return _query_response(request, store, tenant, ctx, entity_query, query, how, attrs=attr_iris, datasets=datasets)


def _selectors(entities: Any) -> tuple[list[str] | None, str | None, str | None]:
    """ids, idPattern and type expression of a Query's EntitySelectors (5.2.33)."""
    if entities is None:
        return None, None, None
    if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
        raise BadRequestData("entities must be a list of EntitySelector objects")
    ids: list[str] = []
    types: list[str] = []
    pattern = None
    for selector in entities:
        if "id" in selector:
            ids.append(model.check_entity_id(selector["id"], "entities[].id"))
        if "idPattern" in selector:
            if not isinstance(selector["idPattern"], str):
                raise BadRequestData("entities[].idPattern must be a string")
            pattern = selector["idPattern"]
        if "type" in selector:
            if not isinstance(selector["type"], str):
                raise BadRequestData("entities[].type must be a string")
            types.append(f"({selector['type']})")
    return ids or None, pattern, ",".join(types) if types else None


@router.post("/temporal/entityOperations/query")
def post_temporal_query(
    request: Request,
    limit: int | None = None,
    offset: int = 0,
    count: bool = False,
    options: list[str] = Query(default=[]),
    format: str | None = None,
    body: RawBody = BodyDep,
    store: Store = StoreDep,
) -> Response:
    """Query the temporal evolution of entities with a Query body (5.7.4 via 6.24.3.1)."""
    representation, sys_attrs = parse_representation(options, format)
    negotiate(request)
    page = context_api.check_pagination(request, limit, offset, count)
    payload = parse_json(body)
    ctx = request_context(request, context_api.get_resolver(request), payload, body.media_type)
    tenant = tenant_of(request, store, write=False)
    if not isinstance(payload, dict) or payload.get("type") != "Query":
        raise BadRequestData('The body must be a Query object with "type": "Query"')
    temporal_q = payload.get("temporalQ") or {}
    if not isinstance(temporal_q, dict):
        raise BadRequestData("temporalQ must be a TemporalQuery object")
    query = parse_temporal_query(temporal_q, aggregated=representation == "aggregatedValues")
    ids, pattern, types = _selectors(payload.get("entities"))
    attrs_raw = payload.get("attrs")
    if attrs_raw is not None and not (isinstance(attrs_raw, list) and all(isinstance(a, str) for a in attrs_raw)):
        raise BadRequestData("attrs must be a list of attribute names")
    for key in ("q", "scopeQ", "lang", "datasetId"):
        if key in payload and not isinstance(payload[key], str | list):
            raise BadRequestData(f"{key} must be a string")
    attr_iris = context_api.expand_names(attrs_raw, ctx.terms)
    dataset_raw = payload.get("datasetId")
    datasets = _dataset_filter(",".join(dataset_raw) if isinstance(dataset_raw, list) else dataset_raw)
    entity_query = context_api.build_query(
        ctx,
        ids=ids,
        id_pattern=pattern,
        type_text=types,
        attrs=attr_iris,
        q=payload.get("q"),
        scope_q=payload.get("scopeQ"),
        geo_query=geo.parse_geo_q(payload["geoQ"]) if payload.get("geoQ") is not None else None,
        limit=page,
        offset=offset,
        count=count,
    )
    how = Rendering(representation, sys_attrs, payload.get("lang"), None, None)
    return _query_response(request, store, tenant, ctx, entity_query, query, how, attrs=attr_iris, datasets=datasets)


# --- provision (5.6.11-5.6.16) -------------------------------------------------------------------


def store_transaction(runtime_: TemporalRuntime) -> Any:
    """A write transaction on the history's store."""
    return runtime_.storage.store.transaction()


def _time_of(instance: Instance) -> int:
    """observedAt of an instance, else its modifiedAt (µs); comparison key for the current value."""
    stamp = instance.get("observedAt") or instance.get("modifiedAt")
    return parse_time(stamp, "observedAt") if stamp else 0


def _latest(attrs: dict[str, list[Instance]]) -> dict[tuple[str, str | None], Instance]:
    latest: dict[tuple[str, str | None], Instance] = {}
    for iri, instances in attrs.items():
        for instance in instances:
            key = (iri, instance.get("datasetId"))
            current = latest.get(key)
            if current is None or _time_of(instance) >= _time_of(current):
                latest[key] = instance
    return latest


def upsert_temporal_entity(
    runtime_: TemporalRuntime,
    store: Store,
    tenant: str,
    entity_id: str,
    attrs: dict[str, list[Instance]],
    *,
    types: list[str] | None,
    scope: list[str] | None = None,
    check: EntityCheck | None = None,
) -> bool:
    """Create or update a temporal entity (5.6.11) or add attributes (5.6.12, ``types`` None).

    Every instance goes to the history through the bulk path; the entity's current state takes
    the newest instance of each attribute (when newer than the current value). True if the
    entity was created. ResourceNotFound if ``types`` is None and the entity does not exist.
    """
    storage = runtime_.storage
    now = now_iso()
    now_us = parse_time(now, "now")
    latest = _latest(attrs)
    outcome = {"created": False}
    final_types: list[str] = list(types or [])

    def mutation(existing: dict[str, Entity]) -> ChangeSet:
        nonlocal final_types
        entity = existing.get(entity_id)
        changed = False
        if entity is None:
            if types is None:
                raise ResourceNotFound(f"Entity {entity_id} does not exist", id=entity_id)
            entity = {"id": entity_id, "type": list(types), "createdAt": now, "modifiedAt": now, "attrs": {}}
            if scope:
                entity["scope"] = scope
            outcome["created"] = changed = True
        else:
            for type_iri in types or []:
                if type_iri not in entity["type"]:
                    entity["type"].append(type_iri)
                    changed = True
        for (iri, dataset_id), instance in latest.items():
            olds = entity["attrs"].get(iri, [])
            index = find_instance(olds, dataset_id)
            if index is not None and _time_of(instance) < _time_of(olds[index]):
                continue
            put_instance(entity, iri, instance, now)
            changed = True
        final_types = list(entity["type"])
        if not changed:
            return ChangeSet()
        entity["modifiedAt"] = now
        if check is not None:
            check(entity)
        return ChangeSet(upserts=[entity])

    def apply(cur: Cursor) -> None:
        batch = storage.batch(tenant)
        types_json = orjson.dumps(final_types).decode()
        for iri, instances in attrs.items():
            for instance in instances:
                batch.add(tenant, entity_id, iri, instance, types_json, written_us=now_us)
        storage.write(cur, batch)

    storage.prepare_partitions(
        parse_time(i["observedAt"], "observedAt") for instances in attrs.values() for i in instances
    )
    _write_with_history(store, runtime_, tenant, entity_id, mutation, apply)
    return outcome["created"]


def _write_with_history(
    store: Store,
    runtime_: TemporalRuntime,
    tenant: str,
    entity_id: str,
    mutation: Callable[[dict[str, Entity]], ChangeSet],
    apply: Callable[[Cursor], object],
) -> ChangeSet:
    """Run ``mutation`` as a store write whose history is ``apply`` instead of the automatic one.

    When the write changes nothing in the current state (so no transaction runs the hook), the
    history is written in a transaction of its own.
    """
    storage = runtime_.storage
    intent = HistoryIntent(tenant, frozenset({entity_id}), apply)
    with storage.intent(intent):
        changes = store.modify(tenant, [entity_id], mutation)
    if not intent.applied:
        with storage.store.transaction() as cur:
            apply(cur)
    return changes


def _entity_payload(request: Request, body: RawBody) -> tuple[Any, RequestContext]:
    payload = parse_json(body)
    ctx = request_context(request, context_api.get_resolver(request), payload, body.media_type)
    if not isinstance(payload, dict):
        raise BadRequestData("The body must be a temporal entity (a JSON object)")
    return payload, ctx


@router.post("/temporal/entities", status_code=201)
def create_or_update_temporal_entity(request: Request, body: RawBody = BodyDep, store: Store = StoreDep) -> Response:
    """Create or update the temporal representation of an entity (5.6.11, 6.18.3.1)."""
    payload, ctx = _entity_payload(request, body)
    tenant = tenant_of(request, store, write=True)
    entity_id = model.check_entity_id(payload.get("id", payload.get("@id")))
    raw_type = payload.get("type", payload.get("@type"))
    if raw_type is None:
        raise BadRequestData("The temporal entity has no type")
    types = model.expand_types(raw_type, ctx.terms)
    scope = model.parse_scopes(payload["scope"]) if "scope" in payload else None
    attrs = parse_temporal_attributes(payload, ctx.terms, now_iso())
    check = context_api.entity_check(store, tenant, ctx.terms, context_api.get_validator(request))
    created = upsert_temporal_entity(
        runtime(request), store, tenant, entity_id, attrs, types=types, scope=scope, check=check
    )
    if created:
        location = f"/ngsi-ld/v1/temporal/entities/{quote(entity_id, safe=':')}"
        return Response(status_code=201, headers={"Location": location})
    return Response(status_code=204)


@router.post("/temporal/entities/{entity_id:path}/attrs", status_code=204)
def add_temporal_attributes(
    request: Request, entity_id: str, body: RawBody = BodyDep, store: Store = StoreDep
) -> Response:
    """Add attributes (instances) to the temporal representation of an entity (5.6.12, 6.20.3.1)."""
    model.check_entity_id(entity_id, "The entity id in the path")
    payload, ctx = _entity_payload(request, body)
    given = payload.get("id", payload.get("@id"))
    if given is not None and given != entity_id:
        raise BadRequestData(f"The id in the body ({given}) differs from the id in the path ({entity_id})")
    tenant = tenant_of(request, store, write=False)
    attrs = parse_temporal_attributes(payload, ctx.terms, now_iso())
    if not attrs:
        raise BadRequestData("The body has no attribute")
    check = context_api.entity_check(store, tenant, ctx.terms, context_api.get_validator(request))
    upsert_temporal_entity(runtime(request), store, tenant, entity_id, attrs, types=None, check=check)
    return Response(status_code=204)


@router.patch("/temporal/entities/{entity_id:path}/attrs/{attr_id}/{instance_id}", status_code=204)
def modify_attribute_instance(
    request: Request,
    entity_id: str,
    attr_id: str,
    instance_id: str,
    body: RawBody = BodyDep,
    store: Store = StoreDep,
) -> Response:
    """Modify one attribute instance of a temporal representation (5.6.14, 6.22.3.1)."""
    model.check_entity_id(entity_id, "The entity id in the path")
    model.check_entity_id(instance_id, "The instanceId in the path")
    payload = parse_json(body, allow_merge_patch=True)
    ctx = request_context(request, context_api.get_resolver(request), payload, body.media_type)
    tenant = tenant_of(request, store, write=False)
    name = _attribute_name(attr_id)
    iri = ctx.terms.expand(name)
    if not isinstance(payload, dict) or not payload:
        raise BadRequestData("The body must be a JSON object with the members of the instance to change")
    if name in payload and isinstance(payload[name], dict):
        payload = payload[name]
    runtime_ = runtime(request)
    storage = runtime_.storage
    iid = parse_instance_uri(instance_id)
    entity = store.get_entity(tenant, entity_id)
    series = [s for s in storage.entity_series(tenant, entity_id, entity) if s.attr == iri]
    if iid is None or not series:
        raise ResourceNotFound(f"No instance {instance_id} of attribute {name} of entity {entity_id}")
    now = now_iso()
    with store_transaction(runtime_) as cur:
        found = storage.find_instance(cur, series, iid)
        if found is None:
            raise ResourceNotFound(f"No instance {instance_id} of attribute {name} of entity {entity_id}")
        owner, stored = found
        patch = {k: v for k, v in payload.items() if k not in ("@context", "instanceId", "datasetId")}
        patch.setdefault("type", stored.instance["type"])
        member = model.VALUE_MEMBER.get(patch["type"], "value")
        if member not in patch:
            patch[member] = stored.instance.get(member)
        parsed = model.parse_instance(patch, name, ctx.terms, now, top_level=True)
        merged = model.merge_instance(stored.instance, parsed, now)
        if "observedAt" not in merged:
            raise BadRequestData(f"Attribute {name!r}: a temporal instance needs an observedAt")
        kind, num, value, observed_at, unit_code, extra = encode_instance(merged)
        ts = parse_time(merged["observedAt"], f"{name}.observedAt") if stored.deleted_at is None else stored.ts
        row = (
            owner.sid,
            ts,
            stored.iid,
            kind,
            num,
            value,
            observed_at,
            unit_code,
            extra,
            stored.created_at,
            parse_time(now, "now"),
            stored.deleted_at,
        )
        storage.replace_instance(cur, owner, stored.ts, row)
    return Response(status_code=204)


@router.delete("/temporal/entities/{entity_id:path}/attrs/{attr_id}/{instance_id}", status_code=204)
def delete_attribute_instance(
    request: Request, entity_id: str, attr_id: str, instance_id: str, store: Store = StoreDep
) -> Response:
    """Delete one attribute instance of a temporal representation (5.6.15, 6.22.3.2)."""
    model.check_entity_id(entity_id, "The entity id in the path")
    model.check_entity_id(instance_id, "The instanceId in the path")
    ctx = request_context(request, context_api.get_resolver(request))
    tenant = tenant_of(request, store, write=False)
    name = _attribute_name(attr_id)
    iri = ctx.terms.expand(name)
    runtime_ = runtime(request)
    iid = parse_instance_uri(instance_id)
    entity = store.get_entity(tenant, entity_id)
    series = [s for s in runtime_.storage.entity_series(tenant, entity_id, entity) if s.attr == iri]
    deleted = False
    if iid is not None and series:
        with store_transaction(runtime_) as cur:
            deleted = runtime_.storage.delete_instance(cur, [s.sid for s in series], iid)
    if not deleted:
        raise ResourceNotFound(f"No instance {instance_id} of attribute {name} of entity {entity_id}")
    return Response(status_code=204)


@router.delete("/temporal/entities/{entity_id:path}/attrs/{attr_id}", status_code=204)
def delete_temporal_attribute(
    request: Request,
    entity_id: str,
    attr_id: str,
    datasetId: str | None = None,
    deleteAll: bool = False,
    store: Store = StoreDep,
) -> Response:
    """Delete an attribute from the temporal representation (5.6.13, 6.21.3.1): its history
    (the default instance, one datasetId, or all with deleteAll) and its current value."""
    model.check_entity_id(entity_id, "The entity id in the path")
    if datasetId is not None:
        model.check_entity_id(datasetId, "datasetId")
    ctx = request_context(request, context_api.get_resolver(request))
    tenant = tenant_of(request, store, write=False)
    name = _attribute_name(attr_id)
    iri = ctx.terms.expand(name)
    runtime_ = runtime(request)
    storage = runtime_.storage
    dataset = datasetId or ""
    sids = [
        s.sid
        for s in storage.entity_series(tenant, entity_id, store.get_entity(tenant, entity_id))
        if s.attr == iri and (deleteAll or s.dataset_id == dataset)
    ]
    had_history = storage.count_instances(sids) > 0
    outcome = {"current": False}

    def mutation(existing: dict[str, Entity]) -> ChangeSet:
        entity = existing.get(entity_id)
        instances = entity["attrs"].get(iri) if entity is not None else None
        if entity is None or not instances:
            return ChangeSet()
        if deleteAll:
            del entity["attrs"][iri]
        else:
            index = find_instance(instances, datasetId)
            if index is None:
                return ChangeSet()
            instances.pop(index)
            if not instances:
                del entity["attrs"][iri]
        entity["modifiedAt"] = now_iso()
        outcome["current"] = True
        return ChangeSet(upserts=[entity])

    _write_with_history(store, runtime_, tenant, entity_id, mutation, lambda cur: storage.delete_series(cur, sids))
    if not had_history and not outcome["current"]:
        raise ResourceNotFound(f"Entity {entity_id} has no attribute {name} (datasetId {datasetId or 'default'})")
    return Response(status_code=204)


@router.delete("/temporal/entities/{entity_id:path}", status_code=204)
def delete_temporal_entity(request: Request, entity_id: str, store: Store = StoreDep) -> Response:
    """Delete the temporal representation of an entity (5.6.16, 6.19.3.2): its history and the entity."""
    _entity_path(entity_id)
    tenant = tenant_of(request, store, write=False)
    runtime_ = runtime(request)
    storage = runtime_.storage
    entity = store.get_entity(tenant, entity_id)
    has_history = storage.count_instances([s.sid for s in storage.entity_series(tenant, entity_id, entity)]) > 0

    def mutation(existing: dict[str, Entity]) -> ChangeSet:
        return ChangeSet(deletes=[entity_id]) if entity_id in existing else ChangeSet()

    changes = _write_with_history(
        store,
        runtime_,
        tenant,
        entity_id,
        mutation,
        lambda cur: storage.delete_entities(cur, tenant, {entity_id: entity}),
    )
    if not changes.deletes and not has_history:
        raise ResourceNotFound(f"Entity {entity_id} has no temporal representation", id=entity_id)
    return Response(status_code=204)


def _collection_aliases() -> None:
    """GET and POST on ``/temporal/entities/`` (trailing slash, as the ETSI suite spells it) reach
    the collection; registered first, or the ``{entity_id:path}`` routes would take them for an
    empty entity id."""
    first_new = len(router.routes)
    router.add_api_route("/temporal/entities/", query_temporal_entities, methods=["GET"], include_in_schema=False)
    router.add_api_route(
        "/temporal/entities/",
        create_or_update_temporal_entity,
        methods=["POST"],
        status_code=201,
        include_in_schema=False,
    )
    aliases = router.routes[first_new:]
    del router.routes[first_new:]
    router.routes[0:0] = aliases


_collection_aliases()
