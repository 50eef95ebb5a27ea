"""ETSI NGSI-LD test suite, TP/NGSI-LD/ContextInformation/Provision/EntityAttributes.

Append (010), update (011), partial update (012) and delete (013) of entity attributes.
"""

from __future__ import annotations

import pytest
from _etsi import (
    BAD_REQUEST_DATA,
    BUILDING,
    DEFAULT_CONTEXT,
    INVALID_REQUEST,
    JSON,
    JSON_LD,
    MERGE_PATCH,
    RESOURCE_NOT_FOUND,
    SUITE,
    SUITE_CONTEXT,
    VEHICLE,
    Api,
    check_empty_body,
    check_entity,
    check_problem,
    check_resource,
    check_status,
    check_update_result,
    load,
    random_id,
)

NULL_KINDS = [
    ("property", "Property", "name"),
    ("relationship", "Relationship", "locatedAt"),
    ("geoproperty", "GeoProperty", "location"),
    ("languageproperty", "LanguageProperty", "street"),
]


def _entity(
    api: Api, filename: str, prefix: str = VEHICLE, content_type: str = JSON_LD, context: str | None = None
) -> str:
    entity_id = random_id(prefix)
    check_status(api.create_entity(filename, entity_id, content_type, context), 201)
    return entity_id


def _expect(api: Api, expectation: str, entity_id: str, ignored: tuple[str, ...] = ()) -> None:
    """``Check Updated Resource Set To`` the expectation, entity retrieved in application/ld+json."""
    body = api.retrieve_entity(entity_id, accept=JSON_LD, context=SUITE_CONTEXT).json()
    check_resource(load("entities/expectations/" + expectation, entity_id), body, ignored)


# --- AppendEntityAttributes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fragment", "expectation"),
    [
        pytest.param(
            "vehicle-new-attribute-fragment.jsonld", "vehicle-speed-appended.jsonld", id="010_01_01-AppendAttributes"
        ),
        pytest.param(
            "vehicle-speed-different-datasetid-fragment.jsonld",
            "vehicle-speed-different-datasetid.jsonld",
            id="010_01_02-AppendWithDifferentDatasetId",
        ),
        pytest.param(
            "vehicle-new-language-property-fragment.jsonld",
            "vehicle-language-property-appended.jsonld",
            id="010_06_01-AppendLanguageProperty",
        ),
        pytest.param(
            "vehicle-new-json-property-fragment.jsonld",
            "vehicle-json-property-appended.jsonld",
            id="010_10_01-AppendJsonProperty",
        ),
    ],
)
def test_010_01_append_entity_attributes(api: Api, fragment: str, expectation: str) -> None:
    """Check that one can append entity attributes (also LanguageProperty, JsonProperty).

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/AppendEntityAttributes/010_01.robot,
    010_06.robot and 010_10.robot
    """
    entity_id = _entity(api, "vehicle-speed-two-datasetid.jsonld")
    response = api.append_attributes(entity_id, fragment, JSON_LD)
    check_status(response, 204)
    check_empty_body(response)
    _expect(api, expectation, entity_id)


@pytest.mark.parametrize(
    "entity_id",
    [pytest.param("", id="010_02_01-IdNotPresent"), pytest.param("thisisaninvaliduri", id="010_02_02-InvalidUri")],
)
def test_010_02_append_entity_attributes_invalid_id(api: Api, entity_id: str) -> None:
    """Check that one cannot append entity attributes with an invalid or missing id.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/AppendEntityAttributes/010_02.robot
    """
    _entity(api, "vehicle-speed-two-datasetid.jsonld")
    response = api.append_attributes(entity_id, "vehicle-attribute-to-add-fragment.jsonld", JSON_LD)
    check_problem(response, 400, BAD_REQUEST_DATA)


def test_010_03_01_append_entity_attributes_unknown_entity(api: Api) -> None:
    """Check that one cannot append entity attributes to an entity not known to the system.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/AppendEntityAttributes/010_03.robot
    """
    response = api.append_attributes(random_id(VEHICLE), "vehicle-attribute-to-add-fragment.jsonld", JSON_LD)
    check_problem(response, 404, RESOURCE_NOT_FOUND)


