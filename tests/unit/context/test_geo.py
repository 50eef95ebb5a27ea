"""Tests of territoire.context.geo: parsing, validation, Python evaluation and PostGIS equivalence."""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest
import shapely

from territoire.context.errors import BadRequestData
from territoire.context.geo import (
    GeoQuery,
    bbox,
    bbox_intersects,
    candidate_bbox,
    check_geometry,
    distance_m,
    geo_matches,
    geodesic_m,
    haversine_m,
    parse_geo_q,
    parse_geo_query,
    postgis_distance,
    postgis_predicate,
    sqlite_bbox_clause,
    validate_geometry,
)

ANGERS = (-0.5540, 47.4784)
"""Angers town hall area (lon, lat) [deg]."""
M_PER_DEG_LAT = 111_180.0  # about, at 47.5°N [m]
M_PER_DEG_LON = 75_250.0  # about, at 47.5°N [m]


def q(georel: str, geometry: str, coordinates: Any, geoproperty: str | None = None) -> GeoQuery:
    query = parse_geo_query(georel, geometry, coordinates, geoproperty)
    assert query is not None
    return query


def pt(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def square(lon: float, lat: float, half: float) -> list[list[list[float]]]:
    """Closed square ring around (lon, lat), half-side ``half`` [deg]."""
    return [
        [
            [lon - half, lat - half],
            [lon + half, lat - half],
            [lon + half, lat + half],
            [lon - half, lat + half],
            [lon - half, lat - half],
        ]
    ]


def offset(lon: float, lat: float, east_m: float, north_m: float) -> tuple[float, float]:
    return (lon + east_m / M_PER_DEG_LON, lat + north_m / M_PER_DEG_LAT)


# ---------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------


class TestParse:
    def test_nothing_given(self) -> None:
        assert parse_geo_query(None, None, None, None) is None
        assert parse_geo_query(None, None, None, "location") is None  # geoproperty alone is ignored

    def test_near_get_string(self) -> None:
        query = q("near;maxDistance==2000", "Point", "[8.0,40.0]")
        assert query.georel == "near"
        assert query.max_distance == 2000.0 and query.min_distance is None
        assert query.geoproperty == "location"
        assert query.point == (8.0, 40.0)
        assert query.geojson == {"type": "Point", "coordinates": [8.0, 40.0]}
        assert query.georel_expression == "near;maxDistance==2000"

    def test_near_min_and_both(self) -> None:
        query = q("near;minDistance==12.5", "Point", "[8,40]")
        assert query.min_distance == 12.5 and query.max_distance is None
        both = q("near;minDistance==100;maxDistance==2e3", "Point", [8, 40])
        assert (both.min_distance, both.max_distance) == (100.0, 2000.0)
        assert both.georel_expression == "near;minDistance==100;maxDistance==2000"

    def test_post_list_coordinates_and_geoproperty(self) -> None:
        ring = square(8, 40, 1)
        query = q("within", "Polygon", ring, "observationSpace")
        assert query.geoproperty == "observationSpace"
        assert query.geometry.geom_type == "Polygon"
        assert query.geojson == {"type": "Polygon", "coordinates": ring}
        assert q("within", "Polygon", json.dumps(ring)) == q("within", "Polygon", ring)

    @pytest.mark.parametrize(
        ("geometry", "coordinates"),
        [
            ("Point", [1, 2, 30]),
            ("MultiPoint", [[1, 2], [3, 4]]),
            ("LineString", [[1, 2], [3, 4]]),
            ("MultiLineString", [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]),
            ("Polygon", square(1, 1, 0.5)),
            ("MultiPolygon", [square(1, 1, 0.5), square(5, 5, 0.5)]),
        ],
    )
    def test_every_geometry(self, geometry: str, coordinates: Any) -> None:
        query = q("intersects", geometry, json.dumps(coordinates))
        assert query.geometry.geom_type == geometry
        assert query.as_geo_q() == {
            "georel": "intersects",
            "geometry": geometry,
            "coordinates": coordinates,
            "geoproperty": "location",
        }

    def test_geo_q_object(self) -> None:
        query = parse_geo_q({"georel": "near;maxDistance==10", "geometry": "Point", "coordinates": "[1,2]"})
        assert query.point == (1.0, 2.0)
        query = parse_geo_q(
            {"georel": "within", "geometry": "Polygon", "coordinates": square(1, 1, 1), "geoproperty": "area"}
        )
        assert query.geoproperty == "area"

    @pytest.mark.parametrize(
        ("geo_q", "message"),
        [
            ([], "geoQ: must be a JSON object"),
            ({"georel": "within", "geometry": "Point"}, "'coordinates' missing"),
            (
                {"georel": "within", "geometry": "Point", "coordinates": [1, 2], "x": 1},
                "unknown member(s) 'x'",
            ),
            ({"georel": 1, "geometry": "Point", "coordinates": [1, 2]}, "'georel' must be a string"),
        ],
    )
    def test_bad_geo_q(self, geo_q: Any, message: str) -> None:
        with pytest.raises(BadRequestData) as exc:
            parse_geo_q(geo_q)
        assert message in exc.value.detail

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("within", None, None), "'geometry' and 'coordinates' are missing"),
            ((None, "Point", "[1,2]"), "'georel' is missing"),
            (("within", "Point", None), "'coordinates' is missing"),
            (("inside", "Point", "[1,2]"), "unknown relationship 'inside'"),
            (("Within", "Point", "[1,2]"), "case-sensitive: 'within'"),
            (("coveredBy", "Point", "[1,2]"), "NGSIv2 georel"),
            (("within;maxDistance==3", "Point", "[1,2]"), "'within' takes no modifier"),
            (("near", "Point", "[1,2]"), "'near' needs maxDistance==<metres> or minDistance==<metres>"),
            (("near;", "Point", "[1,2]"), "'near' needs maxDistance"),
            (("near;maxDistance:2000", "Point", "[1,2]"), "NGSI-LD uses '=='"),
            (("near;distance==2000", "Point", "[1,2]"), "invalid near modifier 'distance'"),
            (("near;maxDistance==-5", "Point", "[1,2]"), "maxDistance must not be negative"),
            (("near;minDistance==-0.5", "Point", "[1,2]"), "minDistance must not be negative"),
            (("near;maxDistance==abc", "Point", "[1,2]"), "maxDistance must be a number of metres"),
            (("near;maxDistance==1e999", "Point", "[1,2]"), "maxDistance is too large"),
            (("near;maxDistance==1;maxDistance==2", "Point", "[1,2]"), "maxDistance is given twice"),
            (
                ("near;minDistance==5;maxDistance==5", "Point", "[1,2]"),
                "minDistance (5) must be below maxDistance",
            ),
            (
                ("near;maxDistance==5", "Polygon", json.dumps(square(1, 1, 1))),
                "'near' needs geometry 'Point'",
            ),
            (("within", "Circle", "[1,2]"), "unsupported geometry 'Circle'"),
            (("within", "polygon", "[1,2]"), "case-sensitive: 'Polygon'"),
            (("within", "GeometryCollection", "[]"), "unsupported geometry 'GeometryCollection'"),
            (("within", "Point", "[1,2"), "coordinates: not a valid JSON array"),
            (("within", "Point", "1,2"), "coordinates: must be a JSON array"),
            (("within", "Point", "{}"), "coordinates: must be a JSON array"),
            (("within", "Point", 12), "coordinates: must be an array"),
            (("within", "Point", "[[1,2]]"), "wrong nesting of Point coordinates"),
            (("within", "Point", "[1]"), "a position has 2 or 3 numbers"),
            (("within", "Point", "[1,2,3,4]"), "a position has 2 or 3 numbers"),
            (("within", "Point", '[1,"2"]'), "is not a finite number"),
            (("within", "Point", "[true,2]"), "is not a finite number"),
            (("within", "Point", "[181,2]"), "longitude 181 is out of range [-180, 180]"),
            (("within", "Point", "[1,-90.5]"), "latitude -90.5 is out of range [-90, 90]"),
            (("within", "MultiPoint", "[]"), "MultiPoint coordinates must hold at least one position"),
            (("within", "MultiPoint", "[1,2]"), "wrong nesting of MultiPoint coordinates"),
            (("within", "LineString", "[[1,2]]"), "LineString coordinates needs at least 2 positions"),
            (("within", "LineString", "[1,2]"), "wrong nesting of LineString coordinates"),
            (("within", "MultiLineString", "[[1,2],[3,4]]"), "wrong nesting of MultiLineString coordinates"),
            (("within", "Polygon", "[[0,0],[1,0],[1,1],[0,0]]"), "wrong nesting of Polygon coordinates"),
            (("within", "Polygon", "[[[0,0],[1,0],[0,0]]]"), "linear ring needs at least 4 positions"),
            (("within", "Polygon", "[[[0,0],[1,0],[1,1],[0,1]]]"), "Polygon ring is not closed (ring #0"),
            (("within", "Polygon", "[]"), "Polygon coordinates must hold at least one ring"),
            (("within", "MultiPolygon", json.dumps(square(1, 1, 1))), "wrong nesting of MultiPolygon"),
        ],
    )
    def test_bad_queries(self, args: tuple[Any, Any, Any], message: str) -> None:
        with pytest.raises(BadRequestData) as exc:
            parse_geo_query(*args, None)
        assert message in exc.value.detail, exc.value.detail

    def test_bad_geoproperty(self) -> None:
        with pytest.raises(BadRequestData, match="geoproperty"):
            parse_geo_query("within", "Point", "[1,2]", " ")

    def test_geoquery_is_hashable_and_checked(self) -> None:
        a, b = q("within", "Point", "[1,2]"), q("within", "Point", [1, 2])
        assert a == b and hash(a) == hash(b)
        with pytest.raises(ValueError, match="near needs"):
            GeoQuery(georel="near", geometry=shapely.Point(1, 2), geojson=pt(1, 2))
        with pytest.raises(ValueError, match="unknown georel"):
            GeoQuery(georel="touches", geometry=shapely.Point(1, 2), geojson=pt(1, 2))


