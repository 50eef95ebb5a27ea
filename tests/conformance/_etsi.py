"""Helpers mirroring the keywords of the ETSI NGSI-LD test suite (Robot Framework).

The port keeps the suite's inputs and checks: ``Api`` sends the same requests as the keywords of
``resources/ApiUtils/*.resource`` (same paths, including their trailing slashes, same headers and
bodies), and the assertion helpers reproduce ``resources/AssertionUtils.resource`` and
``libraries/assertionUtils.py`` (a DeepDiff comparison that ignores list order, only checks that
createdAt/modifiedAt are dates, compares observedAt as instants and accepts an @context given as a
string or a one-element list).
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

DATA = Path(__file__).parent / "data"
URL = "/ngsi-ld/v1"
SUITE_CONTEXT = (
    "https://forge.etsi.org/rep/cim/ngsi-ld-test-suite/-/raw/develop/resources/jsonld-contexts/"
    "ngsi-ld-test-suite-compound.jsonld"
)
SUITE = "https://ngsi-ld-test-suite/context#"
DEFAULT_CONTEXT = "https://uri.etsi.org/ngsi-ld/default-context/"

JSON = "application/json"
JSON_LD = "application/ld+json"
GEO_JSON = "application/geo+json"
MERGE_PATCH = "application/merge-patch+json"

ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
BAD_REQUEST_DATA = ERRORS + "BadRequestData"
INVALID_REQUEST = ERRORS + "InvalidRequest"
ALREADY_EXISTS = ERRORS + "AlreadyExists"
RESOURCE_NOT_FOUND = ERRORS + "ResourceNotFound"
LD_CONTEXT_NOT_AVAILABLE = ERRORS + "LdContextNotAvailable"

BUILDING = "urn:ngsi-ld:Building:"
VEHICLE = "urn:ngsi-ld:Vehicle:"
PARKING = "urn:ngsi-ld:OffStreetParking:"

# Regular expressions of paths DeepDiff leaves out (AssertionUtils.resource).
INSTANCE_ID = r"root\[.*\]\['instanceId'\]"
ID = r"root\['id'\]"
_CORE_CONTEXT = re.compile(r"https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v\d\.\d.jsonld")


# --- test samples ------------------------------------------------------------------------------


def raw(path: str) -> bytes:
    """A file of the suite's ``data/`` folder, byte for byte (``Get File``)."""
    return (DATA / path).read_bytes()


def load(path: str, entity_id: str | None = None) -> Any:
    """``Load Test Sample``: a JSON file of ``data/``, with ``$.id`` replaced if an id is given."""
    sample = json.loads(raw(path))
    if entity_id is not None:
        sample["id"] = entity_id
    return sample


def random_id(prefix: str) -> str:
    """``Generate Random Id``: the prefix followed by 16 random digits."""
    return prefix + "".join(random.choice("0123456789") for _ in range(16))


def link(context: str) -> str:
    """``Build Context Link``."""
    return f'<{context}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'


def replace_ids(value: Any, entity_id: str) -> Any:
    """``Update Value To JSON  $..id``: every ``id`` member, at any depth, set to ``entity_id``."""
    if isinstance(value, dict):
        return {k: (entity_id if k == "id" else replace_ids(v, entity_id)) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_ids(v, entity_id) for v in value]
    return value


def upsert_element(entity: dict[str, Any], fragment: Mapping[str, Any]) -> dict[str, Any]:
    """``Upsert Element In Entity``: the members of ``fragment`` set at the root of ``entity``."""
    merged = copy.deepcopy(entity)
    merged.update(copy.deepcopy(dict(fragment)))
    return merged


# --- requests ----------------------------------------------------------------------------------


def _headers(content_type: str | None = None, accept: str | None = None, context: str | None = None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if content_type:
        headers["Content-Type"] = content_type
    if accept:
        headers["Accept"] = accept
    if context:
        headers["Link"] = link(context)
    return headers


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in (None, "")}


