"""ETSI NGSI-LD test suite, TP/NGSI-LD/CommonBehaviours (error types, media types, parameters, tenants).

Only the cases of the in-scope operations are ported (entities, batch operations, discovery): the
suite's cases on subscriptions, temporal entities and context source registrations are left out.
"""

from __future__ import annotations

import json

import httpx
import pytest
from _etsi import (
    BUILDING,
    INVALID_REQUEST,
    JSON,
    JSON_LD,
    LD_CONTEXT_NOT_AVAILABLE,
    SUITE_CONTEXT,
    URL,
    VEHICLE,
    Api,
    check_problem,
    check_status,
    link,
    load,
    random_id,
    raw,
)

XML = "application/xml"


def test_043_01_01_create_entity_unretrievable_context(api: Api) -> None:
    """Verify receiving 503 LdContextNotAvailable if a remote JSON-LD @context cannot be retrieved.

    The suite's unretrievable @context is an Internet URL; the port uses a closed local port, which
    fails at once and the same way (no test may reach the network).

    TP/NGSI-LD/CommonBehaviours/CommonResponses/VerifyLdContextNotAvailable/043_01.robot
    """
    response = api.create_entity("building-unretrievable-context.jsonld", random_id(BUILDING))
    check_problem(response, 503, LD_CONTEXT_NOT_AVAILABLE)


def test_045_01_01_get_entity_accept_any(api: Api) -> None:
    """Verify that on a GET request with ``Accept: */*``, application/json is assumed (/entities/{entityId}).

    TP/NGSI-LD/CommonBehaviours/CommonResponses/VerifyGETWithoutAccept/045_01.robot
    """
    entity_id = random_id(BUILDING)
    check_status(api.create_entity("building-simple-attributes.jsonld", entity_id), 201)
    response = api.retrieve_entity(entity_id, accept="*/*", context=SUITE_CONTEXT)
    check_status(response, 200)
    assert response.headers["Content-Type"] == JSON
    assert response.headers["Link"]


def test_048_01_01_partial_update_unsupported_media_type(api: Api) -> None:
    """Verify 415 if Content-Type is neither application/json nor application/ld+json (PATCH .../attrs/{attrId}).

    TP/NGSI-LD/CommonBehaviours/CommonResponses/VerifyUnsupportedMediaType/048_01.robot
    """
    response = api.partial_update(random_id(VEHICLE), "speed", "vehicle-brandname-fragment.jsonld", XML)
    check_status(response, 415)


def test_048_01_03_create_entity_unsupported_media_type(api: Api) -> None:
    """Verify 415 if Content-Type is neither application/json nor application/ld+json (POST /entities/).

    TP/NGSI-LD/CommonBehaviours/CommonResponses/VerifyUnsupportedMediaType/048_01.robot
    """
    response = api.create_entity("building-simple-attributes.jsonld", random_id(BUILDING), XML)
    check_status(response, 415)


def test_048_01_05_batch_create_unsupported_media_type(api: Api) -> None:
    """Verify 415 if Content-Type is neither application/json nor application/ld+json (batch create).

    TP/NGSI-LD/CommonBehaviours/CommonResponses/VerifyUnsupportedMediaType/048_01.robot
    """
    entities = [load("entities/building-simple-attributes.jsonld", random_id(BUILDING)) for _ in range(2)]
    check_status(api.batch("create", entities, XML), 415)


def test_049_01_01_get_entity_not_acceptable(api: Api) -> None:
    """Verify 406 if the Accept header implies neither application/json nor application/ld+json.

    TP/NGSI-LD/CommonBehaviours/CommonResponses/VerifyNotAcceptableMediaType/049_01.robot
    """
    check_status(api.retrieve_entity(random_id(BUILDING), accept=XML), 406)


def _with_invalid_parameter(
    api: Api, method: str, endpoint: str, filename: str | None = None, extra: str = ""
) -> httpx.Response:
    """``Call Api Endpoint With Invalid Parameter``: ``?invalidParams=invalidValue``, ld+json.

    For a POST, the keyword sends ``json=${file_content}``: the file's text as a JSON string.
    """
    query = "?invalidParams=invalidValue" + (f"&{extra}" if extra else "")
    content = json.dumps(raw(filename).decode()).encode() if filename else None
    return api.client.request(method, f"{URL}/{endpoint}{query}", content=content, headers={"Content-Type": JSON_LD})


@pytest.mark.parametrize(
    ("method", "endpoint", "filename", "extra"),
    [
        pytest.param("POST", "entities", "entities/building-minimal.json", "", id="059_01_01-CreateEntity"),
        pytest.param("GET", "entities", None, "type=Building", id="059_01_02-QueryEntities"),
        pytest.param("GET", "types", None, "", id="059_01_05-RetrieveEntityTypes"),
    ],
)
def test_059_01_invalid_parameter(api: Api, method: str, endpoint: str, filename: str | None, extra: str) -> None:
    """Check that sending an invalid parameter returns a 400 InvalidRequest (6.3.20).

    TP/NGSI-LD/CommonBehaviours/CommonResponses/VerifyInvalidParameters/059_01.robot
    """
    check_problem(_with_invalid_parameter(api, method, endpoint, filename, extra), 400, INVALID_REQUEST)


# --- tenants ------------------------------------------------------------------------------------


def _create_in_tenant(api: Api, entity_id: str, tenant: str) -> httpx.Response:
    entity = load("entities/vehicle-speed-attribute.json", entity_id)
    headers = {"Content-Type": JSON, "Link": link(SUITE_CONTEXT), "NGSILD-Tenant": tenant}
    return api.client.post(f"{URL}/entities/", content=json.dumps(entity), headers=headers)


def _retrieve_in_tenant(api: Api, entity_id: str, tenant: str | None) -> httpx.Response:
    headers = {"Link": link(SUITE_CONTEXT)}
    if tenant:
        headers["NGSILD-Tenant"] = tenant
    return api.client.get(f"{URL}/entities/{entity_id}", headers=headers)


def test_414_01_01_tenant_isolated_and_header_echoed(api: Api) -> None:
    """Tenant information is isolated (4.14) and the NGSILD-Tenant header is echoed (6.3.14).

    An "Antares extension" TP of the mirror the port was made from, not of the official suite.

    TP/NGSI-LD/CommonBehaviours/Tenancy/414_01.robot
    """
    entity_id = random_id(VEHICLE)
    response = _create_in_tenant(api, entity_id, "tp414a")
    check_status(response, 201)
    assert response.headers.get("NGSILD-Tenant") == "tp414a"
    response = _retrieve_in_tenant(api, entity_id, "tp414a")
    check_status(response, 200)
    assert response.headers.get("NGSILD-Tenant") == "tp414a"
    check_status(_retrieve_in_tenant(api, entity_id, None), 404)  # the default Tenant does not see it


def test_414_01_02_another_tenant_cannot_see_the_entity(api: Api) -> None:
    """An operation never has any effect on the information of other Tenants (4.14).

    TP/NGSI-LD/CommonBehaviours/Tenancy/414_01.robot
    """
    entity_id = random_id(VEHICLE)
    check_status(_create_in_tenant(api, entity_id, "tp414a"), 201)
    check_status(_create_in_tenant(api, random_id(VEHICLE), "tp414b"), 201)
    check_status(_retrieve_in_tenant(api, entity_id, "tp414b"), 404)
