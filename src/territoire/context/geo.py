"""NGSI-LD geo-queries and GeoProperty values (ETSI GS CIM 009 v1.8, clauses 4.7 and 4.10).

What this module offers:

* :func:`parse_geo_query` / :func:`parse_geo_q` turn the ``georel``, ``geometry``, ``coordinates`` and
  ``geoproperty`` of a GET query (clause 6.4.3.2) or of a ``geoQ`` object (POST
  /entityOperations/query, subscriptions; clause 5.2.13) into a :class:`GeoQuery`;
* :func:`validate_geometry` / :func:`check_geometry` validate a GeoProperty value on writes, and
  :func:`bbox` gives its bounding box for the ``entity_geo`` index;
* :func:`geo_matches` evaluates a geo-query on a stored value in Python (SQLite backend, subscriptions),
  :func:`candidate_bbox` gives the bounding box an R*Tree prefilter can use, and :func:`postgis_predicate`
  gives the equivalent PostGIS SQL (PostgreSQL backend);
* :func:`distance_m` / :func:`geodesic_m` / :func:`haversine_m` compute distances [m].

Conventions
-----------
Coordinates are GeoJSON positions ``[longitude, latitude(, altitude)]`` in WGS 84 [deg] (RFC 7946
§3.1.1 and §4); the altitude is accepted and ignored by every computation (2D semantics, like PostGIS
predicates). As RFC 7946 §3.1.1 says, the line between two positions is a straight line in
longitude/latitude: every predicate (``within``, ``intersects``...) is planar in lon/lat, both here
(shapely/GEOS) and in PostGIS (``geometry`` type). Crossing the antimeridian is not supported.

Georel semantics (S = the stored GeoProperty value, Q = the reference geometry of the query)
-------------------------------------------------------------------------------------------
``within``: S within Q; ``contains``: S contains Q; ``intersects``; ``equals`` (topological
equality); ``disjoint``; ``overlaps`` (DE-9IM, same dimension) -- the OGC Simple Features predicates,
with S as the first operand (Scorpio: ``ST_Within(stored, reference)``; Stellio passes the operands the
other way round, which swaps within and contains).
``near;maxDistance==d``: the distance from the query point to S is <= d [m];
``near;minDistance==d``: that distance is > d [m] (``NOT ST_DWithin``, like Scorpio). Both modifiers
may be combined (``near;minDistance==100;maxDistance==2000``), an extension of the v1.8 grammar which
has exactly one. ``near`` requires a ``Point`` reference geometry (as Orion-LD: "Geometry must be
'Point' for georel 'near'"); Stellio and Scorpio also accept other geometries.

Distances
---------
:func:`geodesic_m` computes point-to-point distances on the WGS 84 ellipsoid with Lambert's formula
(see e.g. R. H. Rapp, *Geometric Geodesy Part II*, Ohio State University, 1993, §3.5; the
spherical central angle on reduced latitudes is computed with the haversine formula, R. W. Sinnott,
"Virtues of the Haversine", *Sky and Telescope* 68(2), 1984). Compared with PostGIS ``geography``
(GeographicLib, exact geodesics) it is within about 1 cm at city scale (measured: <= 1.2 cm, <= 2e-6
relative, up to 15 km around Angers) and within 1.2e-5 relative world-wide. :func:`distance_m` to
lines and polygons measured against ``ST_Distance(geography)``: <= 1.5 cm within 5 km of Angers.
The plain spherical haversine (:func:`haversine_m`, mean radius 6,371,008.8 m) is up to 0.3 % off
at the latitude of Angers (0.56 % world-wide) because the Earth is flattened: 6 m on a 2 km radius,
enough to make the Python and PostGIS answers disagree near the circle, hence the ellipsoidal formula.

For a LineString or Polygon the nearest point of S to the query point is found in a local
equirectangular projection centred on the query point (x = N0·cos(lat0)·dlon, y = M0·dlat, N0 and M0
the WGS 84 radii of curvature at the query latitude), then the distance to that point is measured with
:func:`geodesic_m`. The projection is affine in lon/lat, so the point found is on S exactly and the
distance returned is never below the true one; picking the wrong nearest point because of the
projection's scale error (about ``tan(lat0)·dlat``, 3e-4 at 2 km from Angers) overestimates the distance
by at most that relative amount, i.e. < 0.05 % for distances < 5 km at mid-latitudes. PostGIS
``geography`` treats edges as great-circle arcs instead of lon/lat lines; the two differ by less than
``L²·tan(lat)/(8R)`` for an edge of length L (2 cm for L = 1 km at 47°N, 2 m for 10 km).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final, TypeGuard

import numpy as np
import shapely
from shapely.errors import GEOSException
from shapely.geometry.base import BaseGeometry

from territoire.context.errors import BadRequestData

__all__ = [
    "DEFAULT_GEOPROPERTY",
    "GEOMETRY_TYPES",
    "GEORELS",
    "BBox",
    "GeoQuery",
    "bbox",
    "bbox_intersects",
    "candidate_bbox",
    "check_geometry",
    "distance_m",
    "geo_matches",
    "geodesic_m",
    "haversine_m",
    "parse_geo_q",
    "parse_geo_query",
    "postgis_distance",
    "postgis_predicate",
    "sqlite_bbox_clause",
    "validate_geometry",
]

BBox = tuple[float, float, float, float]
"""A bounding box ``(minx, miny, maxx, maxy)``: longitudes and latitudes [deg]."""

GEORELS: Final = ("near", "within", "contains", "intersects", "equals", "disjoint", "overlaps")
"""The geospatial relationships of clause 4.10."""

GEOMETRY_TYPES: Final = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon")
"""GeoJSON geometry types accepted for GeoProperty values and reference geometries (clauses 4.7.1 and
4.10; ``GeometryCollection`` is not supported, like Orion-LD and Stellio)."""

DEFAULT_GEOPROPERTY: Final = "location"
"""The GeoProperty a geo-query targets when ``geoproperty`` is not given (clause 4.10)."""

NEAR_MODIFIERS: Final = ("maxDistance", "minDistance")

# WGS 84 ellipsoid (NIMA TR8350.2).
WGS84_A: Final = 6_378_137.0
"""Semi-major axis [m]."""
WGS84_F: Final = 1 / 298.257223563
"""Flattening."""
_WGS84_E2: Final = WGS84_F * (2 - WGS84_F)
EARTH_MEAN_RADIUS_M: Final = 6_371_008.8
"""IUGG mean Earth radius R1 [m], for :func:`haversine_m`."""

_HALF_MERIDIAN_M: Final = 20_003_931.4586
"""Longest geodesic on WGS 84 (pole to pole) [m]: caps :func:`geodesic_m` for antipodal points."""
_M_PER_DEG_LAT_MIN: Final = 110_574.0
"""Smallest length of one degree of latitude [m] (at the equator: 110,574.3886 m), rounded down."""
_M_PER_DEG_LON_EQ: Final = WGS84_A * math.pi / 180
"""Length of one degree of longitude on the equator [m]; at latitude φ it is >= this × cos φ."""
_BBOX_MARGIN: Final = 1e-3
"""Relative safety margin of :func:`candidate_bbox` for ``near`` (covers the 1e-5 error of
:func:`geodesic_m` and the float rounding of the R*Tree)."""

_SHAPES: Final = {
    "Point": "[lon, lat]",
    "MultiPoint": "[[lon, lat], ...]",
    "LineString": "[[lon, lat], [lon, lat], ...]",
    "MultiLineString": "[[[lon, lat], [lon, lat], ...], ...]",
    "Polygon": "[[[lon, lat], [lon, lat], [lon, lat], [lon, lat], ...], ...] (linear rings)",
    "MultiPolygon": "[[[[lon, lat], ...], ...], ...] (polygons of linear rings)",
}
_DISTANCE_RE: Final = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_IDENT_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?")

_Pos = tuple[float, float]


# ---------------------------------------------------------------------------------------------------
# GeoJSON coordinates validation
# ---------------------------------------------------------------------------------------------------


def _bad(where: str, message: str) -> BadRequestData:
    return BadRequestData(f"{where}: {message}" if where else message)


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(value: Any) -> bool:
    return (type(value) is float or type(value) is int) and math.isfinite(value)


def _is_array(value: Any) -> TypeGuard[list[Any] | tuple[Any, ...]]:
    return type(value) is list or type(value) is tuple


def _nesting(where: str, gtype: str, detail: str) -> BadRequestData:
    return _bad(where, f"wrong nesting of {gtype} coordinates ({detail}); expected {_SHAPES[gtype]}")


def _position(value: Any, where: str, gtype: str) -> _Pos:
    """Validate one GeoJSON position and return ``(lon, lat)`` [deg] (RFC 7946 §3.1.1)."""
    if not _is_array(value):
        raise _nesting(where, gtype, f"{_short(value)} is not a position")
    if len(value) and _is_array(value[0]):
        raise _nesting(where, gtype, f"found an array {_short(value)} where a position was expected")
    if len(value) not in (2, 3):
        raise _bad(
            where,
            f"a position has 2 or 3 numbers [longitude, latitude(, altitude)], got {_short(value)}",
        )
    for number in value:
        if not _is_number(number):
            raise _bad(where, f"position {_short(value)} holds {_short(number)}, which is not a finite number")
    lon, lat = value[0], value[1]
    if not -180.0 <= lon <= 180.0:
        raise _bad(where, f"longitude {lon} is out of range [-180, 180] in position {_short(value)}")
    if not -90.0 <= lat <= 90.0:
        raise _bad(where, f"latitude {lat} is out of range [-90, 90] in position {_short(value)}")
    return (float(lon), float(lat))


def _positions(value: Any, where: str, gtype: str, what: str, minimum: int) -> list[_Pos]:
    if not _is_array(value):
        raise _nesting(where, gtype, f"{what} {_short(value)} is not an array of positions")
    if len(value) and _is_number(value[0]):
        raise _nesting(where, gtype, f"found a position {_short(value)} where {what} was expected")
    if len(value) < minimum:
        raise _bad(where, f"{gtype} {what} needs at least {minimum} positions, got {len(value)}")
    return [_position(p, where, gtype) for p in value]


def _ring(value: Any, where: str, gtype: str, index: int) -> list[_Pos]:
    if not _is_array(value):
        raise _nesting(where, gtype, f"ring {_short(value)} is not an array of positions")
    if len(value) and _is_number(value[0]):
        raise _nesting(where, gtype, f"found a position {_short(value)} where a linear ring was expected")
    ring = _positions(value, where, gtype, "linear ring", 4)
    first, last = value[0], value[-1]
    if list(first) != list(last):
        raise _bad(
            where,
            f"{gtype} ring is not closed (ring #{index}: first position {_short(first)} "
            f"!= last position {_short(last)})",
        )
    return ring


def _array(value: Any, where: str, gtype: str, what: str) -> Sequence[Any]:
    if not _is_array(value):
        raise _nesting(where, gtype, f"{_short(value)} is not an array of {what}")
    if not value:
        raise _bad(where, f"{gtype} coordinates must hold at least one {what[:-1]}, got []")
    return value


def _polygon_rings(value: Any, where: str, gtype: str) -> list[list[_Pos]]:
    rings = _array(value, where, gtype, "rings")
    if _is_number(rings[0]):
        raise _nesting(where, gtype, f"found a position {_short(rings)} where linear rings were expected")
    return [_ring(r, where, gtype, i) for i, r in enumerate(rings)]


def _build(gtype: Any, coordinates: Any, where: str, check_valid: bool) -> BaseGeometry:
    """Validate GeoJSON ``coordinates`` for ``gtype`` and build the 2D shapely geometry."""
    geom: BaseGeometry
    if gtype == "Point":
        lon, lat = _position(coordinates, where, gtype)
        return shapely.Point(lon, lat)
    if gtype == "MultiPoint":
        _array(coordinates, where, gtype, "positions")
        geom = shapely.MultiPoint(_positions(coordinates, where, gtype, "coordinates", 1))
    elif gtype == "LineString":
        geom = shapely.LineString(_positions(coordinates, where, gtype, "coordinates", 2))
    elif gtype == "MultiLineString":
        lines = _array(coordinates, where, gtype, "line strings")
        if _is_number(lines[0]):
            raise _nesting(where, gtype, f"found a position {_short(lines)} where line strings were expected")
        geom = shapely.MultiLineString([_positions(x, where, gtype, "line string", 2) for x in lines])
    elif gtype == "Polygon":
        rings = _polygon_rings(coordinates, where, gtype)
        geom = shapely.Polygon(rings[0], rings[1:])
    elif gtype == "MultiPolygon":
        polygons = _array(coordinates, where, gtype, "polygons")
        parts = []
        for polygon in polygons:
            if _is_array(polygon) and polygon and _is_number(polygon[0]):
                raise _nesting(where, gtype, f"found a position {_short(polygon)} where a polygon was expected")
            rings = _polygon_rings(polygon, where, gtype)
            parts.append(shapely.Polygon(rings[0], rings[1:]))
        geom = shapely.MultiPolygon(parts)
    elif gtype == "GeometryCollection":
        raise _bad(where, f"GeometryCollection is not supported; use one of {', '.join(GEOMETRY_TYPES)}")
    else:
        raise _bad(where, f"unknown geometry type {_short(gtype)}; expected one of {', '.join(GEOMETRY_TYPES)}")
    if check_valid and not shapely.is_valid(geom):
        raise _bad(where, f"invalid {gtype}: {shapely.is_valid_reason(geom)}")
    return geom


def _repaired(geom: BaseGeometry) -> BaseGeometry:
    """``geom`` made valid (OGC) for predicates, the way PostGIS ``ST_MakeValid`` does."""
    return geom if shapely.is_valid(geom) else shapely.make_valid(geom)


def _geometry_object(value: Any, where: str) -> tuple[Any, Any]:
    if type(value) is not dict:
        raise _bad(where, f"a GeoProperty value must be a GeoJSON geometry object, got {_short(value)}")
    if "type" not in value:
        raise _bad(where, "the GeoJSON geometry has no 'type'")
    gtype = value["type"]
    if type(gtype) is not str:
        raise _bad(where, f"the GeoJSON 'type' must be a string, got {_short(gtype)}")
    if gtype == "GeometryCollection":
        raise _bad(where, f"GeometryCollection is not supported; use one of {', '.join(GEOMETRY_TYPES)}")
    if gtype not in GEOMETRY_TYPES:
        raise _bad(where, f"unknown geometry type {_short(gtype)}; expected one of {', '.join(GEOMETRY_TYPES)}")
    if "coordinates" not in value:
        raise _bad(where, f"the GeoJSON {gtype} has no 'coordinates'")
    return gtype, value["coordinates"]


def _fast_point(value: Any) -> _Pos | None:
    """``(lon, lat)`` of a well-formed GeoJSON Point, else None (then the slow path explains why)."""
    if type(value) is dict and value.get("type") == "Point":
        c = value.get("coordinates")
        if type(c) is list and 2 <= len(c) <= 3:
            lon, lat = c[0], c[1]
            if (
                (type(lon) is float or type(lon) is int)
                and (type(lat) is float or type(lat) is int)
                and -180.0 <= lon <= 180.0
                and -90.0 <= lat <= 90.0
                and (len(c) == 2 or _is_number(c[2]))
            ):
                return (float(lon), float(lat))
    return None


def validate_geometry(value: Any, attr: str | None = None) -> BaseGeometry:
    """Validate a GeoProperty value (a GeoJSON geometry object) and return it as a 2D shapely geometry.

    Accepted: the types of :data:`GEOMETRY_TYPES` (not GeometryCollection); positions of 2 or 3 finite
    numbers, longitude in [-180, 180] and latitude in [-90, 90] [deg]; LineStrings of >= 2 positions;
    linear rings of >= 4 positions, closed; non-empty Multi* geometries; and geometries valid in the OGC
    Simple Features sense (no self-intersecting ring, ...), because GEOS predicates may fail on invalid
    ones at query time. Ring orientation is not checked (RFC 7946 §3.1.6: parsers should not reject).
    Other members (``bbox``, foreign members) are ignored.

    ``attr`` (e.g. ``"location"``) prefixes error messages. Raises :class:`BadRequestData` with a
    precise message, e.g. ``"location: Polygon ring is not closed (ring #0: ...)"``.
    Points, by far the most common values, take a fast path (about 3 µs).
    """
    point = _fast_point(value)
    if point is not None:
        return shapely.Point(point[0], point[1])
    where = attr or ""
    gtype, coordinates = _geometry_object(value, where)
    return _build(gtype, coordinates, where, check_valid=False)


def check_geometry(value: Any, attr: str | None = None) -> None:
    """Like :func:`validate_geometry` without returning the geometry: a Point costs < 1 µs."""
    if _fast_point(value) is None:
        validate_geometry(value, attr)


# ---------------------------------------------------------------------------------------------------
# Bounding boxes
# ---------------------------------------------------------------------------------------------------


def bbox(value: dict[str, Any]) -> BBox:
    """Bounding box ``(minx, miny, maxx, maxy)`` [deg] of a GeoJSON geometry, from its coordinates.

    No shapely object is built; polygons use their exterior rings only. Meant for values already
    validated by :func:`validate_geometry`; raises :class:`BadRequestData` on malformed ones.
    """
    try:
        gtype = value["type"]
        c = value["coordinates"]
        if gtype == "Point":
            x, y = float(c[0]), float(c[1])
            return (x, y, x, y)
        positions: list[Any]
        if gtype in ("MultiPoint", "LineString"):
            positions = c
        elif gtype == "MultiLineString":
            positions = [p for line in c for p in line]
        elif gtype == "Polygon":
            positions = c[0]
        elif gtype == "MultiPolygon":
            positions = [p for polygon in c for p in polygon[0]]
        else:
            raise _bad("", f"cannot compute the bounding box of a {_short(gtype)}")
        xs = [p[0] for p in positions]
        ys = [p[1] for p in positions]
        return (float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys)))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise _bad("", f"malformed GeoJSON geometry {_short(value)}") from exc


def bbox_intersects(a: BBox, b: BBox) -> bool:
    """Whether two bounding boxes intersect (touching counts)."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


