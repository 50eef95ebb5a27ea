"""The NGSI-LD API routes under ``/ngsi-ld/v1`` (ETSI GS CIM 009 v1.8, clause 6).

Handlers are thin: they resolve the request (tenant, @context, body, options), call the
operations of :mod:`territoire.context.service` or the store, and render the result.
Handlers are sync (run in the thread pool) because stores and @context fetching block.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from territoire.context import geo, model, qlang, service
from territoire.context.errors import (
    BadRequestData,
    InvalidRequest,
    NgsiLdError,
    ResourceNotFound,
    TooManyResults,
)
from territoire.context.http import (
    GEO_JSON,
    JSON_LD,
    TENANT_HEADER,
    RawBody,
    RequestContext,
    json_response,
    link_context,
    negotiate,
    page_links,
    parse_json,
    parse_options,
    raw_body,
    request_context,
    split_list,
    tenant_of,
)
from territoire.context.jsonld import ContextResolver
from territoire.context.model import Entity, Terms, now_iso
from territoire.context.store.base import EntityQuery, Store, TypeExpr
from territoire.context.validation import SchemaValidator

#: Routes answering "no such operation" (404 / 405): their parameters are not checked.
_NOT_OPERATIONS = frozenset({"_no_get_attr", "_no_delete_attrs"})


def _query_parameters(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_parameters(sub)
    return names


async def reject_unknown_parameters(request: Request) -> None:
    """Router dependency: a URL parameter the operation does not define is an InvalidRequest (6.3.20)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.name in _NOT_OPERATIONS:
        return
    allowed = _query_parameters(route.dependant)
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if unknown:
        raise InvalidRequest(f"Unknown URL parameter(s) for this operation: {', '.join(unknown)}")


class _NgsiLdRoute(APIRoute):
    """A route whose responses carry the request's NGSILD-Tenant header back (6.3.14)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def echo_tenant(request: Request) -> Response:
            response = await handler(request)
            tenant = request.headers.get(TENANT_HEADER)
            if tenant:
                response.headers[TENANT_HEADER] = tenant
            return response

        return echo_tenant


router = APIRouter(dependencies=[Depends(reject_unknown_parameters)], route_class=_NgsiLdRoute)

RETRIEVE_OPTIONS = {"keyValues", "simplified", "concise", "normalized", "sysAttrs"}
FORMATS = {"keyValues": "keyValues", "simplified": "keyValues", "concise": "concise", "normalized": "normalized"}


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_resolver(request: Request) -> ContextResolver:
    resolver: ContextResolver = request.app.state.resolver
    return resolver


def get_validator(request: Request) -> SchemaValidator:
    validator: SchemaValidator = request.app.state.validator
    return validator


async def store_dependency(request: Request) -> Store:
    """:func:`get_store` as a dependency. Cheap dependencies are ``async`` so FastAPI does not hop to
    the thread pool for each of them (about 0.1 ms a hop, a third of a GET by id)."""
    return get_store(request)


async def resolver_dependency(request: Request) -> ContextResolver:
    """:func:`get_resolver` as a dependency (see :func:`store_dependency`)."""
    return get_resolver(request)


StoreDep = Depends(store_dependency)
ResolverDep = Depends(get_resolver)
BodyDep = Depends(raw_body)


# --- helpers ---------------------------------------------------------------------------------------


def entity_check(store: Store, tenant: str, terms: Terms, validator: SchemaValidator) -> service.EntityCheck:
    """The tenant's Smart Data Models validation, applied to the entity about to be written."""
    required = store.required_validations(tenant)
    if not required:
        return service.no_check

    def check(entity: Entity) -> None:
        for type_iri in entity["type"]:
            schema = required.get(type_iri)
            if schema is None:
                continue
            key_values = model.render_entity(entity, terms, "keyValues")
            key_values["type"] = schema
            validator.validate(schema, key_values)

    return check


def representation(options: set[str], fmt: str | None) -> model.Format:
    if fmt is not None:
        if fmt not in FORMATS:
            raise InvalidRequest(f"Unknown format {fmt!r}; use normalized, concise, keyValues or simplified")
        return FORMATS[fmt]  # type: ignore[return-value]
    chosen = [FORMATS[o] for o in ("keyValues", "simplified", "concise", "normalized") if o in options]
    if len(set(chosen)) > 1:
        raise InvalidRequest("options asks for more than one representation")
    return chosen[0] if chosen else "normalized"  # type: ignore[return-value]


#: Entity members that are not attributes: not valid in ``attrs`` (5.7.1.4, 5.7.2.4).
NOT_ATTRIBUTES = frozenset({"id", "type", "@id", "@type", "@context"})


def expand_names(names: list[str] | None, terms: Terms) -> list[str] | None:
    if names is None:
        return None
    out = []
    for name in names:
        model.check_name(name, "attribute")
        if name in NOT_ATTRIBUTES:
            raise BadRequestData(f"{name!r} is not an attribute name")
        out.append(terms.expand(name))
    return out


_PROJECTION_NAME = re.compile(r"[^\s,{}<>\"'=;()\\]+")


