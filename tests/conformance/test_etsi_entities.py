"""ETSI NGSI-LD test suite, TP/NGSI-LD/ContextInformation/Provision/Entities (create, delete, replace, merge)."""

from __future__ import annotations

import pytest
from _etsi import (
    ALREADY_EXISTS,
    BAD_REQUEST_DATA,
    BUILDING,
    INVALID_REQUEST,
    JSON,
    JSON_LD,
    RESOURCE_NOT_FOUND,
    SUITE,
    SUITE_CONTEXT,
    Api,
    check_empty_body,
    check_entity,
    check_location,
    check_problem,
    check_resource,
    check_status,
    load,
    random_id,
)

ENTITIES = "TP/NGSI-LD/ContextInformation/Provision/Entities"


# --- CreateEntity ------------------------------------------------------------------------------


def _create_and_check(api: Api, filename: str, content_type: str, accept_with_context: bool = True) -> None:
    """The ``Create Entity Scenarios`` keyword shared by 001_01, 001_10, 001_11, 001_12-15."""
    entity_id = random_id(BUILDING)
    response = api.create_entity(filename, entity_id, content_type)
    check_status(response, 201)
    check_empty_body(response)
    check_location(response, entity_id)
    created = load("entities/" + filename, entity_id)
    if content_type == JSON_LD and accept_with_context:
        retrieved = api.retrieve_entity(entity_id, accept=JSON_LD, context=SUITE_CONTEXT)
    else:
        retrieved = api.retrieve_entity(entity_id, accept=content_type)
    check_resource(created, retrieved.json())


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        pytest.param("building-minimal.json", JSON, id="001_01_01-MinimalEntity"),
        pytest.param("building-simple-attributes.jsonld", JSON_LD, id="001_01_02-EntityWithSimpleProperties"),
        pytest.param(
            "building-relationship-of-property.jsonld", JSON_LD, id="001_01_03-EntityWithRelationshipsProperties"
        ),
        pytest.param("building-location-attribute.jsonld", JSON_LD, id="001_01_04-EntityWithLocationAttribute"),
        pytest.param(
            "building-non-core-geoproperty-attribute.jsonld", JSON_LD, id="001_01_05-EntityWithNonCoreGeoProperty"
        ),
    ],
)
def test_001_01_create_entity(api: Api, filename: str, content_type: str) -> None:
    """Check that one can create an entity.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_01.robot
    """
    _create_and_check(api, filename, content_type)


@pytest.mark.parametrize(
    ("filename", "error_type"),
    [
        pytest.param("invalid-json.jsonld", INVALID_REQUEST, id="001_02_01-InvalidJson"),
        pytest.param("empty.jsonld", INVALID_REQUEST, id="001_02_02-EmptyJson"),
        pytest.param("building-minimal.json", BAD_REQUEST_DATA, id="001_02_03-EntityWithNoContext"),
        pytest.param("invalid-type.jsonld", BAD_REQUEST_DATA, id="001_02_04-EntityWithInvalidType"),
    ],
)
def test_001_02_create_entity_invalid_request(api: Api, filename: str, error_type: str) -> None:
    """Check that one cannot create an entity with an invalid request.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_02.robot
    """
    check_problem(api.create_entity_from_file(filename), 400, error_type)


def test_001_03_01_create_entity_existing_id(api: Api) -> None:
    """Check that one cannot create an entity with an existing id.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_03.robot
    """
    entity_id = random_id(BUILDING)
    check_status(api.create_entity("building-minimal.jsonld", entity_id, JSON_LD), 201)
    check_problem(api.create_entity("building-minimal.jsonld", entity_id, JSON_LD), 409, ALREADY_EXISTS)


def test_001_04_01_create_with_link_header_retrieve_with_context(api: Api) -> None:
    """@context from the Link header with application/json; retrieved with the same context.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_04.robot
    """
    entity_id = random_id(BUILDING)
    api.create_entity("building-simple-attributes.json", entity_id, JSON, context=SUITE_CONTEXT)
    body = api.retrieve_entity(entity_id, context=SUITE_CONTEXT).json()
    assert body["almostFull"]


def test_001_04_02_create_with_link_header_retrieve_without_context(api: Api) -> None:
    """@context from the Link header with application/json; retrieved without context: expanded name.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_04.robot
    """
    entity_id = random_id(BUILDING)
    api.create_entity("building-simple-attributes.json", entity_id, JSON, context=SUITE_CONTEXT)
    body = api.retrieve_entity(entity_id).json()
    assert body[SUITE + "almostFull"]


