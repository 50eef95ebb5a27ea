"""Subscription routes under ``/ngsi-ld/v1`` (ETSI GS CIM 009 v1.8, 5.8.1 - 5.8.5, HTTP binding 6.10 - 6.11).

``POST /subscriptions`` (201, ``Location``), ``GET /subscriptions`` (``limit``, ``offset``,
``count``, pagination ``Link`` headers), ``GET /subscriptions/{id}``, ``PATCH /subscriptions/{id}``
(204) and ``DELETE /subscriptions/{id}`` (204). Names in subscriptions are expanded with the
request's @context and compacted with the reading request's @context, like entities.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from territoire.context.api import check_pagination, get_resolver, store_dependency
from territoire.context.errors import BadRequestData, NgsiLdError, ResourceNotFound
from territoire.context.http import (
    JSON_LD,
    RawBody,
    RequestContext,
    json_response,
    negotiate,
    parse_json,
    parse_options,
    raw_body,
    request_context,
    tenant_of,
)
from territoire.context.jsonld import ContextResolver
from territoire.context.model import check_entity_id, now_iso
from territoire.context.store.base import Store
from territoire.context.subscriptions import model as sub_model

if TYPE_CHECKING:
    from territoire.context.subscriptions import SubscriptionService

router = APIRouter()
BodyDep = Depends(raw_body)
StoreDep = Depends(store_dependency)


def get_service(request: Request) -> SubscriptionService:
    service: SubscriptionService = request.app.state.subscriptions
    return service


def _context_url(request: Request, ctx: RequestContext, resolver: ContextResolver) -> str:
    """The URL of the creation request's @context, to use for notifications (``jsonldContext``).

    An inline or multi-part @context is stored as an ImplicitlyCreated context (5.13) and referred
    to by the URL this broker serves it under.
    """
    value = ctx.value
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    local_id = resolver.add_implicit(value)
    return ContextResolver.served_url(local_id, str(request.base_url))


def _check_id(subscription_id: str) -> str:
    return check_entity_id(subscription_id, "The subscription id in the path")


def _validate(service: SubscriptionService, tenant: str, sub: dict[str, Any]) -> None:
    """Compile the subscription: resolves its jsonldContext (503 if unavailable), q, geoQ."""
    try:
        service.registry.compile(tenant, sub)
    except NgsiLdError:
        raise
    except Exception as err:
        raise BadRequestData(f"The subscription cannot be used: {err}") from None


def _status(service: SubscriptionService, tenant: str, subscription_id: str) -> Any:
    stored = service.storage.get(tenant, subscription_id)
    if stored is None:
        raise ResourceNotFound(f"Subscription {subscription_id} does not exist", id=subscription_id)
    return stored


@router.post("/subscriptions", status_code=201)
@router.post("/subscriptions/", status_code=201, include_in_schema=False)
def create_subscription(request: Request, body: RawBody = BodyDep, store: Store = StoreDep) -> Response:
    """5.8.1 Create Subscription."""
    service = get_service(request)
    payload = parse_json(body)
    resolver = get_resolver(request)
    ctx = request_context(request, resolver, payload, body.media_type)
    tenant = tenant_of(request, store, write=True)
    now = now_iso()
    context_url = (
        _context_url(request, ctx, resolver)
        if not (isinstance(payload, dict) and payload.get("jsonldContext") is not None)
        else ""
    )
    sub = sub_model.parse_subscription(payload, ctx.terms, json_ld_context=context_url, now=now)
    _validate(service, tenant, sub)
    service.storage.insert(tenant, sub, now, time.time())
    service.changed(tenant)
    return Response(status_code=201, headers={"Location": f"/ngsi-ld/v1/subscriptions/{quote(sub['id'], safe=':')}"})


def _page_links(request: Request, limit: int, offset: int, total: int) -> list[str]:
    """Pagination links (5.5.9), relative to the broker, as the ETSI test suite expects them."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("limit", "offset")]
    links = []
    if offset > 0 and limit > 0:
        query = urlencode([*params, ("limit", str(limit)), ("offset", str(max(0, offset - limit)))])
        links.append(f'<{request.url.path.rstrip("/")}?{query}>;rel="prev";type="{JSON_LD}"')
    if limit > 0 and offset + limit < total:
        query = urlencode([*params, ("limit", str(limit)), ("offset", str(offset + limit))])
        links.append(f'<{request.url.path.rstrip("/")}?{query}>;rel="next";type="{JSON_LD}"')
    return links