def parse_projection(text: str | None, what: str) -> set[str] | None:
    """The top-level members of a ``pick`` / ``omit`` expression (4.21).

    The grammar is a comma-separated list of members, each optionally followed by ``{...}`` (a
    projection of the Linked Entity, meaningful with joins, which this broker does not perform:
    it is checked but not applied). Malformed expressions are BadRequestData.
    """
    if text is None:
        return None
    members: set[str] = set()
    position = 0

    def fail(reason: str) -> BadRequestData:
        return BadRequestData(f"Invalid {what} expression {text!r}: {reason}")

    def parse_list(depth: int) -> None:
        nonlocal position
        while True:
            match = _PROJECTION_NAME.match(text, position)
            if match is None:
                raise fail(f"expected a member name at position {position}")
            if depth == 0:
                members.add(match.group())
            position = match.end()
            if position < len(text) and text[position] == "{":
                position += 1
                parse_list(depth + 1)
                if position >= len(text) or text[position] != "}":
                    raise fail("unclosed '{'")
                position += 1
            if position < len(text) and text[position] == ",":
                position += 1
                continue
            return

    parse_list(0)
    if position != len(text):
        raise fail(f"unexpected {text[position]!r} at position {position}")
    return members


def parse_dataset_ids(raw: str | None) -> set[str | None] | None:
    """The ``datasetId`` URL parameter (4.5.5): URIs, ``@none`` standing for the default instance."""
    names = split_list(raw)
    if names is None:
        return None
    return {None if name == "@none" else model.check_entity_id(name, "datasetId") for name in names}


def parse_type_expr(text: str | None, terms: Terms) -> TypeExpr | None:
    """Entity type selection (4.17): ``A,B`` or ``A|B`` (or), ``A;B`` (and), parentheses."""
    if text is None:
        return None
    tokens = re.findall(r"[(),;|]|[^(),;|]+", text.replace(" ", ""))
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        token = tokens[position]
        position += 1
        return str(token)

    def parse_or() -> list[tuple[str, ...]]:
        groups = parse_and()
        while peek() in (",", "|"):
            take()
            groups = groups + parse_and()
        return groups

    def parse_and() -> list[tuple[str, ...]]:
        groups = parse_atom()
        while peek() == ";":
            take()
            right = parse_atom()
            groups = [a + b for a in groups for b in right]
        return groups

    def parse_atom() -> list[tuple[str, ...]]:
        token = peek()
        if token is None:
            raise BadRequestData(f"Invalid type expression {text!r}: unexpected end")
        if token == "(":
            take()
            groups = parse_or()
            if peek() != ")":
                raise BadRequestData(f"Invalid type expression {text!r}: missing ')'")
            take()
            return groups
        if token in ",;|)":
            raise BadRequestData(f"Invalid type expression {text!r}: unexpected {token!r}")
        name = model.check_name(take(), "entity type")
        return [(terms.expand(name),)]

    groups = parse_or()
    if position != len(tokens):
        raise BadRequestData(f"Invalid type expression {text!r}: unexpected {tokens[position]!r}")
    return TypeExpr(tuple(groups))


def parse_ids(raw: str | None) -> list[str] | None:
    ids = split_list(raw)
    if ids is None:
        return None
    return [model.check_entity_id(i) for i in ids]


def check_pagination(request: Request, limit: int | None, offset: int, count: bool) -> int:
    settings = request.app.state.settings
    chosen = settings.default_limit if limit is None else limit
    if chosen < 0 or offset < 0:
        raise BadRequestData("limit and offset must not be negative")
    if chosen == 0 and not count:
        raise BadRequestData("limit=0 is only allowed together with count=true")
    if chosen > settings.max_limit:
        raise TooManyResults(f"limit {chosen} is above this server's maximum of {settings.max_limit}")
    return int(chosen)


def render_many(
    entities: list[Entity],
    ctx: RequestContext,
    media: str,
    fmt: model.Format,
    *,
    sys_attrs: bool,
    attrs: list[str] | None,
    pick: set[str] | None,
    omit: set[str] | None,
    lang: str | None,
    geometry_property: str,
    dataset_ids: set[str | None] | None = None,
) -> Any:
    rendered = []
    for entity in entities:
        item = model.render_entity(
            entity,
            ctx.terms,
            fmt,
            sys_attrs=sys_attrs,
            attrs=attrs,
            lang=lang,
            pick=pick,
            omit=omit,
            dataset_ids=dataset_ids,
        )
        if not item:
            continue  # pick / omit left no member (4.21): the entity is not part of the result
        if media == GEO_JSON:
            item = model.to_geojson_feature(item, entity, ctx.terms.expand(geometry_property))
        rendered.append(item)
    if media == GEO_JSON:
        collection: dict[str, Any] = {"type": "FeatureCollection", "features": rendered}
        return collection
    return rendered


def geojson_context(content: Any, ctx: RequestContext, media: str) -> Any:
    if media == GEO_JSON and isinstance(content, dict):
        content = {**content, "@context": ctx.value}
    return content


# --- entities --------------------------------------------------------------------------------------