# ---------------------------------------------------------------------------------------------------
# The query
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GeoQuery:
    """A parsed geo-query (clause 4.10).

    ``geometry`` is the reference geometry (shapely, lon/lat WGS 84 [deg]) and ``geojson`` the same as a
    GeoJSON geometry object; ``max_distance`` / ``min_distance`` [m] are set for ``near`` only;
    ``geoproperty`` is the raw term (default ``"location"``), to be expanded by the caller.
    A GeoQuery caches its prepared geometry: use one from one thread at a time (GEOS prepared
    geometries build their indexes lazily).
    """

    georel: str
    geometry: BaseGeometry = field(compare=False, repr=False)
    geojson: dict[str, Any] = field(hash=False)
    geoproperty: str = DEFAULT_GEOPROPERTY
    max_distance: float | None = None
    min_distance: float | None = None

    def __post_init__(self) -> None:
        if self.georel not in GEORELS:
            raise ValueError(f"unknown georel {self.georel!r}")
        if self.georel == "near":
            if self.max_distance is None and self.min_distance is None:
                raise ValueError("near needs max_distance and/or min_distance")
            if self.geometry.geom_type != "Point":
                raise ValueError("near needs a Point geometry")
        elif self.max_distance is not None or self.min_distance is not None:
            raise ValueError("distances are for near only")

    @property
    def point(self) -> tuple[float, float]:
        """``(lon, lat)`` [deg] of a ``near`` query's point."""
        if self.geometry.geom_type != "Point":
            raise ValueError("the reference geometry is not a Point")
        return (float(self.geometry.x), float(self.geometry.y))

    @property
    def georel_expression(self) -> str:
        """The ``georel`` as written in a request, e.g. ``"near;maxDistance==2000"``."""
        parts = [self.georel]
        for name, distance in (("minDistance", self.min_distance), ("maxDistance", self.max_distance)):
            if distance is not None:
                parts.append(f"{name}=={_format_number(distance)}")
        return ";".join(parts)

    def as_geo_q(self) -> dict[str, Any]:
        """The query as a ``geoQ`` object (clause 5.2.13), coordinates as an array."""
        return {
            "georel": self.georel_expression,
            "geometry": self.geojson["type"],
            "coordinates": self.geojson["coordinates"],
            "geoproperty": self.geoproperty,
        }

    @cached_property
    def prepared(self) -> BaseGeometry:
        """The reference geometry, prepared (GEOS prepared geometry) for repeated predicates."""
        shapely.prepare(self.geometry)
        return self.geometry

    @cached_property
    def _candidate_bbox(self) -> BBox | None:
        return _compute_candidate_bbox(self)