# ---------------------------------------------------------------------------------------------------
# GeoProperty validation and bounding boxes
# ---------------------------------------------------------------------------------------------------


class TestValidate:
    def test_point_fast_path(self) -> None:
        geom = validate_geometry(pt(-0.55, 47.47))
        assert geom.geom_type == "Point" and (geom.x, geom.y) == (-0.55, 47.47)
        assert validate_geometry({"type": "Point", "coordinates": [1, 2, 35.5]}).has_z is False
        check_geometry(pt(1, 2))
        check_geometry({"type": "LineString", "coordinates": [[1, 2], [3, 4]], "bbox": [1, 2, 3, 4]})

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("POINT(1 2)", "location: a GeoProperty value must be a GeoJSON geometry object"),
            ({"coordinates": [1, 2]}, "location: the GeoJSON geometry has no 'type'"),
            ({"type": "Point"}, "location: the GeoJSON Point has no 'coordinates'"),
            ({"type": 3, "coordinates": [1, 2]}, "the GeoJSON 'type' must be a string"),
            ({"type": "Feature", "coordinates": [1, 2]}, 'unknown geometry type "Feature"'),
            ({"type": "GeometryCollection", "geometries": []}, "GeometryCollection is not supported"),
            ({"type": "Point", "coordinates": [1, 95]}, "location: latitude 95 is out of range"),
            ({"type": "Point", "coordinates": [1, float("nan")]}, "is not a finite number"),
            ({"type": "Point", "coordinates": [1, 2, None]}, "is not a finite number"),
            (
                {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]},
                "location: Polygon ring is not closed",
            ),
            (
                {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0, 5]]]},
                "location: Polygon ring is not closed",
            ),
            (
                {
                    "type": "MultiPolygon",
                    "coordinates": [square(0, 0, 1), [[[5, 5], [6, 5], [6, 6], [5, 6]]]],
                },
                "MultiPolygon ring is not closed (ring #0",
            ),
        ],
    )
    def test_bad_values(self, value: Any, message: str) -> None:
        with pytest.raises(BadRequestData) as exc:
            validate_geometry(value, "location")
        assert message in exc.value.detail, exc.value.detail
        with pytest.raises(BadRequestData):
            check_geometry(value, "location")

    def test_polygon_with_hole(self) -> None:
        outer = square(0, 0, 1)[0]
        hole = square(0, 0, 0.2)[0]
        geom = validate_geometry({"type": "Polygon", "coordinates": [outer, hole]})
        assert geom.geom_type == "Polygon" and len(geom.interiors) == 1
        assert not geom.contains(shapely.Point(0, 0))

    def test_bbox(self) -> None:
        assert bbox(pt(1, 2)) == (1.0, 2.0, 1.0, 2.0)
        assert bbox({"type": "LineString", "coordinates": [[3, -1], [1, 4], [2, 2]]}) == (1.0, -1.0, 3.0, 4.0)
        assert bbox({"type": "MultiPoint", "coordinates": [[3, -1], [1, 4]]}) == (1.0, -1.0, 3.0, 4.0)
        assert bbox({"type": "MultiLineString", "coordinates": [[[0, 0], [1, 1]], [[5, 5], [6, 7]]]}) == (
            0.0,
            0.0,
            6.0,
            7.0,
        )
        assert bbox({"type": "Polygon", "coordinates": square(1, 1, 0.5)}) == (0.5, 0.5, 1.5, 1.5)
        assert bbox({"type": "MultiPolygon", "coordinates": [square(1, 1, 0.5), square(5, 6, 1)]}) == (
            0.5,
            0.5,
            6.0,
            7.0,
        )
        with pytest.raises(BadRequestData):
            bbox({"type": "Point"})
        with pytest.raises(BadRequestData):
            bbox({"type": "GeometryCollection", "coordinates": []})

    def test_bbox_matches_shapely(self) -> None:
        rnd = random.Random(7)
        for value in random_geometries(rnd, 100):
            assert bbox(value) == pytest.approx(validate_geometry(value).bounds)

    def test_bbox_intersects(self) -> None:
        assert bbox_intersects((0, 0, 1, 1), (1, 1, 2, 2))
        assert not bbox_intersects((0, 0, 1, 1), (1.1, 0, 2, 2))


