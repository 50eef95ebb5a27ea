"""ETSI NGSI-LD test suite, TP/NGSI-LD/jsonldContext (5.13: the ``/jsonldContexts`` endpoints).

The keywords are those of ``resources/ApiUtils/jsonldContext.resource``. Like the suite (Test
Teardown), every test deletes the @contexts it added: the broker's @context registry lives as long
as the application, which the ``client`` fixture shares between tests.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from _etsi import BAD_REQUEST_DATA, DATA, INVALID_REQUEST, JSON, RESOURCE_NOT_FOUND, URL, check_full_problem, raw
from fastapi.testclient import TestClient

ENDPOINT = "/jsonldContexts"
ALLOWED_KINDS = {"Cached", "Hosted", "ImplicitlyCreated", "UserCreated"}
DETAIL_KEYS = {"URL", "localId", "kind", "createdAt", "lastUsage", "numberOfHits", "extraInfo", "body", "expiresAt"}
FIRST, SECOND, THIRD = (
    "@context-minimal-valid.json",
    "@context-minimal-second-valid.json",
    "@context-minimal-third-valid.json",
)


class Contexts:
    """The keywords of ``jsonldContext.resource``, and the @contexts added, deleted at the end."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.added: list[str] = []

    def add(self, filename: str) -> httpx.Response:
        """``Add a new @context``: the file as is, as application/json."""
        response = self.client.post(
            URL + ENDPOINT, content=raw("jsonldContext/" + filename), headers={"Content-Type": JSON}
        )
        if "location" in response.headers:
            self.added.append(response.headers["location"])
        return response

    def add_ok(self, filename: str) -> str:
        """``Create Initial @context``: add, check 201, ``Fetch Id From Response Location Header``."""
        response = self.add(filename)
        assert response.status_code == 201, response.text
        return response.headers["location"]

    @staticmethod
    def _local_id(context_id: str) -> str:
        context_id = re.sub(r"^https?://[^/]+/ngsi-ld/v1/jsonldContexts/", "", context_id)
        context_id = context_id.replace("/ngsi-ld/v1/jsonldContexts/", "")
        return urllib.parse.quote(context_id, safe="")

    def serve(self, context_id: str, details: str | None = None) -> httpx.Response:
        """``Serve a @context``."""
        params = {"details": details} if details else None
        return self.client.get(f"{URL}{ENDPOINT}/{self._local_id(context_id)}", params=params)

    def delete(self, context_id: str, reload: str | None = None) -> httpx.Response:
        """``Delete a @context``."""
        params = {"reload": reload} if reload else None
        return self.client.delete(f"{URL}{ENDPOINT}/{self._local_id(context_id)}", params=params)

    def list(self, details: str | None = None, kind: str | None = None) -> httpx.Response:
        """``List @contexts``."""
        params = {k: v for k, v in {"details": details, "kind": kind}.items() if v}
        return self.client.get(URL + ENDPOINT, params=params or None)

    def cleanup(self) -> None:
        for location in self.added:
            self.delete(location)


@pytest.fixture
def contexts(client: TestClient) -> Iterator[Contexts]:
    keywords = Contexts(client)
    yield keywords
    keywords.cleanup()


def _is_date(value: Any) -> bool:
    try:
        datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def check_details(item: dict[str, Any], kind: str) -> None:
    """``Check Context Response Body Containing Detailed Information`` and ``... Might Contain Optional Fields``."""
    for key in ("URL", "localId", "kind"):
        assert isinstance(item[key], str) and item[key], item
    assert item["kind"] in ALLOWED_KINDS and item["kind"] == kind, item
    assert item["createdAt"] and _is_date(item["createdAt"]), item
    if item.get("lastUsage") not in (None, ""):
        assert _is_date(item["lastUsage"]), item
    if item.get("numberOfHits") not in (None, ""):
        assert type(item["numberOfHits"]) is int, item


def check_identifiers(body: Any, uris: list[str], kind: str | None = None, details: bool = False) -> None:
    """``Check Context Response Body Containing a list of identifiers``."""
    assert isinstance(body, list), body
    for uri in uris:
        if details:
            found = [item for item in body if urllib.parse.unquote(item["URL"]).endswith(uri)]
            if found and kind:
                check_details(found[0], kind)
        else:
            found = [item for item in body if urllib.parse.unquote(item).endswith(uri)]
        assert found, f"{uri} not in {body!r}"


# --- 050: add ----------------------------------------------------------------------------------


def test_050_01_01_add_valid_hosted_context(contexts: Contexts) -> None:
    """Check that one can add a hosted @context (from key=value).

    TP/NGSI-LD/jsonldContext/Provision/AddContext/050_01.robot
    """
    response = contexts.add(FIRST)
    assert response.status_code == 201, response.text
    assert response.text == ""
    assert response.reason_phrase == "Created"
    assert "Location" in response.headers
    served = contexts.serve(response.headers["Location"], "true")
    assert served.json()["kind"] == "Hosted", served.text


