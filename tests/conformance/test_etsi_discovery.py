"""ETSI NGSI-LD test suite, TP/NGSI-LD/ContextInformation/Consumption/Discovery (types and attributes)."""

from __future__ import annotations

import pytest
from _etsi import (
    BUILDING,
    ID,
    JSON,
    RESOURCE_NOT_FOUND,
    SUITE_CONTEXT,
    VEHICLE,
    Api,
    check_problem,
    check_resource,
    check_status,
    load,
    random_id,
)


def _create(api: Api, filename: str, prefix: str) -> None:
    """``Create Entity Selecting Content Type`` with application/json and the suite's Link header."""
    check_status(api.create_entity(filename, random_id(prefix), JSON, SUITE_CONTEXT), 201)


def _building_and_vehicle(api: Api) -> None:
    _create(api, "building-simple-attributes.json", BUILDING)
    _create(api, "vehicle-simple-attributes.json", VEHICLE)


@pytest.mark.parametrize(
    ("context", "expectation"),
    [
        pytest.param(None, "entity-type-list-022-01-01.json", id="022_01_01-WithoutJsonLdContext"),
        pytest.param(SUITE_CONTEXT, "entity-type-list-022-01-02.json", id="022_01_02-WithJsonLdContext"),
    ],
)
def test_022_01_retrieve_available_entity_types(api: Api, context: str | None, expectation: str) -> None:
    """Check that one can retrieve a list of NGSI-LD entity types.

    TP/NGSI-LD/ContextInformation/Consumption/Discovery/RetrieveAvailableEntityTypes/022_01.robot
    """
    _building_and_vehicle(api)
    response = api.retrieve_entity_types(context)
    check_status(response, 200)
    # Check Response Body Containing EntityTypeList element: the list's id is not compared.
    check_resource(load("types/expectations/" + expectation), response.json(), [ID])


@pytest.mark.parametrize(
    ("context", "expectation"),
    [
        pytest.param(None, "entity-type-023-01-01.json", id="023_01_01-WithoutJsonLdContext"),
        pytest.param(SUITE_CONTEXT, "entity-type-023-01-02.json", id="023_01_02-WithJsonLdContext"),
    ],
)
def test_023_01_retrieve_details_of_available_entity_types(api: Api, context: str | None, expectation: str) -> None:
    """Check that one can retrieve a list with a detailed representation of NGSI-LD entity types.

    TP/NGSI-LD/ContextInformation/Consumption/Discovery/RetrieveDetailsOfAvailableEntityTypes/023_01.robot
    """
    _building_and_vehicle(api)
    response = api.retrieve_entity_types(context, details="true")
    check_status(response, 200)
    check_resource(load("types/expectations/" + expectation), response.json())


def test_024_01_01_retrieve_entity_type_without_context(api: Api) -> None:
    """Check that one cannot retrieve a detailed representation of an unknown NGSI-LD entity type.

    The type is given as the term ``Building`` without the @context that defines it: it expands with
    the core context to another IRI, which no entity has.

    TP/NGSI-LD/ContextInformation/Consumption/Discovery/RetrieveAvailableEntityTypeInformation/024_01.robot
    """
    _create(api, "building-simple-attributes.json", BUILDING)
    _create(api, "building-simple-attributes.json", BUILDING)
    check_problem(api.retrieve_entity_type("Building"), 404, RESOURCE_NOT_FOUND)


@pytest.mark.parametrize(
    "type_name",
    [
        pytest.param("Building", id="024_02_01-WithCompactedType"),
        pytest.param("https%3A%2F%2Fngsi-ld-test-suite%2Fcontext%23Building", id="024_02_02-WithExpandedType"),
    ],
)
def test_024_02_retrieve_entity_type_information(api: Api, type_name: str) -> None:
    """Check that one can retrieve a detailed representation of a specified NGSI-LD entity type.

    TP/NGSI-LD/ContextInformation/Consumption/Discovery/RetrieveAvailableEntityTypeInformation/024_02.robot
    """
    _create(api, "building-simple-attributes.json", BUILDING)
    _create(api, "building-simple-attributes.json", BUILDING)
    response = api.retrieve_entity_type(type_name, SUITE_CONTEXT)
    check_status(response, 200)
    check_resource(load("types/expectations/entity-type-info-024-01.json"), response.json())


@pytest.mark.parametrize(
    ("context", "expectation"),
    [
        pytest.param(None, "attribute-list-025-01-01.json", id="025_01_01-WithoutJsonLdContext"),
        pytest.param(SUITE_CONTEXT, "attribute-list-025-01-02.json", id="025_01_02-WithJsonLdContext"),
    ],
)
def test_025_01_retrieve_available_attributes(api: Api, context: str | None, expectation: str) -> None:
    """Check that one can retrieve a list of NGSI-LD attributes.

    TP/NGSI-LD/ContextInformation/Consumption/Discovery/RetrieveAvailableAttributes/025_01.robot
    """
    _create(api, "building-simple-attributes.json", BUILDING)
    response = api.retrieve_attributes(context)
    check_status(response, 200)
    # Check Response Body Containing AttributeList element: the list's id is not compared.
    check_resource(load("types/expectations/" + expectation), response.json(), [ID])


@pytest.mark.parametrize(
    ("context", "expectation"),
    [
        pytest.param(None, "attribute-026-01-01.json", id="026_01_01-WithoutJsonLdContext"),
        pytest.param(SUITE_CONTEXT, "attribute-026-01-02.json", id="026_01_02-WithJsonLdContext"),
    ],
)
def test_026_01_retrieve_details_of_available_attributes(api: Api, context: str | None, expectation: str) -> None:
    """Check that one can retrieve a list with a detailed representation of NGSI-LD attributes.

    TP/NGSI-LD/ContextInformation/Consumption/Discovery/RetrieveDetailsOfAvailableAttributes/026_01.robot
    """
    _create(api, "building-simple-attributes.json", BUILDING)
    response = api.retrieve_attributes(context, details="true")
    check_status(response, 200)
    check_resource(load("types/expectations/" + expectation), response.json())


def test_027_01_01_retrieve_attribute_without_context(api: Api) -> None:
    """Check that one cannot retrieve a detailed representation of an unknown NGSI-LD attribute.

    TP/NGSI-LD/ContextInformation/Consumption/Discovery/RetrieveAvailableAttributeInformation/027_01.robot
    """
    _create(api, "building-simple-attributes.json", BUILDING)
    check_problem(api.retrieve_attribute("airQualityLevel"), 404, RESOURCE_NOT_FOUND)


@pytest.mark.parametrize(
    "attribute_name",
    [
        pytest.param("airQualityLevel", id="027_02_01-WithCompactedAttributeName"),
        pytest.param("https%3A%2F%2Fngsi-ld-test-suite%2Fcontext%23airQualityLevel", id="027_02_02-WithExpandedName"),
    ],
)
def test_027_02_retrieve_attribute_information(api: Api, attribute_name: str) -> None:
    """Check that one can retrieve a detailed representation of a specified NGSI-LD attribute.

    TP/NGSI-LD/ContextInformation/Consumption/Discovery/RetrieveAvailableAttributeInformation/027_02.robot
    """
    _create(api, "building-simple-attributes.json", BUILDING)
    response = api.retrieve_attribute(attribute_name, SUITE_CONTEXT)
    check_status(response, 200)
    check_resource(load("types/expectations/attribute-027-01.json"), response.json())
