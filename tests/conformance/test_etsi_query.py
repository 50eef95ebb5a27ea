"""ETSI NGSI-LD test suite, TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities.

Each robot file's ``Suite Setup`` (the entities it creates) is done by each of its test cases: the
``client`` fixture starts every test from an empty broker.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from _etsi import (
    BAD_REQUEST_DATA,
    BUILDING,
    GEO_JSON,
    JSON,
    JSON_LD,
    PARKING,
    SUITE,
    SUITE_CONTEXT,
    VEHICLE,
    Api,
    check_entities,
    check_entities_count,
    check_entities_with_types,
    check_entity,
    check_ids,
    check_problem,
    check_resource,
    check_status,
    load,
    random_id,
)

BUILDING_TYPE = SUITE + "Building"
VEHICLE_TYPE = SUITE + "Vehicle"
PARKING_TYPE = SUITE + "OffStreetParking"


def _create(api: Api, filename: str, entity_id: str, content_type: str = JSON_LD, context: str | None = None) -> str:
    check_status(api.create_entity(filename, entity_id, content_type, context), 201)
    return entity_id


def _buildings(api: Api, filename: str, count: int) -> list[str]:
    return [_create(api, filename, random_id(BUILDING)) for _ in range(count)]


def check_count(response: httpx.Response, expected: int) -> None:
    """``Check Response Headers Containing NGSILD-Results-Count Equals To``."""
    assert response.headers.get("NGSILD-Results-Count") == str(expected), response.headers


def check_alternatives(body: Any, alternatives: list[str]) -> None:
    """``Check Body With Alternatives``: the body equals one of the expectation files."""
    failures = []
    for filename in alternatives:
        try:
            check_resource(load("entities/expectations/" + filename), body)
            return
        except AssertionError as err:
            failures.append(str(err))
    raise AssertionError("\n\n".join(failures))


# --- 019_01: query entities (GET) ---------------------------------------------------------------


def test_019_01_01_query_several_entities_based_on_ids(api: Api) -> None:
    """Check that one can query several entities based on ids.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_01_01.robot
    """
    first, second, _third = _buildings(api, "building-minimal.jsonld", 3)
    response = api.query_entities(id=f"{first},{second}", type=BUILDING_TYPE)
    check_status(response, 200)
    check_entities("building-minimal.json", [first, second], response.json())
    assert len(response.json()) == 2


def test_019_01_02_query_several_entities_based_on_types(api: Api) -> None:
    """Check that one can query several entities based on the entities types.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_01_02.robot
    """
    _create(api, "building-minimal.jsonld", random_id(BUILDING))
    vehicle = _create(api, "vehicle-simple-attributes.jsonld", random_id(VEHICLE))
    parking = _create(api, "parking-simple-attributes.jsonld", random_id(PARKING))
    response = api.query_entities(accept=JSON_LD, type=f"{VEHICLE_TYPE},{PARKING_TYPE}")
    check_status(response, 200)
    check_entities_with_types(
        "two-types-vehicle-offstreetparking.jsonld",
        [vehicle, parking],
        response.json(),
        ignore_core_context_version=True,
    )


def test_019_01_03_query_several_entities_based_on_id_pattern(api: Api) -> None:
    """Check that one can query several entities based on the given id pattern.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_01_03.robot
    """
    first, second = _buildings(api, "building-minimal.jsonld", 2)
    response = api.query_entities(idPattern="urn:ngsi-ld:Building:.*", type=BUILDING_TYPE)
    check_status(response, 200)
    check_entities("building-minimal.json", [second, first], response.json())


def test_019_01_04_query_several_entities_based_on_attribute_names(api: Api) -> None:
    """Check that one can query several entities based on attribute names.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_01_04.robot
    """
    first = _create(api, "building-simple-attributes.jsonld", random_id(BUILDING))
    _create(api, "building-minimal.jsonld", random_id(BUILDING))
    response = api.query_entities(attrs=f"{SUITE}airQualityLevel,{SUITE}subCategory")
    check_status(response, 200)
    check_entities("building-attributes-query.json", [first], response.json())
    assert len(response.json()) == 1  # the minimal building has none of the attributes


def test_019_01_05_query_several_entities_based_on_geoquery(api: Api) -> None:
    """Check that one can query entities based on a geoquery.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_01_05.robot
    """
    first, second = _buildings(api, "building-location-attribute.jsonld", 2)
    response = api.query_entities(
        accept=JSON_LD, type=BUILDING_TYPE, georel="equals", geometry="Point", coordinates="[13.3986, 52.5547]"
    )
    check_status(response, 200)
    check_entities(
        "building-geoproperty-query.jsonld", [first, second], response.json(), ignore_core_context_version=True
    )


@pytest.mark.parametrize(
    ("scope_q", "expected_count"),
    [
        pytest.param("/Madrid/Gardens/ParqueNorte", 2, id="019_01_06-QueryWithFullScope"),
        pytest.param("/Madrid/+/ParqueNorte", 2, id="019_01_06-QueryWithPlusMatching"),
        pytest.param("/CompanyA/#", 1, id="019_01_06-QueryWithHashMatching"),
        pytest.param("/#", 2, id="019_01_06-QueryNonEmptyScope"),
        pytest.param("/Madrid/Gardens/ParqueNorte;/CompanyA/OrganizationB/UnitC", 1, id="019_01_06-QueryWithAndScope"),
        pytest.param("/Madrid/Gardens/ParqueNorte,/CompanyA/OrganizationB/UnitC", 2, id="019_01_06-QueryWithOrScope"),
    ],
)
def test_019_01_06_query_several_entities_based_on_scopes(api: Api, scope_q: str, expected_count: int) -> None:
    """Check that one can query several entities based on scopes.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_01_06.robot
    """
    _create(api, "building-minimal-with-one-scope.json", random_id(BUILDING), JSON, SUITE_CONTEXT)
    _create(api, "building-minimal-with-many-scopes.json", random_id(BUILDING), JSON, SUITE_CONTEXT)
    response = api.query_entities(scopeQ=scope_q, type=BUILDING_TYPE)
    check_status(response, 200)
    check_entities_count(BUILDING_TYPE, expected_count, response.json())


# --- 019_02: query entities via POST -------------------------------------------------------------


def test_019_02_01_query_one_entity_via_post_based_on_id(api: Api) -> None:
    """Check that one can query one entity via POST Interaction based on id.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_02_01.robot
    """
    first, _second, _third = _buildings(api, "building-minimal.jsonld", 3)
    response = api.query_entities_post([{"id": first, "type": BUILDING_TYPE}])
    check_status(response, 200)
    check_entities("building-minimal.json", [first], response.json())
    assert len(response.json()) == 1


def test_019_02_02_query_several_entities_via_post_based_on_types(api: Api) -> None:
    """Check that one can query several entities via POST Interaction based on the entity type.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_02_02.robot
    """
    _create(api, "building-minimal.jsonld", random_id(BUILDING))
    first = _create(api, "vehicle-simple-attributes.jsonld", random_id(VEHICLE))
    second = _create(api, "vehicle-simple-attributes.jsonld", random_id(VEHICLE))
    response = api.query_entities_post([{"type": VEHICLE_TYPE}], accept=JSON_LD)
    check_status(response, 200)
    check_entities_with_types("two-vehicles.jsonld", [first, second], response.json(), ignore_core_context_version=True)


def test_019_02_03_query_several_entities_via_post_based_on_id_pattern(api: Api) -> None:
    """Check that one can query several entities via POST Interaction based on the given id pattern.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_02_03.robot
    """
    first, second = _buildings(api, "building-minimal.jsonld", 2)
    response = api.query_entities_post([{"idPattern": "urn:ngsi-ld:Building:.*", "type": BUILDING_TYPE}])
    check_status(response, 200)
    check_entities("building-minimal.json", [first, second], response.json())


def test_019_02_04_query_several_entities_via_post_based_on_attribute_names(api: Api) -> None:
    """Check that one can query several entities via POST Interaction based on attribute names.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_02_04.robot
    """
    _create(api, "building-minimal.jsonld", random_id(BUILDING))
    vehicle = _create(api, "vehicle-simple-attributes.jsonld", random_id(VEHICLE))
    attrs = [SUITE + "brandName", "https://uri.etsi.org/ngsi-ld/default-context/isParked"]
    response = api.query_entities_post(attrs=attrs)
    check_status(response, 200)
    check_entities("vehicle-simple-attributes-core-context.json", [vehicle], response.json())


def test_019_02_06_query_two_entities_via_post_based_on_ids(api: Api) -> None:
    """Check that one can query two entities via POST Interaction based on ids.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_02_06.robot
    """
    first, second, _third = _buildings(api, "building-minimal.jsonld", 3)
    response = api.query_entities_post([{"id": first, "type": BUILDING_TYPE}, {"id": second, "type": BUILDING_TYPE}])
    check_status(response, 200)
    check_entities("building-minimal.json", [first, second], response.json())
    assert len(response.json()) == 2


# --- 019_03: invalid queries ---------------------------------------------------------------------


def test_019_03_01_query_entities_based_on_incorrect_ids(api: Api) -> None:
    """Check that one cannot query entities if the requested ids are incorrect.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_03_01.robot
    """
    _buildings(api, "building-minimal.jsonld", 2)
    response = api.query_entities(id="thisisaninvaliduri1,thisisaninvaliduri2", type=BUILDING_TYPE)
    check_problem(response, 400, BAD_REQUEST_DATA)


def test_019_03_02_query_entities_based_on_incorrect_id_pattern(api: Api) -> None:
    """Check that one cannot query entities if the requested id pattern is incorrect.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_03_02.robot
    """
    _buildings(api, "building-minimal.jsonld", 2)
    response = api.query_entities(idPattern="invalid_entity_id_pattern**", type=BUILDING_TYPE)
    check_problem(response, 400, BAD_REQUEST_DATA)


def test_019_03_03_query_entities_based_on_incorrect_attribute_names(api: Api) -> None:
    """Check that one cannot query entities if the requested attribute names are incorrect.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_03_03.robot
    """
    _buildings(api, "building-minimal.jsonld", 2)
    check_problem(api.query_entities(attrs="id,type"), 400, BAD_REQUEST_DATA)


def test_019_03_04_query_entities_with_wrong_georel(api: Api) -> None:
    """Check that one cannot query entities if the request has a wrong geometryProperty (georel).

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_03_04.robot
    """
    _buildings(api, "building-location-attribute.jsonld", 2)
    response = api.query_entities(
        context=SUITE_CONTEXT,
        type="Building",
        geoproperty="location",
        georel="invalid",
        geometry="Point",
        coordinates="[-8.503,41.202]",
    )
    check_problem(response, 400, BAD_REQUEST_DATA)


def test_019_03_05_query_entities_without_minimal_parameters(api: Api) -> None:
    """Check that one cannot query entities if it has none of the minimal parameters.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_03_05.robot
    """
    response = api.query_entities(id="urn:ngsi-ld:Entity:01,urn:ngsi-ld:Entity:02")
    check_problem(response, 400, BAD_REQUEST_DATA)


# --- 019_04 .. 019_07: representations, limit, count ---------------------------------------------


def test_019_04_01_query_entities_in_simplified_representation(api: Api) -> None:
    """Check that the queried entities by Id can be returned in a simplified representation.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_04.robot
    """
    first, second, _third = _buildings(api, "building-simple-attributes.jsonld", 3)
    response = api.query_entities(id=f"{first},{second}", type=BUILDING_TYPE, options="keyValues")
    check_status(response, 200)
    check_entities("building-simple-attributes-simplified.json", [first, second], response.json())


def test_019_05_01_query_entities_in_geojson(api: Api) -> None:
    """Check that the queried entities by id can be returned in GeoJSON format.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_05.robot
    """
    first = _create(api, "building-location-attribute.jsonld", BUILDING + "019-05-01")
    second = _create(api, "building-location-attribute.jsonld", BUILDING + "019-05-02")
    response = api.query_entities(accept=GEO_JSON, context=SUITE_CONTEXT, id=f"{first},{second}", type=BUILDING_TYPE)
    check_status(response, 200)
    check_alternatives(
        response.json(),
        [
            "two-buildings-location-attribute-normalized-019-05.geojson",
            "two-buildings-location-attribute-normalized-019-05.alternative.geojson",
            "two-buildings-location-attribute-normalized-019-05.alternative2.geojson",
        ],
    )


def test_019_06_01_query_entities_with_maximum_number_of_results(api: Api) -> None:
    """Check that one can query entities specifying a maximum number of results.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_06.robot
    """
    ids = _buildings(api, "building-minimal.jsonld", 3)
    response = api.query_entities(id=",".join(ids), type=BUILDING_TYPE, limit="2")
    check_status(response, 200)
    check_entities_count(BUILDING_TYPE, 2, response.json())


@pytest.mark.parametrize(
    ("q", "expected_count"),
    [
        pytest.param(None, 2, id="019_07_01-OnlyEntityType"),
        pytest.param("airQualityLevel==6", 1, id="019_07_02-WithQ"),
    ],
)
def test_019_07_query_entities_with_count(api: Api, q: str | None, expected_count: int) -> None:
    """Check that NGSILD-Results-Count holds the total number of matching results when count=true.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_07.robot
    """
    _create(api, "building-simple-attributes.jsonld", random_id(BUILDING))
    _create(api, "building-simple-attributes-second.jsonld", random_id(BUILDING))
    response = api.query_entities(context=SUITE_CONTEXT, type="Building", q=q, count="true")
    check_status(response, 200)
    check_count(response, expected_count)


# --- 019_08: entity type selection language ------------------------------------------------------


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        pytest.param("Building", [0, 2], id="019_08_01-QueryWithOneType"),
        pytest.param("(Building;TouristDestination)", [2], id="019_08_02-QueryWithTheAndOperator"),
        pytest.param("Building,Parking", [0, 1, 2], id="019_08_03-QueryWithTheOrOperator"),
        pytest.param("Parking,TouristDestination", [1, 2], id="019_08_04-DifferentQueryWithTheOrOperator"),
        pytest.param("(Building;Parking),TouristDestination", [2], id="019_08_05-QueryWithTwoOperators"),
    ],
)
def test_019_08_query_with_entity_type_selection_language(api: Api, types: str, expected: list[int]) -> None:
    """Query entities with the Entity Type Selection Language.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_08.robot
    """
    prefix = "urn:ngsi-ld:MultiTypes:"
    ids = [
        _create(api, "building-simple-attributes.jsonld", random_id(prefix)),
        _create(api, "building-with-different-type.jsonld", random_id(prefix)),
        _create(api, "building-with-two-types.jsonld", random_id(prefix)),
    ]
    response = api.query_entities(context=SUITE_CONTEXT, type=types)
    check_status(response, 200)
    check_ids([ids[i] for i in expected], response.json())


# --- 019_09: q ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "expected_count"),
    [
        pytest.param('name=="Eiffel Tower"', 1, id="019_09_01-QueryOnName"),
        pytest.param('name=="Pisa Tower";almostFull==false', 1, id="019_09_02-QueryOnNameAndAlmostFullFalse"),
        pytest.param('name=="Pisa Tower";almostFull==false', 1, id="019_09_03-QueryOnNameAndAlmostFullFalse"),
        pytest.param('name=="Pisa Tower"|almostFull==false', 3, id="019_09_04-QueryOnNameOrAlmostFullFalse"),
        pytest.param(
            '(name=="Pisa Tower"|name=="Eiffel Tower");almostFull==false', 2, id="019_09_05-QueryOnNamesAndAlmostFull"
        ),
        pytest.param("airQualityLevel==4", 1, id="019_09_06-QueryOnAirQualityLevel"),
        pytest.param("airQualityLevel>=4;airQualityLevel<7", 2, id="019_09_07-QueryOnAirQualityLevelRange"),
        pytest.param("locatedIn==urn:ngsi-ld:City:Pisa", 1, id="019_09_08-QueryOnLocatedInExisting"),
        pytest.param("locatedIn==urn:ngsi-ld:City:Paris", 0, id="019_09_09-QueryOnLocatedInNonExisting"),
        pytest.param(
            "locatedIn==urn:ngsi-ld:City:Pisa|locatedIn==urn:ngsi-ld:City:Paris",
            1,
            id="019_09_10-QueryOnLocatedInTwoCities",
        ),
    ],
)
def test_019_09_query_several_entities_based_on_q(api: Api, q: str, expected_count: int) -> None:
    """Check that one can query several entities based on q.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_09.robot
    """
    _create(api, "building-simple-attributes.jsonld", random_id(BUILDING))
    _create(api, "building-simple-attributes-second.jsonld", random_id(BUILDING))
    _create(api, "building-simple-attributes-third.jsonld", random_id(BUILDING))
    response = api.query_entities(context=SUITE_CONTEXT, q=q, count="true")
    check_status(response, 200)
    check_count(response, expected_count)


# --- 019_10, 019_11: geo-queries ------------------------------------------------------------------

BERLIN = (
    "[[[13.1616211,52.5438124],[13.597641,52.4840224],[13.5948944,52.3402782],[13.142395,52.386428],"
    "[13.1616211,52.5438124]]]"
)


@pytest.mark.parametrize(
    ("georel", "geometry", "coordinates", "expected_count"),
    [
        pytest.param("equals", "Point", "[13.3986, 52.5547]", 1, id="019_10_01-QueryOnEqualsPoint"),
        pytest.param("near;maxDistance==15000", "Point", "[13.388930, 52.534473]", 2, id="019_10_02-MaxDistance"),
        pytest.param("near;minDistance==15000", "Point", "[13.388930, 52.534473]", 1, id="019_10_03-MinDistance"),
        pytest.param("within", "Polygon", BERLIN, 2, id="019_10_04-QueryOnWithinPolygon"),
        pytest.param("disjoint", "Polygon", BERLIN, 1, id="019_10_05-QueryOnDisjointPolygon"),
        pytest.param("disjoint", "Point", "[13.3986, 52.5547]", 2, id="019_10_06-QueryOnDisjointPoint"),
        pytest.param("contains", "Point", "[13.3986, 52.5547]", 1, id="019_10_07-QueryOnContainsPoint"),
        pytest.param("intersects", "Point", "[13.3986, 52.5547]", 1, id="019_10_08-QueryOnIntersectsPoint"),
    ],
)
def test_019_10_query_with_point_geometries(
    api: Api, georel: str, geometry: str, coordinates: str, expected_count: int
) -> None:
    """Check that one can query several entities based on complex geoqueries (Point entities).

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_10.robot
    """
    _create(api, "building-location-attribute.jsonld", random_id(BUILDING))
    _create(api, "building-location-attribute-second.jsonld", random_id(BUILDING))
    _create(api, "building-location-attribute-third.jsonld", random_id(BUILDING))
    response = api.query_entities(
        context=SUITE_CONTEXT, type="Building", georel=georel, geometry=geometry, coordinates=coordinates, count="true"
    )
    check_status(response, 200)
    check_count(response, expected_count)


@pytest.mark.parametrize(
    ("georel", "geometry", "coordinates", "expected_count"),
    [
        pytest.param(
            "equals",
            "Polygon",
            "[[[13.2865906,52.5648645],[13.2879639,52.5648645],[13.2797241,52.4988679],[13.477478,52.4712703],"
            "[13.5049438,52.5373084],[13.2865906,52.5648645]]]",
            1,
            id="019_11_01-QueryOnEqualsPolygon",
        ),
        pytest.param(
            "intersects",
            "Polygon",
            "[[[13.3456421,52.4794848],[13.3641815,52.4428773],[13.4177399,52.4730023],[13.3459854,52.479903],"
            "[13.3456421,52.4794848]]]",
            1,
            id="019_11_02-QueryOnIntersectsPolygon",
        ),
        pytest.param(
            "contains",
            "Polygon",
            "[[[13.3844376,52.5356966],[13.3844376,52.5356966],[13.381691,52.5123012],[13.4235764,52.5100027],"
            "[13.4331894,52.5273425],[13.3844376,52.5356966]]]",
            1,
            id="019_11_03-QueryOnContainsPolygonMatching",
        ),
        pytest.param(
            "contains",
            "Polygon",
            "[[[13.1369019,52.5198225],[13.1365585,52.5200314],[13.131752,52.4980907],[13.1832504,52.5026887],"
            "[13.1369019,52.5198225]]]",
            0,
            id="019_11_04-QueryOnContainsPolygonNotMatching",
        ),
        pytest.param(
            "disjoint",
            "Polygon",
            "[[[13.1369019,52.5198225],[13.1365585,52.5200314],[13.131752,52.4980907],[13.1832504,52.5026887],"
            "[13.1369019,52.5198225]]]",
            2,
            id="019_11_05-QueryOnDisjointPolygon",
        ),
        pytest.param(
            "within",
            "Polygon",
            "[[[13.3023834,52.4903066],[13.3027267,52.4905156],[13.2745743,52.465632],[13.3343124,52.4185447],"
            "[13.4311295,52.47107],[13.3023834,52.4903066]]]",
            1,
            id="019_11_06-QueryOnWithinPolygon",
        ),
        pytest.param(
            "overlaps",
            "Polygon",
            "[[[13.3456421,52.4794848],[13.3641815,52.4428773],[13.4177399,52.4730023],[13.3459854,52.479903],"
            "[13.3456421,52.4794848]]]",
            1,
            id="019_11_07-QueryOnOverlapsPolygon",
        ),
        pytest.param("contains", "Point", "[13.3442688,52.4650045]", 1, id="019_11_08-QueryOnContainsPoint"),
    ],
)
def test_019_11_query_with_polygon_geometries(
    api: Api, georel: str, geometry: str, coordinates: str, expected_count: int
) -> None:
    """Check that one can query several entities based on complex geoqueries (Polygon entities).

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_11.robot
    """
    _create(api, "building-location-polygon.jsonld", random_id(BUILDING))
    _create(api, "building-location-polygon-second.jsonld", random_id(BUILDING))
    response = api.query_entities(
        context=SUITE_CONTEXT, type="Building", georel=georel, geometry=geometry, coordinates=coordinates, count="true"
    )
    check_status(response, 200)
    check_count(response, expected_count)


# --- 019_12: datasetId --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "dataset_id", "expectation"),
    [
        pytest.param("name", None, "building-name-attribute.jsonld", id="019_12_01-FilterBasedOnAttrsOnly"),
        pytest.param(
            None,
            "urn:ngsi-ld:Dataset:french-name",
            "building-french-datasetid-only.jsonld",
            id="019_12_02-FilterBasedOnDatasetIdOnly",
        ),
        pytest.param(
            None,
            "urn:ngsi-ld:Dataset:french-name,urn:ngsi-ld:Dataset:spanish-name",
            "building-two-datasetids.jsonld",
            id="019_12_03-FilterBasedOnTwoDatasetIds",
        ),
        pytest.param(None, "@none", "building-default-instances.jsonld", id="019_12_04-FilterBasedOnDefaultInstance"),
        pytest.param(
            "name",
            "@none",
            "building-name-attribute-default-instance.jsonld",
            id="019_12_05-FilterBasedOnAttrsAndDefaultInstance",
        ),
        pytest.param(
            "name",
            "urn:ngsi-ld:Dataset:german-name",
            "building-name-attribute-german-instance.jsonld",
            id="019_12_06-FilterBasedOnAttrsAndDatasetId",
        ),
        pytest.param(
            "name",
            "urn:ngsi-ld:Dataset:spanish-name",
            "building-no-attributes.jsonld",
            id="019_12_07-FilterBasedOnAttrsAndDatasetIdWithNoMatch",
        ),
    ],
)
def test_019_12_filter_attribute_instances_on_dataset_id(
    api: Api, attrs: str | None, dataset_id: str | None, expectation: str
) -> None:
    """Check that one can filter attribute instances based on datasetId.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_12.robot
    """
    entity_id = _create(api, "building-multi-instances-attributes.jsonld", random_id(BUILDING))
    response = api.query_entities(
        accept=JSON_LD, context=SUITE_CONTEXT, attrs=attrs, datasetId=dataset_id, type="Building"
    )
    check_status(response, 200)
    check_entity(expectation, entity_id, response.json()[0])


# --- 019_17, 019_18: pick and omit ----------------------------------------------------------------


def _pick_omit_entities(api: Api, suffix: str) -> None:
    _create(api, "building-simple-attributes.jsonld", f"{BUILDING}{suffix}-1")
    _create(api, "vehicle-simple-attributes.jsonld", f"{VEHICLE}{suffix}-2")
    _create(api, "building-simple-attributes-third.jsonld", f"{BUILDING}{suffix}-3")


@pytest.mark.parametrize(
    ("pick", "omit", "expectation"),
    [
        pytest.param("name", None, "entities-pick-name.json", id="019_17_01-QueryWithPickOnAttributes"),
        pytest.param(None, "name", "entities-omit-name.json", id="019_17_02-QueryWithOmitOnAttributes"),
        pytest.param("id", None, "entities-pick-id.json", id="019_17_03-QueryWithPickOnCoreMembers"),
        pytest.param(None, "id", "entities-omit-id.json", id="019_17_04-QueryWithOmitOnCoreMembers"),
        pytest.param("id,name", None, "entities-pick-id-name.json", id="019_17_05-QueryWithPickOnAttributesAndCore"),
        pytest.param(
            None, "type,name", "entities-omit-type-name.json", id="019_17_06-QueryWithOmitOnAttributesAndCore"
        ),
    ],
)
def test_019_17_query_entities_with_pick_or_omit(
    api: Api, pick: str | None, omit: str | None, expectation: str
) -> None:
    """Check that one can query entities with pick and omit query params.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_17.robot
    """
    _pick_omit_entities(api, "019-17")
    response = api.query_entities(context=SUITE_CONTEXT, type="Building,Vehicle", pick=pick, omit=omit)
    check_status(response, 200)
    # ignore order since responses do not all have an id member
    check_resource(load("entities/expectations/pick-omit/" + expectation), response.json())


@pytest.mark.parametrize(
    ("pick", "omit", "attrs"),
    [
        pytest.param("name", "name", None, id="019_18_01-SameEntityMemberInPickAndOmit"),
        pytest.param("name", None, "category", id="019_18_02-PickAndAttrs"),
        pytest.param(None, "name", "category", id="019_18_03-OmitAndAttrs"),
        pytest.param("id;name", None, None, id="019_18_04-InvalidCharacter"),
        pytest.param("id,locatedAt{name", None, None, id="019_18_05-UnclosedBrace"),
        pytest.param("id,locatedAt{{name}", None, None, id="019_18_06-DoubleBraces"),
        pytest.param("id,,name", None, None, id="019_18_07-ConsecutiveSeparators"),
        pytest.param("id,locatedAt{,name}", None, None, id="019_18_08-ExpressionStartingWithSpecialCharacter"),
        pytest.param("id,locatedAt{}", None, None, id="019_18_09-ExpressionContainingNoAttribute"),
    ],
)
def test_019_18_query_entities_with_invalid_pick_or_omit(
    api: Api, pick: str | None, omit: str | None, attrs: str | None
) -> None:
    """Check that BadRequestData is returned if the query is invalid with respect to pick and omit.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_18.robot
    """
    _pick_omit_entities(api, "019-18")
    response = api.query_entities(context=SUITE_CONTEXT, type="Building,Vehicle", pick=pick, omit=omit, attrs=attrs)
    check_problem(response, 400, BAD_REQUEST_DATA)


# --- 019_25: local --------------------------------------------------------------------------------


def test_019_25_query_all_entities_with_local_flag(api: Api) -> None:
    """Check that one can query all entities if query is local.

    TP/NGSI-LD/ContextInformation/Consumption/Entity/QueryEntities/019_25.robot
    """
    first, second = _buildings(api, "building-minimal.jsonld", 2)
    response = api.query_entities(local="true")
    check_status(response, 200)
    check_entities("building-minimal.json", [first, second], response.json())