@pytest.mark.parametrize(
    "filename",
    [
        pytest.param("@context-incorrect.json", id="050_02_01-CheckingIncorrectPayload"),
        pytest.param("@context-wrong-json.json", id="050_02_02-CheckingWrongJSON"),
    ],
)
def test_050_02_add_incorrect_context(contexts: Contexts, filename: str) -> None:
    """Check that one receives a 400 Bad Request creating a @context if the content is incorrect.

    TP/NGSI-LD/jsonldContext/Provision/AddContext/050_02.robot
    """
    response = contexts.add(filename)
    assert response.status_code == 400, response.text
    assert response.reason_phrase == "Bad Request"
    check_full_problem(response.json(), INVALID_REQUEST)


# --- 051: delete -------------------------------------------------------------------------------


def test_051_01_01_delete_hosted_context_without_reload(contexts: Contexts) -> None:
    """Check that one can delete a hosted @context (no reload parameter).

    TP/NGSI-LD/jsonldContext/Provision/DeleteContext/051_01.robot
    """
    uri = contexts.add_ok(FIRST)
    response = contexts.delete(uri)
    assert response.status_code == 204, response.text
    assert response.text == ""
    assert response.reason_phrase == "No Content"


@pytest.mark.parametrize(
    ("context_id", "reload", "status", "reason", "error"),
    [
        pytest.param(
            "wrong_id_context", "true", 400, "Bad Request", BAD_REQUEST_DATA, id="051_04_01-WrongIdReloadTrue"
        ),
        pytest.param(
            "wrong_id_context", "false", 404, "Not Found", RESOURCE_NOT_FOUND, id="051_04_02-WrongIdReloadFalse"
        ),
        pytest.param("wrong_id_context", None, 404, "Not Found", RESOURCE_NOT_FOUND, id="051_04_03-WrongIdNoReload"),
        pytest.param("wrong_id_context", "xxx", 400, "Bad Request", BAD_REQUEST_DATA, id="051_04_04-WrongReloadValue"),
        pytest.param(None, "true", 400, "Bad Request", BAD_REQUEST_DATA, id="051_04_05-HostedWithReloadTrue"),
    ],
)
def test_051_04_delete_context_with_wrong_data(
    contexts: Contexts, context_id: str | None, reload: str, status: int, reason: str, error: str
) -> None:
    """Check that one gets an error when trying to delete a @context with wrong data.

    ``context_id`` None is the hosted @context the test setup added (``${uri}``).

    TP/NGSI-LD/jsonldContext/Provision/DeleteContext/051_04.robot
    """
    uri = contexts.add_ok(FIRST)
    response = contexts.delete(context_id or uri, reload)
    assert response.status_code == status, response.text
    assert response.reason_phrase == reason
    check_full_problem(response.json(), error)


# --- 052: list ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("details", "kind"),
    [
        pytest.param(None, None, id="052_01_01-NeitherDetailsOrKind"),
        pytest.param(None, "Hosted", id="052_01_02-KindHosted"),
        pytest.param(None, "Cached", id="052_01_03-KindCached"),
        pytest.param(None, "ImplicitlyCreated", id="052_01_04-KindImplicitlyCreated"),
        pytest.param("false", None, id="052_01_05-DetailsFalse"),
        pytest.param("false", "Hosted", id="052_01_06-DetailsFalseKindHosted"),
        pytest.param("false", "Cached", id="052_01_07-DetailsFalseKindCached"),
        pytest.param("false", "ImplicitlyCreated", id="052_01_08-DetailsFalseKindImplicitlyCreated"),
    ],
)
def test_052_01_list_contexts_none_added(contexts: Contexts, details: str | None, kind: str | None) -> None:
    """Check that one can list the @contexts available in the broker with no @context added.

    TP/NGSI-LD/jsonldContext/Consumption/ListContexts/052_01.robot
    """
    response = contexts.list(details, kind)
    assert response.status_code == 200, response.text
    assert response.reason_phrase == "OK"
    check_identifiers(response.json(), [])


@pytest.mark.parametrize(
    ("details", "kind"),
    [
        pytest.param(None, None, id="052_02_01-NeitherDetailsOrKind"),
        pytest.param(None, "Hosted", id="052_02_02-KindHosted"),
        pytest.param("false", None, id="052_02_03-DetailsFalse"),
        pytest.param("false", "Hosted", id="052_02_04-DetailsFalseKindHosted"),
    ],
)
def test_052_02_list_contexts_one_added(contexts: Contexts, details: str | None, kind: str | None) -> None:
    """Check that one can list the @contexts available in the broker with one @context added.

    TP/NGSI-LD/jsonldContext/Consumption/ListContexts/052_02.robot
    """
    uris = [contexts.add_ok(FIRST)]
    response = contexts.list(details, kind)
    assert response.status_code == 200, response.text
    assert response.reason_phrase == "OK"
    check_identifiers(response.json(), uris, kind)


