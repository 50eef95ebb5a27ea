"""Tests of JSON-LD @context resolution (territoire.context.jsonld) and the /jsonldContexts API."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from territoire.context.api_contexts import build_contexts_router
from territoire.context.errors import (
    BadRequestData,
    InvalidLdContext,
    InvalidRequest,
    LdContextNotAvailable,
    NgsiLdError,
    OperationNotSupported,
    ResourceNotFound,
)
from territoire.context.jsonld import (
    CORE_CONTEXT_ID,
    CORE_CONTEXT_URL,
    DEFAULT_CONTEXT_BASE,
    KIND_CACHED,
    KIND_HOSTED,
    KIND_IMPLICITLY_CREATED,
    ContextResolver,
    StoredContext,
    TermMap,
    is_core_context_url,
)

NGSI = "https://uri.etsi.org/ngsi-ld/"
SDM_WASTE_RAW = "https://raw.githubusercontent.com/smart-data-models/dataModel.WasteManagement/master/context.jsonld"
SDM_WASTE_IO = "https://smart-data-models.github.io/dataModel.WasteManagement/context.jsonld"
FILLING_LEVEL = "https://smartdatamodels.org/dataModel.WasteManagement/fillingLevel"
JSON_HEADERS = {"Content-Type": "application/json"}
TEXT_HEADERS = {"Content-Type": "text/plain"}


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local test servers must be reached directly, whatever the environment says."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def resolver() -> ContextResolver:
    return ContextResolver(None, fetch_timeout=2.0)


class ContextServer(ThreadingHTTPServer):
    """A local HTTP server serving canned documents and counting requests per path."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.hits: Counter[str] = Counter()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def serve_json(self, path: str, document: Any, status: int = 200) -> str:
        self.routes[path] = (status, orjson.dumps(document), {"Content-Type": "application/ld+json"})
        return self.base + path

    def serve_raw(self, path: str, body: bytes, status: int = 200, **headers: str) -> str:
        self.routes[path] = (status, body, {"Content-Type": "text/plain", **headers})
        return self.base + path


class _Handler(BaseHTTPRequestHandler):
    server: ContextServer

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        status, body, headers = self.server.routes.get(self.path, (404, b"not found", {}))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ContextServer]:
    srv = ContextServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()


class MemoryPersistence:
    """In-memory ContextPersistence."""

    def __init__(self) -> None:
        self.saved: dict[str, StoredContext] = {}

    def load_contexts(self) -> list[StoredContext]:
        return list(self.saved.values())

    def save_context(self, ctx: StoredContext) -> None:
        self.saved[ctx.local_id] = ctx

    def delete_context(self, local_id: str) -> None:
        self.saved.pop(local_id, None)


# --------------------------------------------------------------------------------------------------
# Core context, default context, Smart Data Models
# --------------------------------------------------------------------------------------------------


def test_core_terms_expand_and_compact(resolver: ContextResolver) -> None:
    core = resolver.core
    expected = {
        "location": NGSI + "location",
        "observedAt": NGSI + "observedAt",
        "GeoProperty": NGSI + "GeoProperty",
        "Property": NGSI + "Property",
        "Relationship": NGSI + "Relationship",
        "unitCode": NGSI + "unitCode",
        "datasetId": NGSI + "datasetId",
        "value": NGSI + "hasValue",
        "object": NGSI + "hasObject",
        "Point": "https://purl.org/geojson/vocab#Point",
    }
    for term, iri in expected.items():
        assert core.expand(term) == iri
        assert core.compact(iri) == term
    assert core.term_type("observedAt") == "DateTime"
    assert core.term_type("vocab") == "@vocab"
    assert core.expand("id") == "@id" and core.expand("type") == "@type"
    assert resolver.resolve(None) is core