@router.post("/entities", status_code=201)
@router.post("/entities/", status_code=201, include_in_schema=False)
def create_entity(request: Request, body: RawBody = BodyDep, store: Store = StoreDep) -> Response:
    payload = parse_json(body)
    ctx = request_context(request, get_resolver(request), payload, body.media_type)
    tenant = tenant_of(request, store, write=True)
    entity = model.parse_entity(payload, ctx.terms, now_iso())
    service.create_entity(store, tenant, entity, entity_check(store, tenant, ctx.terms, get_validator(request)))
    location = f"/ngsi-ld/v1/entities/{quote(entity['id'], safe=':')}"
    return Response(status_code=201, headers={"Location": location})


def _projection(
    ctx: RequestContext, attrs: str | None, pick: str | None, omit: str | None
) -> tuple[list[str] | None, set[str] | None, set[str] | None]:
    """``attrs``, ``pick`` and ``omit`` (4.21): pick and omit exclude each other and ``attrs``."""
    if pick is not None and omit is not None:
        raise BadRequestData("pick and omit cannot be used together")
    if attrs is not None and (pick is not None or omit is not None):
        raise BadRequestData("attrs cannot be combined with pick or omit")
    return (
        expand_names(split_list(attrs), ctx.terms),
        parse_projection(pick, "pick"),
        parse_projection(omit, "omit"),
    )


@router.get("/entities/{entity_id:path}/attrs/{attr_id}", include_in_schema=False)
def _no_get_attr(entity_id: str, attr_id: str) -> Response:
    raise ResourceNotFound("GET on an attribute is not an NGSI-LD operation; use GET /entities/{id}?attrs=")


@router.get("/entities/{entity_id:path}")
def retrieve_entity(
    request: Request,
    entity_id: str,
    attrs: str | None = None,
    pick: str | None = None,
    omit: str | None = None,
    options: list[str] = Query(default=[]),
    format: str | None = None,
    lang: str | None = None,
    geometryProperty: str | None = None,
    type: str | None = None,
    datasetId: str | None = None,
    local: bool = False,
    store: Store = StoreDep,
) -> Response:
    model.check_entity_id(entity_id, "The entity id in the path")
    opts = parse_options(options, RETRIEVE_OPTIONS)
    fmt = representation(opts, format)
    media = negotiate(request, geojson=True)
    ctx = request_context(request, get_resolver(request))
    tenant = tenant_of(request, store, write=False)
    entity = store.get_entity(tenant, entity_id)
    if entity is None:
        raise ResourceNotFound(f"Entity {entity_id} does not exist", id=entity_id)
    if type is not None:
        wanted = parse_type_expr(type, ctx.terms)
        assert wanted is not None
        if not any(all(t in entity["type"] for t in group) for group in wanted.any_of):
            raise ResourceNotFound(f"Entity {entity_id} is not of type {type}", id=entity_id)
    attr_iris, pick_set, omit_set = _projection(ctx, attrs, pick, omit)
    if attr_iris is not None and not any(a in entity["attrs"] for a in attr_iris) and attrs:
        raise ResourceNotFound(f"Entity {entity_id} has none of the attributes {attrs}", id=entity_id)
    content: Any = model.render_entity(
        entity,
        ctx.terms,
        fmt,
        sys_attrs="sysAttrs" in opts,
        attrs=attr_iris,
        lang=lang,
        pick=pick_set,
        omit=omit_set,
        dataset_ids=parse_dataset_ids(datasetId),
    )
    if not content:
        raise ResourceNotFound(f"Entity {entity_id} has no member left after pick / omit", id=entity_id)
    if media == GEO_JSON:
        geometry_property = ctx.terms.expand(geometryProperty or "location")
        content = model.to_geojson_feature(content, entity, geometry_property)
        content = geojson_context(content, ctx, media)
        return json_response(request, content, None, media)
    return json_response(request, content, ctx, media)


@router.delete("/entities/{entity_id:path}/attrs/{attr_id}", status_code=204)
def delete_attribute(
    request: Request,
    entity_id: str,
    attr_id: str,
    datasetId: str | None = None,
    deleteAll: bool = False,
    store: Store = StoreDep,
) -> Response:
    model.check_entity_id(entity_id, "The entity id in the path")
    if datasetId is not None:
        model.check_entity_id(datasetId, "datasetId")
    ctx = request_context(request, get_resolver(request))
    tenant = tenant_of(request, store, write=False)
    iri = ctx.terms.expand(model.check_name(attr_id, "attribute"))
    service.delete_attribute(store, tenant, entity_id, iri, attr_id, dataset_id=datasetId, delete_all=deleteAll)
    return Response(status_code=204)


@router.delete("/entities/{entity_id:path}/attrs", include_in_schema=False)
@router.delete("/entities/{entity_id:path}/attrs/", include_in_schema=False)
def _no_delete_attrs(entity_id: str) -> Response:
    """``/entities/{id}/attrs/`` has no DELETE (6.6.3): 405, not "delete entity {id}/attrs"."""
    raise StarletteHTTPException(status_code=405)


@router.delete("/entities/{entity_id:path}", status_code=204)
def delete_entity(request: Request, entity_id: str, store: Store = StoreDep) -> Response:
    model.check_entity_id(entity_id, "The entity id in the path")
    tenant = tenant_of(request, store, write=False)
    service.delete_entity(store, tenant, entity_id)
    return Response(status_code=204)


