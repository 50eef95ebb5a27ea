"""HTTP plumbing of the NGSI-LD API: bodies, media types, @context, tenants, options, responses.

Kept apart from the routes so every route applies the same rules (ETSI GS CIM 009 v1.8, clause
6.3: content types, Link header, Accept negotiation, NGSILD-Tenant).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Request
from fastapi.responses import Response

from territoire.context.errors import (
    BadRequestData,
    InvalidRequest,
    NonexistentTenant,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from territoire.context.jsonld import CORE_CONTEXT_URL, ContextResolver, TermMap
from territoire.context.store.base import DEFAULT_TENANT, Store

JSON = "application/json"
JSON_LD = "application/ld+json"
GEO_JSON = "application/geo+json"
MERGE_PATCH = "application/merge-patch+json"
LINK_REL_CONTEXT = "http://www.w3.org/ns/json-ld#context"
TENANT_HEADER = "NGSILD-Tenant"
_TENANT = re.compile(r"^[A-Za-z0-9_\-:./]{1,100}$")
_LINK = re.compile(r"^\s*<([^>]*)>\s*((?:;\s*[^;]+)*)$")


@dataclass(frozen=True)
class RawBody:
    """A request body, read and size-checked before the (sync) handler runs."""

    data: bytes
    media_type: str


async def raw_body(request: Request) -> RawBody:
    """FastAPI dependency: read the body within the configured size limit."""
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is {declared} bytes, more than the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is more than the limit of {limit} bytes")
        chunks.append(chunk)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return RawBody(b"".join(chunks), media_type)


def parse_json(body: RawBody, *, allow_merge_patch: bool = False) -> Any:
    """Check the content type and parse the JSON body (6.3.4)."""
    allowed = {JSON, JSON_LD} | ({MERGE_PATCH} if allow_merge_patch else set())
    if not body.data:
        raise InvalidRequest("The request has no body; a JSON payload is required")
    if body.media_type not in allowed:
        shown = body.media_type or "none"
        raise UnsupportedMediaType(f"Content-Type {shown} is not supported; use {' or '.join(sorted(allowed))}")
    try:
        return orjson.loads(body.data)
    except orjson.JSONDecodeError as err:
        raise InvalidRequest(f"The body is not valid JSON: {err}") from None


def link_context(request: Request) -> str | None:
    """The @context URL given in the Link header (6.3.5), if any."""
    values = request.headers.getlist("link")
    contexts: list[str] = []
    for header in values:
        for part in _split_links(header):
            match = _LINK.match(part)
            if not match:
                raise BadRequestData(f"Malformed Link header: {part!r}")
            params = match.group(2)
            if re.search(r'rel\s*=\s*"?' + re.escape(LINK_REL_CONTEXT), params):
                contexts.append(match.group(1))
    if len(contexts) > 1:
        raise BadRequestData("More than one JSON-LD @context Link header was given")
    return contexts[0] if contexts else None


def _split_links(header: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for char in header:
        if char == "<":
            depth += 1
        elif char == ">":
            depth -= 1
        if char == "," and depth == 0 and current.count('"') % 2 == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


@dataclass(frozen=True)
class RequestContext:
    """The @context a request uses: its term map and how to echo it in the response."""

    terms: TermMap
    value: Any  # what goes in "@context" of an application/ld+json response
    link: str  # what goes in the Link header of an application/json response


def request_context(
    request: Request, resolver: ContextResolver, body: Any = None, body_media: str | None = None
) -> RequestContext:
    """Resolve the request's @context: from the Link header, or from the body for ld+json (6.3.5)."""
    link = link_context(request)
    if body_media == JSON_LD:
        if link is not None:
            raise BadRequestData("With Content-Type application/ld+json the @context must be in the body, not a Link")
        items = body if isinstance(body, list) else [body]
        contexts = [item.get("@context") for item in items if isinstance(item, dict)]
        if not contexts or any(c is None for c in contexts):
            raise BadRequestData("A body of type application/ld+json must carry an @context member")
        value = contexts[0]
        return RequestContext(resolver.resolve(value), value, _link_for(value))
    if body_media is not None:
        items = body if isinstance(body, list) else [body]
        if any(isinstance(item, dict) and "@context" in item for item in items):
            raise BadRequestData("With Content-Type application/json the @context must be in a Link header")
    if link is None:
        return RequestContext(resolver.resolve(None), CORE_CONTEXT_URL, CORE_CONTEXT_URL)
    return RequestContext(resolver.resolve(link), link, link)