# ---------------------------------------------------------------------------------------------------
# Distances
# ---------------------------------------------------------------------------------------------------

# Reference distances: exact geodesics (GeographicLib, through PostGIS 3.3
# ST_Distance(geography)), and textbook values on WGS 84.
CHATEAU = (-0.5599, 47.4700)
GARE_ST_LAUD = (-0.5566, 47.4646)
CHATEAU_TO_GARE_M = 649.8782583
LAC_DE_MAINE = (-0.6181, 47.4559)
ANGERS_TO_LAC_M = 5441.61121073


class TestDistance:
    def test_known_distances(self) -> None:
        for a, b, expected, haversine_error in [
            (CHATEAU, GARE_ST_LAUD, CHATEAU_TO_GARE_M, 5e-3),
            (ANGERS, LAC_DE_MAINE, ANGERS_TO_LAC_M, 5e-3),
            ((0.0, 0.0), (1.0, 0.0), 111_319.4908, 2e-3),  # 1° along the equator: a·π/180
            ((0.0, 0.0), (0.0, 1.0), 110_574.3886, 6e-3),  # 1° of meridian from the equator
        ]:
            assert haversine_m(*a, *b) == pytest.approx(expected, rel=haversine_error)
            assert geodesic_m(*a, *b) == pytest.approx(expected, rel=2e-5)
            assert distance_m(a, pt(*b)) == pytest.approx(expected, rel=2e-5)
        assert geodesic_m(*CHATEAU, *GARE_ST_LAUD) == pytest.approx(CHATEAU_TO_GARE_M, abs=0.02)
        assert geodesic_m(1, 2, 1, 2) == 0.0
        assert geodesic_m(0, 0, 180, 0) == pytest.approx(20_003_931, rel=1e-6)  # antipodes: half a meridian

    def test_distance_to_extended_geometries(self) -> None:
        lon, lat = ANGERS
        north = offset(lon, lat, 0, 300)
        line = {"type": "LineString", "coordinates": [[lon - 0.01, north[1]], [lon + 0.01, north[1]]]}
        expected = geodesic_m(lon, lat, lon, north[1])
        assert distance_m(ANGERS, line) == pytest.approx(expected, rel=1e-6)
        # the nearest point is inside a segment, not a vertex
        assert distance_m(ANGERS, line) < geodesic_m(lon, lat, lon - 0.01, north[1])
        polygon = {"type": "Polygon", "coordinates": square(lon, lat + 0.02, 0.01)}
        assert distance_m(ANGERS, polygon) == pytest.approx(geodesic_m(lon, lat, lon, lat + 0.01), rel=1e-6)
        inside = {"type": "Polygon", "coordinates": square(lon, lat, 0.01)}
        assert distance_m(ANGERS, inside) == 0.0
        multi = {"type": "MultiPoint", "coordinates": [list(CHATEAU), list(GARE_ST_LAUD)]}
        assert distance_m(CHATEAU, multi) == 0.0
        assert distance_m(GARE_ST_LAUD, multi) == 0.0
        assert distance_m(ANGERS, multi) == pytest.approx(
            min(geodesic_m(*ANGERS, *CHATEAU), geodesic_m(*ANGERS, *GARE_ST_LAUD))
        )

    def test_distance_rejects_malformed(self) -> None:
        with pytest.raises(BadRequestData):
            distance_m(ANGERS, {"type": "Blob", "coordinates": []})