@pytest.mark.parametrize(
    ("status", "fragment", "expectation"),
    [
        pytest.param(
            207,
            "vehicle-attribute-to-add-fragment.jsonld",
            "vehicle-speed-appended.jsonld",
            id="010_04_01-IgnoreExistingMultiAttributeInstance",
        ),
        pytest.param(
            204,
            "vehicle-speed-different-datasetid-fragment.jsonld",
            "vehicle-speed-different-datasetid.jsonld",
            id="010_04_02-NewMultiAttributeInstance",
        ),
    ],
)
def test_010_04_append_entity_attributes_no_overwrite(
    request: pytest.FixtureRequest, api: Api, status: int, fragment: str, expectation: str
) -> None:
    """Check that one can append entity attributes with the noOverwrite option.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/AppendEntityAttributes/010_04.robot
    """
    entity_id = _entity(api, "vehicle-speed-two-datasetid.jsonld")
    response = api.append_attributes(entity_id, fragment, JSON_LD, options="noOverwrite")
    check_status(response, status)
    if status == 207:
        check_update_result(response.json(), [DEFAULT_CONTEXT + "attribute_to_be_added"], [SUITE + "speed"])
    _expect(api, expectation, entity_id, ("@context",))


def test_010_05_01_append_entity_attributes_invalid_fragment(api: Api) -> None:
    """Check that one cannot append entity attributes with an invalid fragment.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/AppendEntityAttributes/010_05.robot
    """
    entity_id = _entity(api, "vehicle-speed-two-datasetid.jsonld")
    check_problem(api.append_attributes(entity_id, "invalid-fragment.jsonld", JSON_LD), 400, INVALID_REQUEST)


@pytest.mark.parametrize(
    ("options", "expectation"),
    [
        pytest.param(None, "building-minimal-with-one-scope.json", id="010_07_01-OverwriteEnabled"),
        pytest.param("noOverwrite", "building-minimal-with-two-scopes.json", id="010_07_02-OverwriteDisabled"),
    ],
)
def test_010_07_append_scope(api: Api, options: str | None, expectation: str) -> None:
    """The scope is replaced if overwrite is enabled, and appended otherwise.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/AppendEntityAttributes/010_07.robot
    (both cases are named 010_07_01 in the robot file)
    """
    entity_id = _entity(api, "building-minimal-with-one-scope.json", VEHICLE, JSON, SUITE_CONTEXT)
    response = api.append_attributes(entity_id, "one-scope-fragment.json", JSON, options=options)
    check_status(response, 204)
    check_empty_body(response)
    body = api.retrieve_entity(entity_id, accept=JSON, context=SUITE_CONTEXT).json()
    check_resource(load("entities/expectations/" + expectation, entity_id), body)


@pytest.mark.parametrize(
    ("fragment", "expectation"),
    [
        pytest.param(
            "observation-space-fragment.json",
            "building-observation-space-geoproperty-normalized.jsonld",
            id="010_08-observationSpace",
        ),
        pytest.param(
            "operation-space-fragment.json",
            "building-operation-space-geoproperty-normalized.jsonld",
            id="010_09-operationSpace",
        ),
    ],
)
def test_010_08_09_append_observation_operation_space(api: Api, fragment: str, expectation: str) -> None:
    """Check that one can append an observationSpace / operationSpace GeoProperty.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/AppendEntityAttributes/010_08.robot and 010_09.robot
    """
    entity_id = _entity(api, "building-minimal.jsonld", BUILDING)
    response = api.append_attributes(entity_id, fragment, JSON)
    check_status(response, 204)
    check_empty_body(response)
    body = api.retrieve_entity(entity_id, accept=JSON, context=SUITE_CONTEXT).json()
    check_resource(load("entities/expectations/" + expectation, entity_id), body)


def test_010_11_01_append_vocab_property(api: Api) -> None:
    """Check that one can append a VocabProperty.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/AppendEntityAttributes/010_11.robot
    """
    entity_id = _entity(api, "vehicle-minimal.jsonld")
    check_status(api.append_attributes(entity_id, "vehicle-new-vocab-property-fragment.jsonld", JSON_LD), 204)
    _expect(api, "vehicle-vocab-property-appended.jsonld", entity_id)


