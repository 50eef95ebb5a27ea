"""Tests of territoire.context.validation (Smart Data Models JSON Schema validation)."""

from __future__ import annotations

import copy
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import orjson
import pytest

from territoire.context.errors import BadRequestData, InternalError
from territoire.context.validation import MAX_REPORTED_ERRORS, SchemaValidator, local_file_for_url

BUNDLE: Traversable = files("territoire") / "data" / "smart-data-models"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
COMMON = "https://smart-data-models.github.io/data-models/common-schema.json"

# Bundled keyValues examples that do NOT validate against their own schema (upstream SDM defects),
# with the attributes that fail. Kept explicit so that a fixed (or newly broken) example shows up.
EXPECTED_INVALID_EXAMPLES: dict[str, set[str]] = {
    # AirQualityObserved/example.json:
    # - "tsp": 73.3, but the schema declares tsp {"type": "integer"} (a concentration, upstream
    #   should say "number"; the normalized example has 73.3 too);
    # - "dateObserved": "2016-03-15T11:00:00" has no UTC offset, so it is not an RFC 3339
    #   date-time as the schema's {"format": "date-time"} requires (formats are asserted).
    "AirQualityObserved": {"tsp", "dateObserved"},
}


def bundled_types() -> list[str]:
    return sorted(
        child.name
        for child in BUNDLE.iterdir()
        if child.is_dir() and not child.name.startswith("_") and (child / "schema.json").is_file()
    )


def example(type_name: str) -> dict[str, Any]:
    data = orjson.loads((BUNDLE / type_name / "example.json").read_bytes())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def validator() -> SchemaValidator:
    return SchemaValidator()


def rejection(validator: SchemaValidator, type_name: str, entity: dict[str, Any]) -> BadRequestData:
    with pytest.raises(BadRequestData) as info:
        validator.validate(type_name, entity)
    return info.value


# ------------------------------------------------------------------------------------- bundled types


def test_known_types_lists_every_bundled_schema(validator: SchemaValidator) -> None:
    types = validator.known_types()
    assert types == bundled_types()
    assert {"WasteContainer", "Streetlight", "Device", "WeatherObserved"} <= set(types)
    assert "_common" not in types
    assert validator.has_schema("WasteContainer")
    assert not validator.has_schema("_common")
    assert not validator.has_schema("wastecontainer")
    assert not validator.has_schema("../WasteContainer")


@pytest.mark.parametrize("type_name", bundled_types())
def test_bundled_example_validates(validator: SchemaValidator, type_name: str) -> None:
    entity = example(type_name)
    expected_failures = EXPECTED_INVALID_EXAMPLES.get(type_name)
    if expected_failures is None:
        validator.validate(type_name, entity)
        return
    error = rejection(validator, type_name, entity)
    assert {item["attribute"] for item in error.extra["errors"]} == expected_failures


def test_expected_invalid_examples_are_bundled_types() -> None:
    assert set(EXPECTED_INVALID_EXAMPLES) <= set(bundled_types())


def test_air_quality_example_failures_are_the_documented_ones(validator: SchemaValidator) -> None:
    error = rejection(validator, "AirQualityObserved", example("AirQualityObserved"))
    assert {(item["attribute"], item["message"]) for item in error.extra["errors"]} == {
        ("tsp", "73.3 is not of type 'integer'"),
        ("dateObserved", "'2016-03-15T11:00:00' is not a 'date-time'"),
    }
    # Fixing both makes it valid: nothing else is wrong with it.
    fixed = example("AirQualityObserved") | {"tsp": 73, "dateObserved": "2016-03-15T11:00:00Z"}
    validator.validate("AirQualityObserved", fixed)


# ---------------------------------------------------------------------------------- invalid entities