# ---------------------------------------------------------------------------------------------------
# Evaluation in Python
# ---------------------------------------------------------------------------------------------------

POINT_IN = pt(0.5, 0.5)
POINT_EDGE = pt(1.0, 0.5)
POINT_OUT = pt(3.0, 3.0)
LINE_IN = {"type": "LineString", "coordinates": [[0.2, 0.2], [0.8, 0.8]]}
LINE_CROSS = {"type": "LineString", "coordinates": [[0.5, 0.5], [1.5, 0.5]]}
LINE_OUT = {"type": "LineString", "coordinates": [[2, 2], [3, 3]]}
POLY_SAME = {"type": "Polygon", "coordinates": [[[1, 1], [0, 1], [0, 0], [1, 0], [1, 1]]]}  # same, rotated
POLY_IN = {"type": "Polygon", "coordinates": square(0.5, 0.5, 0.25)}
POLY_OVER = {"type": "Polygon", "coordinates": square(1, 1, 0.5)}
POLY_AROUND = {"type": "Polygon", "coordinates": square(0.5, 0.5, 2)}
POLY_OUT = {"type": "Polygon", "coordinates": square(5, 5, 0.5)}
MPOINT_MIXED = {"type": "MultiPoint", "coordinates": [[0.5, 0.5], [3, 3]]}
MLINE_IN = {"type": "MultiLineString", "coordinates": [[[0.1, 0.1], [0.2, 0.2]], [[0.6, 0.6], [0.7, 0.8]]]}
MPOLY_OVER = {"type": "MultiPolygon", "coordinates": [square(1, 1, 0.5), square(5, 5, 0.5)]}
MPOLY_IN = {"type": "MultiPolygon", "coordinates": [square(0.25, 0.25, 0.1), square(0.75, 0.75, 0.1)]}

UNIT_SQUARE = json.dumps(square(0.5, 0.5, 0.5))  # [0,1]²

# expected result of "<stored> <georel> [0,1]²" for each stored value
RELATIONS: dict[str, dict[str, bool]] = {
    "within": {
        "POINT_IN": True, "POINT_EDGE": False, "POINT_OUT": False, "LINE_IN": True, "LINE_CROSS": False,
        "LINE_OUT": False, "POLY_SAME": True, "POLY_IN": True, "POLY_OVER": False, "POLY_AROUND": False,
        "POLY_OUT": False, "MPOINT_MIXED": False, "MLINE_IN": True, "MPOLY_OVER": False, "MPOLY_IN": True,
    },
    "contains": {
        "POINT_IN": False, "POINT_EDGE": False, "POINT_OUT": False, "LINE_IN": False, "LINE_CROSS": False,
        "LINE_OUT": False, "POLY_SAME": True, "POLY_IN": False, "POLY_OVER": False, "POLY_AROUND": True,
        "POLY_OUT": False, "MPOINT_MIXED": False, "MLINE_IN": False, "MPOLY_OVER": False, "MPOLY_IN": False,
    },
    "intersects": {
        "POINT_IN": True, "POINT_EDGE": True, "POINT_OUT": False, "LINE_IN": True, "LINE_CROSS": True,
        "LINE_OUT": False, "POLY_SAME": True, "POLY_IN": True, "POLY_OVER": True, "POLY_AROUND": True,
        "POLY_OUT": False, "MPOINT_MIXED": True, "MLINE_IN": True, "MPOLY_OVER": True, "MPOLY_IN": True,
    },
    "equals": {
        "POINT_IN": False, "POINT_EDGE": False, "POINT_OUT": False, "LINE_IN": False, "LINE_CROSS": False,
        "LINE_OUT": False, "POLY_SAME": True, "POLY_IN": False, "POLY_OVER": False, "POLY_AROUND": False,
        "POLY_OUT": False, "MPOINT_MIXED": False, "MLINE_IN": False, "MPOLY_OVER": False, "MPOLY_IN": False,
    },
    "overlaps": {
        "POINT_IN": False, "POINT_EDGE": False, "POINT_OUT": False, "LINE_IN": False, "LINE_CROSS": False,
        "LINE_OUT": False, "POLY_SAME": False, "POLY_IN": False, "POLY_OVER": True, "POLY_AROUND": False,
        "POLY_OUT": False, "MPOINT_MIXED": False, "MLINE_IN": False, "MPOLY_OVER": True, "MPOLY_IN": False,
    },
}  # fmt: skip
RELATIONS["disjoint"] = {name: not hit for name, hit in RELATIONS["intersects"].items()}
STORED = {name: globals()[name] for name in RELATIONS["within"]}


