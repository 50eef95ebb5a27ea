"""NGSI-LD error types (ETSI GS CIM 009 v1.8, clause 5.5.2) as exceptions.

Every error raised while serving the NGSI-LD API is one of these; the API turns it into a
ProblemDetails body (RFC 9457 / RFC 7807) with ``type``, ``title``, ``status`` and ``detail``.
"""

from __future__ import annotations

from typing import Any

ERROR_BASE = "https://uri.etsi.org/ngsi-ld/errors/"


class NgsiLdError(Exception):
    """Base class: an error with an NGSI-LD error type and an HTTP status."""

    error_type: str = "InternalError"
    status: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return ERROR_BASE + self.error_type

    def to_problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body


class InvalidRequest(NgsiLdError):
    error_type = "InvalidRequest"
    status = 400
    title = "The request is not well-formed"


class BadRequestData(NgsiLdError):
    error_type = "BadRequestData"
    status = 400
    title = "The request includes input data which does not meet the requirements of the operation"


class AlreadyExists(NgsiLdError):
    error_type = "AlreadyExists"
    status = 409
    title = "The referred element already exists"


class OperationNotSupported(NgsiLdError):
    error_type = "OperationNotSupported"
    status = 422
    title = "The operation is not supported"


class ResourceNotFound(NgsiLdError):
    error_type = "ResourceNotFound"
    status = 404
    title = "The referred resource has not been found"


class NonexistentTenant(NgsiLdError):
    error_type = "NonexistentTenant"
    status = 404
    title = "The addressed tenant does not exist"


class TooComplexQuery(NgsiLdError):
    error_type = "TooComplexQuery"
    status = 403
    title = "The query is too complex"


class TooManyResults(NgsiLdError):
    error_type = "TooManyResults"
    status = 403
    title = "The query produces too many results"


class LdContextNotAvailable(NgsiLdError):
    error_type = "LdContextNotAvailable"
    status = 503
    title = "A remote JSON-LD @context could not be retrieved"


class InvalidLdContext(NgsiLdError):
    """Not a standard error type name of its own in v1.8: served as BadRequestData-like 400."""

    error_type = "InvalidRequest"
    status = 400
    title = "The JSON-LD @context is not valid"


class NotAcceptable(NgsiLdError):
    error_type = "NotAcceptable"
    status = 406
    title = "The requested representation is not available"


class UnsupportedMediaType(NgsiLdError):
    error_type = "UnsupportedMediaType"
    status = 415
    title = "The content type of the request is not supported"


class PayloadTooLarge(NgsiLdError):
    error_type = "PayloadTooLarge"
    status = 413
    title = "The request body is too large"


class Conflict(NgsiLdError):
    error_type = "Conflict"
    status = 409
    title = "The request conflicts with the current state"


class InternalError(NgsiLdError):
    error_type = "InternalError"
    status = 500
    title = "Internal error"