def _fragment(payload: Any, ctx: RequestContext, entity_id: str, *, allow_null: bool = False) -> Entity:
    """An entity fragment (attributes to add / update / merge); an id, if given, must match."""
    if not isinstance(payload, dict):
        raise BadRequestData("The body must be a JSON object of attributes")
    given = payload.get("id", payload.get("@id"))
    if given is not None and given != entity_id:
        raise BadRequestData(f"The id in the body ({given}) differs from the id in the path ({entity_id})")
    now = now_iso()
    fragment: Entity = {
        "id": entity_id,
        "attrs": model.parse_attributes(payload, ctx.terms, now, allow_null=allow_null),
    }
    raw_type = payload.get("type", payload.get("@type"))
    if raw_type is not None:
        fragment["type"] = model.expand_types(raw_type, ctx.terms)
    if "scope" in payload:
        fragment["scope"] = model.parse_scopes(payload["scope"])
    return fragment


def _update_response(request: Request, result: service.UpdateResult, ctx: RequestContext) -> Response:
    if not result.not_updated:
        return Response(status_code=204)
    # A 207 payload carries no @context, so its names are fully qualified (6.3.6).
    content = {
        "updated": list(result.updated),
        "notUpdated": [{"attributeName": iri, "reason": r} for iri, r in result.not_updated],
    }
    return json_response(request, content, None, status=207)


@router.post("/entities/{entity_id:path}/attrs", status_code=204)
@router.post("/entities/{entity_id:path}/attrs/", status_code=204, include_in_schema=False)
def append_attributes(
    request: Request,
    entity_id: str,
    options: list[str] = Query(default=[]),
    body: RawBody = BodyDep,
    store: Store = StoreDep,
) -> Response:
    model.check_entity_id(entity_id, "The entity id in the path")
    opts = parse_options(options, {"noOverwrite"})
    payload = parse_json(body)
    ctx = request_context(request, get_resolver(request), payload, body.media_type)
    tenant = tenant_of(request, store, write=False)
    fragment = _fragment(payload, ctx, entity_id)
    check = entity_check(store, tenant, ctx.terms, get_validator(request))
    result = service.append_attributes(
        store, tenant, entity_id, fragment, no_overwrite="noOverwrite" in opts, check=check
    )
    return _update_response(request, result, ctx)


@router.patch("/entities/{entity_id:path}/attrs/{attr_id}", status_code=204)
def partial_attribute_update(
    request: Request, entity_id: str, attr_id: str, body: RawBody = BodyDep, store: Store = StoreDep
) -> Response:
    model.check_entity_id(entity_id, "The entity id in the path")
    payload = parse_json(body, allow_merge_patch=True)
    ctx = request_context(request, get_resolver(request), payload, body.media_type)
    tenant = tenant_of(request, store, write=False)
    name = model.check_name(attr_id, "attribute")
    iri = ctx.terms.expand(name)
    if iri == model.SCOPE:
        raise BadRequestData("scope cannot be the target of a partial attribute update (5.6.4.4)")
    if not isinstance(payload, dict):
        raise BadRequestData("The body must be a JSON object (the members of the attribute to update)")
    raw = {k: v for k, v in payload.items() if k != "@context"}
    if not raw:
        raise BadRequestData("The attribute fragment is empty")
    dataset_id = raw.get("datasetId")
    if dataset_id is not None:
        model.check_entity_id(dataset_id, f"{name}.datasetId")
    if model.is_null_instance(raw):
        # An NGSI-LD Null value deletes the targeted instance (6.7.3.1, NGSI-LD Null in 4.5.x).
        check = entity_check(store, tenant, ctx.terms, get_validator(request))
        service.delete_attribute(store, tenant, entity_id, iri, name, dataset_id=dataset_id, check=check)
        return Response(status_code=204)
    entity = store.get_entity(tenant, entity_id)
    if entity is None:
        raise ResourceNotFound(f"Entity {entity_id} does not exist", id=entity_id)
    instances = entity["attrs"].get(iri)
    if not instances:
        raise ResourceNotFound(f"Entity {entity_id} has no attribute {name}")
    index = model.find_instance(instances, dataset_id)
    if index is None:
        which = "a default instance" if dataset_id is None else f"an instance with datasetId {dataset_id}"
        raise ResourceNotFound(f"Attribute {name} has no {which}")
    current = instances[index]
    if "type" in raw and raw["type"] != current["type"]:
        raise BadRequestData(
            f"Attribute {name} is a {current['type']}; a partial update cannot change it to {raw['type']!r} (5.6.4.4)"
        )
    # The patch may omit "type" and the value member: take them from the stored instance.
    raw.setdefault("type", current["type"])
    member = model.VALUE_MEMBER.get(raw["type"], "value")
    if member not in raw:
        raw[member] = current.get(member, current.get("value"))
    patch = model.parse_instance(raw, name, ctx.terms, now_iso(), top_level=True)
    check = entity_check(store, tenant, ctx.terms, get_validator(request))
    service.partial_attribute_update(store, tenant, entity_id, iri, name, patch, check)
    return Response(status_code=204)