# --- UpdateEntityAttributes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fragment", "expectation"),
    [
        pytest.param(
            "vehicle-speed-two-datasetid-01-fragment.jsonld",
            "vehicle-update-attributes.jsonld",
            id="011_01_01-NoDatasetId",
        ),
        pytest.param(
            "vehicle-speed-two-datasetid-02-fragment.jsonld",
            "vehicle-update-datasetid-attributes.jsonld",
            id="011_01_02-WithDatasetId",
        ),
        pytest.param(
            "vehicle-speed-two-datasetid-04-fragment.jsonld",
            "vehicle-update-attributes-new-attribute-type.jsonld",
            id="011_01_04-ChangeAttributeType",
        ),
    ],
)
def test_011_01_update_entity_attributes(api: Api, fragment: str, expectation: str) -> None:
    """Check that one can update entity attributes.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/UpdateEntityAttributes/011_01.robot
    """
    entity_id = _entity(api, "vehicle-two-datasetid-attributes.jsonld")
    response = api.update_attributes(entity_id, fragment, JSON_LD)
    check_status(response, 204)
    check_empty_body(response)
    _expect(api, expectation, entity_id, ("@context",))


def test_011_01_03_update_existing_and_non_existing_attributes(api: Api) -> None:
    """Update existing attributes while the fragment also holds a non-existing one.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/UpdateEntityAttributes/011_01.robot

    Deviation from the suite, following GS CIM 009 V1.8.1 clause 5.6.2: Update Attributes only
    updates existing Attributes; a non-existing one is not appended and is reported in the
    UpdateResult (207). The current suite expects 204 and ``isParked2`` appended
    (``expectations/vehicle-multi-attributes.jsonld``), which is the V1.9.1 wording of 5.6.2
    ("... and by appending non-existing ones").
    """
    entity_id = _entity(api, "vehicle-two-datasetid-attributes.jsonld")
    response = api.update_attributes(entity_id, "vehicle-speed-two-datasetid-03-fragment.jsonld", JSON_LD)
    check_status(response, 207)
    assert len(response.json()["updated"]) == 1 and len(response.json()["notUpdated"]) == 1
    expected = load("entities/expectations/vehicle-multi-attributes.jsonld", entity_id)
    del expected["isParked2"]
    body = api.retrieve_entity(entity_id, accept=JSON_LD, context=SUITE_CONTEXT).json()
    check_resource(expected, body, ["@context"])


@pytest.mark.parametrize(
    "entity_id",
    [pytest.param("", id="011_02_01-IdNotPresent"), pytest.param("thisisaninvaliduri", id="011_02_02-InvalidUri")],
)
def test_011_02_update_entity_attributes_invalid_id(api: Api, entity_id: str) -> None:
    """Check that one cannot update entity attributes with an invalid or missing id.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/UpdateEntityAttributes/011_02.robot
    """
    _entity(api, "vehicle-two-datasetid-attributes.jsonld")
    response = api.update_attributes(entity_id, "vehicle-speed-two-datasetid-01-fragment.jsonld", JSON_LD)
    check_problem(response, 400, BAD_REQUEST_DATA)


def test_011_03_01_update_entity_attributes_unknown_entity(api: Api) -> None:
    """Check that one cannot update attributes of an entity not known to the system.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/UpdateEntityAttributes/011_03.robot
    """
    response = api.update_attributes(random_id(VEHICLE), "vehicle-speed-two-datasetid-01-fragment.jsonld", JSON_LD)
    check_problem(response, 404, RESOURCE_NOT_FOUND)


def test_011_04_01_update_entity_attributes_invalid_fragment(api: Api) -> None:
    """Check that one cannot update entity attributes with an invalid fragment.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/UpdateEntityAttributes/011_04.robot
    """
    entity_id = _entity(api, "vehicle-speed-two-datasetid.jsonld")
    check_problem(api.update_attributes(entity_id, "invalid-fragment.jsonld", JSON_LD), 400, INVALID_REQUEST)


