"""ETSI NGSI-LD test suite, TP/NGSI-LD/ContextInformation/Provision/BatchEntities.

Batch create (003), upsert (004), update (005), delete (006) and merge (057).
"""

from __future__ import annotations

from typing import Any

import pytest
from _etsi import (
    BAD_REQUEST_DATA,
    BUILDING,
    INVALID_REQUEST,
    JSON,
    JSON_LD,
    LD_CONTEXT_NOT_AVAILABLE,
    SUITE,
    SUITE_CONTEXT,
    Api,
    check_batch_result,
    check_empty_body,
    check_entities_with_types,
    check_problem,
    check_resource,
    check_status,
    load,
    random_id,
    upsert_element,
)


def _ids(n: int) -> list[str]:
    return [random_id(BUILDING) for _ in range(n)]


def _query(api: Api, ids: list[str]) -> Any:
    """The ``Query Entities`` used by the batch tests to read the result back."""
    response = api.query_entities(accept=JSON_LD, context=SUITE_CONTEXT, id=",".join(ids), type="Building")
    check_status(response, 200)
    return response.json()


def _create(api: Api, filename: str, ids: list[str]) -> None:
    for entity_id in ids:
        check_status(api.create_entity(filename, entity_id), 201)


def _check_error_type(body: Any, index: int, problem_type: str) -> None:
    error = body["errors"][index]["error"]
    assert error["type"] == problem_type, body
    assert error["title"], body


FILES = [
    ("building-minimal.jsonld", "MinimalEntity"),
    ("building-simple-attributes.jsonld", "EntityWithSimpleProperties"),
    ("building-relationship.jsonld", "EntityWithSimpleRelationships"),
    ("building-relationship-of-property.jsonld", "EntityWithRelationshipsProperties"),
]


# --- CreateBatchOfEntities ---------------------------------------------------------------------


@pytest.mark.parametrize("filename", [pytest.param(f, id=f"003_01_0{i}-{n}") for i, (f, n) in enumerate(FILES, 1)])
def test_003_01_batch_create(api: Api, filename: str) -> None:
    """Check that one can create a batch of entities.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/CreateBatchOfEntities/003_01.robot
    """
    ids = _ids(2)
    entities = [load("entities/" + filename, entity_id) for entity_id in ids]
    response = api.batch("create", entities)
    check_status(response, 201)
    assert sorted(response.json()) == sorted(ids)
    check_resource(entities, _query(api, ids), group_by_id=True)


def test_003_02_01_batch_create_partial_failure(api: Api) -> None:
    """Create a batch of two valid entities and one already existing entity.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/CreateBatchOfEntities/003_02.robot
    """
    existing, first, second = _ids(3)
    _create(api, "building-minimal.jsonld", [existing])
    entities = [load("entities/building-minimal.jsonld", i) for i in (first, second, existing)]
    response = api.batch("create", entities)
    check_status(response, 207)
    check_batch_result(response.json(), [first, second], [existing])
    check_resource(entities[:2], _query(api, [first, second]), group_by_id=True)


@pytest.mark.parametrize(
    ("filename", "problem_type"),
    [
        pytest.param("batch/invalid-json.jsonld", INVALID_REQUEST, id="003_03_01-InvalidJson"),
        pytest.param("batch/empty.jsonld", BAD_REQUEST_DATA, id="003_03_02-EmptyJson"),
    ],
)
def test_003_03_batch_create_invalid_request(api: Api, filename: str, problem_type: str) -> None:
    """Check that one cannot create a batch of entities with an invalid request.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/CreateBatchOfEntities/003_03.robot
    """
    check_problem(api.batch_from_file("create", filename), 400, problem_type)


