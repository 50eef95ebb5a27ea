"""ETSI NGSI-LD test suite, TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity."""

from __future__ import annotations

import pytest
from _etsi import (
    BAD_REQUEST_DATA,
    BUILDING,
    GEO_JSON,
    INVALID_REQUEST,
    JSON,
    JSON_LD,
    RESOURCE_NOT_FOUND,
    SUITE,
    SUITE_CONTEXT,
    Api,
    check_entity,
    check_problem,
    check_status,
    random_id,
)


def _building(api: Api, filename: str = "building-simple-attributes.jsonld", content_type: str = JSON_LD) -> str:
    entity_id = random_id(BUILDING)
    context = SUITE_CONTEXT if content_type == JSON else None
    check_status(api.create_entity(filename, entity_id, content_type, context), 201)
    return entity_id


def test_018_01_01_get_entity_by_id(api: Api) -> None:
    """Check that one can get an entity by id.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_01_01.robot
    """
    entity_id = _building(api)
    response = api.retrieve_entity(entity_id, accept=JSON_LD)
    check_status(response, 200)
    check_entity("building-simple-attributes.jsonld", entity_id, response.json(), ignore_core_context_version=True)


def test_018_01_02_query_some_attributes_from_entity(api: Api) -> None:
    """Check that one can query some attributes from an entity.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_01_02.robot
    """
    entity_id = _building(api)
    attrs = f"{SUITE}airQualityLevel,{SUITE}subCategory"
    response = api.retrieve_entity(entity_id, accept=JSON_LD, attrs=attrs)
    check_status(response, 200)
    check_entity(
        "building-simple-attributes-query.jsonld", entity_id, response.json(), ignore_core_context_version=True
    )


def test_018_02_01_get_entity_invalid_uri(api: Api) -> None:
    """Check that one cannot get an entity whose id is not a valid URI.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_02.robot
    """
    check_problem(api.retrieve_entity("thisisaninvaliduri", accept=JSON_LD), 400, BAD_REQUEST_DATA)


def test_018_03_01_get_unknown_entity(api: Api) -> None:
    """Check that one cannot get an entity not known to the system.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_03_01.robot
    """
    check_problem(api.retrieve_entity(random_id(BUILDING), accept=JSON_LD), 404, RESOURCE_NOT_FOUND)


def test_018_03_02_get_entity_unknown_attribute(api: Api) -> None:
    """Check that one cannot get an entity if an attribute is not known to the system.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_03_02.robot
    """
    entity_id = _building(api)
    response = api.retrieve_entity(entity_id, accept=JSON_LD, attrs="property_not_found")
    check_problem(response, 404, RESOURCE_NOT_FOUND)


def test_018_04_01_get_entity_simplified(api: Api) -> None:
    """Check that the entity can be returned in a simplified representation.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_04.robot
    """
    entity_id = _building(api)
    response = api.retrieve_entity(entity_id, accept=JSON_LD, options="keyValues")
    check_status(response, 200)
    check_entity(
        "building-simple-attributes-simplified.jsonld", entity_id, response.json(), ignore_core_context_version=True
    )


@pytest.mark.parametrize(
    ("options", "geometry_property", "expectation"),
    [
        pytest.param(
            "keyValues", None, "building-two-geometry-attribute-simplified.geojson", id="018_05_01-Simplified"
        ),
        pytest.param(None, None, "building-two-geometry-attribute-normalized.geojson", id="018_05_02-Normalized"),
        pytest.param(
            None,
            "observationSpace",
            "building-two-geometry-property-on-observation-space.geojson",
            id="018_05_03-WithGeometryProperty",
        ),
        pytest.param(
            None,
            "operationSpace",
            "building-two-geometry-property-on-nonexistent-operation-space.geojson",
            id="018_05_04-WithNonexistentGeometryProperty",
        ),
    ],
)
def test_018_05_get_entity_geojson(
    api: Api, options: str | None, geometry_property: str | None, expectation: str
) -> None:
    """Check that the entity can be returned in GeoJSON.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_05.robot
    """
    entity_id = _building(api, "building-two-geometry-attributes.jsonld")
    response = api.retrieve_entity(
        entity_id, accept=GEO_JSON, context=SUITE_CONTEXT, options=options, geometryProperty=geometry_property
    )
    check_status(response, 200)
    check_entity(expectation, entity_id, response.json())