def _format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _parse_distance(name: str, text: str, georel: str) -> float:
    text = text.strip()
    if text.startswith("-"):
        raise _bad("georel", f"{name} must not be negative in {georel!r}")
    if not _DISTANCE_RE.fullmatch(text):
        raise _bad("georel", f"{name} must be a number of metres, got {text!r} in {georel!r}")
    value = float(text)
    if not math.isfinite(value):
        raise _bad("georel", f"{name} is too large in {georel!r}")
    return value


def _parse_georel(georel: str) -> tuple[str, float | None, float | None]:
    parts = [p.strip() for p in georel.split(";")]
    rel = parts[0]
    if rel not in GEORELS:
        hint = ""
        if rel.lower() in GEORELS:
            hint = f" (georel names are case-sensitive: {rel.lower()!r})"
        elif rel in ("coveredBy", "covers"):
            hint = " (an NGSIv2 georel; NGSI-LD has 'within' and 'contains')"
        raise _bad("georel", f"unknown relationship {georel!r}; expected one of {', '.join(GEORELS)}{hint}")
    modifiers = parts[1:]
    if rel != "near":
        if modifiers:
            raise _bad("georel", f"{rel!r} takes no modifier, got {georel!r}")
        return rel, None, None
    if not modifiers or modifiers == [""]:
        raise _bad("georel", f"'near' needs maxDistance==<metres> or minDistance==<metres>, got {georel!r}")
    found: dict[str, float] = {}
    for modifier in modifiers:
        name, sep, number = modifier.partition("==")
        name = name.strip()
        if not sep:
            hint = " (NGSI-LD uses '==', e.g. near;maxDistance==2000)" if ":" in modifier else ""
            raise _bad("georel", f"invalid near modifier {modifier!r} in {georel!r}{hint}")
        if name not in NEAR_MODIFIERS:
            raise _bad("georel", f"invalid near modifier {name!r} in {georel!r}; expected maxDistance or minDistance")
        if name in found:
            raise _bad("georel", f"{name} is given twice in {georel!r}")
        found[name] = _parse_distance(name, number, georel)
    max_d, min_d = found.get("maxDistance"), found.get("minDistance")
    if max_d is not None and min_d is not None and min_d >= max_d:
        raise _bad(
            "georel",
            f"minDistance ({_format_number(min_d)}) must be below maxDistance ({_format_number(max_d)}) in {georel!r}",
        )
    return rel, max_d, min_d