@pytest.mark.parametrize(
    ("content_type", "filename", "link_context", "retrieve_context", "attribute"),
    [
        pytest.param(
            JSON, "building-simple-attributes.json", SUITE_CONTEXT, SUITE_CONTEXT, "almostFull", id="003_04_01"
        ),
        pytest.param(
            JSON, "building-simple-attributes.json", SUITE_CONTEXT, None, SUITE + "almostFull", id="003_04_02"
        ),
        pytest.param(JSON, "building-simple-attributes.json", None, None, "almostFull", id="003_05_01"),
        pytest.param(
            JSON,
            "building-simple-attributes.json",
            None,
            SUITE_CONTEXT,
            "ngsi-ld:default-context/almostFull",
            id="003_05_02",
        ),
        pytest.param(JSON_LD, "building-simple-attributes.jsonld", None, SUITE_CONTEXT, "almostFull", id="003_07_01"),
        pytest.param(JSON_LD, "building-simple-attributes.jsonld", None, None, SUITE + "almostFull", id="003_07_02"),
    ],
)
def test_003_04_05_07_batch_create_context_resolution(
    api: Api,
    content_type: str,
    filename: str,
    link_context: str | None,
    retrieve_context: str | None,
    attribute: str,
) -> None:
    """The @context of a batch create: Link header with JSON (003_04), default context (003_05),
    request payload with JSON-LD (003_07); checked through the compaction of ``almostFull``.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/CreateBatchOfEntities/003_04.robot,
    003_05.robot and 003_07.robot
    """
    entity_id = random_id(BUILDING)
    response = api.batch("create", [load("entities/" + filename, entity_id)], content_type, link_context)
    check_status(response, 201)
    body = api.retrieve_entity(entity_id, context=retrieve_context).json()
    assert body[attribute]


def test_003_06_01_batch_create_json_with_context_in_body(api: Api) -> None:
    """A batch item with an @context sent as application/json fails with BadRequestData (207).

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/CreateBatchOfEntities/003_06.robot
    """
    entity = load("entities/building-simple-attributes.jsonld", random_id(BUILDING))
    response = api.batch("create", [entity], JSON)
    check_status(response, 207)
    _check_error_type(response.json(), 0, BAD_REQUEST_DATA)


def test_003_08_01_batch_create_ld_json_without_context(api: Api) -> None:
    """A batch item without @context sent as application/ld+json fails with BadRequestData (207).

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/CreateBatchOfEntities/003_08.robot
    """
    entity = load("entities/building-simple-attributes.json", random_id(BUILDING))
    response = api.batch("create", [entity], JSON_LD)
    check_status(response, 207)
    _check_error_type(response.json(), 0, BAD_REQUEST_DATA)


def test_003_09_01_batch_create_ld_json_with_link_header(api: Api) -> None:
    """application/ld+json together with a Link header fails the whole batch with BadRequestData.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/CreateBatchOfEntities/003_09.robot
    """
    entity = load("entities/building-simple-attributes.jsonld", random_id(BUILDING))
    check_problem(api.batch("create", [entity], JSON_LD, SUITE_CONTEXT), 400, BAD_REQUEST_DATA)


def test_003_10_01_batch_create_same_id_twice(api: Api) -> None:
    """Create a batch of three entities where two have the same id.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/CreateBatchOfEntities/003_10.robot
    """
    first, second = _ids(2)
    entities = [load("entities/building-minimal.jsonld", i) for i in (first, second, first)]
    response = api.batch("create", entities)
    check_status(response, 207)
    check_batch_result(response.json(), [first, second], [first])


def test_043_01_04_batch_create_unretrievable_context(api: Api) -> None:
    """Batch create with an @context that cannot be retrieved: LdContextNotAvailable per entity.

    TP/NGSI-LD/CommonBehaviours/CommonResponses/VerifyLdContextNotAvailable/043_01.robot
    (the unretrievable @context URL points to a closed local port instead of the Internet)
    """
    entities = [load("entities/building-unretrievable-context.jsonld", i) for i in _ids(2)]
    response = api.batch("create", entities, JSON_LD)
    check_status(response, 207)
    _check_error_type(response.json(), 0, LD_CONTEXT_NOT_AVAILABLE)
    _check_error_type(response.json(), 1, LD_CONTEXT_NOT_AVAILABLE)


# --- UpsertBatchOfEntities ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename", [pytest.param(f, id=f"004_01_0{i - 1}-{n}") for i, (f, n) in enumerate(FILES, 1) if i > 1]
)
def test_004_01_batch_upsert_new_entities(api: Api, filename: str) -> None:
    """Upsert a batch of non-existing entities: they are created.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/UpsertBatchOfEntities/004_01.robot
    """
    ids = _ids(2)
    entities = [load("entities/" + filename, i) for i in ids]
    response = api.batch("upsert", entities, options="replace")
    check_status(response, 201)
    assert sorted(response.json()) == sorted(ids)
    check_resource(entities, _query(api, ids), group_by_id=True)