def test_filling_level_out_of_range(validator: SchemaValidator) -> None:
    error = rejection(validator, "WasteContainer", example("WasteContainer") | {"fillingLevel": 1.7})
    assert error.detail == (
        "Entity does not validate against Smart Data Models schema WasteContainer: "
        "attribute 'fillingLevel': 1.7 is greater than the maximum of 1"
    )
    assert error.extra == {"errors": [{"attribute": "fillingLevel", "message": "1.7 is greater than the maximum of 1"}]}
    assert error.status == 400
    problem = error.to_problem()
    assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert problem["errors"] == error.extra["errors"]
    orjson.dumps(problem)  # serialisable as a ProblemDetails body


def test_filling_level_in_range(validator: SchemaValidator) -> None:
    validator.validate("WasteContainer", example("WasteContainer") | {"fillingLevel": 0.4})


def test_streetlight_power_state_not_in_enum(validator: SchemaValidator) -> None:
    error = rejection(validator, "Streetlight", example("Streetlight") | {"powerState": "dimmed"})
    assert "attribute 'powerState'" in error.detail
    assert "'dimmed' is not one of ['bootingUp', 'low', 'off', 'on']" in error.detail
    assert error.extra["errors"][0]["attribute"] == "powerState"


def test_missing_type_is_named(validator: SchemaValidator) -> None:
    entity = example("Streetlight")
    del entity["type"]
    error = rejection(validator, "Streetlight", entity)
    assert error.detail == (
        "Entity does not validate against Smart Data Models schema Streetlight: "
        "attribute 'type': 'type' is a required property"
    )
    assert error.extra["errors"] == [{"attribute": "type", "message": "'type' is a required property"}]


def test_wrong_type_value(validator: SchemaValidator) -> None:
    error = rejection(validator, "WasteContainer", example("WasteContainer") | {"type": "Streetlight"})
    assert "attribute 'type': 'Streetlight' is not one of ['WasteContainer']" in error.detail


def test_nested_attribute_path(validator: SchemaValidator) -> None:
    # A Point with one coordinate fails every GeoJSON alternative of location; the Point one only
    # because of its coordinates, which is what is reported.
    entity = example("WasteContainer") | {"location": {"type": "Point", "coordinates": [1]}}
    error = rejection(validator, "WasteContainer", entity)
    assert error.extra["errors"] == [{"attribute": "location.coordinates", "message": "[1] is too short"}]


def test_unresolved_alternatives_list_their_reasons(validator: SchemaValidator) -> None:
    error = rejection(validator, "WasteContainer", example("WasteContainer") | {"location": [1, 2]})
    assert error.extra["errors"] == [
        {
            "attribute": "location",
            "message": "[1, 2] is not valid under any of the given schemas ([1, 2] is not of type 'object')",
        }
    ]


def test_several_errors_are_listed_best_first(validator: SchemaValidator) -> None:
    entity = example("WasteContainer") | {"fillingLevel": -1, "storedWasteKind": "gold"}
    del entity["location"]
    error = rejection(validator, "WasteContainer", entity)
    # the entity-level error (a missing required attribute) is the most relevant one
    assert error.detail.startswith(
        "Entity does not validate against Smart Data Models schema WasteContainer: "
        "attribute 'location': 'location' is a required property"
    )
    assert error.detail.endswith("(3 errors in total)")
    assert [item["attribute"] for item in error.extra["errors"]] == [
        "location",
        "fillingLevel",
        "storedWasteKind",
    ]


def test_error_list_is_capped(validator: SchemaValidator) -> None:
    entity = example("WasteContainer") | {"category": [f"bad{i}" for i in range(25)]}
    error = rejection(validator, "WasteContainer", entity)
    assert error.detail.startswith(
        "Entity does not validate against Smart Data Models schema WasteContainer: attribute 'category[0]': "
    )
    assert error.detail.endswith("(25 errors in total)")
    listed = error.extra["errors"]
    assert len(listed) == MAX_REPORTED_ERRORS == 20
    assert [item["attribute"] for item in listed] == [f"category[{i}]" for i in range(20)]


def test_long_messages_are_truncated(validator: SchemaValidator) -> None:
    entity = example("WasteContainer") | {"location": [[float(i), float(i)] for i in range(200)]}
    message = rejection(validator, "WasteContainer", entity).extra["errors"][0]["message"]
    assert len(message) == 500
    assert message.endswith("...")


