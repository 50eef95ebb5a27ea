"""Optional validation of entities against the FIWARE Smart Data Models (SDM) JSON Schemas.

Approach
--------
* The SDM schemas are bundled under ``territoire/data/smart-data-models/<Type>/schema.json`` and
  loaded with :mod:`importlib.resources`. They describe the *keyValues* form of an entity (short
  attribute names, plain values), so :meth:`SchemaValidator.validate` takes that form; converting
  the internal expanded form (``docs/dev/internal-format.md``) is the caller's job.
* The schemas ``$ref`` shared definitions by their published URLs
  (``https://smart-data-models.github.io/data-models/common-schema.json#/definitions/...``,
  ``https://smart-data-models.github.io/dataModel.<Subject>/<file>``, or the
  ``https://raw.githubusercontent.com/smart-data-models/<repo>/<branch>/<file>`` forms). Nothing is
  ever fetched at run time: a :class:`referencing.Registry` is given a ``retrieve`` function that
  maps those URLs (both hosts, any branch) to the bundled copies in ``_common/``
  (``common-schema.json`` for the ``data-models`` repository, ``dataModel.<Subject>--<file>`` for
  a subject's repository) and raises a clear error for any other URL.
* A type's validator is compiled once, on first use, and cached (under a lock, so the cache is
  thread safe; compiled validators are immutable and shared between threads). Compiling checks the
  schemas against their metaschema and resolves *every* ``$ref`` eagerly, so a missing bundled
  file or a dangling pointer is reported at once (as :class:`InternalError`: it is a packaging
  problem, not the client's fault) instead of only when an entity happens to reach that branch;
  the resolved documents are then held in the validator's registry, so validating never calls
  ``retrieve``.
* The validator class is the one of the draft the schema declares in ``$schema`` (all bundled
  schemas declare 2020-12, also the default when ``$schema`` is absent). The schemas are applied
  as written: none sets ``additionalProperties``, so attributes unknown to a model are accepted.
* ``format`` is asserted, for the formats the bundled schemas use (``date-time``, ``date``,
  ``time``, ``uri``, ``ipv4``, ``ipv6``, ``email``, ``idn-email``), with stdlib-only checkers so
  the outcome does not depend on which optional packages are installed. In 2020-12 ``format`` is
  only an annotation by default, but the SDM schemas rely on it being asserted (e.g. Device
  ``ipAddress`` is ``oneOf`` ``{"format": "ipv4"}`` / ``{"format": "ipv6"}``, which no value
  could pass if formats were ignored). Other formats stay annotations.
* An invalid entity raises :class:`BadRequestData` whose ``detail`` names the most relevant error
  (:func:`jsonschema.exceptions.best_match`, then, when it stops on an undecided ``oneOf`` /
  ``anyOf``, the alternative with the fewest errors, else the alternatives' reasons are listed)
  with its attribute path (``location.coordinates``, ``category[0]``), and whose ``errors`` extra
  member lists up to 20 errors as ``{"attribute": ..., "message": ...}``.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Iterator
from datetime import date
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import orjson
import referencing.exceptions
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import (
    STRONG_MATCHES,
    WEAK_MATCHES,
    SchemaError,
    ValidationError,
    best_match,
)
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012, specification_with

from territoire.context.errors import BadRequestData, InternalError

__all__ = ["MAX_REPORTED_ERRORS", "SchemaValidator", "local_file_for_url"]

MAX_REPORTED_ERRORS = 20
"""At most this many errors are listed in the ``errors`` member of the raised exception."""

_SCHEMA_FILE = "schema.json"
_COMMON_DIR = "_common"
_MAX_MESSAGE_LENGTH = 500
_PAGES_HOST = "smart-data-models.github.io"
_RAW_HOST = "raw.githubusercontent.com"
_SDM_ORG = "smart-data-models"
_COMMON_REPO = "data-models"
_SUBJECT_REPO_PREFIX = "datamodel."
# Keywords whose values are data, not subschemas: a "$ref" key inside them is not a reference.
_DATA_KEYWORDS = frozenset({"enum", "const", "examples", "default"})


def _default_root() -> Traversable:
    return files("territoire") / "data" / "smart-data-models"


# --------------------------------------------------------------------------------------------------
# URL -> bundled file mapping


def local_file_for_url(url: str) -> str | None:
    """The name, inside ``_common/``, of the bundled copy of an SDM schema URL (fragment ignored).

    ``https://smart-data-models.github.io/data-models/common-schema.json`` -> ``common-schema.json``;
    ``https://smart-data-models.github.io/dataModel.Device/device-schema.json`` and
    ``https://raw.githubusercontent.com/smart-data-models/dataModel.Device/<branch>/device-schema.json``
    (``<branch>`` is one segment such as ``master``, or ``refs/heads/<name>``) ->
    ``dataModel.Device--device-schema.json``. Files in sub-folders get their path segments joined
    with ``--``. Returns ``None`` for a URL that is not an SDM schema URL.
    """
    parts = urlsplit(urldefrag(url).url)
    if parts.scheme not in ("http", "https"):
        return None
    host = (parts.hostname or "").lower()
    segments = [segment for segment in parts.path.split("/") if segment]
    if host == _PAGES_HOST:
        if len(segments) < 2:
            return None
        repo, rest = segments[0], segments[1:]
    elif host == _RAW_HOST:
        if len(segments) < 4 or segments[0].lower() != _SDM_ORG:
            return None
        repo, rest = segments[1], segments[2:]
        is_ref_path = len(rest) >= 4 and rest[0] == "refs" and rest[1] in ("heads", "tags")
        rest = rest[3:] if is_ref_path else rest[1:]
    else:
        return None
    file_name = "--".join(rest)
    if repo.lower() == _COMMON_REPO:
        return file_name
    if repo.lower().startswith(_SUBJECT_REPO_PREFIX) and len(repo) > len(_SUBJECT_REPO_PREFIX):
        # GitHub names are case-insensitive and some $ids spell "datamodel.": normalise the prefix.
        return f"dataModel.{repo[len(_SUBJECT_REPO_PREFIX) :]}--{file_name}"
    return None


class _UnbundledReference(LookupError):
    """A ``$ref`` URL with no bundled copy (raised by the registry's ``retrieve`` function)."""


# --------------------------------------------------------------------------------------------------
# format assertion (stdlib only, deterministic)

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_TIME_RE = r"(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
_FULL_TIME_RE = re.compile(_TIME_RE, re.ASCII)
_DATE_TIME_RE = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt]" + _TIME_RE, re.ASCII)
# RFC 3986 absolute URI (with optional fragment): a scheme, ":", then no whitespace nor the
# characters RFC 3986 never allows unescaped. A syntactic approximation, as most validators do.
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s\"<>\\^`{|}]*")