@pytest.mark.parametrize(
    "filename", [pytest.param(f, id=f"004_02_0{i - 1}-{n}") for i, (f, n) in enumerate(FILES, 1) if i > 1]
)
def test_004_02_batch_upsert_new_and_existing(api: Api, filename: str) -> None:
    """Upsert a batch of new and existing entities: new ones created, existing ones replaced.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/UpsertBatchOfEntities/004_02.robot
    """
    existing = _ids(2)
    _create(api, "building-minimal.jsonld", existing)
    new = random_id(BUILDING)
    entities = [load("entities/" + filename, i) for i in (new, *existing)]
    response = api.batch("upsert", entities, options="replace")
    check_status(response, 201)
    assert response.json() == [new]
    check_resource(entities, _query(api, [new, *existing]), group_by_id=True)


UPSERT_EXISTING = [
    ("building-simple-attributes.jsonld", "004_03_01-EntityWithSimpleProperties"),
    ("building-relationship.jsonld", "004_03_02-EntityWithSimpleRelationships"),
    ("building-relationship-of-property.jsonld", "004_03_03-EntityWithRelationshipsProperties"),
    ("building-with-one-scope.jsonld", "004_03_04-EntityWithScope"),
    ("building-with-two-types.jsonld", "004_03_05-EntityWithTypes"),
    ("building-minimal-with-new-types.jsonld", "004_08_01-EntityWithNewTypes"),
]


@pytest.mark.parametrize("filename", [pytest.param(f, id=i) for f, i in UPSERT_EXISTING])
def test_004_03_08_batch_upsert_existing_entities(api: Api, filename: str) -> None:
    """Upsert a batch of existing entities: they are replaced (also with new types, 004_08).

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/UpsertBatchOfEntities/004_03.robot and 004_08.robot
    """
    ids = _ids(2)
    _create(api, "building-minimal.jsonld", ids)
    entities = [load("entities/" + filename, i) for i in ids]
    response = api.batch("upsert", entities, options="replace")
    check_status(response, 204)
    check_empty_body(response)
    check_resource(entities, _query(api, ids), group_by_id=True)


@pytest.mark.parametrize(
    ("filename", "fragment"),
    [
        pytest.param(
            "building-simple-attributes.jsonld",
            "fragmentEntities/simple-attributes-fragment.json",
            id="004_04_01-EntityWithSimpleProperties",
        ),
        pytest.param(
            "building-relationship.jsonld",
            "fragmentEntities/locatedAt-fragment.json",
            id="004_04_02-EntityWithSimpleRelationships",
        ),
        pytest.param(
            "building-relationship-of-property.jsonld",
            "fragmentEntities/simple-attributes-relationship-of-property-fragment.json",
            id="004_04_03-EntityWithRelationshipsProperties",
        ),
    ],
)
def test_004_04_batch_upsert_update_option(api: Api, filename: str, fragment: str) -> None:
    """Upsert a batch of entities with the update option.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/UpsertBatchOfEntities/004_04.robot
    """
    existing, new = _ids(2)
    _create(api, "building-minimal.jsonld", [existing])
    new_entity = load("entities/" + filename, new)
    response = api.batch("upsert", [new_entity, load("entities/" + filename, existing)], options="update")
    check_status(response, 201)
    assert response.json() == [new]
    updated = upsert_element(load("entities/building-minimal.jsonld", existing), load("entities/" + fragment))
    check_resource([new_entity, updated], _query(api, [existing, new]), group_by_id=True)


def test_004_05_01_batch_upsert_partial_failure(api: Api) -> None:
    """Upsert a batch of two valid entities and one invalid entity (no type).

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/UpsertBatchOfEntities/004_05.robot
    """
    first, second, third = _ids(3)
    entities = [load("entities/building-minimal.jsonld", i) for i in (first, second, third)]
    del entities[2]["type"]
    response = api.batch("upsert", entities, options="replace")
    check_status(response, 207)
    check_batch_result(response.json(), [first, second], [third])
    check_resource(entities[:2], _query(api, [first, second]), group_by_id=True)


INVALID_BATCHES = [
    ("batch/invalid-json.jsonld", INVALID_REQUEST, 400, "InvalidJson"),
    ("batch/invalid-json-ld.jsonld", BAD_REQUEST_DATA, 207, "InvalidJsonLd"),
]


@pytest.mark.parametrize(
    ("operation", "filename", "problem_type", "status"),
    [
        pytest.param(op, f, t, s, id=f"{tp}_0{i}-{name}")
        for op, tp in (("upsert", "004_06"), ("update", "005_04"), ("merge", "057_03"))
        for i, (f, t, s, name) in enumerate(INVALID_BATCHES, 1)
    ],
)
def test_004_06_005_04_057_03_batch_invalid_request(
    api: Api, operation: str, filename: str, problem_type: str, status: int
) -> None:
    """Batch upsert / update / merge with invalid JSON (400) or invalid JSON-LD content (207).

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/UpsertBatchOfEntities/004_06.robot,
    UpdateBatchOfEntities/005_04.robot and MergeBatchOfEntities/057_03.robot
    """
    response = api.batch_from_file(operation, filename)
    check_status(response, status)
    if status == 400:
        check_problem(response, 400, problem_type)
    else:
        _check_error_type(response.json(), 0, problem_type)