class Api:
    """The keywords of ``ContextInformationProvision/Consumption.resource`` over a test client."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        data: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        content = data if data is not None else (json.dumps(body).encode() if body is not None else None)
        return self.client.request(method, URL + path, content=content, params=params, headers=headers)

    # provision

    def create_entity(
        self,
        filename: str,
        entity_id: str,
        content_type: str = JSON_LD,
        context: str | None = None,
        accept: str | None = None,
    ) -> httpx.Response:
        """``Create Entity Selecting Content Type`` (``Create Entity`` when only id and file are given)."""
        entity = load("entities/" + filename, entity_id)
        return self.send("POST", "/entities/", body=entity, headers=_headers(content_type, accept, context))

    def create_entity_payload(self, entity: Any, content_type: str = JSON_LD) -> httpx.Response:
        """``Create Entity From JSON-LD Content``."""
        return self.send("POST", "/entities/", body=entity, headers=_headers(content_type))

    def create_entity_from_file(self, filename: str) -> httpx.Response:
        """``Create Entity From File``: the file content as is, as application/ld+json."""
        return self.send("POST", "/entities/", data=raw("entities/" + filename), headers=_headers(JSON_LD))

    def delete_entity(self, entity_id: str) -> httpx.Response:
        return self.send("DELETE", f"/entities/{entity_id}")

    def append_attributes(
        self, entity_id: str, fragment: str, content_type: str, options: str | None = None
    ) -> httpx.Response:
        """``Append Entity Attributes`` (file sent as is) or ``... With Parameters`` (JSON re-serialised)."""
        path = f"/entities/{entity_id}/attrs/"
        if options is None:
            data = raw("entities/fragmentEntities/" + fragment)
            return self.send("POST", path, data=data, headers=_headers(content_type))
        body = load("entities/fragmentEntities/" + fragment)
        return self.send("POST", path, body=body, params={"options": options}, headers=_headers(content_type))

    def update_attributes(self, entity_id: str, fragment: str, content_type: str) -> httpx.Response:
        """``Update Entity Attributes``: PATCH the fragment file as is."""
        data = raw("entities/fragmentEntities/" + fragment)
        return self.send("PATCH", f"/entities/{entity_id}/attrs/", data=data, headers=_headers(content_type))

    def partial_update(
        self,
        entity_id: str,
        attribute: str,
        fragment: str,
        content_type: str,
        accept: str | None = None,
        context: str | None = None,
    ) -> httpx.Response:
        """``Partial Update Entity Attributes``."""
        body = load("entities/fragmentEntities/" + fragment)
        headers = _headers(content_type, accept, context)
        return self.send("PATCH", f"/entities/{entity_id}/attrs/{attribute}", body=body, headers=headers)

    def delete_attribute(
        self, entity_id: str, attribute: str, dataset_id: str, delete_all: str, context: str | None = None
    ) -> httpx.Response:
        """``Delete Entity Attributes``."""
        params = _params(datasetId=dataset_id, deleteAll=delete_all)
        return self.send(
            "DELETE", f"/entities/{entity_id}/attrs/{attribute}", params=params, headers=_headers(JSON, None, context)
        )

    def replace_entity(
        self, entity_id: str, entity: Any, content_type: str, context: str | None = None
    ) -> httpx.Response:
        """``Replace Entity Selecting Content Type``."""
        return self.send("PUT", f"/entities/{entity_id}", body=entity, headers=_headers(content_type, None, context))

    def merge_entity(
        self, entity_id: str, filename: str, content_type: str, context: str | None = None
    ) -> httpx.Response:
        """``Merge Entity``."""
        entity = load("entities/" + filename, entity_id)
        return self.send("PATCH", f"/entities/{entity_id}", body=entity, headers=_headers(content_type, None, context))

    def batch(
        self,
        operation: str,
        entities: Any,
        content_type: str = JSON_LD,
        context: str | None = None,
        options: str | None = None,
    ) -> httpx.Response:
        """``Batch Create/Upsert/Update/Merge/Delete Entities``."""
        params = {"options": options} if options else None
        headers = _headers(content_type, None, context)
        return self.send("POST", f"/entityOperations/{operation}", body=entities, params=params, headers=headers)

    def batch_from_file(self, operation: str, filename: str) -> httpx.Response:
        """``Batch Request Entities From File``."""
        data = raw("entities/" + filename)
        return self.send("POST", f"/entityOperations/{operation}", data=data, headers=_headers(JSON_LD))

    # consumption

    def retrieve_entity(
        self,
        entity_id: str,
        accept: str | None = None,
        context: str | None = None,
        **params: Any,
    ) -> httpx.Response:
        """``Retrieve Entity`` (attrs, geometryProperty, options, format, lang, pick, omit, ...)."""
        return self.send(
            "GET", f"/entities/{entity_id}", params=_params(**params), headers=_headers(None, accept, context)
        )

    def query_entities(self, accept: str | None = None, context: str | None = None, **params: Any) -> httpx.Response:
        """``Query Entities``: GET /entities/ with the given URL parameters."""
        return self.send("GET", "/entities/", params=_params(**params), headers=_headers(None, accept, context))

    def query_entities_post(
        self,
        entities: list[dict[str, Any]] | None = None,
        content_type: str = JSON,
        accept: str = JSON,
        context: str | None = None,
        attrs: list[str] | None = None,
        options: str | None = None,
    ) -> httpx.Response:
        """``Query Entities Via POST``."""
        body: dict[str, Any] = {"type": "Query"}
        if entities:
            body["entities"] = entities
        if attrs:
            body["attrs"] = attrs
        return self.send(
            "POST",
            "/entityOperations/query",
            body=body,
            params=_params(options=options),
            headers=_headers(content_type, accept, context),
        )

    def retrieve_entity_types(self, context: str | None = None, details: str = "false") -> httpx.Response:
        return self.send("GET", "/types/", params={"details": details}, headers=_headers(None, None, context))

    def retrieve_entity_type(self, type_name: str, context: str | None = None) -> httpx.Response:
        return self.send("GET", f"/types/{type_name}", headers=_headers(None, None, context))

    def retrieve_attributes(self, context: str | None = None, details: str = "false") -> httpx.Response:
        return self.send("GET", "/attributes", params={"details": details}, headers=_headers(None, None, context))

    def retrieve_attribute(self, name: str, context: str | None = None) -> httpx.Response:
        return self.send("GET", f"/attributes/{name}", headers=_headers(None, None, context))


# --- assertions --------------------------------------------------------------------------------


def check_status(response: httpx.Response, expected: int) -> None:
    assert response.status_code == expected, f"{response.status_code} != {expected}: {response.text}"


def check_empty_body(response: httpx.Response) -> None:
    assert response.text == "", response.text


def check_problem(response: httpx.Response, status: int, problem_type: str) -> None:
    """Status, then ``ProblemDetails Element Containing Type Element`` and ``... Title Element``."""
    check_status(response, status)
    body = response.json()
    assert body["type"] == problem_type, body
    assert body["title"], body


def check_full_problem(body: Mapping[str, Any], problem_type: str) -> None:
    """``Check Response Body Containing ProblemDetails Element``."""
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert body["title"] != body["detail"], body
    assert body["type"] == problem_type, body


def check_location(response: httpx.Response, entity_id: str) -> None:
    """``Check Response Headers Containing URI set to``."""
    if "location" in response.headers:
        assert entity_id in response.headers["location"]


def check_batch_result(body: Mapping[str, Any], success: Iterable[str], errors: Iterable[str]) -> None:
    """``Check Response Body Containing Batch Operation Result``."""
    assert sorted(body["success"]) == sorted(success), body
    expected_errors = list(errors)
    assert len(body["errors"]) == len(expected_errors), body
    for error in body["errors"]:
        assert error["entityId"] in expected_errors, body
        assert error["error"], body


def check_update_result(body: Mapping[str, Any], updated: Iterable[str], not_updated: Iterable[str]) -> None:
    """``Check Response Body Containing Update Result``."""
    assert sorted(body["updated"]) == sorted(updated), body
    expected = list(not_updated)
    assert len(body["notUpdated"]) == len(expected), body
    for item in body["notUpdated"]:
        assert item["attributeName"] in expected, body
        assert item["reason"], body


def check_entities_count(entity_type: str, expected: int, body: Any) -> None:
    """``Check Response Body Containing Number Of Entities``."""
    if isinstance(body, list):
        assert len(body) == expected, body
        assert all(item["type"] == entity_type for item in body), body
    else:
        assert expected == 1 and body["type"] == entity_type, body


def check_ids(expected: Iterable[str], body: Any, ignore_order: bool = True) -> None:
    """``Check Response Body Containing Entities URIS set to``."""
    got = [item["id"] for item in body]
    if ignore_order:
        assert sorted(got) == sorted(expected), got
    else:
        assert got == list(expected), got


def _parse_date(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _diff(expected: Any, actual: Any, path: str, ignore: list[str], any_core: bool) -> list[str]:
    if any(re.search(pattern, path) for pattern in ignore):
        return []
    if path.endswith("['@context']"):
        if any_core:
            act = _as_list(actual)
            if len(act) == 1 and isinstance(act[0], str) and _CORE_CONTEXT.match(act[0]):
                return []
        elif _as_list(expected) == _as_list(actual):
            return []
    if path.endswith(("['createdAt']", "['modifiedAt']", "['deletedAt']")):
        return [] if _parse_date(actual) is not None else [f"{path}: {actual!r} is not a date"]
    if path.endswith("['observedAt']"):
        when = _parse_date(actual)
        if when is not None and when == _parse_date(expected):
            return []
    if isinstance(expected, dict) and isinstance(actual, dict):
        problems: list[str] = []
        for key in expected.keys() | actual.keys():
            sub = f"{path}[{key!r}]"
            if key not in actual:
                if not any(re.search(p, sub) for p in ignore):
                    problems.append(f"{sub} missing")
            elif key not in expected:
                if not any(re.search(p, sub) for p in ignore):
                    problems.append(f"{sub} unexpected: {actual[key]!r}")
            else:
                problems += _diff(expected[key], actual[key], sub, ignore, any_core)
        return problems
    if isinstance(expected, list) and isinstance(actual, list):
        unused = list(range(len(actual)))
        problems = []
        for index, item in enumerate(expected):
            match = next((j for j in unused if not _diff(item, actual[j], f"{path}[{index}]", ignore, any_core)), None)
            if match is None:
                problems.append(f"{path}[{index}] not found: {item!r}")
            else:
                unused.remove(match)
        problems += [f"{path}[{j}] unexpected: {actual[j]!r}" for j in unused]
        return problems
    if type(expected) is not type(actual) or expected != actual:
        return [f"{path}: expected {expected!r}, got {actual!r}"]
    return []


def check_resource(
    expected: Any,
    actual: Any,
    ignored: Iterable[str] = (),
    *,
    ignore_core_context_version: bool = False,
    group_by_id: bool = False,
) -> None:
    """``Compare Dictionaries Ignoring Keys`` (``Check Resource Set To`` and its variants)."""
    if group_by_id:
        expected = {item["id"]: item for item in expected}
        actual = {item["id"]: item for item in actual}
    problems = _diff(expected, actual, "root", [INSTANCE_ID, *ignored], ignore_core_context_version)
    assert not problems, "\n".join(problems) + f"\nexpected: {expected!r}\nactual:   {actual!r}"


def check_entity(expectation: str, entity_id: str, body: Any, *, ignore_core_context_version: bool = False) -> None:
    """``Check Response Body Containing Entity element`` (expectation file from entities/expectations)."""
    expected = replace_ids(load("entities/expectations/" + expectation), entity_id)
    check_resource(expected, body, ignore_core_context_version=ignore_core_context_version)


def check_entities(
    expectation: str, entity_ids: Iterable[str], body: Any, *, ignore_core_context_version: bool = False
) -> None:
    """``Check Response Body Containing List Containing Entity Elements``."""
    for entity_id in entity_ids:
        found = [item for item in body if item.get("id") == entity_id]
        assert found, f"{entity_id} not in {body!r}"
        check_entity(expectation, entity_id, found[0], ignore_core_context_version=ignore_core_context_version)


def check_entities_with_types(
    expectation: str, entity_ids: list[str], body: Any, *, ignore_core_context_version: bool = False
) -> None:
    """``Check Response Body Containing List Containing Entity Elements With Different Types``."""
    expected = load("entities/expectations/" + expectation)
    for index, entity_id in enumerate(entity_ids):
        expected[index] = replace_ids(expected[index], entity_id)
    check_resource(expected, body, ignore_core_context_version=ignore_core_context_version, group_by_id=True)