def _parse_coordinates(coordinates: str | Sequence[Any]) -> Any:
    if isinstance(coordinates, str):
        text = coordinates.strip()
        if not text.startswith("["):
            raise _bad("coordinates", f"must be a JSON array such as [8.0,40.0], got {_short(text)}")
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _bad("coordinates", f"not a valid JSON array: {_short(text)} ({exc.msg})") from exc
        if not _is_array(parsed):
            raise _bad("coordinates", f"must be a JSON array, got {_short(text)}")
        return parsed
    if _is_array(coordinates):
        return coordinates
    raise _bad("coordinates", f"must be an array (or a string holding one), got {_short(coordinates)}")


def parse_geo_query(
    georel: str | None,
    geometry: str | None,
    coordinates: str | Sequence[Any] | None,
    geoproperty: str | None,
) -> GeoQuery | None:
    """Parse a geo-query (clause 4.10); None when no geo-query is given.

    ``coordinates`` is the JSON text of a GET parameter (e.g. ``"[8.0,40.0]"``, already URL-decoded)
    or the array (or string) of a ``geoQ`` member. ``georel``, ``geometry`` and ``coordinates`` go
    together: some but not all of them raise :class:`BadRequestData`; ``geoproperty`` alone is ignored
    (defaults to ``"location"``). ``geometry`` is one of :data:`GEOMETRY_TYPES`, coordinates are
    validated like GeoProperty values (:func:`validate_geometry`), and ``near`` needs a ``Point``.
    """
    given = {"georel": georel, "geometry": geometry, "coordinates": coordinates}
    if all(v is None for v in given.values()):
        return None
    missing = [name for name, value in given.items() if value is None]
    if missing:
        names = " and ".join(repr(m) for m in missing)
        raise BadRequestData(
            f"incomplete geo-query: {names} {'is' if len(missing) == 1 else 'are'} missing "
            "(georel, geometry and coordinates go together)"
        )
    assert georel is not None and geometry is not None and coordinates is not None
    if not isinstance(georel, str):
        raise _bad("georel", f"must be a string, got {_short(georel)}")
    rel, max_d, min_d = _parse_georel(georel)
    if not isinstance(geometry, str):
        raise _bad("geometry", f"must be a string, got {_short(geometry)}")
    if geometry not in GEOMETRY_TYPES:
        hint = ""
        for known in GEOMETRY_TYPES:
            if known.lower() == geometry.lower():
                hint = f" (geometry names are case-sensitive: {known!r})"
        raise _bad(
            "geometry",
            f"unsupported geometry {geometry!r}; expected one of {', '.join(GEOMETRY_TYPES)}{hint}",
        )
    if rel == "near" and geometry != "Point":
        raise _bad("geometry", f"georel 'near' needs geometry 'Point', got {geometry!r}")
    coords = _parse_coordinates(coordinates)
    # A self-intersecting reference polygon is repaired (as PostGIS ST_MakeValid does) rather than
    # refused: RFC 7946 and NGSI-LD do not require simple polygons, and the ETSI suite uses one.
    shape = _repaired(_build(geometry, coords, "coordinates", check_valid=False))
    if geoproperty is None:
        geoproperty = DEFAULT_GEOPROPERTY
    elif not isinstance(geoproperty, str) or not geoproperty.strip():
        raise _bad("geoproperty", f"must be a non-empty attribute name, got {_short(geoproperty)}")
    return GeoQuery(
        georel=rel,
        geometry=shape,
        geojson={"type": geometry, "coordinates": coords},
        geoproperty=geoproperty.strip(),
        max_distance=max_d,
        min_distance=min_d,
    )