def test_004_07_01_batch_upsert_same_id_twice(api: Api) -> None:
    """Upsert a batch of three entities where two have the same id.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/UpsertBatchOfEntities/004_07.robot
    """
    first, second = _ids(2)
    entities = [load("entities/building-minimal.jsonld", i) for i in (first, second, first)]
    response = api.batch("upsert", entities, options="replace")
    check_status(response, 201)
    assert sorted(response.json()) == sorted([first, second])


# --- UpdateBatchOfEntities ---------------------------------------------------------------------

UPDATE_CASES = [
    ("building-simple-attributes.jsonld", "fragmentEntities/empty-fragment.json", "EntityWithSimpleProperties"),
    ("building-relationship.jsonld", "fragmentEntities/locatedAt-fragment.json", "EntityWithSimpleRelationships"),
    (
        "building-relationship-of-property.jsonld",
        "fragmentEntities/airQualityLevel-with-relationship-fragment.json",
        "EntityWithRelationshipsProperties",
    ),
]


def _batch_update_and_check(
    api: Api, initial: str, filename: str, fragment: str, status: int, options: str | None = None
) -> None:
    ids = _ids(2)
    _create(api, initial, ids)
    response = api.batch("update", [load("entities/" + filename, i) for i in ids], options=options)
    check_status(response, status)
    if status == 204:
        check_empty_body(response)
    expected = [upsert_element(load("entities/" + initial, i), load("entities/" + fragment)) for i in ids]
    check_resource(expected, _query(api, ids), group_by_id=True)


@pytest.mark.parametrize(
    ("filename", "fragment"),
    [pytest.param(f, fr, id=f"005_01_0{i}-{n}") for i, (f, fr, n) in enumerate(UPDATE_CASES, 1)],
)
def test_005_01_batch_update(api: Api, filename: str, fragment: str) -> None:
    """Check that one can update a batch of entities.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/UpdateBatchOfEntities/005_01.robot
    """
    _batch_update_and_check(api, "building-simple-attributes.jsonld", filename, fragment, 204)


@pytest.mark.parametrize(
    ("filename", "fragment", "status"),
    [
        pytest.param(
            "building-simple-attributes.jsonld",
            "fragmentEntities/empty-fragment.json",
            207,
            id="005_02_01-EntityWithExistingAttributes",
        ),
        pytest.param(
            "building-relationship.jsonld",
            "fragmentEntities/locatedAt-fragment.json",
            204,
            id="005_02_02-EntityWithNewAttribute",
        ),
        pytest.param(
            "building-location-attribute.jsonld",
            "fragmentEntities/location-fragment.json",
            207,
            id="005_02_03-EntityWithNewAndExistingAttribute",
        ),
    ],
)
def test_005_02_batch_update_no_overwrite(api: Api, filename: str, fragment: str, status: int) -> None:
    """Check that one can update a batch of entities with the noOverwrite option.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/UpdateBatchOfEntities/005_02.robot
    """
    _batch_update_and_check(api, "building-simple-attributes.jsonld", filename, fragment, status, "noOverwrite")


def test_005_03_01_batch_update_partial_failure(api: Api) -> None:
    """Update a batch of existing entities and one non-existing entity.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/UpdateBatchOfEntities/005_03.robot
    """
    existing = _ids(2)
    _create(api, "building-simple-attributes.jsonld", existing)
    new = random_id(BUILDING)
    entities = [load("entities/building-relationship-of-property.jsonld", i) for i in (*existing, new)]
    response = api.batch("update", entities)
    check_status(response, 207)
    check_batch_result(response.json(), existing, [new])
    fragment = load("entities/fragmentEntities/simple-attributes-relationship-of-property-fragment.json")
    expected = [upsert_element(load("entities/building-simple-attributes.jsonld", i), fragment) for i in existing]
    check_resource(expected, _query(api, existing), group_by_id=True)


def test_005_05_01_batch_update_types(api: Api) -> None:
    """Check that the types of entities can be updated in a batch update.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/UpdateBatchOfEntities/005_05.robot
    """
    _batch_update_and_check(
        api,
        "building-minimal.jsonld",
        "building-minimal-with-new-type.jsonld",
        "fragmentEntities/building-two-types-fragment.jsonld",
        204,
    )