def test_unknown_attributes_are_accepted(validator: SchemaValidator) -> None:
    # No bundled schema sets additionalProperties: attributes outside the model are allowed.
    entity = example("WasteContainer") | {"territoireCustom": {"any": ["thing", 1]}}
    validator.validate("WasteContainer", entity)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2026-11-22T09:00:00Z", True),
        ("2026-11-22T09:00:00.123456+01:00", True),
        ("2016-12-31T23:59:60Z", True),  # leap second
        ("2026-11-22T09:00:00", False),  # no UTC offset
        ("2026-02-30T09:00:00Z", False),
        ("2026-11-22T24:00:00Z", False),
        ("2026-11-22", False),
        ("yesterday", False),
    ],
)
def test_date_time_format_is_asserted(validator: SchemaValidator, value: str, valid: bool) -> None:
    entity = example("WasteContainer") | {"dateLastEmptying": value}
    if valid:
        validator.validate("WasteContainer", entity)
    else:
        error = rejection(validator, "WasteContainer", entity)
        assert error.extra["errors"] == [
            {"attribute": "dateLastEmptying", "message": f"{value!r} is not a 'date-time'"}
        ]


@pytest.mark.parametrize(
    ("address", "valid"),
    [
        ("192.14.56.78", True),
        ("2001:db8::1", True),
        ("999.1.1.1", False),
        ("fe80::1%eth0", False),
        ("localhost", False),
    ],
)
def test_device_ip_address_formats(validator: SchemaValidator, address: str, valid: bool) -> None:
    # Device ipAddress items are oneOf ipv4 / ipv6 formats: only meaningful if formats are asserted.
    entity = example("Device") | {"ipAddress": [address]}
    if valid:
        validator.validate("Device", entity)
    else:
        error = rejection(validator, "Device", entity)
        assert "attribute 'ipAddress[0]'" in error.detail
        assert f"{address!r} is not a 'ipv4'; {address!r} is not a 'ipv6'" in error.detail


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2026-12-24", True),
        ("--12-24", True),  # the yearless alternative (a pattern in common-schema)
        ("2026-02-29", False),  # not a leap year
        ("24/12/2026", False),
    ],
)
def test_date_format_is_asserted(validator: SchemaValidator, value: str, valid: bool) -> None:
    # StreetlightGroup switchingOnHours[].from is anyOf {"format": "date"} / common dateYearLess.
    entity = example("StreetlightGroup")
    entity["switchingOnHours"] = [{"from": value, "to": "--01-07", "hours": "Mo,Su 16:00-02:00"}]
    if valid:
        validator.validate("StreetlightGroup", entity)
    else:
        error = rejection(validator, "StreetlightGroup", entity)
        assert error.extra["errors"][0]["attribute"] == "switchingOnHours[0].from"
        # best_match prefers the alternative whose "type" the value matches: the yearless pattern.
        assert f"{value!r} does not match '^--" in error.detail


# -------------------------------------------------------------------------------------- unknown type


def test_unknown_type(validator: SchemaValidator) -> None:
    assert not validator.has_schema("Spaceship")
    error = rejection(validator, "Spaceship", {"id": "urn:ngsi-ld:Spaceship:1", "type": "Spaceship"})
    assert error.detail == "No Smart Data Models schema is bundled for entity type 'Spaceship'"
    assert error.extra["knownTypes"] == validator.known_types()


