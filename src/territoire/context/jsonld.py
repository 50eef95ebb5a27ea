"""JSON-LD ``@context`` handling for the NGSI-LD API (ETSI GS CIM 009 v1.8, clauses 5.5.7 and 5.13).

Everything below the HTTP API works on expanded names (see ``docs/dev/internal-format.md``), so every
request resolves its ``@context`` once and expands/compacts attribute and type names through the
resulting :class:`TermMap`. A full JSON-LD processor (pyld) is far too slow for that hot path and
brings nothing NGSI-LD needs: NGSI-LD only ever maps *names* (terms, compact IRIs, ``@vocab``), so
this module implements just that term-map subset of JSON-LD 1.1 context processing:

* term -> IRI strings, expanded term definitions (``@id``, ``@type``, ``@reverse``, ``@prefix``),
  compact IRIs (``prefix:suffix``), ``@vocab``, ``@import``, ``null`` resets, arrays of contexts and
  remote contexts referencing further contexts;
* ``@version``, ``@protected``, ``@propagate``, ``@base``, ``@language``, ``@direction``, containers
  and scoped contexts are accepted and ignored (they do not change how a *name* expands).

The NGSI-LD core context is bundled and always applied *last*: it is ``@protected`` and NGSI-LD
requires its terms to win over user definitions (e.g. a Smart Data Models context defining
``status`` or ``location`` cannot change what those core names mean). Core terms are also visible
while user contexts are processed, so a user context may use the ``ngsi-ld:`` / ``geojson:``
prefixes. The core ``@vocab`` (the NGSI-LD default context) is only the *fallback*: an explicit user
``@vocab`` wins, otherwise no user ``@vocab`` could ever be honoured.

:class:`ContextResolver` dereferences context URLs (bundled core and Smart Data Models contexts,
contexts hosted through ``/jsonldContexts``, an operator-provided directory, then HTTP), memoizes
resolved term maps, and implements the storage behind the ``/jsonldContexts`` endpoints (5.13).
"""

from __future__ import annotations

import builtins
import copy
import hashlib
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol
from urllib.parse import unquote, urljoin, urlsplit

import httpx
import orjson

from territoire.context.errors import (
    BadRequestData,
    InvalidLdContext,
    InvalidRequest,
    LdContextNotAvailable,
    NgsiLdError,
    OperationNotSupported,
    ResourceNotFound,
)

__all__ = [
    "API_PREFIX",
    "CONTEXT_KINDS",
    "CORE_CONTEXT_ID",
    "CORE_CONTEXT_URL",
    "DEFAULT_CONTEXT_BASE",
    "KIND_CACHED",
    "KIND_HOSTED",
    "KIND_IMPLICITLY_CREATED",
    "ContextPersistence",
    "ContextResolver",
    "LdContext",
    "StoredContext",
    "TermMap",
    "is_core_context_url",
    "load_core_context",
]

log = logging.getLogger(__name__)

LdContext = str | dict[str, Any] | list[Any] | None
"""A JSON-LD ``@context`` value as found in a request (Link header URL or ``@context`` member)."""

CORE_CONTEXT_URL: Final = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
"""URL of the bundled core context (the one to echo in responses)."""

CORE_CONTEXT_ID: Final = "ngsi-ld-core-context"
"""Local identifier of the core context in the ``/jsonldContexts`` listing."""

DEFAULT_CONTEXT_BASE: Final = "https://uri.etsi.org/ngsi-ld/default-context/"
"""Base IRI of names no @context defines (the ``@vocab`` of the core context)."""

API_PREFIX: Final = "/ngsi-ld/v1"
JSONLD_CONTEXTS_PATH: Final = API_PREFIX + "/jsonldContexts"

KIND_HOSTED: Final = "Hosted"
KIND_CACHED: Final = "Cached"
KIND_IMPLICITLY_CREATED: Final = "ImplicitlyCreated"
CONTEXT_KINDS: Final = frozenset({KIND_HOSTED, KIND_CACHED, KIND_IMPLICITLY_CREATED})

MAX_NESTING: Final = 10
"""How many remote contexts may reference one another in a chain (guards against deep/looping graphs)."""

_ACCEPT: Final = "application/ld+json, application/json;q=0.9"
_MEMO_LIMIT: Final = 8192
_GEN_DELIMS: Final = frozenset(":/?#[]@")
_SCHEME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_CORE_URL_RE: Final = re.compile(
    r"^https?://uri\.etsi\.org/ngsi-ld/(?:v1/)?ngsi-ld-core-context(?:-v1\.\d+(?:\.\d+)?)?\.jsonld$"
)
_LEGACY_CORE_URLS: Final = frozenset(
    {
        "https://forge.etsi.org/gitlab/NGSI-LD/NGSI-LD/raw/master/coreContext/ngsi-ld-core-context.jsonld",
        "https://forge.etsi.org/gitlab/NGSI-LD/NGSI-LD/raw/master/coreContext/ngsi-ld-core-context.json",
    }
)
_SELF_PATH_RE: Final = re.compile(r"/jsonldContexts/([^/?#]+)/?$")
_SDM_FILE_RE: Final = re.compile(r"^dataModel\.([A-Za-z0-9_\-]+)\.context\.jsonld$")

# Origins of stored contexts: which ones go to / come from the persistence layer.
_ORIGIN_CORE: Final = "core"
_ORIGIN_API: Final = "api"  # Hosted / ImplicitlyCreated, added through the API
_ORIGIN_NETWORK: Final = "network"  # Cached, downloaded over HTTP
_ORIGIN_STORE: Final = "store"  # loaded from the persistence layer at start-up
_ORIGIN_PRELOAD: Final = "preload"  # Cached, read from the operator's context directory
_ORIGIN_BUNDLED: Final = "bundled"  # Cached, bundled Smart Data Models context
_PERSISTED_ORIGINS: Final = frozenset({_ORIGIN_API, _ORIGIN_NETWORK, _ORIGIN_STORE})