def test_every_core_url_is_bundled(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the core context must never be downloaded")

    monkeypatch.setattr(httpx, "Client", no_network)
    resolver = ContextResolver(None, fetch_timeout=1.0)
    urls = [
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
        *(f"https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.{minor}.jsonld" for minor in range(3, 10)),
        CORE_CONTEXT_URL,
    ]
    for url in urls:
        assert is_core_context_url(url)
        term_map = resolver.resolve(url)
        assert term_map.expand("location") == NGSI + "location"
        assert term_map.context_urls == (url,)
    assert not is_core_context_url("https://uri.etsi.org/ngsi-ld/v1/other.jsonld")
    # Core listed with the others in an array is fine too, and never fetched.
    assert resolver.resolve([SDM_WASTE_RAW, urls[0]]).expand("fillingLevel") == FILLING_LEVEL


def test_default_context_fallback(resolver: ContextResolver) -> None:
    core = resolver.core
    assert core.expand("temperature") == DEFAULT_CONTEXT_BASE + "temperature"
    assert core.compact(DEFAULT_CONTEXT_BASE + "temperature") == "temperature"
    assert core.vocab is None
    # Names that are absolute IRIs or compact IRIs are not put under the default context.
    assert core.expand("urn:ngsi-ld:attr:x") == "urn:ngsi-ld:attr:x"
    assert core.expand("https://example.org/a") == "https://example.org/a"
    assert core.expand("ngsi-ld:custom") == NGSI + "custom"
    assert core.compact(NGSI + "custom") == "ngsi-ld:custom"
    assert core.compact("https://example.org/a") == "https://example.org/a"


@pytest.mark.parametrize("url", [SDM_WASTE_RAW, SDM_WASTE_IO])
def test_smart_data_models_context_is_bundled(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = ContextResolver(None, fetch_timeout=1.0)
    monkeypatch.setattr(httpx, "Client", None)  # any download attempt would fail loudly
    term_map = resolver.resolve(url)
    assert term_map.expand("fillingLevel") == FILLING_LEVEL
    assert term_map.compact(FILLING_LEVEL) == "fillingLevel"
    assert term_map.expand("WasteContainer").endswith("/dataModel.WasteManagement/WasteContainer")
    # The SDM context defines "status" and "location" too: the core context wins.
    assert term_map.expand("status") == NGSI + "status"
    assert term_map.expand("location") == NGSI + "location"
    assert term_map.expand("unknownThing") == DEFAULT_CONTEXT_BASE + "unknownThing"
    assert resolver.list(KIND_CACHED, False, "http://broker") == [CORE_CONTEXT_URL, url]


# --------------------------------------------------------------------------------------------------
# Term map semantics
# --------------------------------------------------------------------------------------------------


def test_user_vocab(resolver: ContextResolver) -> None:
    term_map = resolver.resolve({"@vocab": "https://example.org/vocab#", "known": "https://x.org/known"})
    assert term_map.vocab == "https://example.org/vocab#"
    assert term_map.expand("speed") == "https://example.org/vocab#speed"
    assert term_map.compact("https://example.org/vocab#speed") == "speed"
    assert term_map.expand("known") == "https://x.org/known"
    assert term_map.expand("location") == NGSI + "location"
    assert term_map.expand_value_term("red") == "https://example.org/vocab#red"
    assert term_map.compact_value_term("https://example.org/vocab#red") == "red"
    # A default-context IRI no longer compacts to a bare name (it would expand under the user @vocab).
    iri = DEFAULT_CONTEXT_BASE + "speed"
    assert term_map.compact(iri) != "speed"
    assert term_map.expand(term_map.compact(iri)) == iri


def test_vocab_may_be_a_compact_iri_and_null_removes_it(resolver: ContextResolver) -> None:
    term_map = resolver.resolve([{"ex": "https://example.org/ns/"}, {"@vocab": "ex:"}])
    assert term_map.expand("speed") == "https://example.org/ns/speed"
    reset = resolver.resolve([{"@vocab": "https://example.org/v/"}, {"@vocab": None}])
    assert reset.expand("speed") == DEFAULT_CONTEXT_BASE + "speed"


def test_compact_iris(resolver: ContextResolver) -> None:
    term_map = resolver.resolve(
        {"ex": "https://example.org/ns/", "e": "https://example.org/", "temp": "ex:temperature"}
    )
    assert term_map.expand("ex:pressure") == "https://example.org/ns/pressure"
    assert term_map.expand("temp") == "https://example.org/ns/temperature"
    assert term_map.compact("https://example.org/ns/temperature") == "temp"
    # The shortest compact IRI wins: "ex:pressure" rather than "e:ns/pressure".
    assert term_map.compact("https://example.org/ns/pressure") == "ex:pressure"
    assert term_map.compact("https://example.org/other") == "e:other"
    assert term_map.expand("unknown:thing") == "unknown:thing"  # unknown prefix: an absolute IRI
    assert term_map.expand("_:b0") == "_:b0"
    # "ex://x" is not a compact IRI (a "//" suffix makes it an absolute IRI).
    assert term_map.expand("ex://x") == "ex://x"


def test_several_terms_for_one_iri_compact_deterministically(resolver: ContextResolver) -> None:
    ctx = {"zz": "https://example.org/a", "bb": "https://example.org/a", "abc": "https://example.org/a"}
    assert resolver.resolve(ctx).compact("https://example.org/a") == "bb"


def test_expanded_term_definitions(resolver: ContextResolver) -> None:
    term_map = resolver.resolve(
        {
            "@vocab": "https://v.org/",
            "ex": {"@id": "https://example.org/ns/", "@prefix": True},
            "refBin": {"@id": "ex:refBin", "@type": "@id"},
            "category": {"@id": "ex:category", "@type": "@vocab"},
            "noId": {"@type": "@id"},
            "ex:direct": {"@type": "@id"},
            "parentOf": {"@reverse": "ex:childOf"},
            "dropped": None,
        }
    )
    assert term_map.expand("refBin") == "https://example.org/ns/refBin"
    assert term_map.term_type("refBin") == "@id"
    assert term_map.term_type("category") == "@vocab"
    assert term_map.term_type("nothing") is None
    assert term_map.expand("noId") == "https://v.org/noId"
    assert term_map.expand("ex:direct") == "https://example.org/ns/direct"
    assert term_map.expand("parentOf") == "https://example.org/ns/childOf"
    assert term_map.expand("dropped") == "https://v.org/dropped"
    assert term_map.has_term("refBin") and not term_map.has_term("dropped")
    assert term_map.compact("https://example.org/ns/zzz") == "ex:zzz"  # @prefix: true


def test_later_definitions_override_earlier_ones_but_not_core(resolver: ContextResolver) -> None:
    term_map = resolver.resolve(
        [
            {"speed": "https://a.org/speed", "location": "https://schema.org/location"},
            {"speed": "https://b.org/speed", "observedAt": "https://b.org/observedAt"},
        ]
    )
    assert term_map.expand("speed") == "https://b.org/speed"
    assert term_map.expand("location") == NGSI + "location"
    assert term_map.expand("observedAt") == NGSI + "observedAt"
    assert term_map.compact("https://a.org/speed") == "https://a.org/speed"


def test_null_resets_user_definitions(resolver: ContextResolver) -> None:
    term_map = resolver.resolve([{"speed": "https://a.org/speed"}, None, {"other": "https://a.org/o"}])
    assert term_map.expand("speed") == DEFAULT_CONTEXT_BASE + "speed"
    assert term_map.expand("other") == "https://a.org/o"
    assert term_map.expand("location") == NGSI + "location"


def test_definitions_may_use_prefixes_defined_later_or_by_core(resolver: ContextResolver) -> None:
    term_map = resolver.resolve({"temp": "ex:temperature", "ex": "https://example.org/ns/", "mine": "ngsi-ld:mine"})
    assert term_map.expand("temp") == "https://example.org/ns/temperature"
    assert term_map.expand("mine") == NGSI + "mine"


def test_ignored_keywords(resolver: ContextResolver) -> None:
    ctx = {
        "@version": 1.1,
        "@protected": True,
        "@propagate": False,
        "@language": "fr",
        "@base": "https://example.org/",
        "a": {"@id": "https://a.org/a", "@container": "@list", "@context": {"b": "https://b.org/b"}},
    }
    assert resolver.resolve(ctx).expand("a") == "https://a.org/a"


@pytest.mark.parametrize(
    "context",
    [
        42,
        True,
        [1],
        [{"a": "https://a.org/a"}, 3.5],
        {"a": 1},
        {"a": ["https://a.org/a"]},
        {"a": {"@id": 3}},
        {"a": {"@type": 1}},
        {"a": {"@prefix": "yes"}},
        {"@vocab": 3},
        {"@import": 3},
        {"": "https://a.org/empty"},
        {"a": "b:x", "b": "a:y"},  # cyclic IRI mapping
        {"a": "a:x"},
    ],
)
def test_invalid_context_structures(resolver: ContextResolver, context: Any) -> None:
    with pytest.raises(InvalidLdContext):
        resolver.resolve(context)


def test_expand_compact_round_trip(resolver: ContextResolver) -> None:
    contexts: list[Any] = [
        None,
        SDM_WASTE_RAW,
        {"@vocab": "https://v.org/"},
        {"ex": "https://example.org/ns/", "t": "https://example.org/ns/t", "x": "https://x.org/x"},
        [{"speed": "https://a.org/speed"}, {"fast": "https://a.org/speed"}],
    ]
    names = ["location", "speed", "fast", "t", "ex:t", "ex:u", "fillingLevel", "status", "a", "b:c", "urn:x:y"]
    iris = [NGSI + "location", DEFAULT_CONTEXT_BASE + "t", DEFAULT_CONTEXT_BASE + "x", "https://v.org/ex"]
    for context in contexts:
        term_map = resolver.resolve(context)
        for name in names:
            iri = term_map.expand(name)
            assert term_map.expand(term_map.compact(iri)) == iri, (context, name)
        for iri in iris:
            assert term_map.expand(term_map.compact(iri)) == iri, (context, iri)


def test_response_context(resolver: ContextResolver) -> None:
    assert resolver.core.response_context() == CORE_CONTEXT_URL
    assert resolver.resolve(SDM_WASTE_RAW).response_context() == [SDM_WASTE_RAW, CORE_CONTEXT_URL]
    with_core = [SDM_WASTE_RAW, "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"]
    assert resolver.resolve(with_core).response_context() == with_core
    inline = {"a": "https://a.org/a"}
    assert resolver.resolve(inline).response_context() == [inline, CORE_CONTEXT_URL]
    assert resolver.resolve(inline).context == inline


def test_resolve_is_memoized(resolver: ContextResolver) -> None:
    first = resolver.resolve({"a": "https://a.org/a", "b": "https://b.org/b"})
    again = resolver.resolve({"b": "https://b.org/b", "a": "https://a.org/a"})
    assert first is again
    assert isinstance(first, TermMap) and hash(first) == hash(again)
    small = ContextResolver(None, fetch_timeout=1.0, cache_size=2)
    maps = [small.resolve({"a": f"https://a.org/{i}"}) for i in range(3)]
    assert small.resolve({"a": "https://a.org/2"}) is maps[2]
    assert small.resolve({"a": "https://a.org/0"}) is not maps[0]  # evicted, rebuilt


def test_concurrent_resolution(server: ContextServer) -> None:
    resolver = ContextResolver(None, fetch_timeout=2.0)
    urls = [server.serve_json(f"/c{i}.jsonld", {"@context": {f"t{i}": f"https://t.org/{i}"}}) for i in range(5)]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                k = (n + i) % 5
                term_map = resolver.resolve([urls[k], {"x": f"https://x.org/{i % 7}"}])
                assert term_map.expand(f"t{k}") == f"https://t.org/{k}"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {e["URL"] for e in resolver.list(KIND_CACHED, True, "")} >= set(urls)


# --------------------------------------------------------------------------------------------------
# Preloaded directory
# --------------------------------------------------------------------------------------------------


def test_preload_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "city.jsonld").write_bytes(orjson.dumps({"@context": {"bin": "https://city.fr/bin"}}))
    (tmp_path / "index.json").write_bytes(orjson.dumps({"https://city.fr/context.jsonld": "city.jsonld"}))
    named = "https://other.org/ctx/v1.jsonld"
    (tmp_path / "https___other.org_ctx_v1.jsonld").write_bytes(
        orjson.dumps({"@context": ["https://city.fr/context.jsonld", {"lamp": "https://other.org/lamp"}]})
    )
    # The directory overrides the bundled Smart Data Models copy.
    (tmp_path / SDM_WASTE_IO.replace(":", "_").replace("/", "_")).write_bytes(
        orjson.dumps({"@context": {"fillingLevel": "https://local.fr/fillingLevel"}})
    )
    monkeypatch.setattr(httpx, "Client", None)
    resolver = ContextResolver(tmp_path, fetch_timeout=1.0)
    assert resolver.resolve("https://city.fr/context.jsonld").expand("bin") == "https://city.fr/bin"
    term_map = resolver.resolve(named)
    assert term_map.expand("lamp") == "https://other.org/lamp"
    assert term_map.expand("bin") == "https://city.fr/bin"
    assert resolver.resolve(SDM_WASTE_IO).expand("fillingLevel") == "https://local.fr/fillingLevel"
    assert resolver.resolve(SDM_WASTE_RAW).expand("fillingLevel") == FILLING_LEVEL


@pytest.mark.parametrize(
    "index",
    [b"{not json", b"[]", b'{"https://a.org/c": "missing.jsonld"}', b'{"https://a.org/c": "../x"}'],
)
def test_preload_directory_with_a_broken_index(tmp_path: Path, index: bytes) -> None:
    (tmp_path / "index.json").write_bytes(index)
    with pytest.raises(ValueError):
        ContextResolver(tmp_path, fetch_timeout=1.0)


# --------------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------------


def test_download_is_cached(server: ContextServer) -> None:
    resolver = ContextResolver(None, fetch_timeout=2.0)
    url = server.serve_json("/ctx.jsonld", {"@context": {"speed": "https://a.org/speed"}, "other": 1})
    assert resolver.resolve(url).expand("speed") == "https://a.org/speed"
    assert resolver.resolve(url).expand("speed") == "https://a.org/speed"
    # A different context referencing the same URL reuses the cached document.
    assert resolver.resolve([url, {"x": "https://x.org/x"}]).expand("speed") == "https://a.org/speed"
    assert server.hits["/ctx.jsonld"] == 1
    (details,) = [d for d in resolver.list(None, True, "") if d["URL"] == url]
    assert details["kind"] == KIND_CACHED
    assert details["numberOfHits"] == 3
    assert details["createdAt"].endswith("Z") and details["lastUsage"].endswith("Z")
    assert set(details) == {"URL", "localId", "kind", "createdAt", "lastUsage", "numberOfHits"}


def test_nested_and_relative_remote_contexts(server: ContextServer) -> None:
    resolver = ContextResolver(None, fetch_timeout=2.0)
    server.serve_json("/models/base.jsonld", {"@context": {"ex": "https://example.org/", "a": "ex:a"}})
    server.serve_json("/models/b.jsonld", {"@context": "base.jsonld"})
    top = server.serve_json("/top.jsonld", {"@context": ["models/b.jsonld", {"b": "ex:b", "a": "ex:a2"}]})
    term_map = resolver.resolve(top)
    assert term_map.expand("a") == "https://example.org/a2"
    assert term_map.expand("b") == "https://example.org/b"


def test_import(server: ContextServer, resolver: ContextResolver) -> None:
    url = server.serve_json("/imp.jsonld", {"@context": {"a": "https://a.org/a", "b": "https://a.org/b"}})
    term_map = resolver.resolve({"@import": url, "b": "https://mine.org/b"})
    assert term_map.expand("a") == "https://a.org/a"
    assert term_map.expand("b") == "https://mine.org/b"


def test_recursive_inclusion_is_rejected(server: ContextServer, resolver: ContextResolver) -> None:
    server.serve_json("/a.jsonld", {"@context": ["/b.jsonld"]})
    server.serve_json("/b.jsonld", {"@context": ["/a.jsonld"]})
    with pytest.raises(InvalidLdContext, match="recursive"):
        resolver.resolve(server.base + "/a.jsonld")


def test_nesting_depth_is_limited(server: ContextServer, resolver: ContextResolver) -> None:
    for i in range(12):
        server.serve_json(f"/n{i}.jsonld", {"@context": [f"/n{i + 1}.jsonld"]})
    server.serve_json("/n12.jsonld", {"@context": {"a": "https://a.org/a"}})
    with pytest.raises(InvalidLdContext, match="nested"):
        resolver.resolve(server.base + "/n0.jsonld")
    assert resolver.resolve(server.base + "/n5.jsonld").expand("a") == "https://a.org/a"


def test_redirects_are_followed(server: ContextServer, resolver: ContextResolver) -> None:
    server.serve_json("/real.jsonld", {"@context": {"a": "https://a.org/a"}})
    url = server.serve_raw("/moved.jsonld", b"", status=301, Location="/real.jsonld")
    assert resolver.resolve(url).expand("a") == "https://a.org/a"


@pytest.mark.parametrize(
    ("path", "body", "status", "reason"),
    [
        ("/missing.jsonld", None, 404, "HTTP 404"),
        ("/error.jsonld", b"{}", 500, "HTTP 500"),
        ("/html.jsonld", b"<html></html>", 200, "not JSON"),
        ("/plain.jsonld", b'{"a": 1}', 200, "no top-level"),
        ("/array.jsonld", b"[1, 2]", 200, "no top-level"),
        ("/big.jsonld", b'{"@context": {"a": "' + b"x" * 3000 + b'"}}', 200, "larger than"),
    ],
)
def test_download_failures(server: ContextServer, path: str, body: bytes | None, status: int, reason: str) -> None:
    resolver = ContextResolver(None, fetch_timeout=2.0, max_document_bytes=2048)
    if body is not None:
        server.serve_raw(path, body, status=status)
    url = server.base + path
    with pytest.raises(LdContextNotAvailable) as info:
        resolver.resolve(url)
    assert url in info.value.detail and reason in info.value.detail
    assert url not in resolver.list(None, False, "")  # failures are not cached


def test_invalid_remote_context_is_rejected_and_not_cached(server: ContextServer) -> None:
    resolver = ContextResolver(None, fetch_timeout=2.0)
    url = server.serve_json("/bad.jsonld", {"@context": {"a": 12}})
    with pytest.raises(InvalidLdContext, match=r"bad\.jsonld"):
        resolver.resolve(url)
    server.serve_json("/bad.jsonld", {"@context": {"a": "https://a.org/a"}})
    assert resolver.resolve(url).expand("a") == "https://a.org/a"


def test_server_that_never_answers_times_out() -> None:
    resolver = ContextResolver(None, fetch_timeout=0.5)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections complete in the backlog but are never served
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/ctx.jsonld"
        started = time.monotonic()
        with pytest.raises(LdContextNotAvailable) as info:
            resolver.resolve(url)
        elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert url in info.value.detail and "0.5 s" in info.value.detail


def test_unreachable_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    resolver = ContextResolver(None, fetch_timeout=2.0)
    url = f"http://127.0.0.1:{port}/ctx.jsonld"
    started = time.monotonic()
    with pytest.raises(LdContextNotAvailable, match="connection failed") as info:
        resolver.resolve(url)
    assert time.monotonic() - started < 2.5
    assert url in info.value.detail


def test_urls_that_cannot_be_fetched(resolver: ContextResolver) -> None:
    with pytest.raises(LdContextNotAvailable, match="only http"):
        resolver.resolve("ftp://example.org/ctx.jsonld")
    with pytest.raises(InvalidLdContext, match="not an absolute URL"):
        resolver.resolve("ctx.jsonld")


# --------------------------------------------------------------------------------------------------
# Stored contexts (clause 5.13)
# --------------------------------------------------------------------------------------------------


def test_hosted_context_is_resolved_by_its_served_url(resolver: ContextResolver) -> None:
    local_id = resolver.add({"@context": [SDM_WASTE_RAW, {"lamp": "https://city.fr/lamp"}]})
    for url in (
        ContextResolver.served_url(local_id, "http://broker.example:8000"),
        ContextResolver.served_url(local_id, "https://other.host/prefix"),
        f"/ngsi-ld/v1/jsonldContexts/{local_id}",
    ):
        term_map = resolver.resolve(url)
        assert term_map.expand("lamp") == "https://city.fr/lamp"
        assert term_map.expand("fillingLevel") == FILLING_LEVEL
    # A hosted context may reference another one.
    outer = resolver.add({"@context": [f"http://broker/ngsi-ld/v1/jsonldContexts/{local_id}", {"b": "https://b/b"}]})
    assert resolver.resolve(ContextResolver.served_url(outer, "")).expand("lamp") == "https://city.fr/lamp"
    assert resolver.get(local_id, details=False) == {"@context": [SDM_WASTE_RAW, {"lamp": "https://city.fr/lamp"}]}


def test_add_validates_the_body(resolver: ContextResolver) -> None:
    with pytest.raises(InvalidRequest):
        resolver.add({"A1": "urn:ngsi-ld:attributes:A1"})
    for bad in (12, True, [1], {"a": {"@id": 5}}, None, {"a": "a:b"}):
        with pytest.raises(BadRequestData):
            resolver.add({"@context": bad})
    assert resolver.list(KIND_HOSTED, False, "") == []


def test_add_implicit_deduplicates(resolver: ContextResolver) -> None:
    first = resolver.add_implicit([SDM_WASTE_RAW, {"a": "https://a.org/a"}])
    assert resolver.add_implicit([SDM_WASTE_RAW, {"a": "https://a.org/a"}]) == first
    assert resolver.add_implicit([SDM_WASTE_RAW]) != first
    (details,) = [d for d in resolver.list(KIND_IMPLICITLY_CREATED, True, "http://h") if d["localId"] == first]
    assert details["URL"] == f"http://h/ngsi-ld/v1/jsonldContexts/{first}"
    assert resolver.resolve(details["URL"]).expand("a") == "https://a.org/a"


def test_list_and_get(resolver: ContextResolver) -> None:
    hosted = resolver.add({"@context": {"A1": "urn:ngsi-ld:attributes:A1"}})
    resolver.resolve(SDM_WASTE_RAW)
    base = "http://broker:8000"
    hosted_url = f"{base}/ngsi-ld/v1/jsonldContexts/{hosted}"
    assert resolver.list(None, False, base) == [CORE_CONTEXT_URL, hosted_url, SDM_WASTE_RAW]
    assert resolver.list(KIND_HOSTED, False, base) == [hosted_url]
    assert resolver.list(KIND_IMPLICITLY_CREATED, True, base) == []
    with pytest.raises(BadRequestData, match="kind"):
        resolver.list("hosted", False, base)
    details = resolver.get(hosted, details=True, base_url=base)
    assert details == {
        "URL": hosted_url,
        "localId": hosted,
        "kind": KIND_HOSTED,
        "createdAt": details["createdAt"],
        "numberOfHits": 0,
    }
    assert resolver.get(hosted, details=False) == {"@context": {"A1": "urn:ngsi-ld:attributes:A1"}}
    # Cached contexts: found by URL (even percent-encoded); only their details are served.
    cached = resolver.get(quote(SDM_WASTE_RAW, safe=""), details=True)
    assert cached["kind"] == KIND_CACHED and cached["URL"] == SDM_WASTE_RAW
    assert resolver.get(cached["localId"], details=True)["URL"] == SDM_WASTE_RAW
    with pytest.raises(OperationNotSupported):
        resolver.get(SDM_WASTE_RAW, details=False)
    core = resolver.get("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld", details=True)
    assert core["localId"] == CORE_CONTEXT_ID and core["kind"] == KIND_CACHED
    with pytest.raises(ResourceNotFound):
        resolver.get("nope", details=True)


def test_hits_count_each_use(resolver: ContextResolver) -> None:
    hosted = resolver.add({"@context": {"a": "https://a.org/a"}})
    assert resolver.get(hosted, True)["numberOfHits"] == 0
    assert "lastUsage" not in resolver.get(hosted, True)
    url = ContextResolver.served_url(hosted, "http://h")
    resolver.resolve(url)
    resolver.resolve(url)  # memoized, still a use
    resolver.resolve([url, {"b": "https://a.org/b"}])
    details = resolver.get(hosted, True)
    assert details["numberOfHits"] == 3 and "lastUsage" in details


def test_delete_rules(resolver: ContextResolver) -> None:
    hosted = resolver.add({"@context": {"a": "https://a.org/a"}})
    with pytest.raises(BadRequestData, match="core"):
        resolver.delete(CORE_CONTEXT_URL)
    with pytest.raises(BadRequestData, match="core"):
        resolver.delete("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld")
    resolver.delete(CORE_CONTEXT_ID, reload=True)  # bundled: nothing to download, accepted
    with pytest.raises(ResourceNotFound):
        resolver.delete("wrong_id_context")
    with pytest.raises(BadRequestData):
        resolver.delete("wrong_id_context", reload=True)
    with pytest.raises(BadRequestData, match="only Cached"):
        resolver.delete(hosted, reload=True)
    term_map = resolver.resolve(ContextResolver.served_url(hosted, ""))
    assert term_map.expand("a") == "https://a.org/a"
    resolver.delete(hosted)
    with pytest.raises(ResourceNotFound):
        resolver.get(hosted, True)
    # The memoized term map went with it: the served URL is now fetched (and fails: not absolute).
    with pytest.raises(InvalidLdContext):
        resolver.resolve(ContextResolver.served_url(hosted, ""))


def test_delete_and_reload_cached(server: ContextServer) -> None:
    resolver = ContextResolver(None, fetch_timeout=1.0)
    url = server.serve_json("/ctx.jsonld", {"@context": {"a": "https://v1.org/a"}})
    assert resolver.resolve(url).expand("a") == "https://v1.org/a"
    server.serve_json("/ctx.jsonld", {"@context": {"a": "https://v2.org/a"}})
    assert resolver.resolve(url).expand("a") == "https://v1.org/a"  # cached copy
    resolver.delete(quote(url, safe=""), reload=True)
    assert server.hits["/ctx.jsonld"] == 2
    assert resolver.resolve(url).expand("a") == "https://v2.org/a"
    # A failed reload keeps the existing copy.
    server.serve_raw("/ctx.jsonld", b"oops", status=503)
    with pytest.raises(LdContextNotAvailable):
        resolver.delete(url, reload=True)
    assert resolver.get(url, True)["kind"] == KIND_CACHED
    assert resolver.resolve(url).expand("a") == "https://v2.org/a"
    # Plain delete: the next use downloads it again.
    server.serve_json("/ctx.jsonld", {"@context": {"a": "https://v3.org/a"}})
    resolver.delete(url)
    assert url not in resolver.list(None, False, "")
    assert resolver.resolve(url).expand("a") == "https://v3.org/a"


def test_deleted_bundled_context_comes_back_from_the_bundle(resolver: ContextResolver) -> None:
    resolver.resolve(SDM_WASTE_RAW)
    resolver.delete(SDM_WASTE_RAW)
    assert SDM_WASTE_RAW not in resolver.list(None, False, "")
    assert resolver.resolve(SDM_WASTE_RAW).expand("fillingLevel") == FILLING_LEVEL


def test_persistence(server: ContextServer) -> None:
    store = MemoryPersistence()
    resolver = ContextResolver(None, fetch_timeout=2.0, persistence=store)
    hosted = resolver.add({"@context": {"a": "https://a.org/a"}})
    implicit = resolver.add_implicit([{"b": "https://b.org/b"}])
    remote = server.serve_json("/ctx.jsonld", {"@context": {"c": "https://c.org/c"}})
    resolver.resolve(remote)
    resolver.resolve(SDM_WASTE_RAW)  # bundled: not persisted
    kinds = {stored.kind for stored in store.saved.values()}
    assert kinds == {KIND_HOSTED, KIND_IMPLICITLY_CREATED, KIND_CACHED}
    assert store.saved[hosted].url == f"/ngsi-ld/v1/jsonldContexts/{hosted}"
    assert store.saved[hosted].body == {"@context": {"a": "https://a.org/a"}}
    assert store.saved[implicit].kind == KIND_IMPLICITLY_CREATED
    assert len(store.saved) == 3

    restarted = ContextResolver(None, fetch_timeout=2.0, persistence=store)
    assert restarted.resolve(ContextResolver.served_url(hosted, "http://h")).expand("a") == "https://a.org/a"
    assert restarted.resolve(ContextResolver.served_url(implicit, "")).expand("b") == "https://b.org/b"
    assert restarted.resolve(remote).expand("c") == "https://c.org/c"
    assert server.hits["/ctx.jsonld"] == 1  # the persisted copy was used
    restarted.delete(hosted)
    restarted.delete(remote)
    assert set(store.saved) == {implicit}


# --------------------------------------------------------------------------------------------------
# /jsonldContexts API
# --------------------------------------------------------------------------------------------------


def _client(resolver: ContextResolver) -> TestClient:
    app = FastAPI()

    async def problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, NgsiLdError)
        return JSONResponse(exc.to_problem(), status_code=exc.status, media_type="application/problem+json")

    app.add_exception_handler(NgsiLdError, problem)
    get_resolver: Callable[[], ContextResolver] = lambda: resolver  # noqa: E731
    app.include_router(build_contexts_router(get_resolver), prefix="/ngsi-ld/v1")
    return TestClient(app, base_url="http://broker.test")