def test_001_05_01_create_with_default_context_retrieve_without_context(api: Api) -> None:
    """Default @context when application/json comes without Link; retrieved without context.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_05.robot
    """
    entity_id = random_id(BUILDING)
    api.create_entity("building-simple-attributes.json", entity_id, JSON)
    assert api.retrieve_entity(entity_id).json()["almostFull"]


def test_001_05_02_create_with_default_context_retrieve_with_context(api: Api) -> None:
    """Default @context at creation; retrieved with the suite context, the term compacts to a CURIE.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_05.robot
    """
    entity_id = random_id(BUILDING)
    api.create_entity("building-simple-attributes.json", entity_id, JSON)
    body = api.retrieve_entity(entity_id, accept=JSON, context=SUITE_CONTEXT).json()
    assert body["ngsi-ld:default-context/almostFull"]


def test_001_06_01_create_json_with_context_in_body(api: Api) -> None:
    """application/json body carrying an @context is BadRequestData.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_06.robot
    """
    response = api.create_entity("building-simple-attributes.jsonld", random_id(BUILDING), JSON)
    check_problem(response, 400, BAD_REQUEST_DATA)


def test_001_07_01_create_ld_json_retrieve_with_context(api: Api) -> None:
    """@context taken from the application/ld+json body; retrieved with the suite context.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_07.robot
    """
    entity_id = random_id(BUILDING)
    api.create_entity("building-simple-attributes.jsonld", entity_id, JSON_LD)
    assert api.retrieve_entity(entity_id, context=SUITE_CONTEXT).json()["almostFull"]


def test_001_07_02_create_ld_json_retrieve_without_context(api: Api) -> None:
    """@context taken from the application/ld+json body; retrieved without context: expanded name.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_07.robot
    """
    entity_id = random_id(BUILDING)
    api.create_entity("building-simple-attributes.jsonld", entity_id, JSON_LD)
    assert api.retrieve_entity(entity_id).json()[SUITE + "almostFull"]


def test_001_08_01_create_ld_json_without_context(api: Api) -> None:
    """application/ld+json body without @context is BadRequestData.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_08.robot
    """
    response = api.create_entity("building-simple-attributes.json", random_id(BUILDING), JSON_LD)
    check_problem(response, 400, BAD_REQUEST_DATA)


def test_001_09_01_create_ld_json_with_link_header(api: Api) -> None:
    """application/ld+json together with a JSON-LD Link header is BadRequestData.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_09.robot
    """
    response = api.create_entity("building-simple-attributes.jsonld", random_id(BUILDING), JSON_LD, SUITE_CONTEXT)
    check_problem(response, 400, BAD_REQUEST_DATA)


def test_001_10_01_create_entity_with_language_property(api: Api) -> None:
    """Check that one can create an entity with a LanguageProperty.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_10.robot
    """
    _create_and_check(api, "building-language-property.jsonld", JSON_LD)


@pytest.mark.parametrize(
    "filename",
    [
        pytest.param("building-minimal-with-one-scope.json", id="001_11_01-EntityWithOneScope"),
        pytest.param("building-minimal-with-many-scopes.json", id="001_11_02-EntityWithManyScopes"),
    ],
)
def test_001_11_create_entity_with_scopes(api: Api, filename: str) -> None:
    """Check that one can create an entity with one or more scopes.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_11.robot
    """
    _create_and_check(api, filename, JSON)


@pytest.mark.parametrize(
    "filename",
    [
        pytest.param("building-observation-space-geoproperty.jsonld", id="001_12-observationSpace"),
        pytest.param("building-operation-space-geoproperty.jsonld", id="001_13-operationSpace"),
    ],
)
def test_001_12_13_create_entity_with_observation_and_operation_space(api: Api, filename: str) -> None:
    """Check that one can create an entity with an observationSpace / operationSpace GeoProperty.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_12.robot and 001_13.robot
    """
    _create_and_check(api, filename, JSON_LD)


@pytest.mark.parametrize(
    "filename",
    [
        pytest.param("building-json-property-object.jsonld", id="001_14_01-EntityWithJsonPropertyAsObject"),
        pytest.param("building-json-property-array.jsonld", id="001_14_02-EntityWithJsonPropertyAsArray"),
        pytest.param("building-vocab-property-string.jsonld", id="001_15_01-EntityWithVocabPropertyAsString"),
        pytest.param("building-vocab-property-array.jsonld", id="001_15_02-EntityWithVocabPropertyAsArray"),
    ],
)
def test_001_14_15_create_entity_with_json_and_vocab_property(api: Api, filename: str) -> None:
    """Check that one can create an entity with a JsonProperty / VocabProperty.

    TP/NGSI-LD/ContextInformation/Provision/Entities/CreateEntity/001_14.robot and 001_15.robot
    """
    _create_and_check(api, filename, JSON_LD)