def _is_full_date(value: str) -> bool:
    if not _DATE_RE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_valid_time(hour: str, minute: str, second: str, offset: str) -> bool:
    # RFC 3339: second 60 is a leap second; the offset must be Z or +hh:mm / -hh:mm.
    if not (int(hour) <= 23 and int(minute) <= 59 and int(second) <= 60):
        return False
    if offset in ("Z", "z"):
        return True
    return int(offset[1:3]) <= 23 and int(offset[4:6]) <= 59


def _check_date_time(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    match = _DATE_TIME_RE.fullmatch(instance)
    return match is not None and _is_full_date(match[1]) and _is_valid_time(*match.group(2, 3, 4, 5))


def _check_date(instance: object) -> bool:
    return not isinstance(instance, str) or _is_full_date(instance)


def _check_time(instance: object) -> bool:
    # JSON Schema "time" is RFC 3339 full-time: the UTC offset is required (as in jsonschema's own).
    if not isinstance(instance, str):
        return True
    match = _FULL_TIME_RE.fullmatch(instance)
    return match is not None and _is_valid_time(*match.group(1, 2, 3, 4))


def _check_uri(instance: object) -> bool:
    return not isinstance(instance, str) or _URI_RE.fullmatch(instance) is not None


def _check_ipv4(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    try:
        ipaddress.IPv4Address(instance)
    except ValueError:
        return False
    return True


def _check_ipv6(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    try:
        address = ipaddress.IPv6Address(instance)
    except ValueError:
        return False
    return not address.scope_id


def _check_email(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    local, at, domain = instance.rpartition("@")
    return bool(at and local and domain)


def _format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())  # start empty: no environment-dependent checkers
    for name, check in (
        ("date-time", _check_date_time),
        ("date", _check_date),
        ("time", _check_time),
        ("uri", _check_uri),
        ("ipv4", _check_ipv4),
        ("ipv6", _check_ipv6),
        ("email", _check_email),
        ("idn-email", _check_email),
    ):
        checker.checks(name)(check)
    return checker


_FORMAT_CHECKER = _format_checker()


# --------------------------------------------------------------------------------------------------
# error reporting


def _iter_refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` string of a schema document (data keywords such as ``enum`` excluded)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            elif key not in _DATA_KEYWORDS:
                yield from _iter_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _iter_refs(item)


def _format_path(path: list[str | int]) -> str | None:
    text = ""
    for element in path:
        if isinstance(element, int):
            text += f"[{element}]"
        else:
            text += f".{element}" if text else element
    return text or None


def _missing_property(error: ValidationError) -> str | None:
    """The property a ``required`` error is about (jsonschema emits one error per missing name)."""
    names = error.validator_value
    if not isinstance(names, list) or not isinstance(error.instance, dict):
        return None
    for name in names:
        if (
            isinstance(name, str)
            and name not in error.instance
            and error.message == (f"{name!r} is a required property")
        ):
            return name
    return None


def _truncate(message: str) -> str:
    if len(message) <= _MAX_MESSAGE_LENGTH:
        return message
    return message[: _MAX_MESSAGE_LENGTH - 3] + "..."


def _top_relevance(error: ValidationError) -> tuple[int, bool, bool]:
    """Like jsonschema's ``relevance`` (shallower errors first, ``oneOf``/``anyOf`` weak), but
    without its ordering of sibling paths, so that ``max`` keeps the first error in schema order
    among equally relevant ones instead of the alphabetically last attribute."""
    return (-len(error.path), error.validator not in WEAK_MATCHES, error.validator in STRONG_MATCHES)


def _most_telling(error: ValidationError) -> ValidationError:
    """The cause to report for a top-level error.

    :func:`best_match` first. When it stops on a ``oneOf``/``anyOf`` (its sub-errors tie), descend
    into the alternative with the fewest errors if there is exactly one such alternative: e.g. a
    GeoJSON ``Point`` with one coordinate fails every geometry alternative of ``location``, but the
    ``Point`` one only because of its coordinates, and that is the error worth showing.
    """
    best = best_match([error]) or error
    while best.context and best.validator in WEAK_MATCHES:
        branches: dict[str | int, list[ValidationError]] = {}
        for sub_error in best.context:
            key = sub_error.relative_schema_path[0] if sub_error.relative_schema_path else ""
            branches.setdefault(key, []).append(sub_error)
        sizes = sorted(len(branch) for branch in branches.values())
        if len(sizes) > 1 and sizes[0] == sizes[1]:
            break
        branch = min(branches.values(), key=len)
        best = best_match(branch) or branch[0]
    return best


def _message(error: ValidationError) -> str:
    """The error's message; for an unresolved ``oneOf``/``anyOf``, followed by the distinct
    reasons its alternatives failed (prefixed by their path below the error's)."""
    message = error.message
    if error.context:
        reasons: list[str] = []
        for sub_error in error.context:
            below = _format_path(list(sub_error.relative_path))
            reason = f"{below}: {sub_error.message}" if below else sub_error.message
            if reason not in reasons:
                reasons.append(reason)
        message += f" ({'; '.join(reasons)})"
    return _truncate(message)


def _describe(error: ValidationError) -> dict[str, str | None]:
    """``{"attribute": <path of the failing attribute, or None>, "message": <why>}``."""
    cause = _most_telling(error)
    path: list[str | int] = list(cause.absolute_path)
    if cause.validator == "required":
        missing = _missing_property(cause)
        if missing is not None:
            path.append(missing)
    return {"attribute": _format_path(path), "message": _message(cause)}


# --------------------------------------------------------------------------------------------------
# the validator


class SchemaValidator:
    """Validates keyValues entities against the bundled Smart Data Models schemas.

    One instance can be shared by all requests and threads; each type's schema is compiled on
    first use and cached.
    """

    def __init__(self, root: Traversable | Path | None = None) -> None:
        """``root``: the directory holding ``<Type>/schema.json`` and ``_common/`` (default: the
        copy bundled in the ``territoire`` package)."""
        self._root: Traversable = _default_root() if root is None else root
        self._types = frozenset(
            child.name
            for child in self._root.iterdir()
            if child.is_dir() and not child.name.startswith(("_", ".")) and (child / _SCHEMA_FILE).is_file()
        )
        self._validators: dict[str, Validator] = {}
        self._compile_lock = threading.Lock()
        # Referenced documents already checked against their metaschema (guarded by _compile_lock).
        self._checked_references: set[str] = set()
        self._resources: dict[str, Resource[Any]] = {}
        self._resource_lock = threading.Lock()

    # ---- public API

    def known_types(self) -> list[str]:
        """The entity types with a bundled schema, sorted."""
        return sorted(self._types)

    def has_schema(self, type_name: str) -> bool:
        """Whether a schema is bundled for this (short) entity type name."""
        return type_name in self._types

    def validate(self, type_name: str, key_values: dict[str, Any]) -> None:
        """Validate an entity in keyValues form (short names, ``id`` and ``type`` included).

        Raises :class:`BadRequestData` if the entity does not validate (``detail`` names the most
        relevant failing attribute and why; ``errors`` lists up to :data:`MAX_REPORTED_ERRORS`
        ``{"attribute", "message"}`` items, ``attribute`` being ``None`` for entity-level errors),
        or if no schema is bundled for ``type_name``. Raises :class:`InternalError` if the bundled
        schemas themselves are broken (invalid, or referencing a file that is not bundled).
        """
        validator = self._validator(type_name)
        try:
            errors = list(validator.iter_errors(key_values))
        except referencing.exceptions.Unresolvable as exc:  # pragma: no cover - compile checks refs
            raise InternalError(
                f"Smart Data Models schema {type_name}: cannot resolve {exc}", schema=type_name
            ) from exc
        if not errors:
            return
        # The most relevant top-level error first (ties: schema order), then the others in
        # schema order; each is described by its most telling cause (see _most_telling).
        first = max(errors, key=_top_relevance)
        ordered = [first, *(error for error in errors if error is not first)]
        listed = [_describe(error) for error in ordered[:MAX_REPORTED_ERRORS]]
        prefix = f"Entity does not validate against Smart Data Models schema {type_name}"
        best = listed[0]
        if best["attribute"] is not None:
            detail = f"{prefix}: attribute {best['attribute']!r}: {best['message']}"
        else:
            detail = f"{prefix}: {best['message']}"
        if len(errors) > 1:
            detail += f" ({len(errors)} errors in total)"
        raise BadRequestData(detail, errors=listed)

    # ---- compilation

    def _validator(self, type_name: str) -> Validator:
        validator = self._validators.get(type_name)
        if validator is not None:
            return validator
        if not self.has_schema(type_name):
            raise BadRequestData(
                f"No Smart Data Models schema is bundled for entity type {type_name!r}",
                knownTypes=self.known_types(),
            )
        with self._compile_lock:
            validator = self._validators.get(type_name)
            if validator is None:
                validator = self._compile(type_name)
                self._validators[type_name] = validator
        return validator

    def _compile(self, type_name: str) -> Validator:
        schema = self._load_json(self._root / type_name / _SCHEMA_FILE)
        if not isinstance(schema, dict):
            raise InternalError(f"Smart Data Models schema {type_name} is not a JSON object")
        cls = validator_for(schema, default=Draft202012Validator)
        self._check_schema(cls, schema, type_name)
        registry = self._registry_for(type_name, schema, cls)
        return cls(schema, format_checker=_FORMAT_CHECKER, registry=registry)

    @staticmethod
    def _check_schema(cls: type[Validator], schema: dict[str, Any], name: str) -> None:
        try:
            cls.check_schema(schema)
        except SchemaError as exc:
            raise InternalError(f"Smart Data Models schema {name} is not a valid JSON Schema: {exc.message}") from exc

    def _registry_for(self, type_name: str, schema: dict[str, Any], cls: type[Validator]) -> Registry[Any]:
        """A registry holding the schema and, resolved from the bundle, everything it references."""
        schema_id = schema.get("$id")
        # Without an $id, the root is known as "" (as jsonschema does) and "#..." refs resolve in it.
        base = schema_id if isinstance(schema_id, str) else ""
        root = specification_with(str(schema.get("$schema", "")), default=DRAFT202012)
        # mypy's attrs plugin does not see the "retrieve" alias of Registry's private field.
        registry: Registry[Any] = Registry(retrieve=self._retrieve)  # type: ignore[call-arg]
        registry = registry.with_resource(base, root.create_resource(schema))
        known = {base}
        targets: list[str] = []
        pending: list[tuple[str, Any]] = [(base, schema)]
        while pending:
            document_base, contents = pending.pop()
            for ref in _iter_refs(contents):
                target = urljoin(document_base, ref)
                targets.append(target)
                uri = urldefrag(target).url
                if uri in known:
                    continue
                try:
                    retrieved = registry.get_or_retrieve(uri)
                except (referencing.exceptions.Unretrievable, referencing.exceptions.NoSuchResource) as exc:
                    cause = exc.__cause__ if exc.__cause__ is not None else exc
                    raise InternalError(
                        f"Smart Data Models schema {type_name} references {uri}: {cause}",
                        schema=type_name,
                    ) from exc
                registry = retrieved.registry
                resource = retrieved.value
                if isinstance(resource.contents, dict) and uri not in self._checked_references:
                    dialect = validator_for(resource.contents, default=cls)
                    self._check_schema(dialect, resource.contents, uri)
                    self._checked_references.add(uri)
                resource_base = urljoin(uri, resource.id() or "")
                known.update((uri, resource_base))
                pending.append((resource_base, resource.contents))
        registry = registry.crawl()
        resolver = registry.resolver(base)
        for target in targets:
            try:
                resolver.lookup(target)
            except referencing.exceptions.Unresolvable as exc:
                raise InternalError(
                    f"Smart Data Models schema {type_name}: cannot resolve $ref {target}",
                    schema=type_name,
                ) from exc
        return registry

    # ---- loading (never from the network)

    def _retrieve(self, uri: str) -> Resource[Any]:
        """``retrieve`` function of the registries: bundled copies only, never the network."""
        name = local_file_for_url(uri)
        if name is None:
            raise _UnbundledReference(
                f"{uri} is not a Smart Data Models schema URL; only bundled copies of "
                f"{_PAGES_HOST} and {_RAW_HOST}/{_SDM_ORG} schemas can be referenced "
                "(nothing is fetched at run time)"
            )
        with self._resource_lock:
            resource = self._resources.get(name)
        if resource is not None:
            return resource
        node = self._root / _COMMON_DIR / name
        if not node.is_file():
            raise _UnbundledReference(
                f"no bundled copy of {uri} (expected file {_COMMON_DIR}/{name} in the "
                "Smart Data Models data directory; nothing is fetched at run time)"
            )
        resource = Resource.from_contents(self._load_json(node), default_specification=DRAFT202012)
        with self._resource_lock:
            return self._resources.setdefault(name, resource)

    @staticmethod
    def _load_json(node: Traversable) -> Any:
        try:
            return orjson.loads(node.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise InternalError(f"Bundled Smart Data Models file {node.name} is not valid JSON") from exc