@pytest.mark.parametrize(
    ("context", "expectation"),
    [
        pytest.param(None, "building-simple-attributes-expanded.json", id="018_06_01-EmptyJsonLdContext"),
        pytest.param(
            SUITE_CONTEXT, "building-simple-attributes-compacted.json", id="018_06_02-CreationTimeJsonLdContext"
        ),
    ],
)
def test_018_06_get_entity_context_resolution(api: Api, context: str | None, expectation: str) -> None:
    """@context from the Link header if present, the default @context otherwise.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_06.robot
    """
    entity_id = _building(api, "building-simple-attributes.json", JSON)
    response = api.retrieve_entity(entity_id, accept=JSON, context=context)
    check_status(response, 200)
    check_entity(expectation, entity_id, response.json())


@pytest.mark.parametrize(
    ("lang", "options", "expectation"),
    [
        pytest.param("fr", None, "building-language-property-fr-filter.jsonld", id="018_07_01-SpecificLanguage"),
        pytest.param("fr-CH,fr", None, "building-language-property-fr-filter.jsonld", id="018_07_02-NoRanking"),
        pytest.param("*", None, "building-language-property-any-language-filter.jsonld", id="018_07_03-AnyLanguage"),
        pytest.param(
            "fr-CH,fr;q=0.9,en;q=0.8,*;q=0.5",
            None,
            "building-language-property-fr-filter.jsonld",
            id="018_07_04-RankedPreferences",
        ),
        pytest.param(
            "fr", "keyValues", "building-language-property-fr-filter-simplified.jsonld", id="018_07_05-Simplified"
        ),
        pytest.param(
            "*",
            "keyValues",
            "building-language-property-any-language-filter-simplified.jsonld",
            id="018_07_06-AnyLanguageSimplified",
        ),
    ],
)
def test_018_07_get_entity_language_filter(api: Api, lang: str, options: str | None, expectation: str) -> None:
    """Check that one can retrieve an entity using a language filter.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_07.robot
    """
    entity_id = _building(api, "building-language-property.jsonld")
    response = api.retrieve_entity(entity_id, accept=JSON_LD, context=SUITE_CONTEXT, options=options, lang=lang)
    check_status(response, 200)
    check_entity(expectation, entity_id, response.json())


@pytest.mark.parametrize(
    ("filename", "options", "expectation"),
    [
        pytest.param(
            "building-observation-space-geoproperty.jsonld",
            "keyValues",
            "building-observation-space-geoproperty-simplified.jsonld",
            id="018_08_01-Simplified",
        ),
        pytest.param(
            "building-observation-space-geoproperty.jsonld",
            None,
            "building-observation-space-geoproperty-normalized.jsonld",
            id="018_08_02-Normalized",
        ),
        pytest.param(
            "building-operation-space-geoproperty.jsonld",
            "keyValues",
            "building-operation-space-geoproperty-simplified.jsonld",
            id="018_09_01-Simplified",
        ),
        pytest.param(
            "building-operation-space-geoproperty.jsonld",
            None,
            "building-operation-space-geoproperty-normalized.jsonld",
            id="018_09_02-Normalized",
        ),
    ],
)
def test_018_08_09_get_entity_with_observation_operation_space(
    api: Api, filename: str, options: str | None, expectation: str
) -> None:
    """Check that an entity with an observationSpace / operationSpace GeoProperty can be retrieved.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_08.robot and 018_09.robot
    """
    entity_id = _building(api, filename)
    response = api.retrieve_entity(entity_id, context=SUITE_CONTEXT, options=options)
    check_status(response, 200)
    check_entity(expectation, entity_id, response.json())


SIMPLIFIED = "building-simple-attributes-simplified.jsonld"
NORMALIZED = "building-simple-attributes.jsonld"


@pytest.mark.parametrize(
    ("format_value", "options", "expectation"),
    [
        pytest.param("keyValues", None, SIMPLIFIED, id="018_15_01-KeyValuesFormat"),
        pytest.param("simplified", None, SIMPLIFIED, id="018_15_02-SimplifiedFormat"),
        pytest.param("normalized", None, NORMALIZED, id="018_15_03-NormalizedFormat"),
        pytest.param(None, "keyValues", SIMPLIFIED, id="018_15_04-KeyValuesOptions"),
        pytest.param(None, "simplified", SIMPLIFIED, id="018_15_05-SimplifiedOptions"),
        pytest.param(None, "normalized", NORMALIZED, id="018_15_06-NormalizedOptions"),
        pytest.param("keyValues", "normalized", SIMPLIFIED, id="018_15_07-FormatAndOptions"),
    ],
)
def test_018_15_get_entity_format_or_options(
    api: Api, format_value: str | None, options: str | None, expectation: str
) -> None:
    """Check that one can retrieve an entity with format or options query params.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_15.robot
    """
    entity_id = _building(api)
    response = api.retrieve_entity(entity_id, accept=JSON_LD, format=format_value, options=options)
    check_status(response, 200)
    check_entity(expectation, entity_id, response.json(), ignore_core_context_version=True)