# --- DeleteEntity ------------------------------------------------------------------------------


def test_002_01_01_delete_entity(api: Api) -> None:
    """Check that one can delete an entity by id.

    TP/NGSI-LD/ContextInformation/Provision/Entities/DeleteEntity/002_01.robot
    """
    entity_id = random_id(BUILDING)
    check_status(api.create_entity("building-simple-attributes.jsonld", entity_id, JSON_LD), 201)
    response = api.delete_entity(entity_id)
    check_status(response, 204)
    check_empty_body(response)
    check_status(api.retrieve_entity(entity_id, context=SUITE_CONTEXT), 404)


def test_002_02_01_delete_entity_invalid_uri(api: Api) -> None:
    """Check that one cannot delete an entity whose id is not a valid URI.

    TP/NGSI-LD/ContextInformation/Provision/Entities/DeleteEntity/002_02.robot
    """
    check_problem(api.delete_entity("thisisaninvaliduri"), 400, BAD_REQUEST_DATA)


def test_002_03_01_delete_unknown_entity(api: Api) -> None:
    """Check that one cannot delete an entity not known to the system.

    TP/NGSI-LD/ContextInformation/Provision/Entities/DeleteEntity/002_03.robot
    """
    check_problem(api.delete_entity(random_id(BUILDING)), 404, RESOURCE_NOT_FOUND)


# --- ReplaceEntity -----------------------------------------------------------------------------


def test_054_01_01_replace_entity(api: Api) -> None:
    """Replace an existing entity; its createdAt remains unchanged.

    TP/NGSI-LD/ContextInformation/Provision/Entities/ReplaceEntity/054_01.robot
    """
    entity_id = random_id(BUILDING)
    check_status(api.create_entity("building-simple-attributes.json", entity_id, JSON, SUITE_CONTEXT), 201)
    created_at = api.retrieve_entity(entity_id, context=SUITE_CONTEXT, options="sysAttrs").json()["createdAt"]
    entity = load("entities/building-locatedAt-and-name.json", entity_id)
    response = api.replace_entity(entity_id, entity, JSON, SUITE_CONTEXT)
    check_status(response, 204)
    check_empty_body(response)
    body = api.retrieve_entity(entity_id, context=SUITE_CONTEXT, options="sysAttrs").json()
    expected = load("entities/expectations/building-locatedAt-and-name-normalized.jsonld", entity_id)
    check_resource(expected, body, ["@context", "createdAt", "modifiedAt"])
    assert body["createdAt"] == created_at


@pytest.mark.parametrize(
    ("faulty_id", "status"),
    [
        pytest.param("invalidUri", 400, id="054_02_01-InvalidId"),
        pytest.param("", 400, id="054_02_02-WithoutId"),
        pytest.param("urn:ngsi-ld:Building:Nonexistent", 404, id="054_02_03-NonexistentId"),
    ],
)
def test_054_02_replace_entity_faulty_id(api: Api, faulty_id: str, status: int) -> None:
    """Check that if the target entity id is faulty an error is raised.

    TP/NGSI-LD/ContextInformation/Provision/Entities/ReplaceEntity/054_02.robot
    """
    check_status(api.create_entity("building-simple-attributes.json", random_id(BUILDING), JSON, SUITE_CONTEXT), 201)
    entity = load("entities/building-locatedAt-and-name.json", faulty_id)
    check_status(api.replace_entity(faulty_id, entity, JSON, SUITE_CONTEXT), status)


def test_054_03_01_replace_entity_with_scopes(api: Api) -> None:
    """Replace an existing entity having scopes: the scopes are replaced.

    TP/NGSI-LD/ContextInformation/Provision/Entities/ReplaceEntity/054_03.robot
    """
    entity_id = random_id(BUILDING)
    check_status(api.create_entity("building-minimal-with-one-scope.json", entity_id, JSON, SUITE_CONTEXT), 201)
    entity = load("entities/building-minimal-with-many-scopes.json", entity_id)
    response = api.replace_entity(entity_id, entity, JSON, SUITE_CONTEXT)
    check_status(response, 204)
    check_empty_body(response)
    body = api.retrieve_entity(entity_id, accept=JSON, context=SUITE_CONTEXT).json()
    check_entity("building-minimal-with-two-scopes.json", entity_id, body)


# --- MergeEntity -------------------------------------------------------------------------------


def _merge_and_check(api: Api, initial: str, filename: str, expectation: str, create_content_type: str) -> None:
    entity_id = random_id(BUILDING)
    check_status(api.create_entity(initial, entity_id, create_content_type), 201)
    response = api.merge_entity(entity_id, filename, JSON_LD)
    check_status(response, 204)
    check_empty_body(response)
    body = api.retrieve_entity(entity_id, accept=JSON_LD, context=SUITE_CONTEXT).json()
    check_entity(expectation, entity_id, body)