@router.put("/entities/{entity_id:path}/attrs/{attr_id}", status_code=204)
def replace_attribute(
    request: Request, entity_id: str, attr_id: str, body: RawBody = BodyDep, store: Store = StoreDep
) -> Response:
    model.check_entity_id(entity_id, "The entity id in the path")
    payload = parse_json(body)
    ctx = request_context(request, get_resolver(request), payload, body.media_type)
    tenant = tenant_of(request, store, write=False)
    name = model.check_name(attr_id, "attribute")
    iri = ctx.terms.expand(name)
    if isinstance(payload, dict):
        payload = {k: v for k, v in payload.items() if k != "@context"}
    attrs = model.parse_attributes({name: payload}, ctx.terms, now_iso())
    check = entity_check(store, tenant, ctx.terms, get_validator(request))
    service.replace_attribute(store, tenant, entity_id, iri, name, attrs[iri], check)
    return Response(status_code=204)


@router.patch("/entities/{entity_id:path}/attrs", status_code=204)
@router.patch("/entities/{entity_id:path}/attrs/", status_code=204, include_in_schema=False)
def update_attributes(request: Request, entity_id: str, body: RawBody = BodyDep, store: Store = StoreDep) -> Response:
    model.check_entity_id(entity_id, "The entity id in the path")
    payload = parse_json(body, allow_merge_patch=True)
    ctx = request_context(request, get_resolver(request), payload, body.media_type)
    tenant = tenant_of(request, store, write=False)
    fragment = _fragment(payload, ctx, entity_id, allow_null=True)
    check = entity_check(store, tenant, ctx.terms, get_validator(request))
    result = service.update_attributes(store, tenant, entity_id, fragment, check)
    return _update_response(request, result, ctx)


@router.put("/entities/{entity_id:path}", status_code=204)
def replace_entity(request: Request, entity_id: str, body: RawBody = BodyDep, store: Store = StoreDep) -> Response:
    model.check_entity_id(entity_id, "The entity id in the path")
    payload = parse_json(body)
    ctx = request_context(request, get_resolver(request), payload, body.media_type)
    tenant = tenant_of(request, store, write=False)
    if not isinstance(payload, dict):
        raise BadRequestData("The body must be an entity (a JSON object)")
    given = payload.get("id", payload.get("@id"))
    if given is not None and given != entity_id:
        raise BadRequestData(f"The id in the body ({given}) differs from the id in the path ({entity_id})")
    new = model.parse_entity({**payload, "id": entity_id}, ctx.terms, now_iso(), require_type=False)
    check = entity_check(store, tenant, ctx.terms, get_validator(request))
    service.replace_entity(store, tenant, entity_id, new, check)
    return Response(status_code=204)


@router.patch("/entities/{entity_id:path}", status_code=204)
def merge_entity(request: Request, entity_id: str, body: RawBody = BodyDep, store: Store = StoreDep) -> Response:
    model.check_entity_id(entity_id, "The entity id in the path")
    payload = parse_json(body, allow_merge_patch=True)
    ctx = request_context(request, get_resolver(request), payload, body.media_type)
    tenant = tenant_of(request, store, write=False)
    fragment = _fragment(payload, ctx, entity_id, allow_null=True)
    check = entity_check(store, tenant, ctx.terms, get_validator(request))
    service.merge_entity(store, tenant, entity_id, fragment, check)
    return Response(status_code=204)


# --- query -----------------------------------------------------------------------------------------


def build_query(
    ctx: RequestContext,
    *,
    ids: list[str] | None,
    id_pattern: str | None,
    type_text: str | None,
    attrs: list[str] | None,
    q: str | None,
    scope_q: str | None,
    geo_query: geo.GeoQuery | None,
    limit: int,
    offset: int,
    count: bool,
    local: bool = False,
) -> EntityQuery:
    # 5.7.2.4 / 6.4.3.2: ids, idPattern or scopeQ alone are not enough to select entities.
    if not local and not any([type_text, attrs, q, geo_query]):
        raise BadRequestData(
            "A query needs at least one of: type, attrs, q or a geo-query (geometry), unless local=true"
        )
    if id_pattern is not None:
        try:
            re.compile(id_pattern)
        except re.error as err:
            raise BadRequestData(f"idPattern is not a valid regular expression: {err}") from None
    return EntityQuery(
        ids=ids,
        id_pattern=id_pattern,
        types=parse_type_expr(type_text, ctx.terms),
        attrs=attrs,
        q=qlang.parse_q(q) if q is not None else None,
        scope_q=qlang.parse_scope_q(scope_q) if scope_q is not None else None,
        geo=geo_query,
        geoproperty=ctx.terms.expand(geo_query.geoproperty) if geo_query is not None else None,
        expand=ctx.terms.expand,
        limit=limit,
        offset=offset,
        count=count,
    )


def _query_response(
    request: Request,
    store: Store,
    tenant: str,
    ctx: RequestContext,
    query: EntityQuery,
    *,
    media: str,
    fmt: model.Format,
    sys_attrs: bool,
    attr_iris: list[str] | None,
    pick: set[str] | None,
    omit: set[str] | None,
    lang: str | None,
    geometry_property: str,
    dataset_ids: set[str | None] | None = None,
) -> Response:
    result = store.query(tenant, query)
    content = render_many(
        result.entities,
        ctx,
        media,
        fmt,
        sys_attrs=sys_attrs,
        attrs=attr_iris,
        pick=pick,
        omit=omit,
        lang=lang,
        geometry_property=geometry_property,
        dataset_ids=dataset_ids,
    )
    headers: dict[str, str] = {}
    if result.count is not None:
        headers["NGSILD-Results-Count"] = str(result.count)
    links = page_links(request, query.offset, query.limit, result.count, len(result.entities))
    if links:
        headers["Link"] = links
    if media == GEO_JSON:
        return json_response(request, geojson_context(content, ctx, media), None, media, headers=headers)
    response = json_response(request, content, ctx, media, headers=headers)
    if links and media != JSON_LD:
        # Both the @context Link and the pagination links go in the Link header.
        response.headers["Link"] = response.headers["Link"] + ", " + links
    return response