def test_api_add_serve_list_delete(resolver: ContextResolver) -> None:
    document = {"@context": {"A1": "urn:ngsi-ld:attributes:A1", "A2": "urn:ngsi-ld:attributes:A2"}}
    with _client(resolver) as client:
        response = client.post("/ngsi-ld/v1/jsonldContexts", json=document)
        assert response.status_code == 201
        assert response.content == b""
        location = response.headers["location"]
        assert location.startswith("/ngsi-ld/v1/jsonldContexts/")
        local_id = location.rsplit("/", 1)[1]

        response = client.get(location)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == document
        response = client.get(location, headers={"Accept": "application/ld+json"})
        assert response.headers["content-type"] == "application/ld+json"
        assert response.json() == document

        response = client.get(location, params={"details": "true"})
        assert response.status_code == 200
        details = response.json()
        assert details["URL"] == f"http://broker.test{location}"
        assert details["localId"] == local_id and details["kind"] == KIND_HOSTED
        assert set(details) <= {"URL", "localId", "kind", "createdAt", "lastUsage", "numberOfHits", "extraInfo"}

        # The served URL works as a @context (resolved from memory, no HTTP call to ourselves).
        assert resolver.resolve(details["URL"]).expand("A1") == "urn:ngsi-ld:attributes:A1"

        response = client.get("/ngsi-ld/v1/jsonldContexts")
        assert response.status_code == 200 and details["URL"] in response.json()
        response = client.get("/ngsi-ld/v1/jsonldContexts", params={"kind": "Hosted", "details": "true"})
        assert [d["localId"] for d in response.json()] == [local_id]
        response = client.get("/ngsi-ld/v1/jsonldContexts", params={"kind": "Cached", "details": "false"})
        assert response.json() == [CORE_CONTEXT_URL]

        response = client.delete(location)
        assert response.status_code == 204 and response.content == b""
        assert client.get(location).status_code == 404