@pytest.mark.parametrize(
    ("filename", "expectation"),
    [
        pytest.param("building-minimal.jsonld", "merge/building-non-edited.jsonld", id="056_01_01-MergeAnEmptyEntity"),
        pytest.param(
            "building-simple-attributes-second.jsonld",
            "merge/building-attributes-edited.jsonld",
            id="056_01_02-MergeSimpleProperties",
        ),
        pytest.param(
            "building-relationship.jsonld",
            "merge/building-with-relationship.jsonld",
            id="056_01_03-MergeSimpleRelationship",
        ),
        pytest.param(
            "merge/building-only-airQualityLevel-value.jsonld",
            "merge/building-with-changed-airQualityLevel.jsonld",
            id="056_01_04-MergePropertyWithPartialData",
        ),
    ],
)
def test_056_01_merge_entity(api: Api, filename: str, expectation: str) -> None:
    """Check that one can merge an entity.

    TP/NGSI-LD/ContextInformation/Provision/Entities/MergeEntity/056_01.robot
    """
    _merge_and_check(api, "merge/building-merge-data.jsonld", filename, expectation, JSON_LD)


@pytest.mark.parametrize(
    ("faulty_id", "status"),
    [
        pytest.param("invalidUri", 400, id="056_02_01-InvalidId"),
        pytest.param("", 400, id="056_02_02-WithoutId"),
        pytest.param("urn:ngsi-ld:Building:Nonexistent", 404, id="056_02_03-NonexistentId"),
    ],
)
def test_056_02_merge_entity_faulty_id(api: Api, faulty_id: str, status: int) -> None:
    """Check that if the target entity id is faulty an error is raised.

    TP/NGSI-LD/ContextInformation/Provision/Entities/MergeEntity/056_02.robot
    """
    check_status(api.create_entity("building-simple-attributes.json", random_id(BUILDING), JSON, SUITE_CONTEXT), 201)
    response = api.merge_entity(faulty_id, "building-locatedAt-and-name.json", JSON, SUITE_CONTEXT)
    check_status(response, status)


NULL_CASES = [("property", "Property"), ("relationship", "Relationship"), ("geoproperty", "GeoProperty")]
NULL_CASES.append(("languageproperty", "LanguageProperty"))


@pytest.mark.parametrize(
    "kind",
    [pytest.param(kind, id=f"056_03_0{i}-Delete{label}") for i, (kind, label) in enumerate(NULL_CASES, 1)],
)
def test_056_03_merge_entity_delete_attribute_with_null(api: Api, kind: str) -> None:
    """Delete an attribute using NGSI-LD Null in a Merge Entity operation.

    TP/NGSI-LD/ContextInformation/Provision/Entities/MergeEntity/056_03.robot
    """
    _merge_and_check(
        api,
        "building-different-attributes-types.jsonld",
        f"fragmentEntities/ngsild-null/building-null-{kind}.jsonld",
        f"ngsild-null/building-deleted-{kind}.jsonld",
        JSON_LD,
    )


@pytest.mark.parametrize(
    "kind",
    [pytest.param(kind, id=f"056_04_0{i}-Delete{label}Instance") for i, (kind, label) in enumerate(NULL_CASES, 1)],
)
def test_056_04_merge_entity_delete_instance_with_null(api: Api, kind: str) -> None:
    """Delete a specific attribute instance using NGSI-LD Null in a Merge Entity operation.

    TP/NGSI-LD/ContextInformation/Provision/Entities/MergeEntity/056_04.robot
    """
    _merge_and_check(
        api,
        "building-different-attributes-instances-and-types.jsonld",
        f"fragmentEntities/ngsild-null/building-null-{kind}-instance.jsonld",
        f"ngsild-null/building-deleted-{kind}-instance.jsonld",
        JSON_LD,
    )


@pytest.mark.parametrize(
    "kind",
    [pytest.param(kind, id=f"056_05_0{i}-Delete{label}Instance") for i, (kind, label) in enumerate(NULL_CASES, 1)],
)
def test_056_05_merge_entity_delete_default_instance_with_null(api: Api, kind: str) -> None:
    """Delete the default attribute instance using NGSI-LD Null in a Merge Entity operation.

    TP/NGSI-LD/ContextInformation/Provision/Entities/MergeEntity/056_05.robot
    """
    _merge_and_check(
        api,
        "building-different-default-attributes-instances-and-types.jsonld",
        f"fragmentEntities/ngsild-null/building-null-{kind}.jsonld",
        f"ngsild-null/building-deleted-{kind}-default-instance.jsonld",
        JSON_LD,
    )