@pytest.mark.parametrize(
    ("initial", "status", "expectation"),
    [
        pytest.param(
            "building-minimal-with-one-scope.json", 204, "building-minimal-with-one-scope.json", id="011_05_01-HasScope"
        ),
        pytest.param("building-minimal.json", 207, "building-minimal-compacted.json", id="011_05_02-HasNoScope"),
    ],
)
def test_011_05_update_scope(api: Api, initial: str, status: int, expectation: str) -> None:
    """The scope is replaced if the entity has one, and not added otherwise.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/UpdateEntityAttributes/011_05.robot
    """
    entity_id = _entity(api, initial, VEHICLE, JSON, SUITE_CONTEXT)
    response = api.update_attributes(entity_id, "one-scope-fragment.json", JSON)
    check_status(response, status)
    body = api.retrieve_entity(entity_id, accept=JSON, context=SUITE_CONTEXT).json()
    check_resource(load("entities/expectations/" + expectation, entity_id), body)


@pytest.mark.parametrize(
    ("fragment", "expectation"),
    [
        pytest.param(
            "type-vehicle-fragment.json", "building-minimal-with-two-types.json", id="011_06_01-AppendOneType"
        ),
        pytest.param(
            "types-vehicle-car-fragment.json", "building-minimal-with-three-types.json", id="011_06_02-AppendTwoTypes"
        ),
        pytest.param(
            "type-building-fragment.json", "building-minimal-compacted.json", id="011_06_03-AppendExistingType"
        ),
        pytest.param(
            "type-vehicle-building-fragment.json",
            "building-minimal-with-two-types.json",
            id="011_06_04-AppendOneTypeAndOneExisting",
        ),
    ],
)
def test_011_06_update_types(api: Api, fragment: str, expectation: str) -> None:
    """Check that the types of an entity can be updated (appended).

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/UpdateEntityAttributes/011_06.robot
    """
    entity_id = _entity(api, "building-minimal.json", VEHICLE, JSON, SUITE_CONTEXT)
    response = api.update_attributes(entity_id, fragment, JSON_LD)
    check_status(response, 204)
    check_empty_body(response)
    body = api.retrieve_entity(entity_id, accept=JSON, context=SUITE_CONTEXT).json()
    check_resource(load("entities/expectations/" + expectation, entity_id), body)


def _null_case(api: Api, initial: str, expectation: str, update: str, attribute: str | None = None) -> None:
    entity_id = _entity(api, initial)
    if attribute is None:
        response = api.update_attributes(entity_id, update, JSON_LD)
    else:
        response = api.partial_update(entity_id, attribute, update, JSON_LD)
    check_status(response, 204)
    check_empty_body(response)
    body = api.retrieve_entity(entity_id, accept=JSON_LD, context=SUITE_CONTEXT).json()
    check_entity(expectation, entity_id, body)


@pytest.mark.parametrize(
    "kind", [pytest.param(k, id=f"011_07_0{i}-Delete{label}") for i, (k, label, _) in enumerate(NULL_KINDS, 1)]
)
def test_011_07_update_attributes_delete_with_null(api: Api, kind: str) -> None:
    """Delete an attribute using NGSI-LD Null in an Update Attributes operation.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/UpdateEntityAttributes/011_07.robot
    """
    _null_case(
        api,
        "building-different-attributes-types.jsonld",
        f"ngsild-null/building-deleted-{kind}.jsonld",
        f"ngsild-null/null-{kind}.jsonld",
    )


@pytest.mark.parametrize(
    "kind", [pytest.param(k, id=f"011_08_0{i}-Delete{label}Instance") for i, (k, label, _) in enumerate(NULL_KINDS, 1)]
)
def test_011_08_update_attributes_delete_instance_with_null(api: Api, kind: str) -> None:
    """Delete a specific attribute instance using NGSI-LD Null in an Update Attributes operation.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/UpdateEntityAttributes/011_08.robot
    """
    _null_case(
        api,
        "building-different-attributes-instances-and-types.jsonld",
        f"ngsild-null/building-deleted-{kind}-instance.jsonld",
        f"ngsild-null/null-{kind}-instance.jsonld",
    )