def test_api_cached_contexts_by_url(resolver: ContextResolver) -> None:
    resolver.resolve(SDM_WASTE_RAW)
    path = "/ngsi-ld/v1/jsonldContexts/" + quote(SDM_WASTE_RAW, safe="")
    with _client(resolver) as client:
        response = client.get(path, params={"details": "true"})
        assert response.status_code == 200 and response.json()["kind"] == KIND_CACHED
        response = client.get(path)
        assert response.status_code == 422
        assert response.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/OperationNotSupported"
        assert client.delete(path).status_code == 204
        assert client.get(path, params={"details": "true"}).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "error"),
    [
        ("post", "/jsonldContexts", {"content": b"{not json", "headers": JSON_HEADERS}, 400, "InvalidRequest"),
        ("post", "/jsonldContexts", {"json": {"A1": "urn:a"}}, 400, "InvalidRequest"),
        ("post", "/jsonldContexts", {"json": [1]}, 400, "InvalidRequest"),
        ("post", "/jsonldContexts", {"content": b"", "headers": JSON_HEADERS}, 400, "InvalidRequest"),
        ("post", "/jsonldContexts", {"json": {"@context": 42}}, 400, "BadRequestData"),
        ("post", "/jsonldContexts", {"json": {"@context": [True]}}, 400, "BadRequestData"),
        ("post", "/jsonldContexts", {"content": b"{}", "headers": TEXT_HEADERS}, 415, "UnsupportedMediaType"),
        ("get", "/jsonldContexts?kind=Other", {}, 400, "BadRequestData"),
        ("get", "/jsonldContexts?details=maybe", {}, 400, "BadRequestData"),
        ("get", "/jsonldContexts/wrong_id_context?details=true", {}, 404, "ResourceNotFound"),
        ("get", "/jsonldContexts/wrong_id_context", {}, 404, "ResourceNotFound"),
        ("get", f"/jsonldContexts/{quote(CORE_CONTEXT_URL, safe='')}", {}, 422, "OperationNotSupported"),
        ("delete", "/jsonldContexts/wrong_id_context", {}, 404, "ResourceNotFound"),
        ("delete", "/jsonldContexts/wrong_id_context?reload=true", {}, 400, "BadRequestData"),
        ("delete", "/jsonldContexts/wrong_id_context?reload=xxx", {}, 400, "BadRequestData"),
        ("delete", f"/jsonldContexts/{quote(CORE_CONTEXT_URL, safe='')}", {}, 400, "BadRequestData"),
        ("delete", f"/jsonldContexts/{quote(CORE_CONTEXT_URL, safe='')}?reload=false", {}, 400, "BadRequestData"),
    ],
)  # fmt: skip
def test_api_errors(
    resolver: ContextResolver, method: str, path: str, kwargs: dict[str, Any], status: int, error: str
) -> None:
    with _client(resolver) as client:
        response = client.request(method.upper(), "/ngsi-ld/v1" + path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == f"https://uri.etsi.org/ngsi-ld/errors/{error}"
    assert body["detail"] and body["title"] != body["detail"]
    assert "location" not in response.headers


def test_api_delete_rules(resolver: ContextResolver) -> None:
    local_id = resolver.add({"@context": {"a": "https://a.org/a"}})
    with _client(resolver) as client:
        response = client.delete(f"/ngsi-ld/v1/jsonldContexts/{local_id}", params={"reload": "true"})
        assert response.status_code == 400
        core = quote(CORE_CONTEXT_URL, safe="")
        assert client.delete(f"/ngsi-ld/v1/jsonldContexts/{core}", params={"reload": "true"}).status_code == 204
        assert client.delete(f"/ngsi-ld/v1/jsonldContexts/{local_id}", params={"reload": "false"}).status_code == 204


def test_api_reload_failure_is_reported(server: ContextServer) -> None:
    resolver = ContextResolver(None, fetch_timeout=1.0)
    url = server.serve_json("/ctx.jsonld", {"@context": {"a": "https://a.org/a"}})
    resolver.resolve(url)
    server.routes.clear()
    with _client(resolver) as client:
        path = "/ngsi-ld/v1/jsonldContexts/" + quote(url, safe="")
        response = client.delete(path, params={"reload": "true"})
        assert response.status_code == 503
        assert response.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/LdContextNotAvailable"
        assert url in response.json()["detail"]
        assert client.get(path, params={"details": "true"}).status_code == 200