class TestMatches:
    @pytest.mark.parametrize("georel", sorted(RELATIONS))
    @pytest.mark.parametrize("name", sorted(STORED))
    def test_relations_with_polygon(self, georel: str, name: str) -> None:
        query = q(georel, "Polygon", UNIT_SQUARE)
        assert geo_matches(query, STORED[name]) is RELATIONS[georel][name]

    def test_relations_with_point_and_line(self) -> None:
        at = q("contains", "Point", "[0.5,0.5]")
        assert geo_matches(at, POLY_SAME) and geo_matches(at, POINT_IN) and geo_matches(at, LINE_IN)
        assert not geo_matches(at, POINT_OUT) and not geo_matches(at, POLY_OUT)
        assert geo_matches(q("equals", "Point", "[0.5,0.5]"), POINT_IN)
        assert not geo_matches(q("equals", "Point", "[0.5,0.5]"), MPOINT_MIXED)
        assert geo_matches(q("within", "Point", "[0.5,0.5]"), POINT_IN)
        line = q("intersects", "LineString", "[[-1,0.5],[2,0.5]]")
        assert geo_matches(line, POLY_SAME) and geo_matches(line, POINT_IN) and geo_matches(line, LINE_CROSS)
        assert not geo_matches(line, POINT_OUT)
        assert geo_matches(q("overlaps", "LineString", "[[0.5,0.5],[0.5,2]]"), LINE_CROSS) is False
        assert geo_matches(q("overlaps", "LineString", "[[1,0.5],[2,0.5]]"), LINE_CROSS)
        assert geo_matches(q("within", "MultiPolygon", json.dumps([square(0.5, 0.5, 0.5)])), MLINE_IN)
        assert geo_matches(q("contains", "MultiPoint", "[[0.5,0.5],[0.6,0.6]]"), POLY_SAME)
        assert geo_matches(q("disjoint", "MultiLineString", "[[[5,0],[6,0]],[[7,0],[8,0]]]"), POLY_SAME)

    def test_near(self) -> None:
        query = q("near;maxDistance==650", "Point", list(CHATEAU))
        assert geo_matches(query, pt(*GARE_ST_LAUD))  # 649.88 m
        assert not geo_matches(q("near;maxDistance==649", "Point", list(CHATEAU)), pt(*GARE_ST_LAUD))
        assert geo_matches(q("near;minDistance==649", "Point", list(CHATEAU)), pt(*GARE_ST_LAUD))
        assert not geo_matches(q("near;minDistance==650", "Point", list(CHATEAU)), pt(*GARE_ST_LAUD))
        ring = q("near;minDistance==600;maxDistance==700", "Point", list(CHATEAU))
        assert geo_matches(ring, pt(*GARE_ST_LAUD)) and not geo_matches(ring, pt(*CHATEAU))
        # minDistance is strict (NOT ST_DWithin), maxDistance inclusive (ST_DWithin)
        assert not geo_matches(q("near;minDistance==0", "Point", list(CHATEAU)), pt(*CHATEAU))
        assert geo_matches(q("near;maxDistance==0", "Point", list(CHATEAU)), pt(*CHATEAU))

    def test_near_extended_geometries(self) -> None:
        lon, lat = ANGERS
        y = offset(lon, lat, 0, 300)[1]
        line = {"type": "LineString", "coordinates": [[lon - 0.02, y], [lon + 0.02, y]]}
        assert geo_matches(q("near;maxDistance==310", "Point", list(ANGERS)), line)
        assert not geo_matches(q("near;maxDistance==290", "Point", list(ANGERS)), line)
        inside = {"type": "Polygon", "coordinates": square(lon, lat, 0.05)}
        assert geo_matches(q("near;maxDistance==1", "Point", list(ANGERS)), inside)
        assert not geo_matches(q("near;minDistance==1", "Point", list(ANGERS)), inside)
        multi = {
            "type": "MultiPolygon",
            "coordinates": [square(lon + 0.1, lat, 0.01), square(lon, lat, 0.001)],
        }
        assert geo_matches(q("near;maxDistance==1", "Point", list(ANGERS)), multi)

    def test_malformed_stored_values_never_match(self) -> None:
        for value in [{}, {"type": "Point"}, {"type": "Point", "coordinates": "x"}, {"type": "Blob"}]:
            assert not geo_matches(q("intersects", "Polygon", UNIT_SQUARE), value)
            assert not geo_matches(q("disjoint", "Polygon", UNIT_SQUARE), value)
            assert not geo_matches(q("near;maxDistance==10", "Point", "[0,0]"), value)
            assert not geo_matches(q("near;minDistance==10", "Point", "[0,0]"), value)

    def test_candidate_bbox(self) -> None:
        assert candidate_bbox(q("within", "Polygon", UNIT_SQUARE)) == (0.0, 0.0, 1.0, 1.0)
        assert candidate_bbox(q("disjoint", "Polygon", UNIT_SQUARE)) is None
        assert candidate_bbox(q("near;minDistance==10", "Point", "[0,0]")) is None
        _, miny, maxx, maxy = candidate_bbox(q("near;maxDistance==1000", "Point", list(ANGERS))) or (
            0,
            0,
            0,
            0,
        )
        assert miny < ANGERS[1] - 1000 / 111_300 and maxy > ANGERS[1] + 1000 / 111_100
        assert maxx - ANGERS[0] > 1000 / (111_320 * math.cos(math.radians(47.5)))
        assert maxx - ANGERS[0] < 1.01 * 1000 / (111_320 * math.cos(math.radians(47.5)))
        # poles and antimeridian: no longitude restriction
        assert candidate_bbox(q("near;maxDistance==50000", "Point", "[10,89.9]")) == pytest.approx(
            (-180.0, 89.9 - 50050 / 110_574, 180.0, 90.0), abs=1e-6
        )
        box = candidate_bbox(q("near;maxDistance==50000", "Point", "[179.9,10]"))
        assert box is not None and (box[0], box[2]) == (-180.0, 180.0)

    @pytest.mark.parametrize("center", [ANGERS, (2.35, 48.85), (-70.0, -45.0), (25.0, 69.0), (100.0, 0.0)])
    def test_candidate_bbox_contains_every_match(self, center: tuple[float, float]) -> None:
        rnd = random.Random(42)
        checked = 0
        for _ in range(40):
            max_d = rnd.uniform(50, 20_000)
            query = q(f"near;maxDistance=={max_d}", "Point", [center[0], center[1]])
            box = candidate_bbox(query)
            assert box is not None
            span = 1.5 * max_d / 111_000
            for _ in range(100):
                lat = center[1] + rnd.uniform(-span, span)
                lon = center[0] + rnd.uniform(-span, span) / math.cos(math.radians(lat))
                value = pt(lon, lat)
                if geo_matches(query, value):
                    checked += 1
                    assert bbox_intersects(bbox(value), box)
                # the box is tight: no far point falls inside
                if distance_m(query.point, value) > 1.01 * max_d * math.sqrt(2):
                    assert not bbox_intersects(bbox(value), box)
        assert checked > 500

    def test_candidate_bbox_contains_matching_polygons_and_lines(self) -> None:
        rnd = random.Random(3)
        values = random_geometries(rnd, 300)
        queries = [q(f"near;maxDistance=={d}", "Point", list(ANGERS)) for d in (200, 1000, 3000)]
        queries += [q(g, "Polygon", json.dumps(square(*ANGERS, 0.01))) for g in ("within", "intersects", "overlaps")]
        for query in queries:
            box = candidate_bbox(query)
            assert box is not None
            hits = [v for v in values if geo_matches(query, v)]
            assert hits
            assert all(bbox_intersects(bbox(v), box) for v in hits)