@router.get("/entities")
@router.get("/entities/", include_in_schema=False)
def query_entities(
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
    geometryProperty: str = "location",
    lang: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    count: bool = False,
    options: list[str] = Query(default=[]),
    format: str | None = None,
    datasetId: str | None = None,
    local: bool = False,
    store: Store = StoreDep,
) -> Response:
    opts = parse_options(options, RETRIEVE_OPTIONS)
    fmt = representation(opts, format)
    media = negotiate(request, geojson=True)
    page = check_pagination(request, limit, offset, count)
    ctx = request_context(request, get_resolver(request))
    tenant = tenant_of(request, store, write=False)
    attr_iris, pick_set, omit_set = _projection(ctx, attrs, pick, omit)
    geo_query = geo.parse_geo_query(georel, geometry, coordinates, geoproperty)
    query = build_query(
        ctx,
        ids=parse_ids(id),
        id_pattern=idPattern,
        type_text=type,
        attrs=attr_iris,
        q=q,
        scope_q=scopeQ,
        geo_query=geo_query,
        limit=page,
        offset=offset,
        count=count,
        local=local,
    )
    return _query_response(
        request,
        store,
        tenant,
        ctx,
        query,
        media=media,
        fmt=fmt,
        sys_attrs="sysAttrs" in opts,
        attr_iris=attr_iris,
        pick=pick_set,
        omit=omit_set,
        lang=lang,
        geometry_property=geometryProperty,
        dataset_ids=parse_dataset_ids(datasetId),
    )


@router.post("/entityOperations/query")
def post_query(
    request: Request,
    limit: int | None = None,
    offset: int = 0,
    count: bool = False,
    options: list[str] = Query(default=[]),
    format: str | None = None,
    body: RawBody = BodyDep,
    store: Store = StoreDep,
) -> Response:
    """POST /entityOperations/query (5.7.2 via 6.23): the query is a Query data type (5.2.23)."""
    opts = parse_options(options, RETRIEVE_OPTIONS)
    fmt = representation(opts, format)
    media = negotiate(request, geojson=True)
    page = check_pagination(request, limit, offset, count)
    payload = parse_json(body)
    ctx = request_context(request, get_resolver(request), payload, body.media_type)
    tenant = tenant_of(request, store, write=False)
    if not isinstance(payload, dict):
        raise BadRequestData("The body must be a Query object")
    if payload.get("type") != "Query":
        raise BadRequestData('The body must be a Query object with "type": "Query"')
    ids: list[str] | None = None
    type_parts: list[str] = []
    id_pattern = None
    entities = payload.get("entities")
    if entities is not None:
        if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
            raise BadRequestData("entities must be a list of EntitySelector objects")
        if len(entities) > 1 and any("id" in e or "idPattern" in e for e in entities):
            ids_sel = [e for e in entities if "id" in e]
            ids = [model.check_entity_id(e["id"]) for e in ids_sel]
        for selector in entities:
            if "type" in selector:
                if not isinstance(selector["type"], str):
                    raise BadRequestData("EntitySelector type must be a string")
                type_parts.append(f"({selector['type']})")
            if "id" in selector and ids is None:
                ids = [model.check_entity_id(selector["id"])]
            if "idPattern" in selector:
                id_pattern = selector["idPattern"]
    attrs_raw = payload.get("attrs")
    if attrs_raw is not None and not (isinstance(attrs_raw, list) and all(isinstance(a, str) for a in attrs_raw)):
        raise BadRequestData("attrs must be a list of attribute names")
    for key in ("q", "scopeQ", "lang"):
        if key in payload and not isinstance(payload[key], str):
            raise BadRequestData(f"{key} must be a string")
    geo_query = geo.parse_geo_q(payload["geoQ"]) if payload.get("geoQ") is not None else None
    attr_iris = expand_names(attrs_raw, ctx.terms)
    pick_set = set(payload["pick"]) if isinstance(payload.get("pick"), list) else None
    omit_set = set(payload["omit"]) if isinstance(payload.get("omit"), list) else None
    if pick_set is not None and omit_set is not None:
        raise BadRequestData("pick and omit cannot be used together")
    query = build_query(
        ctx,
        ids=ids,
        id_pattern=id_pattern,
        type_text=",".join(type_parts) if type_parts else None,
        attrs=attr_iris,
        q=payload.get("q"),
        scope_q=payload.get("scopeQ"),
        geo_query=geo_query,
        limit=page,
        offset=offset,
        count=count,
    )
    return _query_response(
        request,
        store,
        tenant,
        ctx,
        query,
        media=media,
        fmt=fmt,
        sys_attrs="sysAttrs" in opts,
        attr_iris=attr_iris,
        pick=pick_set,
        omit=omit_set,
        lang=payload.get("lang"),
        geometry_property="location",
    )