# -------------------------------------------------------------------------------------- no network


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError(f"network access attempted during a unit test: {address!r}")

    def refuse_lookup(*args: object, **kwargs: object) -> Any:
        attempts.append(args)
        raise OSError(f"name resolution attempted during a unit test: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    yield attempts
    assert attempts == []


def test_no_network_access(no_network: list[object]) -> None:
    fresh = SchemaValidator()  # compiles (and resolves every remote $ref) with the network cut
    for type_name in fresh.known_types():
        if type_name not in EXPECTED_INVALID_EXAMPLES:
            fresh.validate(type_name, example(type_name))
    error = rejection(fresh, "WasteContainer", example("WasteContainer") | {"fillingLevel": 1.7})
    assert "attribute 'fillingLevel'" in error.detail
    assert no_network == []


# ------------------------------------------------------------------------------ URL mapping, bundles


@pytest.mark.parametrize(
    ("url", "local"),
    [
        (COMMON, "common-schema.json"),
        (COMMON + "#/definitions/Location-Commons", "common-schema.json"),
        ("http://smart-data-models.github.io/data-models/common-schema.json", "common-schema.json"),
        (
            "https://raw.githubusercontent.com/smart-data-models/data-models/master/common-schema.json",
            "common-schema.json",
        ),
        (
            "https://raw.githubusercontent.com/smart-data-models/data-models/refs/heads/main/common-schema.json",
            "common-schema.json",
        ),
        (
            "https://smart-data-models.github.io/dataModel.Device/device-schema.json#/definitions/x",
            "dataModel.Device--device-schema.json",
        ),
        (
            "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/Environment-schema.json",
            "dataModel.Environment--Environment-schema.json",
        ),
        (
            "https://smart-data-models.github.io/datamodel.Weather/weather-schema.json",
            "dataModel.Weather--weather-schema.json",
        ),
        (
            "https://smart-data-models.github.io/dataModel.Device/Device/schema.json",
            "dataModel.Device--Device--schema.json",
        ),
        ("https://example.org/dataModel.Device/device-schema.json", None),
        ("https://smart-data-models.github.io/other/common-schema.json", None),
        ("https://raw.githubusercontent.com/someone/data-models/master/common-schema.json", None),
        ("https://raw.githubusercontent.com/smart-data-models/data-models/common-schema.json", None),
        ("file:///etc/passwd", None),
        ("urn:example:schema", None),
    ],
)
def test_local_file_for_url(url: str, local: str | None) -> None:
    assert local_file_for_url(url) == local


def write_bundle(root: Path, schemas: dict[str, dict[str, Any]], common: dict[str, Any]) -> None:
    for type_name, schema in schemas.items():
        (root / type_name).mkdir(parents=True)
        (root / type_name / "schema.json").write_bytes(orjson.dumps(schema))
    (root / "_common").mkdir()
    for name, content in common.items():
        (root / "_common" / name).write_bytes(orjson.dumps(content))


def test_custom_root_with_raw_branch_urls(tmp_path: Path, no_network: list[object]) -> None:
    shared = orjson.loads((BUNDLE / "_common" / "common-schema.json").read_bytes())
    raw = "https://raw.githubusercontent.com/smart-data-models"
    thing = {
        "$schema": DRAFT_2020_12,
        "$id": "https://smart-data-models.github.io/dataModel.Test/Thing/schema.json",
        "type": "object",
        "allOf": [
            {"$ref": f"{raw}/data-models/refs/heads/master/common-schema.json#/definitions/GSMA-Commons"},
            {"$ref": f"{raw}/dataModel.Test/main/test-schema.json#/definitions/level"},
        ],
        "required": ["id", "type"],
    }
    test_schema = {
        "$schema": DRAFT_2020_12,
        "$id": "https://smart-data-models.github.io/dataModel.Test/test-schema.json",
        "definitions": {
            "level": {"properties": {"level": {"$ref": "#/definitions/ratio"}}},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }
    write_bundle(
        tmp_path,
        {"Thing": thing},
        {"common-schema.json": shared, "dataModel.Test--test-schema.json": test_schema},
    )
    custom = SchemaValidator(tmp_path)
    assert custom.known_types() == ["Thing"]
    custom.validate("Thing", {"id": "urn:ngsi-ld:Thing:1", "type": "Thing", "level": 0.5})
    error = rejection(custom, "Thing", {"id": "urn:ngsi-ld:Thing:1", "type": "Thing", "level": 2})
    assert error.extra["errors"] == [{"attribute": "level", "message": "2 is greater than the maximum of 1"}]


def test_unknown_reference_host_is_a_clear_error(tmp_path: Path, no_network: list[object]) -> None:
    schema = {"$schema": DRAFT_2020_12, "allOf": [{"$ref": "https://example.org/schemas/x.json"}]}
    write_bundle(tmp_path, {"Thing": schema}, {})
    with pytest.raises(InternalError) as info:
        SchemaValidator(tmp_path).validate("Thing", {"id": "urn:x", "type": "Thing"})
    assert "https://example.org/schemas/x.json is not a Smart Data Models schema URL" in info.value.detail
    assert "nothing is fetched at run time" in info.value.detail


def test_unbundled_sdm_reference_is_a_clear_error(tmp_path: Path, no_network: list[object]) -> None:
    # The reference sits under a property the entity does not have: it is still reported, because
    # every $ref is resolved when the schema is compiled.
    url = "https://smart-data-models.github.io/dataModel.Foo/foo-schema.json"
    schema = {"$schema": DRAFT_2020_12, "properties": {"rare": {"$ref": f"{url}#/definitions/x"}}}
    write_bundle(tmp_path, {"Thing": schema}, {})
    with pytest.raises(InternalError) as info:
        SchemaValidator(tmp_path).validate("Thing", {"id": "urn:x", "type": "Thing"})
    assert f"no bundled copy of {url}" in info.value.detail
    assert "_common/dataModel.Foo--foo-schema.json" in info.value.detail


def test_dangling_pointer_is_a_clear_error(tmp_path: Path) -> None:
    schema = {"$schema": DRAFT_2020_12, "properties": {"a": {"$ref": f"{COMMON}#/definitions/Nope"}}}
    shared = orjson.loads((BUNDLE / "_common" / "common-schema.json").read_bytes())
    write_bundle(tmp_path, {"Thing": schema}, {"common-schema.json": shared})
    with pytest.raises(InternalError, match="cannot resolve"):
        SchemaValidator(tmp_path).validate("Thing", {})


def test_invalid_bundled_schema_is_an_internal_error(tmp_path: Path) -> None:
    write_bundle(tmp_path, {"Thing": {"$schema": DRAFT_2020_12, "type": 12}}, {})
    with pytest.raises(InternalError, match="Thing is not a valid JSON Schema"):
        SchemaValidator(tmp_path).validate("Thing", {})


def test_declared_draft_is_used(tmp_path: Path) -> None:
    # In draft-07 the siblings of "$ref" are ignored; in 2020-12 they apply.
    def schema(dialect: str) -> dict[str, Any]:
        return {
            "$schema": dialect,
            "properties": {"a": {"$ref": "#/definitions/number", "maximum": 1}},
            "definitions": {"number": {"type": "number"}},
        }

    write_bundle(
        tmp_path,
        {"Old": schema("http://json-schema.org/draft-07/schema#"), "New": schema(DRAFT_2020_12)},
        {},
    )
    custom = SchemaValidator(tmp_path)
    custom.validate("Old", {"a": 5})
    assert rejection(custom, "New", {"a": 5}).extra["errors"][0]["attribute"] == "a"


# ------------------------------------------------------------------------------------------ caching


def test_validators_are_compiled_once_under_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = SchemaValidator()
    calls: list[str] = []
    original = SchemaValidator._compile

    def counting(self: SchemaValidator, type_name: str) -> Any:
        calls.append(type_name)
        return original(self, type_name)

    monkeypatch.setattr(SchemaValidator, "_compile", counting)
    threads = 8
    barrier = threading.Barrier(threads)
    valid = example("WasteContainer")
    invalid = valid | {"fillingLevel": 1.7}

    def work(index: int) -> str | None:
        barrier.wait()
        entity = copy.deepcopy(invalid if index % 2 else valid)
        try:
            fresh.validate("WasteContainer", entity)
        except BadRequestData as error:
            return str(error.extra["errors"][0]["attribute"])
        return None

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(work, range(threads)))
    assert results == [None, "fillingLevel"] * (threads // 2)
    assert calls == ["WasteContainer"]
    fresh.validate("WasteContainer", valid)
    assert calls == ["WasteContainer"]