@router.get("/subscriptions")
@router.get("/subscriptions/", include_in_schema=False)
def query_subscriptions(
    request: Request,
    limit: int | None = None,
    offset: int = 0,
    count: bool = False,
    options: list[str] = Query(default=[]),
    store: Store = StoreDep,
) -> Response:
    """5.8.4 Query Subscriptions (the tenant's subscriptions, ordered by id, paginated)."""
    service = get_service(request)
    opts = parse_options(options, {"sysAttrs"})
    chosen = check_pagination(request, limit, offset, count)
    media = negotiate(request)
    ctx = request_context(request, get_resolver(request))
    tenant = tenant_of(request, store, write=False)
    rows, total = service.storage.page(tenant, chosen, offset)
    now_epoch = time.time()
    content = [
        sub_model.render_subscription(
            r.sub,
            r.delivery,
            ctx.terms,
            now_epoch,
            sys_attrs="sysAttrs" in opts,
            created_at=r.created_at,
            modified_at=r.modified_at,
        )
        for r in rows
    ]
    headers: dict[str, str] = {}
    if count:
        headers["NGSILD-Results-Count"] = str(total)
    links = _page_links(request, chosen, offset, total)
    response = json_response(request, content, ctx, media, headers=headers)
    if links:
        existing = response.headers.get("Link")
        response.headers["Link"] = ", ".join([*([existing] if existing else []), *links])
    return response


@router.get("/subscriptions/{subscription_id}")
def retrieve_subscription(
    request: Request, subscription_id: str, options: list[str] = Query(default=[]), store: Store = StoreDep
) -> Response:
    """5.8.3 Retrieve Subscription."""
    service = get_service(request)
    _check_id(subscription_id)
    opts = parse_options(options, {"sysAttrs"})
    media = negotiate(request)
    ctx = request_context(request, get_resolver(request))
    tenant = tenant_of(request, store, write=False)
    stored = _status(service, tenant, subscription_id)
    content = sub_model.render_subscription(
        stored.sub,
        stored.delivery,
        ctx.terms,
        time.time(),
        sys_attrs="sysAttrs" in opts,
        created_at=stored.created_at,
        modified_at=stored.modified_at,
    )
    return json_response(request, content, ctx, media)


@router.patch("/subscriptions/{subscription_id}", status_code=204)
def update_subscription(
    request: Request, subscription_id: str, body: RawBody = BodyDep, store: Store = StoreDep
) -> Response:
    """5.8.2 Update Subscription: the fragment's members replace (``null``: remove) the current ones."""
    service = get_service(request)
    _check_id(subscription_id)
    payload = parse_json(body, allow_merge_patch=True)
    media = body.media_type if body.media_type != "application/merge-patch+json" else "application/json"
    ctx = request_context(request, get_resolver(request), payload, media)
    tenant = tenant_of(request, store, write=False)
    current = _status(service, tenant, subscription_id)
    raw, check_expiry = sub_model.merge_fragment(current.sub, payload)
    now = now_iso()
    sub = sub_model.parse_subscription(
        raw, ctx.terms, json_ld_context=current.sub["jsonldContext"], now=now, check_expiry=check_expiry
    )
    _validate(service, tenant, sub)
    if not service.storage.replace(tenant, sub, now, time.time()):
        raise ResourceNotFound(f"Subscription {subscription_id} does not exist", id=subscription_id)
    service.changed(tenant)
    return Response(status_code=204)


@router.delete("/subscriptions/{subscription_id}", status_code=204)
def delete_subscription(request: Request, subscription_id: str, store: Store = StoreDep) -> Response:
    """5.8.5 Delete Subscription (its pending notifications go with it)."""
    service = get_service(request)
    _check_id(subscription_id)
    tenant = tenant_of(request, store, write=False)
    if not service.storage.delete(tenant, subscription_id):
        raise ResourceNotFound(f"Subscription {subscription_id} does not exist", id=subscription_id)
    service.changed(tenant)
    return Response(status_code=204)