@pytest.mark.parametrize(
    "kind",
    [pytest.param(k, id=f"011_09_0{i}-Delete{label}DefaultInstance") for i, (k, label, _) in enumerate(NULL_KINDS, 1)],
)
def test_011_09_update_attributes_delete_default_instance_with_null(api: Api, kind: str) -> None:
    """Delete the default attribute instance using NGSI-LD Null in an Update Attributes operation.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/UpdateEntityAttributes/011_09.robot
    """
    _null_case(
        api,
        "building-different-default-attributes-instances-and-types.jsonld",
        f"ngsild-null/building-deleted-{kind}-default-instance.jsonld",
        f"ngsild-null/null-{kind}.jsonld",
    )


# --- PartialAttributeUpdate --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("initial", "fragment", "attribute", "expectation"),
    [
        pytest.param(
            "vehicle-speed-two-datasetid.jsonld",
            "vehicle-isparked-fragment.jsonld",
            "isParked",
            "vehicle-isparked-update.jsonld",
            id="012_01_01-PartialUpdate",
        ),
        pytest.param(
            "vehicle-speed-two-datasetid.jsonld",
            "vehicle-speed-equal-datasetid-fragment.jsonld",
            "speed",
            "vehicle-update-speed.jsonld",
            id="012_01_02-PartialUpdateWithDatasetId",
        ),
        pytest.param(
            "building-language-property-sub-property.jsonld",
            "building-language-property-fragment.jsonld",
            "street",
            "building-language-property-update.jsonld",
            id="012_04_01-LanguageProperty",
        ),
        pytest.param(
            "building-json-property-object-sub-property.jsonld",
            "building-json-property-fragment.jsonld",
            "jsonProperty",
            "building-json-property-update.jsonld",
            id="012_08_01-JsonProperty",
        ),
        pytest.param(
            "building-vocab-property-sub-property.jsonld",
            "building-vocab-property-fragment.jsonld",
            "vocabProperty",
            "building-vocab-property-update.jsonld",
            id="012_09_01-VocabProperty",
        ),
    ],
)
def test_012_01_partial_attribute_update(
    api: Api, initial: str, fragment: str, attribute: str, expectation: str
) -> None:
    """Check that one can partially update an attribute (also LanguageProperty, JsonProperty, VocabProperty).

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/PartialAttributeUpdate/012_01.robot,
    012_04.robot, 012_08.robot and 012_09.robot
    """
    entity_id = _entity(api, initial)
    response = api.partial_update(entity_id, attribute, fragment, JSON_LD)
    check_status(response, 204)
    check_empty_body(response)
    _expect(api, expectation, entity_id, ("@context",))


@pytest.mark.parametrize(
    ("entity_id", "fragment"),
    [
        pytest.param("", "vehicle-speed-equal-datasetid-fragment.jsonld", id="012_02_01-IdNotPresent"),
        pytest.param("thisisaninvaliduri", "vehicle-speed-equal-datasetid-fragment.jsonld", id="012_02_02-InvalidUri"),
        pytest.param(None, "vehicle-speed-equal-datasetid-different-type-fragment.jsonld", id="012_02_03-TypeMismatch"),
        pytest.param(None, "empty-fragment.json", id="012_02_04-EmptyFragment"),
    ],
)
def test_012_02_partial_attribute_update_invalid(api: Api, entity_id: str | None, fragment: str) -> None:
    """Check that one cannot partially update an attribute with invalid data.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/PartialAttributeUpdate/012_02.robot
    """
    valid_id = _entity(api, "vehicle-two-datasetid-attributes.jsonld")
    target = valid_id if entity_id is None else entity_id
    check_problem(api.partial_update(target, "speed", fragment, JSON_LD), 400, BAD_REQUEST_DATA)