# --- batch operations ------------------------------------------------------------------------------


def _batch_entities(
    payload: Any, ctx_for: Callable[[Any], RequestContext], *, fragments: bool, allow_null: bool = False
) -> tuple[list[Entity], list[tuple[str, NgsiLdError]], dict[str, Terms]]:
    """Parse a batch body; entities that do not parse are reported, the others go on."""
    if not isinstance(payload, list):
        raise BadRequestData("The body of a batch operation must be a JSON array")
    if not payload:
        raise BadRequestData("The batch is empty")
    if any(item is None for item in payload):
        raise BadRequestData("A batch may not contain null items (5.6.7.4)")
    parsed: list[Entity] = []
    errors: list[tuple[str, NgsiLdError]] = []
    terms_by_id: dict[str, Terms] = {}
    now = now_iso()
    for item in payload:
        entity_id = item.get("id", item.get("@id", "")) if isinstance(item, dict) else ""
        try:
            ctx = ctx_for(item)
            entity = model.parse_entity(item, ctx.terms, now, require_type=not fragments, allow_null=allow_null)
            if fragments:
                entity.pop("createdAt", None)
        except NgsiLdError as err:
            errors.append((str(entity_id), err))
            continue
        parsed.append(entity)
        terms_by_id[entity["id"]] = ctx.terms
    return parsed, errors, terms_by_id


def _batch_response(
    request: Request, result: service.BatchResult, parse_errors: list[tuple[str, NgsiLdError]], created_status: bool
) -> Response:
    errors = parse_errors + result.errors
    if errors:
        content = {
            "success": result.success,
            "errors": [{"entityId": eid, "error": err.to_problem()} for eid, err in errors],
        }
        return json_response(request, content, None, status=207)
    if created_status and result.created:
        return json_response(request, result.created, None, status=201)
    return Response(status_code=204)


def _batch_context(request: Request, payload: Any, media: str) -> Callable[[Any], RequestContext]:
    """The @context of each batch item (6.3.5): its own ``@context`` for application/ld+json (a Link
    header then fails the whole request), else the Link header's (an item carrying an ``@context``
    then fails on its own)."""
    resolver = get_resolver(request)
    if media == JSON_LD:
        if link_context(request) is not None:
            raise BadRequestData("With Content-Type application/ld+json the @context must be in the body, not a Link")
        return lambda item: request_context(request, resolver, item, media)
    shared = request_context(request, resolver)

    def for_item(item: Any) -> RequestContext:
        if isinstance(item, dict) and "@context" in item:
            raise BadRequestData("With Content-Type application/json the @context must be in a Link header")
        return shared

    return for_item


def _batch_check(request: Request, store: Store, tenant: str, terms_by_id: dict[str, Terms]) -> service.EntityCheck:
    validator = get_validator(request)
    checks: dict[int, service.EntityCheck] = {}

    def check(entity: Entity) -> None:
        terms = terms_by_id[entity["id"]]
        key = id(terms)
        if key not in checks:
            checks[key] = entity_check(store, tenant, terms, validator)
        checks[key](entity)

    return check


@router.post("/entityOperations/create")
def batch_create(request: Request, body: RawBody = BodyDep, store: Store = StoreDep) -> Response:
    payload = parse_json(body)
    ctx_for = _batch_context(request, payload, body.media_type)
    tenant = tenant_of(request, store, write=True)
    entities, errors, terms = _batch_entities(payload, ctx_for, fragments=False)
    result = service.batch_create(store, tenant, entities, _batch_check(request, store, tenant, terms))
    if not errors and not result.errors:
        return json_response(request, result.success, None, status=201)
    return _batch_response(request, result, errors, created_status=False)


@router.post("/entityOperations/upsert")
def batch_upsert(
    request: Request, options: list[str] = Query(default=[]), body: RawBody = BodyDep, store: Store = StoreDep
) -> Response:
    opts = parse_options(options, {"update", "replace"})
    if len(opts) > 1:
        raise BadRequestData("options must be either update or replace, not both")
    payload = parse_json(body)
    ctx_for = _batch_context(request, payload, body.media_type)
    tenant = tenant_of(request, store, write=True)
    entities, errors, terms = _batch_entities(payload, ctx_for, fragments=False)
    mode: Literal["replace", "update"] = "update" if "update" in opts else "replace"
    result = service.batch_upsert(store, tenant, entities, mode, _batch_check(request, store, tenant, terms))
    return _batch_response(request, result, errors, created_status=True)


@router.post("/entityOperations/update")
def batch_update(
    request: Request, options: list[str] = Query(default=[]), body: RawBody = BodyDep, store: Store = StoreDep
) -> Response:
    opts = parse_options(options, {"noOverwrite"})
    payload = parse_json(body)
    ctx_for = _batch_context(request, payload, body.media_type)
    tenant = tenant_of(request, store, write=False)
    entities, errors, terms = _batch_entities(payload, ctx_for, fragments=True)
    result = service.batch_update(
        store, tenant, entities, no_overwrite="noOverwrite" in opts, check=_batch_check(request, store, tenant, terms)
    )
    return _batch_response(request, result, errors, created_status=False)