# ---------------------------------------------------------------------------------------------------
# SQL generation
# ---------------------------------------------------------------------------------------------------


class TestSql:
    def test_near_sql(self) -> None:
        sql, params = postgis_predicate(q("near;maxDistance==2000", "Point", list(ANGERS)))
        assert sql.startswith("(g.geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326) AND ST_DWithin(g.geom::geography")
        assert sql.count("%s") == len(params) == 7
        assert params[-3:] == [ANGERS[0], ANGERS[1], 2000.0]
        sql, params = postgis_predicate(q("near;minDistance==100", "Point", list(ANGERS)), "e.geom")
        assert sql == "(NOT ST_DWithin(e.geom::geography, ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography, %s))"
        assert params == [ANGERS[0], ANGERS[1], 100.0]

    @pytest.mark.parametrize(
        ("georel", "function"),
        [
            ("within", "ST_Within"),
            ("contains", "ST_Contains"),
            ("intersects", "ST_Intersects"),
            ("equals", "ST_Equals"),
            ("disjoint", "ST_Disjoint"),
            ("overlaps", "ST_Overlaps"),
        ],
    )
    def test_relation_sql(self, georel: str, function: str) -> None:
        sql, params = postgis_predicate(q(georel, "Polygon", UNIT_SQUARE))
        assert sql == f"{function}(g.geom, ST_MakeValid(ST_SetSRID(ST_GeomFromGeoJSON(%s::text), 4326)))"
        assert json.loads(params[0]) == {"type": "Polygon", "coordinates": json.loads(UNIT_SQUARE)}

    def test_identifiers_are_checked(self) -> None:
        with pytest.raises(ValueError, match="identifier"):
            postgis_predicate(q("within", "Polygon", UNIT_SQUARE), "g.geom; DROP TABLE x")
        with pytest.raises(ValueError, match="identifier"):
            postgis_distance(ANGERS, "1=1")

    def test_sqlite_bbox_clause(self) -> None:
        import sqlite3

        sql, params = sqlite_bbox_clause((0.0, 0.0, 1.0, 1.0))
        assert params == [1.0, 0.0, 1.0, 0.0]
        with sqlite3.connect(":memory:") as db:
            db.execute("CREATE TABLE entity_geo(pk INTEGER, minx REAL, miny REAL, maxx REAL, maxy REAL)")
            db.execute("CREATE VIRTUAL TABLE entity_geo_rtree USING rtree(id, minx, maxx, miny, maxy)")
            rows = [
                (1, 0.5, 0.5, 0.5, 0.5),
                (2, 1.0, 1.0, 2.0, 2.0),
                (3, 1.5, 1.5, 2.0, 2.0),
                (4, -1, -1, 3, 3),
            ]
            for pk, minx, miny, maxx, maxy in rows:
                cur = db.execute("INSERT INTO entity_geo VALUES (?, ?, ?, ?, ?)", (pk, minx, miny, maxx, maxy))
                db.execute(
                    "INSERT INTO entity_geo_rtree VALUES (?, ?, ?, ?, ?)",
                    (cur.lastrowid, minx, maxx, miny, maxy),
                )
            found = db.execute(f"SELECT g.pk FROM entity_geo AS g {sql} ORDER BY g.pk", params).fetchall()
            assert [r[0] for r in found] == [1, 2, 4]
        db.close()