@pytest.mark.parametrize(
    ("format_value", "options"),
    [
        pytest.param("invalidFormat", None, id="018_16_01-InvalidFormat"),
        pytest.param(None, "invalidOptions", id="018_16_02-InvalidOptions"),
        pytest.param(None, "keyValues,invalid", id="018_16_03-AtLeastOneInvalidOption"),
        pytest.param("keyValues", "invalid", id="018_16_04-OneInvalidQueryParam"),
    ],
)
def test_018_16_get_entity_faulty_format_or_options(api: Api, format_value: str | None, options: str | None) -> None:
    """Retrieve Entity with a faulty format or options value is an InvalidRequest.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_16.robot
    """
    response = api.retrieve_entity(random_id(BUILDING), accept=JSON_LD, format=format_value, options=options)
    check_status(response, 400)
    assert response.json()["type"] == INVALID_REQUEST


@pytest.mark.parametrize(
    ("pick", "omit", "expectation"),
    [
        pytest.param(
            "name", None, "pick-omit/building-simple-attributes-pick-name.json", id="018_17_01-PickAttributes"
        ),
        pytest.param(
            None, "name", "pick-omit/building-simple-attributes-omit-name.json", id="018_17_02-OmitAttributes"
        ),
        pytest.param("id", None, "pick-omit/building-simple-attributes-pick-id.json", id="018_17_03-PickCoreMembers"),
        pytest.param(None, "id", "pick-omit/building-simple-attributes-omit-id.json", id="018_17_04-OmitCoreMembers"),
        pytest.param(
            "id,name", None, "pick-omit/building-simple-attributes-pick-id-name.json", id="018_17_05-PickBoth"
        ),
        pytest.param(
            None, "type,name", "pick-omit/building-simple-attributes-omit-type-name.json", id="018_17_06-OmitBoth"
        ),
    ],
)
def test_018_17_get_entity_pick_omit(api: Api, pick: str | None, omit: str | None, expectation: str) -> None:
    """Check that one can retrieve an entity with pick and omit query params.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_17.robot
    """
    entity_id = _building(api)
    response = api.retrieve_entity(entity_id, accept=JSON, context=SUITE_CONTEXT, pick=pick, omit=omit)
    check_status(response, 200)
    check_entity(expectation, entity_id, response.json(), ignore_core_context_version=True)


PICK_OMIT_ERRORS = [
    pytest.param("name", "name", None, id="SameEntityMemberInPickAndOmit"),
    pytest.param("name", None, "category", id="PickAndAttrs"),
    pytest.param(None, "name", "category", id="OmitAndAttrs"),
    pytest.param("id;name", None, None, id="InvalidCharacter"),
    pytest.param("id,locatedAt{name", None, None, id="UnclosedBrace"),
    pytest.param("id,locatedAt{{name}", None, None, id="DoubleBraces"),
    pytest.param("id,,name", None, None, id="ConsecutiveSeparators"),
    pytest.param("id,locatedAt{,name}", None, None, id="ExpressionStartingWithSpecialCharacter"),
    pytest.param("id,locatedAt{}", None, None, id="ExpressionContainingNoAttribute"),
]


@pytest.mark.parametrize(
    ("pick", "omit", "attrs"),
    [pytest.param(*p.values, id=f"018_18_0{i}-{p.id}") for i, p in enumerate(PICK_OMIT_ERRORS, 1)],
)
def test_018_18_get_entity_invalid_pick_omit(api: Api, pick: str | None, omit: str | None, attrs: str | None) -> None:
    """BadRequestData if the request is invalid with respect to pick and omit.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_18.robot
    """
    entity_id = _building(api)
    response = api.retrieve_entity(entity_id, accept=JSON, context=SUITE_CONTEXT, attrs=attrs, pick=pick, omit=omit)
    check_problem(response, 400, BAD_REQUEST_DATA)


@pytest.mark.parametrize(
    ("pick", "omit"),
    [
        pytest.param("unknown", None, id="018_19_01-UnmatchedPick"),
        pytest.param(None, "id,type,name,subCategory,airQualityLevel,almostFull", id="018_19_02-FullExcludingOmit"),
    ],
)
def test_018_19_get_entity_nothing_left(api: Api, pick: str | None, omit: str | None) -> None:
    """ResourceNotFound if the entity has no member left after pick / omit.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/RetrieveEntity/018_19.robot
    """
    entity_id = _building(api)
    response = api.retrieve_entity(entity_id, accept=JSON, context=SUITE_CONTEXT, pick=pick, omit=omit)
    check_problem(response, 404, RESOURCE_NOT_FOUND)