@router.post("/entityOperations/merge")
def batch_merge(request: Request, body: RawBody = BodyDep, store: Store = StoreDep) -> Response:
    payload = parse_json(body, allow_merge_patch=True)
    ctx_for = _batch_context(request, payload, body.media_type)
    tenant = tenant_of(request, store, write=False)
    entities, errors, terms = _batch_entities(payload, ctx_for, fragments=True, allow_null=True)
    result = service.batch_merge(store, tenant, entities, _batch_check(request, store, tenant, terms))
    return _batch_response(request, result, errors, created_status=False)


@router.post("/entityOperations/delete")
def batch_delete(request: Request, body: RawBody = BodyDep, store: Store = StoreDep) -> Response:
    payload = parse_json(body)
    tenant = tenant_of(request, store, write=False)
    if not isinstance(payload, list) or not payload:
        raise BadRequestData("The body of a batch delete must be a non-empty JSON array of entity ids")
    ids: list[str] = []
    errors: list[tuple[str, NgsiLdError]] = []
    for item in payload:
        try:
            ids.append(model.check_entity_id(item))
        except NgsiLdError as err:
            errors.append((str(item), err))
    result = service.batch_delete(store, tenant, ids)
    return _batch_response(request, result, errors, created_status=False)


# --- discovery -------------------------------------------------------------------------------------


def _list_id(kind: str) -> str:
    return f"urn:ngsi-ld:{kind}:{uuid.uuid4().hex}"


@router.get("/types")
@router.get("/types/", include_in_schema=False)
def list_types(request: Request, details: bool = False, store: Store = StoreDep) -> Response:
    media = negotiate(request)
    ctx = request_context(request, get_resolver(request))
    tenant = tenant_of(request, store, write=False)
    infos = store.type_infos(tenant)
    content: Any
    if details:
        content = [
            {
                "id": info.type_name,
                "type": "EntityType",
                "typeName": ctx.terms.compact(info.type_name),
                "attributeNames": [ctx.terms.compact(a) for a, _ in info.attributes],
            }
            for info in infos
        ]
    else:
        content = {
            "id": _list_id("EntityTypeList"),
            "type": "EntityTypeList",
            "typeList": [ctx.terms.compact(info.type_name) for info in infos],
        }
    return json_response(request, content, ctx, media)


@router.get("/types/{type_name:path}")
def type_info(request: Request, type_name: str, store: Store = StoreDep) -> Response:
    media = negotiate(request)
    ctx = request_context(request, get_resolver(request))
    tenant = tenant_of(request, store, write=False)
    iri = ctx.terms.expand(model.check_name(type_name, "entity type"))
    infos = store.type_infos(tenant, iri)
    if not infos:
        raise ResourceNotFound(f"No entity of type {type_name}")
    info = infos[0]
    content = {
        "id": info.type_name,
        "type": "EntityTypeInfo",
        "typeName": ctx.terms.compact(info.type_name),
        "entityCount": info.entity_count,
        "attributeDetails": [
            {"id": a, "type": "Attribute", "attributeName": ctx.terms.compact(a), "attributeTypes": list(kinds)}
            for a, kinds in info.attributes
        ],
    }
    return json_response(request, content, ctx, media)


@router.get("/attributes")
@router.get("/attributes/", include_in_schema=False)
def list_attributes(request: Request, details: bool = False, store: Store = StoreDep) -> Response:
    media = negotiate(request)
    ctx = request_context(request, get_resolver(request))
    tenant = tenant_of(request, store, write=False)
    infos = store.attribute_infos(tenant)
    content: Any
    if details:
        content = [
            {
                "id": info.attribute,
                "type": "Attribute",
                "attributeName": ctx.terms.compact(info.attribute),
                "typeNames": [ctx.terms.compact(t) for t in info.type_names],
            }
            for info in infos
        ]
    else:
        content = {
            "id": _list_id("AttributeList"),
            "type": "AttributeList",
            "attributeList": [ctx.terms.compact(info.attribute) for info in infos],
        }
    return json_response(request, content, ctx, media)


@router.get("/attributes/{attr_name:path}")
def attribute_info(request: Request, attr_name: str, store: Store = StoreDep) -> Response:
    media = negotiate(request)
    ctx = request_context(request, get_resolver(request))
    tenant = tenant_of(request, store, write=False)
    iri = ctx.terms.expand(model.check_name(attr_name, "attribute"))
    infos = store.attribute_infos(tenant, iri)
    if not infos:
        raise ResourceNotFound(f"No attribute named {attr_name}")
    info = infos[0]
    content = {
        "id": info.attribute,
        "type": "Attribute",
        "attributeName": ctx.terms.compact(info.attribute),
        "attributeCount": info.count,
        "attributeTypes": list(info.attribute_types),
        "typeNames": [ctx.terms.compact(t) for t in info.type_names],
    }
    return json_response(request, content, ctx, media)


def _route_static_paths_first() -> None:
    """Try ``/entities/`` before ``/entities/{entity_id:path}``: the path converter matches "" too."""
    static = [r for r in router.routes if getattr(r, "path", "") in ("/entities/",)]
    for route in static:
        router.routes.remove(route)
    router.routes[0:0] = static


_route_static_paths_first()