_JSON_LD_KEYWORDS: Final = frozenset(
    {
        "@base", "@container", "@context", "@direction", "@graph", "@id", "@import", "@included",
        "@index", "@json", "@language", "@list", "@nest", "@none", "@prefix", "@propagate",
        "@protected", "@reverse", "@set", "@type", "@value", "@version", "@vocab",
    }
)  # fmt: skip


def is_core_context_url(url: str) -> bool:
    """Whether ``url`` is one of the published NGSI-LD core context URLs (any version).

    They all resolve to the bundled core context: the core context is part of the broker, so it is
    never downloaded (sites may be offline, and ETSI's server must not be hit per request).
    """
    return url in _LEGACY_CORE_URLS or _CORE_URL_RE.match(url) is not None


def load_core_context() -> dict[str, Any]:
    """The bundled core context document ``{"@context": {...}}`` (read through importlib.resources)."""
    ref = resources.files("territoire").joinpath("data", "jsonld", "ngsi-ld-core-context-v1.9.jsonld")
    doc = orjson.loads(ref.read_bytes())
    if not isinstance(doc, dict) or not isinstance(doc.get("@context"), dict):
        raise RuntimeError("the bundled NGSI-LD core context is damaged")
    return doc


def _load_bundled_sdm() -> dict[str, dict[str, Any]]:
    """Bundled Smart Data Models subject contexts, keyed by both URLs they are published under."""
    out: dict[str, dict[str, Any]] = {}
    folder = resources.files("territoire").joinpath("data", "jsonld", "smart-data-models")
    if not folder.is_dir():
        return out
    for item in folder.iterdir():
        match = _SDM_FILE_RE.match(item.name)
        if match is None:
            continue
        subject = match.group(1)
        doc = orjson.loads(item.read_bytes())
        if not isinstance(doc, dict) or "@context" not in doc:
            log.warning("bundled Smart Data Models context %s has no @context: ignored", item.name)
            continue
        body = {"@context": doc["@context"]}
        out[f"https://raw.githubusercontent.com/smart-data-models/dataModel.{subject}/master/context.jsonld"] = body
        out[f"https://smart-data-models.github.io/dataModel.{subject}/context.jsonld"] = body
    return out


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical(context: object) -> str:
    """Canonical text of a context value (sorted keys): the memoization key of resolve()."""
    try:
        return orjson.dumps(context, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError as exc:
        raise InvalidLdContext(f"the @context is not a JSON value: {exc}") from exc


def _url_to_filename(url: str) -> str:
    """Name of the file holding ``url`` in a context directory: ``:`` and ``/`` replaced by ``_``."""
    return url.replace(":", "_").replace("/", "_")


# --------------------------------------------------------------------------------------------------
# Term definitions and the term map
# --------------------------------------------------------------------------------------------------


class _TermDef(NamedTuple):
    iri: str  # an absolute IRI, or a keyword for keyword aliases (``"id": "@id"``)
    type: str | None  # the ``@type`` of the definition (``@id``, ``@vocab``, ``DateTime``...), as written
    prefix: bool  # may be used as the prefix of a compact IRI when compacting


_MISSING: Final = object()


def _check_context_value(value: object, where: str) -> None:
    """Reject context values JSON-LD cannot process, before anything is stored or cached.

    Only the structure is checked (no URL is dereferenced): a context is a URL, an object, ``null``
    inside an array, or an array of those; a term definition is a string, an object or ``null``.
    """
    if value is None or isinstance(value, str):
        return
    if isinstance(value, list):
        for item in value:
            _check_context_value(item, where)
        return
    if not isinstance(value, dict):
        raise InvalidLdContext(
            f"invalid @context in {where}: a context must be a URL string, an object or an array of "
            f"those, not {type(value).__name__} {value!r}"
        )
    for key, definition in value.items():
        if key.startswith("@"):
            _check_keyword(key, definition, where)
            continue
        if key == "":
            raise InvalidLdContext(f"invalid @context in {where}: the empty string cannot be defined as a term")
        if definition is None or isinstance(definition, str):
            continue
        if not isinstance(definition, dict):
            raise InvalidLdContext(
                f"invalid @context in {where}: the definition of term {key!r} must be a string, an "
                f"object or null, not {type(definition).__name__}"
            )
        for member in ("@id", "@reverse", "@type"):
            sub = definition.get(member, _MISSING)
            if sub is _MISSING or isinstance(sub, str) or (sub is None and member == "@id"):
                continue
            raise InvalidLdContext(
                f"invalid @context in {where}: {member} of term {key!r} must be a string, not {sub!r}"
            )
        if "@prefix" in definition and not isinstance(definition["@prefix"], bool):
            raise InvalidLdContext(f"invalid @context in {where}: @prefix of term {key!r} must be a boolean")


def _check_keyword(key: str, value: object, where: str) -> None:
    if key in ("@vocab", "@base") and value is not None and not isinstance(value, str):
        raise InvalidLdContext(f"invalid @context in {where}: {key} must be a string or null, not {value!r}")
    if key == "@import" and not isinstance(value, str):
        raise InvalidLdContext(f"invalid @context in {where}: @import must be a URL string, not {value!r}")


class _LocalContext(NamedTuple):
    """One context object, in processing order, with where it came from (for error messages)."""

    definitions: dict[str, Any] | None  # None: a ``null`` entry, which resets the user definitions
    source: str


def _expand_vocab_value(value: str, terms: Mapping[str, _TermDef], vocab: str | None) -> str | None:
    if value == "":
        return None  # relative to the document base, which a broker does not have
    if value in terms and not terms[value].iri.startswith("@"):
        return terms[value].iri
    prefix, sep, suffix = value.partition(":")
    if sep:
        definition = terms.get(prefix)
        if definition is not None and not suffix.startswith("//") and not definition.iri.startswith("@"):
            return definition.iri + suffix
        return value
    return (vocab or DEFAULT_CONTEXT_BASE) + value


def _process_local(
    ctx: Mapping[str, Any],
    terms: dict[str, _TermDef],
    vocab: str | None,
    source: str,
    *,
    apply_vocab: bool = True,
) -> str | None:
    """Apply one context object to ``terms`` (mutated) and return the new ``@vocab``.

    Terms of one object may refer to one another in any order (``"ex:a"`` before ``"ex"``), so each
    term is defined on demand, with cycle detection, as in the JSON-LD 1.1 context processing algorithm.
    """
    if apply_vocab and "@vocab" in ctx:
        raw = ctx["@vocab"]
        vocab = None if raw is None else _expand_vocab_value(raw, terms, vocab)
    state: dict[str, bool] = {}  # False: being defined, True: defined

    def iri_of(value: str, term: str) -> str:
        if value.startswith("@"):
            return value  # keyword alias such as "id": "@id"
        prefix, sep, suffix = value.partition(":")
        if sep:
            if prefix != "_" and not suffix.startswith("//"):
                if prefix in ctx and prefix != term:
                    define(prefix)
                elif prefix == term:
                    raise InvalidLdContext(
                        f"invalid @context in {source}: cyclic IRI mapping, term {term!r} is defined "
                        f"with itself as prefix ({value!r})"
                    )
                definition = terms.get(prefix)
                if definition is not None and not definition.iri.startswith("@"):
                    return definition.iri + suffix
            return value  # an absolute IRI (or a compact IRI with an unknown prefix: kept as is)
        if value in ctx and value != term:
            define(value)
        definition = terms.get(value)
        if definition is not None and value != term:
            return definition.iri
        return (vocab or DEFAULT_CONTEXT_BASE) + value

    def define(term: str) -> None:
        done = state.get(term)
        if done:
            return
        if done is False:
            raise InvalidLdContext(f"invalid @context in {source}: cyclic IRI mapping involving term {term!r}")
        state[term] = False
        value = ctx[term]
        if value is None:
            terms.pop(term, None)  # explicitly unmapped: falls back to @vocab / the default context
        elif isinstance(value, str):
            iri = iri_of(value, term)
            simple_prefix = ":" not in term and "/" not in term and iri[-1:] in _GEN_DELIMS
            terms[term] = _TermDef(iri, None, simple_prefix)
        elif isinstance(value, dict):
            reverse = value.get("@reverse")
            raw_id = value.get("@id", _MISSING)
            if isinstance(reverse, str):
                iri = iri_of(reverse, term)
            elif raw_id is None:
                terms.pop(term, None)
                state[term] = True
                return
            elif isinstance(raw_id, str):
                iri = iri_of(raw_id, term)
            elif ":" in term:
                iri = iri_of(term, "")  # the term is itself a compact or absolute IRI
            else:
                iri = (vocab or DEFAULT_CONTEXT_BASE) + term
            raw_type = value.get("@type")
            terms[term] = _TermDef(iri, raw_type if isinstance(raw_type, str) else None, value.get("@prefix") is True)
        else:  # pragma: no cover - rejected by _check_context_value beforehand
            raise InvalidLdContext(f"invalid @context in {source}: bad definition of term {term!r}")
        state[term] = True

    for key in ctx:
        if not key.startswith("@"):
            define(key)
    return vocab


def _build_terms(
    items: Iterable[_LocalContext], core: Mapping[str, _TermDef]
) -> tuple[dict[str, _TermDef], str | None]:
    """Process user context objects in order, core terms visible throughout and re-applied last."""
    terms = dict(core)
    vocab: str | None = None
    for item in items:
        if item.definitions is None:
            terms = dict(core)
            vocab = None
            continue
        vocab = _process_local(item.definitions, terms, vocab, item.source)
    terms.update(core)
    return terms, vocab


def _core_definitions(core_context: Mapping[str, Any]) -> dict[str, _TermDef]:
    terms: dict[str, _TermDef] = {}
    _process_local(core_context, terms, None, "the NGSI-LD core context", apply_vocab=False)
    return terms


class TermMap:
    """The names a resolved ``@context`` defines: expansion of names to IRIs and back.

    Instances are immutable once built and shared between requests (:class:`ContextResolver`
    memoizes them), so they can be used as keys of further caches (identity hash); ``key`` is the
    canonical text of the context they were built from. Expansion and compaction are dict lookups
    memoized per instance because they run for every attribute of every request.
    """

    __slots__ = (
        "_compacted",
        "_context",
        "_context_urls",
        "_expanded",
        "_inverse",
        "_key",
        "_prefixes",
        "_terms",
        "_vocab",
    )

    def __init__(self, terms: Mapping[str, _TermDef], vocab: str | None, context: LdContext, key: str) -> None:
        self._terms: dict[str, _TermDef] = dict(terms)
        self._vocab = vocab
        self._context = context
        self._key = key
        if isinstance(context, str):
            self._context_urls: tuple[str, ...] = (context,)
        elif isinstance(context, list):
            self._context_urls = tuple(item for item in context if isinstance(item, str))
        else:
            self._context_urls = ()
        # Inverse map for compaction: the shortest, then lexicographically least, term of each IRI.
        inverse: dict[str, str] = {}
        prefixes: list[tuple[str, str]] = []
        for term, definition in self._terms.items():
            iri = definition.iri
            if iri.startswith("@"):
                continue
            best = inverse.get(iri)
            if best is None or (len(term), term) < (len(best), best):
                inverse[iri] = term
            if definition.prefix:
                prefixes.append((iri, term))
        self._inverse = inverse
        self._prefixes = tuple(prefixes)
        self._expanded: dict[str, str] = {}
        self._compacted: dict[str, str] = {}

    # -- what was resolved ---------------------------------------------------------------------------

    @property
    def key(self) -> str:
        """Canonical JSON text of the context this map was built from."""
        return self._key

    @property
    def context(self) -> LdContext:
        """The ``@context`` value exactly as the request gave it (``None``: core context only)."""
        return self._context

    @property
    def context_urls(self) -> tuple[str, ...]:
        """The context URLs given at top level (for a ``Link`` header), in order."""
        return self._context_urls

    @property
    def vocab(self) -> str | None:
        """The user ``@vocab`` in effect, ``None`` when names fall back to the NGSI-LD default context."""
        return self._vocab

    def response_context(self) -> str | list[Any]:
        """The ``@context`` to echo in an ``application/ld+json`` response.

        The request's own context, with the core context URL appended when the request did not
        reference it, so that the response is self-describing.
        """
        ctx = self._context
        if ctx is None:
            return CORE_CONTEXT_URL
        if isinstance(ctx, str):
            return ctx if is_core_context_url(ctx) else [ctx, CORE_CONTEXT_URL]
        items = list(ctx) if isinstance(ctx, list) else [ctx]
        if any(isinstance(item, str) and is_core_context_url(item) for item in items):
            return items
        return [*items, CORE_CONTEXT_URL]

    def has_term(self, term: str) -> bool:
        """Whether ``term`` is defined by the context (core included)."""
        return term in self._terms

    def term_type(self, term: str) -> str | None:
        """The ``@type`` of the definition of ``term`` (``@id``, ``@vocab``, ``DateTime``...), if any."""
        definition = self._terms.get(term)
        return definition.type if definition is not None else None

    # -- expansion -----------------------------------------------------------------------------------

    def expand(self, term: str) -> str:
        """The IRI of an attribute or type name.

        A defined term gives its IRI; ``prefix:suffix`` with a defined prefix is expanded; any other
        ``scheme:...`` (``https://``, ``urn:``) is an absolute IRI and kept; anything else is
        appended to the user ``@vocab`` or, failing that, to the NGSI-LD default context base.
        Keyword aliases expand to the keyword (``expand("type") == "@type"``).
        """
        iri = self._expanded.get(term)
        if iri is None:
            iri = self._expand(term)
            if len(self._expanded) >= _MEMO_LIMIT:
                self._expanded.clear()
            self._expanded[term] = iri
        return iri

    def expand_value_term(self, value: str) -> str:
        """Expand a vocabulary *value* (``VocabProperty``, ``@type: @vocab`` members).

        JSON-LD expands such values exactly like names (terms, compact IRIs, then ``@vocab``), so
        this is :meth:`expand`; it exists so that call sites say what they expand.
        """
        return self.expand(value)

    def _expand(self, term: str) -> str:
        definition = self._terms.get(term)
        if definition is not None:
            return definition.iri
        prefix, sep, suffix = term.partition(":")
        if sep:
            if prefix == "_":
                return term  # blank node identifier
            if not suffix.startswith("//"):
                prefix_def = self._terms.get(prefix)
                if prefix_def is not None and not prefix_def.iri.startswith("@"):
                    return prefix_def.iri + suffix
            if _SCHEME_RE.match(prefix):
                return term  # absolute IRI
        if term.startswith("@"):
            return term
        return (self._vocab or DEFAULT_CONTEXT_BASE) + term

    # -- compaction ----------------------------------------------------------------------------------

    def compact(self, iri: str) -> str:
        """The shortest name that expands back to ``iri`` with this context.

        Preference: a term mapping exactly to ``iri`` (shortest, then lexicographically least); the
        bare name of an IRI under the user ``@vocab`` or, without one, under the NGSI-LD default
        context; a compact IRI ``prefix:suffix``; else the IRI itself. A bare name is only used when
        it is not itself a term, so ``expand(compact(iri)) == iri`` always holds.
        """
        name = self._compacted.get(iri)
        if name is None:
            name = self._compact(iri)
            if len(self._compacted) >= _MEMO_LIMIT:
                self._compacted.clear()
            self._compacted[iri] = name
        return name

    def compact_value_term(self, iri: str) -> str:
        """Compact a vocabulary value (inverse of :meth:`expand_value_term`)."""
        return self.compact(iri)

    def _bare_name(self, iri: str, base: str) -> str | None:
        if not iri.startswith(base):
            return None
        rest = iri[len(base) :]
        if rest and ":" not in rest and not rest.startswith("@") and rest not in self._terms:
            return rest
        return None

    def _compact(self, iri: str) -> str:
        term = self._inverse.get(iri)
        if term is not None:
            return term
        # Vocabulary-relative names first (as JSON-LD does): the user @vocab, else the NGSI-LD default
        # context, which is the core @vocab and must never come out as "ngsi-ld:default-context/x".
        bare = self._bare_name(iri, self._vocab or DEFAULT_CONTEXT_BASE)
        if bare is not None:
            return bare
        best: str | None = None
        for prefix_iri, prefix in self._prefixes:
            if len(iri) > len(prefix_iri) and iri.startswith(prefix_iri):
                suffix = iri[len(prefix_iri) :]
                candidate = f"{prefix}:{suffix}"
                if suffix.startswith("//") or candidate in self._terms:
                    continue
                if best is None or (len(candidate), candidate) < (len(best), best):
                    best = candidate
        return best if best is not None else iri

    def __repr__(self) -> str:
        return f"TermMap(context={self._key[:80]}, terms={len(self._terms)}, vocab={self._vocab!r})"


# --------------------------------------------------------------------------------------------------
# Stored contexts and persistence
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredContext:
    """A context the broker keeps (clause 5.13), as handed to / read from :class:`ContextPersistence`.

    ``url`` is the original URL of a ``Cached`` context; for ``Hosted`` and ``ImplicitlyCreated``
    ones it is the path they are served at, ``/ngsi-ld/v1/jsonldContexts/<local_id>`` (their full
    URL depends on how the broker is reached). ``body`` is the document ``{"@context": ...}``.
    ``created_at`` is an ISO 8601 UTC timestamp (download time for Cached contexts).
    """

    local_id: str
    url: str
    body: dict[str, Any]
    kind: str
    created_at: str


class ContextPersistence(Protocol):
    """Where stored contexts survive restarts (implemented by the entity stores).

    Hosted and ImplicitlyCreated contexts are saved (clients and subscriptions refer to them by
    URL), and so are contexts downloaded over HTTP, so that an offline site keeps working after a
    restart. Contexts from the bundle or the operator's directory are not saved (always available).
    """

    def load_contexts(self) -> list[StoredContext]: ...

    def save_context(self, ctx: StoredContext) -> None: ...

    def delete_context(self, local_id: str) -> None: ...


@dataclass(slots=True)
class _Entry:
    local_id: str
    kind: str
    url: str | None
    body: dict[str, Any]
    created_at: str
    origin: str
    last_usage: str | None = None
    hits: int = 0

    def stored(self) -> StoredContext:
        url = self.url if self.kind == KIND_CACHED and self.url else f"{JSONLD_CONTEXTS_PATH}/{self.local_id}"
        return StoredContext(self.local_id, url, self.body, self.kind, self.created_at)


class _FetchFailed(Exception):
    """A download failed; the message is the reason given to the client."""


# --------------------------------------------------------------------------------------------------
# The resolver
# --------------------------------------------------------------------------------------------------


class ContextResolver:
    """Resolves request ``@context`` values into :class:`TermMap` s and stores contexts (clause 5.13).

    A context URL is looked up, in order, in:

    1. the core context URLs (any published version): the bundled core context, never downloaded;
    2. contexts stored by the broker: Hosted / ImplicitlyCreated ones by their served URL (any URL
       whose path ends with ``/jsonldContexts/<localId>``, so the broker never calls itself over
       HTTP), and Cached ones by their original URL;
    3. ``context_dir``, a directory prepared by the operator for sites without internet access:
       ``index.json`` maps URLs to file names relative to the directory
       (``{"https://example.org/ctx.jsonld": "ctx.jsonld"}``); failing that, a file named after the
       URL with every ``:`` and ``/`` replaced by ``_`` (``https___example.org_ctx.jsonld``) is used;
    4. the bundled Smart Data Models subject contexts (``dataModel.<Subject>``), under both their
       ``raw.githubusercontent.com/.../master/context.jsonld`` and ``smart-data-models.github.io``
       URLs;
    5. HTTP(S) ``GET`` with ``fetch_timeout`` as an overall deadline, redirects followed, 1 MB max.

    Documents found in 3-5 become ``Cached`` contexts (listed, deletable, reloadable). Documents
    may reference further contexts (URL, array or object ``@context``), resolved recursively up to
    :data:`MAX_NESTING` levels, loops rejected. Resolved term maps are memoized in a bounded LRU
    keyed by the canonical JSON of the context; the memo is dropped whenever a stored context is
    deleted or reloaded. The instance is thread safe: state changes happen under a lock, downloads
    happen outside it.
    """

    def __init__(
        self,
        context_dir: Path | None,
        fetch_timeout: float,
        persistence: ContextPersistence | None = None,
        *,
        cache_size: int = 256,
        max_document_bytes: int = 1024 * 1024,
    ) -> None:
        if fetch_timeout <= 0:
            raise ValueError("fetch_timeout must be positive")
        self._context_dir = context_dir
        self._timeout = float(fetch_timeout)
        self._persistence = persistence
        self._cache_size = max(1, cache_size)
        self._max_bytes = max_document_bytes
        self._lock = threading.RLock()
        self._generation = 0
        self._lru: OrderedDict[str, tuple[TermMap, tuple[str, ...]]] = OrderedDict()
        self._entries: dict[str, _Entry] = {}
        self._by_url: dict[str, str] = {}

        core_doc = load_core_context()
        self._core_defs = _core_definitions(core_doc["@context"])
        self._core = TermMap(self._core_defs, None, None, "null")
        started = _now()
        self._entries[CORE_CONTEXT_ID] = _Entry(
            CORE_CONTEXT_ID, KIND_CACHED, CORE_CONTEXT_URL, core_doc, started, _ORIGIN_CORE
        )
        self._preload_index = self._read_context_dir_index(context_dir)
        self._bundled = _load_bundled_sdm()
        if persistence is not None:
            for stored in persistence.load_contexts():
                self._restore(stored)

    # -- construction helpers ------------------------------------------------------------------------

    @staticmethod
    def _read_context_dir_index(context_dir: Path | None) -> dict[str, Path]:
        """Read ``index.json`` of the context directory; a broken index is a configuration error."""
        if context_dir is None:
            return {}
        if not context_dir.is_dir():
            raise ValueError(f"context directory {context_dir} does not exist or is not a directory")
        index_file = context_dir / "index.json"
        if not index_file.is_file():
            return {}
        try:
            index = orjson.loads(index_file.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{index_file} is not valid JSON: {exc}") from exc
        if not isinstance(index, dict):
            raise ValueError(f"{index_file} must map context URLs to file names")
        root = context_dir.resolve()
        out: dict[str, Path] = {}
        for url, name in index.items():
            if not isinstance(name, str):
                raise ValueError(f"{index_file}: the file of {url} must be a string")
            path = (root / name).resolve()
            if not path.is_relative_to(root):
                raise ValueError(f"{index_file}: {name} is outside the context directory")
            if not path.is_file():
                raise ValueError(f"{index_file}: {name} (for {url}) does not exist")
            out[url] = path
        return out

    def _restore(self, stored: StoredContext) -> None:
        body = stored.body
        if stored.kind not in CONTEXT_KINDS or not isinstance(body, dict) or "@context" not in body:
            log.warning("stored @context %s is not usable (kind %r): ignored", stored.local_id, stored.kind)
            return
        if stored.kind == KIND_CACHED and not stored.url:
            log.warning("stored Cached @context %s has no URL: ignored", stored.local_id)
            return
        url = stored.url if stored.kind == KIND_CACHED else None
        entry = _Entry(stored.local_id, stored.kind, url, body, stored.created_at, _ORIGIN_STORE)
        self._entries[entry.local_id] = entry
        if entry.kind == KIND_CACHED and entry.url:
            self._by_url[entry.url] = entry.local_id

    # -- resolution ----------------------------------------------------------------------------------

    @property
    def core(self) -> TermMap:
        """The term map of the core context alone (no user context given)."""
        return self._core

    def resolve(self, context: LdContext) -> TermMap:
        """The term map of a request's ``@context`` (``None``: core context only).

        Raises :class:`LdContextNotAvailable` when a referenced context cannot be retrieved and
        :class:`InvalidLdContext` when a context is structurally invalid.
        """
        key = _canonical(context)
        with self._lock:
            hit = self._lru.get(key)
            if hit is not None:
                self._lru.move_to_end(key)
                self._touch(hit[1])
                return hit[0]
            generation = self._generation
        if context is None:
            term_map, used = self._core, [CORE_CONTEXT_ID]
        else:
            used = [CORE_CONTEXT_ID]
            items: list[_LocalContext] = []
            self._flatten(context, 0, (), None, "the request @context", used, items)
            terms, vocab = _build_terms(items, self._core_defs)
            # A private copy: the request's objects may be mutated later, the memoized map is shared.
            term_map = TermMap(terms, vocab, copy.deepcopy(context), key)
        used_ids = tuple(used)
        with self._lock:
            if generation == self._generation:
                self._lru[key] = (term_map, used_ids)
                while len(self._lru) > self._cache_size:
                    self._lru.popitem(last=False)
            self._touch(used_ids)
        return term_map

    def _touch(self, local_ids: Iterable[str]) -> None:
        """Count one use of each stored context (``numberOfHits`` / ``lastUsage``); lock held."""
        now = _now()
        for local_id in local_ids:
            entry = self._entries.get(local_id)
            if entry is not None:
                entry.hits += 1
                entry.last_usage = now

    def _flatten(
        self,
        value: object,
        depth: int,
        chain: tuple[str, ...],
        base: str | None,
        source: str,
        used: list[str],
        out: list[_LocalContext],
    ) -> None:
        """Turn a context value into the ordered list of context objects to process."""
        if isinstance(value, str):
            self._flatten_url(value, depth, chain, base, used, out)
        elif isinstance(value, list):
            for item in value:
                if item is None:
                    out.append(_LocalContext(None, source))
                else:
                    self._flatten(item, depth, chain, base, source, used, out)
        elif isinstance(value, dict):
            _check_context_value(value, source)
            imported = value.get("@import")
            if isinstance(imported, str):
                url = self._absolute(imported, base)
                entry = self._lookup(url, depth, chain)
                used.append(entry.local_id)
                target = entry.body["@context"]
                if not isinstance(target, dict):
                    raise InvalidLdContext(f"invalid @context in {source}: @import of {url} must be an object")
                merged = {**target, **{k: v for k, v in value.items() if k != "@import"}}
                out.append(_LocalContext(merged, source))
            else:
                out.append(_LocalContext(value, source))
        elif value is None:
            out.append(_LocalContext(None, source))
        else:
            _check_context_value(value, source)  # raises

    def _flatten_url(
        self,
        url: str,
        depth: int,
        chain: tuple[str, ...],
        base: str | None,
        used: list[str],
        out: list[_LocalContext],
    ) -> None:
        url = self._absolute(url, base)
        if is_core_context_url(url):
            return  # always applied
        entry = self._lookup(url, depth, chain)
        used.append(entry.local_id)
        inner_base = entry.url if entry.kind == KIND_CACHED else None
        self._flatten(entry.body["@context"], depth + 1, (*chain, url), inner_base, url, used, out)

    @staticmethod
    def _absolute(url: str, base: str | None) -> str:
        if base is not None and not _has_scheme(url):
            return urljoin(base, url)
        return url

    def _lookup(self, url: str, depth: int, chain: tuple[str, ...]) -> _Entry:
        if url in chain:
            raise InvalidLdContext(f"recursive @context inclusion: {' -> '.join((*chain, url))}")
        if depth >= MAX_NESTING:
            raise InvalidLdContext(
                f"@context {url} is nested more than {MAX_NESTING} levels deep ({' -> '.join(chain)})"
            )
        return self._load(url)

    def _load(self, url: str) -> _Entry:
        """The stored context of ``url``, reading or downloading it (and caching it) if needed."""
        with self._lock:
            entry = self._find_locked(url, by_local_id=False)
            if entry is not None:
                return entry
        found = self._read_local_source(url)
        if found is None:
            body, origin = self._fetch(url), _ORIGIN_NETWORK
        else:
            body, origin = found
        entry = _Entry(_cached_id(url), KIND_CACHED, url, body, _now(), origin)
        with self._lock:
            existing = self._by_url.get(url)
            if existing is not None and existing in self._entries:
                return self._entries[existing]  # another thread cached it meanwhile
            self._entries[entry.local_id] = entry
            self._by_url[url] = entry.local_id
        if origin == _ORIGIN_NETWORK:
            self._save(entry, best_effort=True)
        return entry

    def _read_local_source(self, url: str) -> tuple[dict[str, Any], str] | None:
        """The document of ``url`` from the operator's directory or the bundle, if there."""
        path = self._preload_index.get(url)
        if path is None and self._context_dir is not None:
            candidate = self._context_dir / _url_to_filename(url)
            if candidate.is_file():
                path = candidate
        if path is not None:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise LdContextNotAvailable(
                    f"@context {url} could not be read from the context directory ({path}): {exc}"
                ) from exc
            return self._parse_document(data, url), _ORIGIN_PRELOAD
        bundled = self._bundled.get(url)
        if bundled is not None:
            return bundled, _ORIGIN_BUNDLED
        return None

    def _parse_document(self, data: bytes, url: str) -> dict[str, Any]:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise LdContextNotAvailable(f"@context {url} is not usable: the document is not JSON ({exc})") from exc
        if not isinstance(doc, dict) or "@context" not in doc:
            raise LdContextNotAvailable(
                f'@context {url} is not usable: the document has no top-level "@context" member'
            )
        _check_context_value(doc["@context"], url)
        return {"@context": doc["@context"]}

    # -- downloads -----------------------------------------------------------------------------------

    def _fetch(self, url: str) -> dict[str, Any]:
        """Download and check a context document, within ``fetch_timeout`` seconds in total.

        httpx timeouts bound each phase (connect, each read) but neither DNS resolution nor a server
        trickling bytes, so the download runs in a daemon thread waited for with a deadline: the
        request fails promptly even if that thread lingers until its own timeouts fire.
        """
        parts = urlsplit(url)
        if not parts.scheme:
            raise InvalidLdContext(f"@context reference {url!r} is not an absolute URL")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise LdContextNotAvailable(f"@context {url} could not be retrieved: only http(s) URLs are fetched")
        outcome: list[bytes | BaseException] = []

        def work() -> None:
            try:
                outcome.append(self._http_get(url))
            except BaseException as exc:  # reported to the waiting thread
                outcome.append(exc)

        worker = threading.Thread(target=work, name="territoire-context-fetch", daemon=True)
        worker.start()
        worker.join(self._timeout + 0.25)
        if not outcome:
            raise LdContextNotAvailable(
                f"@context {url} could not be retrieved: no complete answer within {self._timeout:g} s"
            )
        result = outcome[0]
        if isinstance(result, _FetchFailed):
            raise LdContextNotAvailable(f"@context {url} could not be retrieved: {result}") from result
        if isinstance(result, BaseException):
            raise LdContextNotAvailable(
                f"@context {url} could not be retrieved: {type(result).__name__}: {result}"
            ) from result
        return self._parse_document(result, url)

    def _http_get(self, url: str) -> bytes:
        deadline = time.monotonic() + self._timeout
        try:
            with (
                httpx.Client(
                    timeout=httpx.Timeout(self._timeout),
                    follow_redirects=True,
                    max_redirects=10,
                    headers={"Accept": _ACCEPT},
                ) as client,
                client.stream("GET", url) as response,
            ):
                if not 200 <= response.status_code < 300:
                    raise _FetchFailed(f"the server answered HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self._max_bytes:
                    raise _FetchFailed(f"the document is larger than {self._max_bytes} bytes")
                buffer = bytearray()
                for chunk in response.iter_bytes():
                    buffer += chunk
                    if len(buffer) > self._max_bytes:
                        raise _FetchFailed(f"the document is larger than {self._max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise _FetchFailed(f"no complete answer within {self._timeout:g} s")
                return bytes(buffer)
        except httpx.TimeoutException as exc:
            raise _FetchFailed(f"no answer within {self._timeout:g} s ({type(exc).__name__})") from exc
        except httpx.TooManyRedirects as exc:
            raise _FetchFailed("too many redirects") from exc
        except httpx.ConnectError as exc:
            raise _FetchFailed(f"connection failed ({exc})") from exc
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise _FetchFailed(f"{type(exc).__name__}: {exc}") from exc

    # -- storage (clause 5.13) -----------------------------------------------------------------------

    @staticmethod
    def served_url(local_id: str, base_url: str) -> str:
        """URL under which the broker serves a Hosted / ImplicitlyCreated context."""
        return f"{base_url.rstrip('/')}{JSONLD_CONTEXTS_PATH}/{local_id}"

    def add(self, body: dict[str, Any]) -> str:
        """Store a ``Hosted`` context (5.13.2) and return its local identifier.

        ``body`` is the request body, a JSON object with an ``@context`` member. Context URLs it
        references are only dereferenced when the context is used, so adding works offline.
        """
        if not isinstance(body, dict) or "@context" not in body:
            raise InvalidRequest('the body must be a JSON object with an "@context" member')
        context = body["@context"]
        self._check_storable(context)
        entry = _Entry(uuid.uuid4().hex, KIND_HOSTED, None, {"@context": context}, _now(), _ORIGIN_API)
        self._save(entry, best_effort=False)
        with self._lock:
            self._entries[entry.local_id] = entry
        return entry.local_id

    def add_implicit(self, context: LdContext) -> str:
        """Store an ``ImplicitlyCreated`` context and return its local identifier.

        For operations that must refer to a request's inline / array ``@context`` by URL later
        (e.g. a subscription's ``jsonldContext``). Identical contexts share one entry: the local
        identifier derives from the canonical JSON of the context.
        """
        self._check_storable(context)
        local_id = hashlib.sha256(_canonical(context).encode()).hexdigest()[:32]
        with self._lock:
            if local_id in self._entries:
                return local_id
        entry = _Entry(local_id, KIND_IMPLICITLY_CREATED, None, {"@context": context}, _now(), _ORIGIN_API)
        self._save(entry, best_effort=False)
        with self._lock:
            self._entries.setdefault(local_id, entry)
        return local_id

    def _check_storable(self, context: object) -> None:
        """Validate a context before storing it: structure, and term definitions of inline objects."""
        try:
            if context is None:
                raise InvalidLdContext("the @context is null")
            _check_context_value(context, "the @context")
            inline: list[_LocalContext] = []
            stack = [context]
            while stack:
                item = stack.pop(0)
                if isinstance(item, list):
                    stack[0:0] = item
                elif isinstance(item, dict):
                    inline.append(_LocalContext(item, "the @context"))
            _build_terms(inline, self._core_defs)
        except InvalidLdContext as exc:
            raise BadRequestData(exc.detail) from exc

    def get(self, context_id: str, details: bool, base_url: str = "") -> dict[str, Any]:
        """Serve a stored context (5.13.4): its document, or its metadata when ``details``.

        ``context_id`` is a local identifier or, for Cached contexts, the original URL. The document
        of a Cached context is not served (clients fetch it from its origin): OperationNotSupported.
        """
        with self._lock:
            entry = self._find_locked(context_id, by_local_id=True)
            if entry is None:
                raise ResourceNotFound(f"no @context with identifier {context_id!r} is stored")
            if details:
                return self._details(entry, base_url)
            if entry.kind == KIND_CACHED:
                raise OperationNotSupported(
                    f"@context {context_id!r} is a Cached copy of {entry.url}: only its details are "
                    "served (details=true); its content is available at its original URL"
                )
            return copy.deepcopy(entry.body)

    def delete(self, context_id: str, reload: bool = False) -> None:
        """Delete a stored context, or with ``reload`` download a fresh copy of a Cached one (5.13.5).

        The core context cannot be deleted (BadRequestData); reloading it succeeds without effect
        since it is bundled. Only Cached contexts can be reloaded. When the download fails the
        existing copy is kept and LdContextNotAvailable is raised.
        """
        with self._lock:
            entry = self._find_locked(context_id, by_local_id=True)
        if entry is None:
            if reload:
                raise BadRequestData(f"no @context with identifier {context_id!r} is stored, so none can be reloaded")
            raise ResourceNotFound(f"no @context with identifier {context_id!r} is stored")
        if entry.origin == _ORIGIN_CORE:
            if reload:
                return
            raise BadRequestData("the NGSI-LD core @context cannot be deleted")
        if reload:
            self._reload(entry)
            return
        with self._lock:
            self._entries.pop(entry.local_id, None)
            if entry.url is not None and self._by_url.get(entry.url) == entry.local_id:
                del self._by_url[entry.url]
            self._invalidate_locked()
        if self._persistence is not None and entry.origin in _PERSISTED_ORIGINS:
            self._persistence.delete_context(entry.local_id)

    def _reload(self, entry: _Entry) -> None:
        if entry.kind != KIND_CACHED or entry.url is None:
            raise BadRequestData(f"@context {entry.local_id} is {entry.kind}: only Cached contexts can be reloaded")
        url = entry.url
        try:
            path_source = self._preload_index.get(url)
            if path_source is None and self._context_dir is not None:
                candidate = self._context_dir / _url_to_filename(url)
                path_source = candidate if candidate.is_file() else None
            if path_source is not None:
                body = self._parse_document(path_source.read_bytes(), url)
                origin = _ORIGIN_PRELOAD
            else:
                body, origin = self._fetch(url), _ORIGIN_NETWORK
        except NgsiLdError as exc:
            if isinstance(exc, LdContextNotAvailable):
                raise
            raise LdContextNotAvailable(f"@context {url} could not be reloaded: {exc.detail}") from exc
        except OSError as exc:
            raise LdContextNotAvailable(f"@context {url} could not be reloaded: {exc}") from exc
        with self._lock:
            entry.body = body
            entry.created_at = _now()
            entry.origin = origin
            self._entries[entry.local_id] = entry
            self._by_url[url] = entry.local_id
            self._invalidate_locked()
        if origin == _ORIGIN_NETWORK:
            self._save(entry, best_effort=True)
        elif self._persistence is not None:
            self._persistence.delete_context(entry.local_id)

    def _invalidate_locked(self) -> None:
        self._generation += 1
        self._lru.clear()

    def _save(self, entry: _Entry, *, best_effort: bool) -> None:
        if self._persistence is None:
            return
        try:
            self._persistence.save_context(entry.stored())
        except Exception:
            if not best_effort:
                raise
            log.warning("could not persist cached @context %s", entry.url, exc_info=True)

    def _find_locked(self, context_id: str, *, by_local_id: bool) -> _Entry | None:
        """Find a stored context by original URL, core URL or served URL, and by local id for the API.

        ``by_local_id`` is set for identifiers coming from the ``/jsonldContexts/{contextId}`` path,
        which may also be percent-encoded URLs.
        """
        candidates = (context_id, unquote(context_id)) if by_local_id and "%" in context_id else (context_id,)
        for ident in candidates:
            if by_local_id and ident in self._entries:
                return self._entries[ident]
            local_id = self._by_url.get(ident)
            if local_id is not None and local_id in self._entries:
                return self._entries[local_id]
            if is_core_context_url(ident):
                return self._entries[CORE_CONTEXT_ID]
            match = _SELF_PATH_RE.search(urlsplit(ident).path) if "/" in ident else None
            if match is not None:
                entry = self._entries.get(unquote(match.group(1)))
                if entry is not None and (entry.kind != KIND_CACHED or by_local_id):
                    return entry
        return None

    def _details(self, entry: _Entry, base_url: str) -> dict[str, Any]:
        """The metadata object of clause 5.13.3 / 5.13.4 for one stored context."""
        url = entry.url if entry.kind == KIND_CACHED and entry.url else self.served_url(entry.local_id, base_url)
        out: dict[str, Any] = {
            "URL": url,
            "localId": entry.local_id,
            "kind": entry.kind,
            "createdAt": entry.created_at,
            "numberOfHits": entry.hits,
        }
        if entry.last_usage is not None:
            out["lastUsage"] = entry.last_usage
        return out

    def list(self, kind: str | None, details: bool, base_url: str) -> builtins.list[Any]:
        """List stored contexts (5.13.3): their URLs, or their metadata objects when ``details``.

        ``kind`` filters on ``Hosted`` / ``Cached`` / ``ImplicitlyCreated``; anything else is
        BadRequestData. The core context is listed first, as a Cached context.
        """
        if kind is not None and kind not in CONTEXT_KINDS:
            raise BadRequestData(f"kind must be one of {', '.join(sorted(CONTEXT_KINDS))}, not {kind!r}")
        with self._lock:
            entries = sorted(
                self._entries.values(),
                key=lambda e: (e.origin != _ORIGIN_CORE, e.created_at, e.local_id),
            )
            selected = [e for e in entries if kind is None or e.kind == kind]
            if details:
                return [self._details(e, base_url) for e in selected]
            return [
                e.url if e.kind == KIND_CACHED and e.url else self.served_url(e.local_id, base_url) for e in selected
            ]


def _has_scheme(url: str) -> bool:
    scheme, sep, _ = url.partition(":")
    return bool(sep) and _SCHEME_RE.match(scheme) is not None


def _cached_id(url: str) -> str:
    """Local id of a Cached context: derived from its URL, hence stable across restarts and reloads."""
    return hashlib.sha256(url.encode()).hexdigest()[:32]