def _link_for(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return str(value[0])
    return CORE_CONTEXT_URL


def tenant_of(request: Request, store: Store, *, write: bool) -> str:
    """The tenant named by NGSILD-Tenant (6.3.14); reads of an unknown tenant are 404."""
    tenant = request.headers.get(TENANT_HEADER)
    if tenant is None or tenant == "":
        return DEFAULT_TENANT
    if not _TENANT.match(tenant):
        raise BadRequestData(f"Invalid {TENANT_HEADER} {tenant!r}: use letters, digits and _-:./ (at most 100)")
    if not write and not store.tenant_exists(tenant):
        raise NonexistentTenant(f"Tenant {tenant} does not exist")
    return tenant


def negotiate(request: Request, *, geojson: bool = False) -> str:
    """The response media type chosen from Accept (6.3.6)."""
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return JSON
    offered = [JSON, JSON_LD] + ([GEO_JSON] if geojson else [])
    best: tuple[float, int, str] | None = None
    for rank, item in enumerate(accept.split(",")):
        fields = [f.strip() for f in item.split(";")]
        media = fields[0].lower()
        quality = 1.0
        for param in fields[1:]:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        if media in ("*/*", "application/*"):
            candidate = JSON
        elif media in offered:
            candidate = media
        else:
            continue
        key = (-quality, rank, candidate)
        if best is None or key < best:
            best = key
    if best is None:
        raise NotAcceptable(f"None of the media types in Accept ({accept}) is offered; use {', '.join(offered)}")
    return best[2]


def parse_options(raw: list[str], allowed: set[str]) -> set[str]:
    """Split ``options=a,b`` (repeatable) and reject unknown values."""
    options: set[str] = set()
    for value in raw:
        for option in value.split(","):
            option = option.strip()
            if not option:
                continue
            if option not in allowed:
                raise InvalidRequest(f"Unknown option {option!r}; allowed here: {', '.join(sorted(allowed))}")
            options.add(option)
    return options


def split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def json_response(
    request: Request,
    content: Any,
    ctx: RequestContext | None,
    media: str = JSON,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """Serialise with orjson, adding the @context as the chosen media type requires (6.3.5)."""
    extra = dict(headers or {})
    if ctx is not None:
        if media == JSON_LD:
            content = _with_context(content, ctx.value)
        else:
            extra["Link"] = f'<{ctx.link}>; rel="{LINK_REL_CONTEXT}"; type="{JSON_LD}"'
    return Response(orjson.dumps(content), status_code=status, media_type=media, headers=extra)


def _with_context(content: Any, value: Any) -> Any:
    if isinstance(content, list):
        return [_with_context(item, value) for item in content]
    if isinstance(content, dict):
        return {**content, "@context": value}
    return content


def page_links(request: Request, offset: int, limit: int, count: int | None, returned: int) -> str | None:
    """Pagination Link header (5.5.9): rel=prev / rel=next with the same query parameters."""
    links: list[str] = []
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "offset"]
    base = str(request.url.remove_query_params(list(request.query_params.keys())))
    if offset > 0 and limit > 0:
        prev = max(0, offset - limit)
        links.append(f'<{base}?{urlencode([*params, ("offset", str(prev))])}>; rel="prev"; type="{JSON_LD}"')
    has_next = returned == limit and limit > 0 and (count is None or offset + limit < count)
    if has_next:
        links.append(f'<{base}?{urlencode([*params, ("offset", str(offset + limit))])}>; rel="next"; type="{JSON_LD}"')
    return ", ".join(links) if links else None