# --- DeleteBatchOfEntities ---------------------------------------------------------------------


def test_006_01_01_batch_delete(api: Api) -> None:
    """Check that one can delete a batch of entities.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/DeleteBatchOfEntities/006_01.robot
    """
    ids = _ids(2)
    _create(api, "building-simple-attributes.jsonld", ids)
    response = api.batch("delete", ids)
    check_status(response, 204)
    check_empty_body(response)
    assert api.query_entities(context=SUITE_CONTEXT, id=",".join(ids), type="Building").json() == []


def test_006_02_01_batch_delete_partial_failure(api: Api) -> None:
    """Delete a batch of existing and non-existing entities.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/DeleteBatchOfEntities/006_02.robot
    """
    existing, new = _ids(2)
    _create(api, "building-simple-attributes.jsonld", [existing])
    response = api.batch("delete", [existing, new])
    check_status(response, 207)
    check_batch_result(response.json(), [existing], [new])
    assert api.query_entities(context=SUITE_CONTEXT, id=existing, type="Building").json() == []


@pytest.mark.parametrize(
    ("filename", "problem_type"),
    [
        pytest.param("batch/invalid-json.jsonld", INVALID_REQUEST, id="006_03_01-InvalidJson"),
        pytest.param("batch/empty.jsonld", BAD_REQUEST_DATA, id="006_03_02-EmptyJson"),
    ],
)
def test_006_03_batch_delete_invalid_request(api: Api, filename: str, problem_type: str) -> None:
    """Check that one cannot delete a batch of entities with an invalid request.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/DeleteBatchOfEntities/006_03.robot
    """
    check_problem(api.batch_from_file("delete", filename), 400, problem_type)


def test_006_04_01_batch_delete_same_id_twice(api: Api) -> None:
    """Delete a batch holding the same existing id twice.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/DeleteBatchOfEntities/006_04.robot
    """
    entity_id = random_id(BUILDING)
    _create(api, "building-simple-attributes.jsonld", [entity_id])
    response = api.batch("delete", [entity_id, entity_id])
    check_status(response, 207)
    check_batch_result(response.json(), [entity_id], [entity_id])


# --- MergeBatchOfEntities ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expectation"),
    [
        pytest.param(
            "building-minimal.jsonld", "batch-merge/two-buildings-non-edited.jsonld", id="057_01_01-MergeAnEmptyEntity"
        ),
        pytest.param(
            "building-simple-attributes-second.jsonld",
            "batch-merge/two-buildings-attributes-edited.jsonld",
            id="057_01_02-MergeSimpleProperties",
        ),
        pytest.param(
            "building-relationship.jsonld",
            "batch-merge/two-buildings-with-relationship.jsonld",
            id="057_01_03-MergeSimpleRelationship",
        ),
        pytest.param(
            "merge/building-only-airQualityLevel-value.jsonld",
            "batch-merge/two-buildings-with-changed-airQualityLevel.jsonld",
            id="057_01_04-MergePropertyWithPartialData",
        ),
    ],
)
def test_057_01_batch_merge(api: Api, filename: str, expectation: str) -> None:
    """Check that one can merge a batch of entities.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/MergeBatchOfEntities/057_01.robot
    """
    ids = _ids(2)
    _create(api, "merge/building-merge-data.jsonld", ids)
    response = api.batch("merge", [load("entities/" + filename, i) for i in ids])
    check_status(response, 204)
    check_empty_body(response)
    check_entities_with_types(expectation, ids, _query(api, ids), ignore_core_context_version=True)


def test_057_02_01_batch_merge_partial_failure(api: Api) -> None:
    """Merge a batch of existing entities and one non-existing entity: 207.

    TP/NGSI-LD/ContextInformation/Provision/BatchEntities/MergeBatchOfEntities/057_02.robot
    """
    existing = _ids(2)
    _create(api, "building-simple-attributes.jsonld", existing)
    new = random_id(BUILDING)
    entities = [load("entities/building-relationship-of-property.jsonld", i) for i in (*existing, new)]
    response = api.batch("merge", entities)
    check_status(response, 207)
    check_batch_result(response.json(), existing, [new])
    fragment = load("entities/fragmentEntities/simple-attributes-relationship-of-property-fragment.json")
    expected = [upsert_element(load("entities/building-simple-attributes.jsonld", i), fragment) for i in existing]
    check_resource(expected, _query(api, existing), group_by_id=True)