# ---------------------------------------------------------------------------------------------------
# Equivalence with PostGIS
# ---------------------------------------------------------------------------------------------------


def _metres(lon: float, lat: float, east: float, north: float) -> list[float]:
    return [lon + east / (111_320 * math.cos(math.radians(lat))), lat + north / 110_600]


def _star(rnd: random.Random, lon: float, lat: float, r_min: float, r_max: float) -> list[list[float]]:
    n = rnd.randint(4, 8)
    ring = []
    for i in range(n):
        angle = 2 * math.pi * (i + rnd.uniform(-0.3, 0.3)) / n
        r = rnd.uniform(r_min, r_max)
        ring.append(_metres(lon, lat, r * math.cos(angle), r * math.sin(angle)))
    return [*ring, ring[0]]


def random_geometries(rnd: random.Random, count: int) -> list[dict[str, Any]]:
    """Valid random geometries within about ±4 km of Angers."""

    def spot() -> tuple[float, float]:
        return (ANGERS[0] + rnd.uniform(-0.05, 0.05), ANGERS[1] + rnd.uniform(-0.035, 0.035))

    def walk(lon: float, lat: float, n: int) -> list[list[float]]:
        points = [[lon, lat]]
        for _ in range(n - 1):
            last = points[-1]
            points.append(_metres(last[0], last[1], rnd.uniform(-600, 600), rnd.uniform(-600, 600)))
        return points

    values: list[dict[str, Any]] = []
    while len(values) < count:
        kind = rnd.random()
        lon, lat = spot()
        value: dict[str, Any]
        if kind < 0.45:
            value = pt(lon, lat)
        elif kind < 0.55:
            value = {
                "type": "MultiPoint",
                "coordinates": [
                    _metres(lon, lat, rnd.uniform(-900, 900), rnd.uniform(-900, 900)) for _ in range(rnd.randint(1, 4))
                ],
            }
        elif kind < 0.68:
            value = {"type": "LineString", "coordinates": walk(lon, lat, rnd.randint(2, 5))}
        elif kind < 0.73:
            value = {
                "type": "MultiLineString",
                "coordinates": [walk(*spot(), rnd.randint(2, 4)) for _ in range(2)],
            }
        elif kind < 0.93:
            r_min = rnd.uniform(50, 600)
            rings = [_star(rnd, lon, lat, r_min, r_min * rnd.uniform(1, 2.5))]
            if rnd.random() < 0.3:
                rings.append(list(reversed(_star(rnd, lon, lat, r_min * 0.1, r_min * 0.25))))
            value = {"type": "Polygon", "coordinates": rings}
        else:
            value = {
                "type": "MultiPolygon",
                "coordinates": [[_star(rnd, *spot(), 50, 300)] for _ in range(rnd.randint(1, 3))],
            }
        try:
            validate_geometry(value)
        except BadRequestData:
            continue  # e.g. overlapping parts of a MultiPolygon
        values.append(value)
    return values


def _equivalence_queries(values: list[dict[str, Any]]) -> list[GeoQuery]:
    lon, lat = ANGERS
    polygon = next(v for v in values if v["type"] == "Polygon")
    point = next(v for v in values if v["type"] == "Point")
    line = next(v for v in values if v["type"] == "LineString")["coordinates"]
    multipoint = next(v for v in values if v["type"] == "MultiPoint" and len(v["coordinates"]) > 1)["coordinates"]
    shape = validate_geometry(polygon)
    inner = shape.representative_point()
    rotated = [polygon["coordinates"][0][2:-1] + polygon["coordinates"][0][:3], *polygon["coordinates"][1:]]
    big = [[_metres(lon, lat, -2500, -2000), _metres(lon, lat, 2000, -2500), _metres(lon, lat, 2500, 1500),
            _metres(lon, lat, -1000, 2500), _metres(lon, lat, -2500, -2000)]]  # fmt: skip
    return [
        q("near;maxDistance==1500", "Point", [lon, lat]),
        q("near;maxDistance==400", "Point", _metres(line[0][0], line[0][1], 150, -150)),
        q("near;maxDistance==2500.5", "Point", point["coordinates"]),
        q("near;minDistance==3000", "Point", [lon, lat]),
        q("near;minDistance==1000;maxDistance==2500", "Point", _metres(lon, lat, -500, 300)),
        q("within", "Polygon", json.dumps(big)),
        q("within", "MultiPolygon", [square(lon - 0.02, lat, 0.012), square(lon + 0.025, lat + 0.01, 0.01)]),
        q("contains", "Point", [inner.x, inner.y]),
        q("contains", "LineString", [[inner.x, inner.y], _metres(inner.x, inner.y, 5, 5)]),
        q("intersects", "Polygon", big),
        q("intersects", "LineString", [_metres(lon, lat, -4000, -3000), _metres(lon, lat, 4000, 3500)]),
        q("intersects", "MultiPoint", [point["coordinates"], [lon, lat]]),
        q("equals", "Point", point["coordinates"]),
        q("equals", "Polygon", rotated),
        q("disjoint", "Polygon", big),
        q("overlaps", "Polygon", big),
        q("overlaps", "MultiPoint", [multipoint[0], [lon, lat]]),
    ]