@pytest.mark.parametrize(
    ("known_entity", "attribute", "fragment"),
    [
        pytest.param(False, "speed", "vehicle-isparked-fragment.jsonld", id="012_03_01-UnknownEntity"),
        pytest.param(True, "speed", "vehicle-speed-no-datasetid-fragment.jsonld", id="012_03_02-NoDefaultInstance"),
        pytest.param(True, "speed", "vehicle-speed-unknown-datasetid-fragment.jsonld", id="012_03_03-UnknownDatasetId"),
        pytest.param(True, "isParked2", "vehicle-isparked-fragment.jsonld", id="012_03_04-UnknownAttribute"),
    ],
)
def test_012_03_partial_attribute_update_not_found(api: Api, known_entity: bool, attribute: str, fragment: str) -> None:
    """Partial update of an unknown entity, attribute or instance is ResourceNotFound.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/PartialAttributeUpdate/012_03.robot
    """
    valid_id = _entity(api, "vehicle-speed-two-datasetid.jsonld")
    target = valid_id if known_entity else random_id(VEHICLE)
    check_problem(api.partial_update(target, attribute, fragment, JSON_LD), 404, RESOURCE_NOT_FOUND)


@pytest.mark.parametrize(
    ("kind", "attribute"),
    [pytest.param(k, a, id=f"012_05_0{i}-Delete{label}") for i, (k, label, a) in enumerate(NULL_KINDS, 1)],
)
def test_012_05_partial_update_delete_with_null(api: Api, kind: str, attribute: str) -> None:
    """Delete an attribute using NGSI-LD Null in a Partial Attribute Update operation.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/PartialAttributeUpdate/012_05.robot
    """
    _null_case(
        api,
        "building-different-attributes-types.jsonld",
        f"ngsild-null/building-deleted-{kind}.jsonld",
        f"ngsild-null/null-{kind}-fragment.jsonld",
        attribute,
    )


@pytest.mark.parametrize(
    ("kind", "attribute"),
    [pytest.param(k, a, id=f"012_06_0{i}-Delete{label}Instance") for i, (k, label, a) in enumerate(NULL_KINDS, 1)],
)
def test_012_06_partial_update_delete_instance_with_null(api: Api, kind: str, attribute: str) -> None:
    """Delete a specific attribute instance using NGSI-LD Null in a Partial Attribute Update.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/PartialAttributeUpdate/012_06.robot
    """
    _null_case(
        api,
        "building-different-attributes-instances-and-types.jsonld",
        f"ngsild-null/building-deleted-{kind}-instance.jsonld",
        f"ngsild-null/null-{kind}-instance-fragment.jsonld",
        attribute,
    )


@pytest.mark.parametrize(
    ("kind", "attribute"),
    [
        pytest.param(k, a, id=f"012_07_0{i}-Delete{label}DefaultInstance")
        for i, (k, label, a) in enumerate(NULL_KINDS, 1)
    ],
)
def test_012_07_partial_update_delete_default_instance_with_null(api: Api, kind: str, attribute: str) -> None:
    """Delete the default attribute instance using NGSI-LD Null in a Partial Attribute Update.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/PartialAttributeUpdate/012_07.robot
    """
    _null_case(
        api,
        "building-different-default-attributes-instances-and-types.jsonld",
        f"ngsild-null/building-deleted-{kind}-default-instance.jsonld",
        f"ngsild-null/null-{kind}-fragment.jsonld",
        attribute,
    )


def test_044_01_01_partial_update_with_merge_patch_json(api: Api) -> None:
    """PATCH requests accept application/merge-patch+json as Content-Type.

    TP/NGSI-LD/CommonBehaviours/CommonResponses/VerifyMergePatchJson/044_01.robot
    """
    entity_id = _entity(api, "vehicle-simple-attributes.jsonld")
    response = api.partial_update(
        entity_id, "brandName", "vehicle-brandname-fragment.json", MERGE_PATCH, None, SUITE_CONTEXT
    )
    check_status(response, 204)


# --- DeleteEntityAttribute ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset_id", "delete_all", "expectation"),
    [
        pytest.param("", "false", "vehicle-delete-default-speed.jsonld", id="013_01_01-DefaultInstance"),
        pytest.param(
            "urn:ngsi-ld:Dataset:gps", "false", "vehicle-delete-datasetid-speed.jsonld", id="013_01_02-DatasetId"
        ),
        pytest.param("", "true", "vehicle-delete-deleteall-speed.jsonld", id="013_01_03-DeleteAll"),
    ],
)
def test_013_01_delete_attribute(api: Api, dataset_id: str, delete_all: str, expectation: str) -> None:
    """Check that one can delete an attribute from an entity.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/DeleteEntityAttribute/013_01.robot
    """
    entity_id = _entity(api, "vehicle-speed-only-multi-instances.jsonld")
    response = api.delete_attribute(entity_id, "speed", dataset_id, delete_all, SUITE_CONTEXT)
    check_status(response, 204)
    check_empty_body(response)
    _expect(api, expectation, entity_id, ("@context",))


