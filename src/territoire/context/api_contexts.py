"""``/jsonldContexts`` endpoints: storing, listing, serving and deleting @contexts (GS CIM 009 5.13, 6.30).

Paths are relative: the application mounts the router under ``/ngsi-ld/v1``. Handlers are plain
``def`` functions, run in the threadpool, because a reload downloads a document (blocking I/O).
Errors are raised as :class:`~territoire.context.errors.NgsiLdError`; the application's exception
handler renders them as ProblemDetails. Query parameters are parsed here rather than by FastAPI so
that a bad value gives an NGSI-LD ``BadRequestData`` instead of FastAPI's own 422 body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response

from territoire.context.errors import BadRequestData, InvalidRequest, UnsupportedMediaType
from territoire.context.jsonld import ContextResolver

__all__ = ["build_contexts_router"]

_JSON = "application/json"
_LD_JSON = "application/ld+json"
_ACCEPTED_BODY_TYPES = frozenset({_JSON, _LD_JSON, "application/json+ld"})
RETRIEVE_ROUTE_NAME = "ngsild_retrieve_jsonld_context"


async def _read_body(request: Request) -> bytes:
    """The raw request body, so that handlers can stay synchronous."""
    return await request.body()


def _parse_bool(raw: str | None, name: str) -> bool:
    """NGSI-LD boolean query parameter: ``true`` / ``false`` (absent: false)."""
    if raw is None:
        return False
    value = raw.strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    raise BadRequestData(f"query parameter {name} must be true or false, not {raw!r}")


def _json_response(content: Any, media_type: str = _JSON, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type=media_type)


def _base_url(request: Request) -> str:
    """Scheme, host and root path the client used, to build the URLs of hosted contexts."""
    return str(request.base_url).rstrip("/")


def _wants_ld_json(request: Request) -> bool:
    """Serve ``application/ld+json`` only when the client asks for it, ``application/json`` otherwise.

    NGSI-LD responses default to ``application/json``, and the ETSI test suite expects it when no
    specific Accept header is sent.
    """
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == _LD_JSON for part in accept.split(","))


def build_contexts_router(get_resolver: Callable[..., Any]) -> APIRouter:
    """The ``/jsonldContexts`` router; ``get_resolver`` is a FastAPI dependency giving the resolver."""
    router = APIRouter(tags=["JSON-LD @contexts"])

    @router.post("/jsonldContexts", status_code=201, response_class=Response)
    def add_context(
        request: Request,
        body: bytes = Depends(_read_body),
        resolver: ContextResolver = Depends(get_resolver),
    ) -> Response:
        """5.13.2 Add @context: store a Hosted context; 201 with its URL in ``Location``."""
        content_type = request.headers.get("content-type")
        if content_type is not None:
            media = content_type.split(";")[0].strip().lower()
            if media not in _ACCEPTED_BODY_TYPES:
                raise UnsupportedMediaType(
                    f"the body must be application/json or application/ld+json, not {content_type!r}"
                )
        if not body.strip():
            raise InvalidRequest('the body is empty: a JSON object with an "@context" member is expected')
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
        if not isinstance(document, dict) or "@context" not in document:
            raise InvalidRequest('the body must be a JSON object with an "@context" member')
        local_id = resolver.add(document)
        location = request.url_for(RETRIEVE_ROUTE_NAME, context_id=local_id).path
        return Response(status_code=201, headers={"Location": location})

    @router.get("/jsonldContexts", response_class=Response)
    def list_contexts(
        request: Request,
        details: str | None = None,
        kind: str | None = None,
        resolver: ContextResolver = Depends(get_resolver),
    ) -> Response:
        """5.13.3 List @contexts: URLs, or metadata objects with ``details=true``; ``kind`` filters."""
        result = resolver.list(kind, _parse_bool(details, "details"), _base_url(request))
        return _json_response(result)

    @router.get("/jsonldContexts/{context_id:path}", name=RETRIEVE_ROUTE_NAME, response_class=Response)
    def retrieve_context(
        request: Request,
        context_id: str,
        details: str | None = None,
        resolver: ContextResolver = Depends(get_resolver),
    ) -> Response:
        """5.13.4 Serve @context: the document ``{"@context": ...}``, or its metadata with ``details=true``.

        ``context_id`` is a local identifier or, for Cached contexts, the (percent-encoded) URL.
        """
        with_details = _parse_bool(details, "details")
        result = resolver.get(context_id, with_details, base_url=_base_url(request))
        media = _LD_JSON if not with_details and _wants_ld_json(request) else _JSON
        return _json_response(result, media_type=media)

    @router.delete("/jsonldContexts/{context_id:path}", status_code=204, response_class=Response)
    def delete_context(
        context_id: str,
        reload: str | None = None,
        resolver: ContextResolver = Depends(get_resolver),
    ) -> Response:
        """5.13.5 Delete and Reload @context: 204; ``reload=true`` re-downloads a Cached context."""
        resolver.delete(context_id, reload=_parse_bool(reload, "reload"))
        return Response(status_code=204)

    return router