POSTGRES_URL = os.environ.get("TERRITOIRE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/territoire_test")
PG_BASE = POSTGRES_URL.rpartition("/")[0]
PG_GEO_DB = "territoire_geotest"


def _unavailable(reason: str) -> None:
    """Skip with the reason shown; under CI (CI=true) fail instead: CI must test PostGIS."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pg() -> Iterator[Any]:
    import psycopg

    try:
        admin = psycopg.connect(f"{PG_BASE}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        _unavailable(f"PostgreSQL unreachable at {PG_BASE} (set TERRITOIRE_TEST_POSTGRES_URL): {exc}")
    with admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [PG_GEO_DB]).fetchone():
            admin.execute(f'CREATE DATABASE "{PG_GEO_DB}"')
    with psycopg.connect(f"{PG_BASE}/{PG_GEO_DB}", autocommit=True, connect_timeout=3) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        except psycopg.Error as exc:
            _unavailable(f"PostGIS is not available in {PG_GEO_DB}: {exc}")
        yield conn


@pytest.fixture(scope="module")
def pg_table(pg: Any) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    values = random_geometries(random.Random(2026), 200)
    pg.execute("DROP TABLE IF EXISTS geo_equiv")
    pg.execute("CREATE TABLE geo_equiv (id integer PRIMARY KEY, geom geometry(Geometry, 4326) NOT NULL)")
    with pg.cursor() as cur:
        cur.executemany(
            "INSERT INTO geo_equiv VALUES (%s, ST_SetSRID(ST_GeomFromGeoJSON(%s::text), 4326))",
            [(i, json.dumps(v)) for i, v in enumerate(values)],
        )
    pg.execute("CREATE INDEX geo_equiv_gist ON geo_equiv USING gist (geom)")
    pg.execute("ANALYZE geo_equiv")
    yield pg, values
    pg.execute("DROP TABLE geo_equiv")


@pytest.mark.postgres
class TestPostgis:
    def test_same_results_as_postgis(self, pg_table: tuple[Any, list[dict[str, Any]]]) -> None:
        conn, values = pg_table
        queries = _equivalence_queries(values)
        assert len(queries) >= 12
        for query in queries:
            sql, params = postgis_predicate(query, "g.geom")
            rows = conn.execute(f"SELECT id FROM geo_equiv AS g WHERE {sql}", params).fetchall()
            in_postgis = {r[0] for r in rows}
            in_python = {i for i, v in enumerate(values) if geo_matches(query, v)}
            assert in_python == in_postgis, (query.georel_expression, query.geojson)
            assert in_postgis, f"{query.georel_expression} selects nothing: a useless test"
            if query.georel != "disjoint":
                assert len(in_postgis) < len(values), f"{query.georel_expression} selects everything"

    def test_distances_like_postgis(self, pg_table: tuple[Any, list[dict[str, Any]]]) -> None:
        conn, values = pg_table
        for origin in (ANGERS, (-0.60, 47.45)):
            expr, params = postgis_distance(origin, "g.geom")
            rows = conn.execute(f"SELECT id, {expr} FROM geo_equiv AS g ORDER BY id", params).fetchall()
            for i, expected in rows:
                assert distance_m(origin, values[i]) == pytest.approx(expected, rel=1e-5, abs=0.05), values[i]

    def test_near_uses_the_gist_index(self, pg_table: tuple[Any, list[dict[str, Any]]]) -> None:
        conn, _ = pg_table
        sql, params = postgis_predicate(q("near;maxDistance==300", "Point", list(ANGERS)), "g.geom")
        with conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(
                r[0] for r in conn.execute(f"EXPLAIN SELECT id FROM geo_equiv AS g WHERE {sql}", params).fetchall()
            )
        assert "geo_equiv_gist" in plan, plan


def test_self_intersecting_geometries_are_accepted_and_repaired() -> None:
    """RFC 7946 and NGSI-LD do not require simple polygons (the ETSI suite uses a bow-tie one):
    they are accepted, and evaluated repaired, as PostGIS ST_MakeValid does."""
    bow_tie = q("within", "Polygon", "[[[0,0],[1,1],[1,0],[0,1],[0,0]]]")
    assert geo_matches(bow_tie, {"type": "Point", "coordinates": [0.9, 0.5]})
    assert not geo_matches(bow_tie, {"type": "Point", "coordinates": [0.5, 0.9]})
    stored = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    validate_geometry(stored)
    inside = q("intersects", "Point", "[0.9,0.5]")
    assert geo_matches(inside, stored)