@pytest.mark.parametrize(
    ("entity_id", "attribute", "status"),
    [
        pytest.param("", "speed", 400, id="013_02_01-IdNotPresent"),
        pytest.param("thisIsAnInvalidURI", "speed", 400, id="013_02_02-InvalidUri"),
        pytest.param(None, "", 405, id="013_02_03-AttributeNameNotPresent"),
    ],
)
def test_013_02_delete_attribute_invalid_ids(api: Api, entity_id: str | None, attribute: str, status: int) -> None:
    """Check that one cannot delete an attribute with invalid or missing ids.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/DeleteEntityAttribute/013_02.robot
    """
    valid_id = _entity(api, "vehicle-two-datasetid-attributes.jsonld")
    target = valid_id if entity_id is None else entity_id
    check_status(api.delete_attribute(target, attribute, "", "false"), status)


@pytest.mark.parametrize(
    ("known_entity", "attribute", "dataset_id"),
    [
        pytest.param(False, "speed", "urn:ngsi-ld:Property:gpsBxyz123-speed", id="013_03_01-UnknownEntity"),
        pytest.param(True, "notFound", "", id="013_03_02-UnknownAttribute"),
        pytest.param(True, "speed", "urn:ngsi-ld:Property:notFound", id="013_03_03-UnknownDatasetId"),
    ],
)
def test_013_03_delete_attribute_not_found(api: Api, known_entity: bool, attribute: str, dataset_id: str) -> None:
    """Check that one cannot delete an unknown attribute or an attribute of an unknown entity.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/DeleteEntityAttribute/013_03.robot
    """
    valid_id = _entity(api, "vehicle-two-datasetid-attributes.jsonld")
    target = valid_id if known_entity else random_id(VEHICLE)
    check_status(api.delete_attribute(target, attribute, dataset_id, "false"), 404)


def test_013_04_delete_scope(api: Api) -> None:
    """Check that one can delete the scope of an entity.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/DeleteEntityAttribute/013_04.robot
    """
    entity_id = _entity(api, "building-minimal-with-one-scope.json", VEHICLE, JSON)
    response = api.delete_attribute(entity_id, "scope", "", "false")
    check_status(response, 204)
    check_empty_body(response)
    body = api.retrieve_entity(entity_id, accept=JSON).json()
    check_resource(load("entities/expectations/building-minimal-compacted.json", entity_id), body)


@pytest.mark.parametrize(
    ("filename", "attribute"),
    [
        pytest.param("building-observation-space-geoproperty.jsonld", "observationSpace", id="013_05-observationSpace"),
        pytest.param("building-operation-space-geoproperty.jsonld", "operationSpace", id="013_06-operationSpace"),
    ],
)
def test_013_05_06_delete_observation_operation_space(api: Api, filename: str, attribute: str) -> None:
    """Check that one can delete an observationSpace / operationSpace GeoProperty.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/DeleteEntityAttribute/013_05.robot and 013_06.robot
    """
    entity_id = _entity(api, filename, BUILDING)
    response = api.delete_attribute(entity_id, attribute, "", "false")
    check_status(response, 204)
    check_empty_body(response)
    body = api.retrieve_entity(entity_id, context=SUITE_CONTEXT).json()
    check_resource(load("entities/expectations/building-minimal-compacted.json", entity_id), body)


def test_013_07_01_delete_vocab_property(api: Api) -> None:
    """Check that one can delete a VocabProperty.

    TP/NGSI-LD/ContextInformation/Provision/EntityAttributes/DeleteEntityAttribute/013_07.robot
    """
    entity_id = _entity(api, "building-vocab-property-string.jsonld", BUILDING)
    check_status(api.delete_attribute(entity_id, "vocabProperty", "", "false"), 204)
    body = api.retrieve_entity(entity_id, accept=JSON).json()
    check_resource(load("entities/expectations/building-minimal.json", entity_id), body)