_GEO_Q_MEMBERS: Final = ("georel", "geometry", "coordinates", "geoproperty")


def parse_geo_q(geo_q: Any) -> GeoQuery:
    """Parse a ``geoQ`` object (clause 5.2.13): ``{georel, geometry, coordinates, geoproperty?}``.

    ``coordinates`` may be an array or a string holding one. Unknown members and missing mandatory
    ones raise :class:`BadRequestData`.
    """
    if type(geo_q) is not dict:
        raise _bad("geoQ", f"must be a JSON object, got {_short(geo_q)}")
    unknown = [k for k in geo_q if k not in _GEO_Q_MEMBERS]
    if unknown:
        raise _bad(
            "geoQ",
            f"unknown member(s) {', '.join(repr(k) for k in unknown)}; expected {', '.join(_GEO_Q_MEMBERS)}",
        )
    for key in ("georel", "geometry", "geoproperty"):
        if key in geo_q and not isinstance(geo_q[key], str):
            raise _bad("geoQ", f"{key!r} must be a string, got {_short(geo_q[key])}")
    missing = [k for k in ("georel", "geometry", "coordinates") if geo_q.get(k) is None]
    if missing:
        raise _bad("geoQ", f"mandatory member(s) {', '.join(repr(k) for k in missing)} missing")
    query = parse_geo_query(geo_q["georel"], geo_q["geometry"], geo_q["coordinates"], geo_q.get("geoproperty"))
    assert query is not None
    return query