@pytest.mark.parametrize(
    ("details", "kind"),
    [
        pytest.param(None, None, id="052_03_01-NeitherDetailsOrKind"),
        pytest.param(None, "Hosted", id="052_03_02-KindHosted"),
        pytest.param("false", None, id="052_03_03-DetailsFalse"),
        pytest.param("false", "Hosted", id="052_03_04-DetailsFalseKindHosted"),
    ],
)
def test_052_03_list_contexts_several_added(contexts: Contexts, details: str | None, kind: str | None) -> None:
    """Check that one can list the @contexts available in the broker with several @contexts added.

    TP/NGSI-LD/jsonldContext/Consumption/ListContexts/052_03.robot
    """
    uris = [contexts.add_ok(FIRST), contexts.add_ok(SECOND), contexts.add_ok(THIRD)]
    response = contexts.list(details, kind)
    assert response.status_code == 200, response.text
    assert response.reason_phrase == "OK"
    check_identifiers(response.json(), uris, kind)


@pytest.mark.parametrize(
    ("details", "kind"),
    [
        pytest.param(None, "other", id="052_04_01-KindOther"),
        pytest.param("other", None, id="052_04_02-DetailsOther"),
        pytest.param("other", "other", id="052_04_03-DetailsOtherKindOther"),
        pytest.param("true", "other", id="052_04_04-DetailsTrueKindOther"),
        pytest.param("other", "Hosted", id="052_04_05-DetailsOtherKindHosted"),
    ],
)
def test_052_04_list_contexts_with_wrong_details_or_kind(
    contexts: Contexts, details: str | None, kind: str | None
) -> None:
    """Check that one gets an error when listing @contexts with a wrong details or kind.

    TP/NGSI-LD/jsonldContext/Consumption/ListContexts/052_04.robot
    """
    response = contexts.list(details, kind)
    assert response.status_code == 400, response.text
    assert response.reason_phrase == "Bad Request"
    check_full_problem(response.json(), BAD_REQUEST_DATA)


@pytest.mark.parametrize(
    ("details", "kind"),
    [
        pytest.param("true", None, id="052_05_01-DetailsTrueNoKind"),
        pytest.param("true", "Hosted", id="052_05_02-DetailsTrueKindHosted"),
    ],
)
def test_052_05_list_context_details_several_added(contexts: Contexts, details: str, kind: str | None) -> None:
    """Check that one can list the @contexts with details, several @contexts added.

    TP/NGSI-LD/jsonldContext/Consumption/ListContexts/052_05.robot
    """
    uris = [contexts.add_ok(FIRST), contexts.add_ok(SECOND), contexts.add_ok(THIRD)]
    response = contexts.list(details, kind)
    assert response.status_code == 200, response.text
    assert response.reason_phrase == "OK"
    check_identifiers(response.json(), uris, kind, details=True)


# --- 053: serve --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "details",
    [pytest.param(None, id="053_01_01-WithoutDetails"), pytest.param("false", id="053_01_02-DetailsFalse")],
)
def test_053_01_serve_context(contexts: Contexts, details: str | None) -> None:
    """Check that one can serve a previously added @context.

    TP/NGSI-LD/jsonldContext/Consumption/ServeContext/053_01.robot
    """
    uri = contexts.add_ok(FIRST)
    response = contexts.serve(uri, details)
    assert response.status_code == 200, response.text
    assert response.reason_phrase == "OK"
    assert response.headers["Content-Type"] == JSON
    assert response.json() == json.loads((DATA / "jsonldContext" / FIRST).read_text())


def test_053_03_01_serve_context_with_wrong_id(contexts: Contexts) -> None:
    """Check that one gets an error when serving a @context that does not exist (details=true).

    TP/NGSI-LD/jsonldContext/Consumption/ServeContext/053_03.robot
    """
    contexts.add_ok(FIRST)
    response = contexts.serve("wrong_id_context", "true")
    assert response.status_code == 404, response.text
    assert response.reason_phrase == "Not Found"
    check_full_problem(response.json(), RESOURCE_NOT_FOUND)


def test_053_02_01_serve_context_with_details(contexts: Contexts) -> None:
    """Check that one can serve a previously added @context with details=true.

    TP/NGSI-LD/jsonldContext/Consumption/ServeContext/053_02.robot
    """
    uri = contexts.add_ok(FIRST)
    response = contexts.serve(uri, "true")
    assert response.status_code == 200, response.text
    assert response.reason_phrase == "OK"
    assert response.headers["Content-Type"] == JSON
    body = response.json()
    check_details(body, "Hosted")
    assert not set(body) - DETAIL_KEYS, body