# ---------------------------------------------------------------------------------------------------
# Distances
# ---------------------------------------------------------------------------------------------------


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance [m] on the sphere of radius 6,371,008.8 m (haversine formula, Sinnott 1984).

    Up to 0.56 % off the WGS 84 ellipsoid (north-south near the equator; 0.3 % at 47°N): prefer
    :func:`geodesic_m`.
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_MEAN_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def geodesic_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Distance [m] between two points on the WGS 84 ellipsoid, with Lambert's formula.

    The central angle σ between the reduced latitudes β is computed with the haversine formula, then
    ``d = a·(σ − f/2·(X + Y))`` with ``P = (β1+β2)/2``, ``Q = (β2−β1)/2``,
    ``X = (σ − sin σ)·sin²P·cos²Q / cos²(σ/2)`` and ``Y = (σ + sin σ)·cos²P·sin²Q / sin²(σ/2)``
    (Rapp 1993, §3.5). Error versus exact geodesics: about 1 cm at city scale, 1.2e-5 relative up to
    thousands of km; Lambert's formula degrades for nearly antipodal points (> ~19,000 km apart),
    where the result is capped at the half meridian.
    """
    b1 = math.atan((1 - WGS84_F) * math.tan(math.radians(lat1)))
    b2 = math.atan((1 - WGS84_F) * math.tan(math.radians(lat2)))
    h = math.sin((b2 - b1) / 2) ** 2 + math.cos(b1) * math.cos(b2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    sigma = 2 * math.asin(min(1.0, math.sqrt(h)))
    if sigma < 1e-15:
        return 0.0
    p, q = (b1 + b2) / 2, (b2 - b1) / 2
    sin_s = math.sin(sigma)
    cos_half2 = math.cos(sigma / 2) ** 2
    x = (sigma - sin_s) * math.sin(p) ** 2 * math.cos(q) ** 2 / cos_half2 if cos_half2 > 1e-15 else 0.0
    y = (sigma + sin_s) * math.cos(p) ** 2 * math.sin(q) ** 2 / math.sin(sigma / 2) ** 2
    return min(WGS84_A * (sigma - WGS84_F / 2 * (x + y)), _HALF_MERIDIAN_M)


def _local_lon_scale(lat0: float) -> float:
    """Ratio (length of 1° of longitude) / (length of 1° of latitude) at ``lat0`` on WGS 84."""
    s = math.sin(math.radians(lat0))
    w2 = 1 - _WGS84_E2 * s * s
    # N·cos(φ) / M with N = a/√w2 and M = a(1−e²)/w2^1.5
    return max(math.cos(math.radians(lat0)) * w2 / (1 - _WGS84_E2), 1e-12)


def _nearest_point(q: tuple[float, float], shape: BaseGeometry) -> tuple[float, float]:
    """Point of ``shape`` nearest to ``q``, in a local equirectangular projection centred on ``q``."""
    lon0, lat0 = q
    k = _local_lon_scale(lat0)

    def forward(xy: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        out = np.empty_like(xy)
        out[:, 0] = (xy[:, 0] - lon0) * k
        out[:, 1] = xy[:, 1] - lat0
        return out

    projected = shapely.transform(shape, forward)
    line = shapely.shortest_line(shapely.Point(0.0, 0.0), projected)
    x, y = shapely.get_coordinates(line)[1]
    return (float(x) / k + lon0, float(y) + lat0)


def _distance_to_shape(q: tuple[float, float], shape: BaseGeometry) -> float:
    if shapely.intersects_xy(shape, q[0], q[1]):
        return 0.0
    lon, lat = _nearest_point(q, shape)
    return geodesic_m(q[0], q[1], lon, lat)


def distance_m(q_point: tuple[float, float], value: dict[str, Any]) -> float:
    """Smallest distance [m] from ``q_point`` = ``(lon, lat)`` [deg] to a stored GeoJSON geometry.

    0 when the point is on or inside the geometry. Points: :func:`geodesic_m`; other geometries: nearest
    point in a local equirectangular projection, then :func:`geodesic_m` (see the module docstring for
    the accuracy). Equivalent in PostGIS: ``ST_Distance(geom::geography, point::geography)``
    (:func:`postgis_distance`). Raises :class:`BadRequestData` if ``value`` is malformed.
    """
    lon0, lat0 = q_point
    gtype = value.get("type") if type(value) is dict else None
    c = value.get("coordinates") if type(value) is dict else None
    if gtype == "Point" and _is_array(c) and len(c) >= 2:
        return geodesic_m(lon0, lat0, float(c[0]), float(c[1]))
    if gtype == "MultiPoint" and _is_array(c) and c and all(_is_array(p) and len(p) >= 2 for p in c):
        return min(geodesic_m(lon0, lat0, float(p[0]), float(p[1])) for p in c)
    gtype, coordinates = _geometry_object(value, "")
    return _distance_to_shape((lon0, lat0), _build(gtype, coordinates, "", check_valid=False))


# ---------------------------------------------------------------------------------------------------
# Evaluation in Python
# ---------------------------------------------------------------------------------------------------


def _compute_candidate_bbox(q: GeoQuery) -> BBox | None:
    if q.georel == "disjoint":
        return None
    if q.georel != "near":
        minx, miny, maxx, maxy = (float(v) for v in q.geometry.bounds)
        return (minx, miny, maxx, maxy)
    if q.max_distance is None:
        return None
    lon, lat = q.point
    d = q.max_distance * (1 + _BBOX_MARGIN)
    dlat = d / _M_PER_DEG_LAT_MIN + 1e-9
    miny, maxy = lat - dlat, lat + dlat
    far_lat = max(abs(miny), abs(maxy))
    if far_lat >= 89.999:
        return (-180.0, max(miny, -90.0), 180.0, min(maxy, 90.0))
    dlon = d / (_M_PER_DEG_LON_EQ * math.cos(math.radians(far_lat))) + 1e-9
    minx, maxx = lon - dlon, lon + dlon
    if minx < -180.0 or maxx > 180.0:  # crosses the antimeridian: no longitude restriction
        minx, maxx = -180.0, 180.0
    return (minx, max(miny, -90.0), maxx, min(maxy, 90.0))


def candidate_bbox(q: GeoQuery) -> BBox | None:
    """Bounding box [deg] that the bounding box of every matching stored geometry intersects.

    For an R*Tree / GiST prefilter. ``near`` with maxDistance: the geodesic disk around the point, as a
    lon/lat box (latitude-aware: the longitude extent uses the latitude of the box edge farthest from
    the equator; 0.1 % margin; the whole longitude range near the poles or across the antimeridian);
    ``within``, ``contains``, ``intersects``, ``equals``, ``overlaps``: the bounding box of the reference
    geometry; ``disjoint`` and ``near`` with only minDistance: None (no prefilter possible).
    """
    return q._candidate_bbox


def _stored_point(value: Any) -> tuple[float, float] | None:
    if type(value) is dict and value.get("type") == "Point":
        c = value.get("coordinates")
        if _is_array(c) and len(c) >= 2 and _is_number(c[0]) and _is_number(c[1]):
            return (float(c[0]), float(c[1]))
    return None


def _near_matches(q: GeoQuery, value: dict[str, Any]) -> bool:
    d = distance_m(q.point, value)
    if q.max_distance is not None and not d <= q.max_distance:
        return False
    return q.min_distance is None or d > q.min_distance


_PREDICATES: Final[dict[str, Callable[[BaseGeometry, BaseGeometry], bool]]] = {
    # (prepared reference geometry Q, stored geometry S) -> "S <georel> Q"
    "within": lambda qg, s: bool(shapely.contains(qg, s)),
    "contains": lambda qg, s: bool(shapely.within(qg, s)),
    "intersects": lambda qg, s: bool(shapely.intersects(qg, s)),
    "disjoint": lambda qg, s: bool(shapely.disjoint(qg, s)),
    "overlaps": lambda qg, s: bool(shapely.overlaps(qg, s)),
    "equals": lambda qg, s: bool(shapely.equals(s, qg)),
}


def geo_matches(q: GeoQuery, value: dict[str, Any]) -> bool:
    """Whether a stored GeoJSON geometry ``value`` satisfies the geo-query ``q`` (see module docstring).

    Same answers as :func:`postgis_predicate` (checked by the tests), up to the distance accuracy
    documented above. A malformed stored value never matches (reads must not fail on old data).
    """
    try:
        if q.georel == "near":
            box = q._candidate_bbox
            if box is not None and not bbox_intersects(bbox(value), box):
                return False
            return _near_matches(q, value)
        box = q._candidate_bbox
        if box is None:  # disjoint
            if not bbox_intersects(bbox(value), q.geometry.bounds):
                return True
        elif not bbox_intersects(bbox(value), box):
            return False
        qg = q.prepared
        point = _stored_point(value)
        if point is not None:
            if q.georel == "within":
                return bool(shapely.contains_xy(qg, point[0], point[1]))
            if q.georel == "intersects":
                return bool(shapely.intersects_xy(qg, point[0], point[1]))
            if q.georel == "disjoint":
                return not shapely.intersects_xy(qg, point[0], point[1])
        gtype, coordinates = _geometry_object(value, "")
        stored = _repaired(_build(gtype, coordinates, "", check_valid=False))
        return _PREDICATES[q.georel](qg, stored)
    except (BadRequestData, GEOSException, ValueError, TypeError, KeyError, IndexError):
        return False


# ---------------------------------------------------------------------------------------------------
# SQL
# ---------------------------------------------------------------------------------------------------

_POSTGIS_FUNCTIONS: Final = {
    "within": "ST_Within",
    "contains": "ST_Contains",
    "intersects": "ST_Intersects",
    "equals": "ST_Equals",
    "disjoint": "ST_Disjoint",
    "overlaps": "ST_Overlaps",
}


def _identifier(name: str) -> str:
    if not _IDENT_RE.fullmatch(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def postgis_predicate(q: GeoQuery, geom_col: str = "g.geom") -> tuple[str, list[Any]]:
    """PostGIS condition equivalent to :func:`geo_matches`, with ``%s`` placeholders (psycopg 3).

    ``geom_col`` is a ``geometry(Geometry, 4326)`` column with a GiST index. ``near`` becomes
    ``ST_DWithin(geom::geography, point::geography, maxDistance)`` (distance on the WGS 84 spheroid)
    and/or ``NOT ST_DWithin(..., minDistance)``; because the ``::geography`` cast defeats the geometry
    GiST index, a maxDistance adds ``geom && ST_MakeEnvelope(<candidate_bbox>, 4326)``, which the index
    serves. The other georels become ``ST_Within``/``ST_Contains``/``ST_Intersects``/``ST_Equals``/
    ``ST_Disjoint``/``ST_Overlaps(geom, reference)`` (index-assisted by PostGIS itself, except disjoint).
    """
    col = _identifier(geom_col)
    if q.georel == "near":
        lon, lat = q.point
        point = "ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography"
        clauses: list[str] = []
        params: list[Any] = []
        box = q._candidate_bbox
        if box is not None:
            clauses.append(f"{col} && ST_MakeEnvelope(%s, %s, %s, %s, 4326)")
            params.extend(box)
        if q.max_distance is not None:
            clauses.append(f"ST_DWithin({col}::geography, {point}, %s)")
            params.extend([lon, lat, q.max_distance])
        if q.min_distance is not None:
            clauses.append(f"NOT ST_DWithin({col}::geography, {point}, %s)")
            params.extend([lon, lat, q.min_distance])
        return "(" + " AND ".join(clauses) + ")", params
    function = _POSTGIS_FUNCTIONS[q.georel]
    reference = "ST_MakeValid(ST_SetSRID(ST_GeomFromGeoJSON(%s::text), 4326))"
    return f"{function}({col}, {reference})", [json.dumps(q.geojson, separators=(",", ":"))]


def postgis_distance(q_point: tuple[float, float], geom_col: str = "g.geom") -> tuple[str, list[Any]]:
    """PostGIS expression of :func:`distance_m` (e.g. to ``ORDER BY`` near results), ``%s`` placeholders."""
    col = _identifier(geom_col)
    return (
        f"ST_Distance({col}::geography, ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography)",
        [q_point[0], q_point[1]],
    )


def sqlite_bbox_clause(
    box: BBox,
    *,
    geo_alias: str = "g",
    rtree_alias: str = "r",
    rtree_table: str = "entity_geo_rtree",
    rowid_column: str = "rowid",
) -> tuple[str, list[float]]:
    """SQLite ``JOIN`` of the R*Tree ``entity_geo_rtree(id, minx, maxx, miny, maxy)`` on a bounding box.

    Returns ``("JOIN entity_geo_rtree AS r ON r.id = g.rowid AND r.minx <= ? AND r.maxx >= ? AND
    r.miny <= ? AND r.maxy >= ?", [maxx, minx, maxy, miny])``: the ``entity_geo`` rows (alias
    ``geo_alias``, R*Tree id = ``rowid_column``) whose bounding box intersects ``box`` (e.g. the
    :func:`candidate_bbox` of a query). Use it as ``FROM entity_geo AS g <clause>``. The R*Tree stores
    32-bit floats rounded outwards, so the prefilter never misses a row; the exact test is
    :func:`geo_matches`.
    """
    g, r = _identifier(geo_alias), _identifier(rtree_alias)
    table, rowid = _identifier(rtree_table), _identifier(rowid_column)
    minx, miny, maxx, maxy = box
    sql = (
        f"JOIN {table} AS {r} ON {r}.id = {g}.{rowid} AND {r}.minx <= ? AND {r}.maxx >= ? "
        f"AND {r}.miny <= ? AND {r}.maxy >= ?"
    )
    return sql, [maxx, minx, maxy, miny]
