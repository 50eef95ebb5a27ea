"""The pure part of the temporal API: times, durations, temporal queries, periods, rows, representations.

Examples come from ETSI GS CIM 009 v1.8 (clauses 4.5.7, 4.5.9, 4.5.19, 4.11, 5.2.21, 6.3.10)
and from the ETSI conformance suite's temporal data.
"""

from __future__ import annotations

from typing import Any

import pytest

from territoire.context.errors import BadRequestData, InvalidRequest
from territoire.context.model import NULL_URI
from territoire.context.temporal.model import (
    DAY_US,
    HOUR_US,
    US,
    Duration,
    SeriesResult,
    Stats,
    StoredInstance,
    TemporalQuery,
    TimeRange,
    aggregate_value,
    calendar_buckets,
    decode_instance,
    deletion_instance,
    encode_instance,
    floor_bucket,
    format_time,
    instance_uri,
    merge_ranges,
    month_bounds,
    page_range,
    parse_duration,
    parse_instance_uri,
    parse_representation,
    parse_temporal_query,
    parse_time,
    project,
    render_temporal_entity,
    settle_range,
    system_time,
    trim,
)

T0 = parse_time("2020-08-01T12:03:00Z", "t")


class Terms:
    """Compaction of the ETSI suite's test context: ``https://ngsi-ld-test-suite/context#X`` -> X."""

    base = "https://ngsi-ld-test-suite/context#"

    def expand(self, term: str) -> str:
        return term if ":" in term else self.base + term

    def compact(self, iri: str) -> str:
        return iri[len(self.base) :] if iri.startswith(self.base) else iri


# --- times ---------------------------------------------------------------------------------------


def test_parse_time_is_microseconds_since_epoch() -> None:
    assert parse_time("1970-01-01T00:00:00Z", "t") == 0
    assert parse_time("1970-01-01T00:00:01.5Z", "t") == 1_500_000
    assert parse_time("2020-08-01T14:03:00+02:00", "t") == T0
    assert parse_time("2020-08-01T12:03:00", "t") == T0  # no offset: UTC


@pytest.mark.parametrize("bad", ["yesterday", "2020-13-01T00:00:00Z", "", 12, None])
def test_parse_time_names_the_parameter(bad: Any) -> None:
    with pytest.raises(BadRequestData, match="timeAt"):
        parse_time(bad, "timeAt")


def test_time_formats() -> None:
    assert format_time(T0) == "2020-08-01T12:03:00Z"
    assert format_time(T0 + 250_000) == "2020-08-01T12:03:00.250000Z"
    assert system_time(T0) == "2020-08-01T12:03:00.000000Z"
    assert month_bounds(2020, 12) == (parse_time("2020-12-01T00:00:00Z", "t"), parse_time("2021-01-01T00:00:00Z", "t"))


# --- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "months", "micros"),
    [
        ("PT1H", 0, HOUR_US),
        ("P1D", 0, DAY_US),
        ("P1W", 0, 7 * DAY_US),
        ("P3Y6M4DT12H30M5S", 42, 4 * DAY_US + 12 * HOUR_US + 30 * 60 * US + 5 * US),  # the example of 4.5.19
        ("PT0S", 0, 0),
        ("P0D", 0, 0),
        ("PT1.5S", 0, 1_500_000),
        ("PT0,25S", 0, 250_000),
        ("P1M", 1, 0),
    ],
)
def test_parse_duration(text: str, months: int, micros: int) -> None:
    duration = parse_duration(text)
    assert (duration.months, duration.micros) == (months, micros)
    assert duration.is_zero == (months == 0 and micros == 0)
    assert duration.is_calendar == (months != 0)


@pytest.mark.parametrize("bad", ["1H", "P", "PT", "P1H", "-PT1H", "PT1H30", "P1.5M", "PT1HT2M", 3600])
def test_invalid_durations_name_aggr_period_duration(bad: Any) -> None:
    with pytest.raises(BadRequestData, match="aggrPeriodDuration"):
        parse_duration(bad)


def test_calendar_durations_clamp_the_day() -> None:
    month = parse_duration("P1M")
    jan31 = parse_time("2021-01-31T10:00:00Z", "t")
    assert format_time(month.add(jan31)) == "2021-02-28T10:00:00Z"
    assert format_time(month.add(jan31, -2)) == "2020-11-30T10:00:00Z"
    assert format_time(parse_duration("P1Y").add(parse_time("2020-02-29T00:00:00Z", "t"))) == "2021-02-28T00:00:00Z"


# --- periods -------------------------------------------------------------------------------------


def test_floor_bucket_aligns_on_the_origin_both_ways() -> None:
    assert floor_bucket(T0 + 61 * 60 * US, T0, HOUR_US) == T0 + HOUR_US
    assert floor_bucket(T0, T0, HOUR_US) == T0
    assert floor_bucket(T0 - 1, T0, HOUR_US) == T0 - HOUR_US


def test_calendar_buckets_cover_the_data() -> None:
    origin = parse_time("2020-01-15T00:00:00Z", "t")
    low = parse_time("2019-12-20T00:00:00Z", "t")
    high = parse_time("2020-03-14T23:00:00Z", "t")
    buckets = calendar_buckets(origin, parse_duration("P1M"), low, high, 100)
    assert [(format_time(a), format_time(b)) for a, b in buckets] == [
        ("2019-12-15T00:00:00Z", "2020-01-15T00:00:00Z"),
        ("2020-01-15T00:00:00Z", "2020-02-15T00:00:00Z"),
        ("2020-02-15T00:00:00Z", "2020-03-15T00:00:00Z"),
    ]
    with pytest.raises(BadRequestData, match="periods"):
        calendar_buckets(origin, parse_duration("P1M"), low, high + 400 * DAY_US, 10)


def test_aggregate_values_by_hand() -> None:
    values = [120.0, 80.0, 100.0]
    stats = Stats(
        start=T0,
        end=T0 + HOUR_US,
        count=3,
        distinct=3,
        num_count=3,
        total=sum(values),
        total_sq=sum(v * v for v in values),
        minimum=80.0,
        maximum=120.0,
    )
    assert aggregate_value("totalCount", stats) == 3
    assert aggregate_value("distinctCount", stats) == 3
    assert aggregate_value("sum", stats) == 300.0
    assert aggregate_value("avg", stats) == 100.0
    assert aggregate_value("min", stats) == 80.0
    assert aggregate_value("max", stats) == 120.0
    assert aggregate_value("sumsq", stats) == 120.0**2 + 80.0**2 + 100.0**2
    assert aggregate_value("stddev", stats) == pytest.approx(20.0)  # sample standard deviation
    single = Stats(start=T0, end=T0, count=1, num_count=1, total=5.0, total_sq=25.0)
    assert aggregate_value("stddev", single) is None
    strings = Stats(start=T0, end=T0, count=2, distinct=2, minimum="a", maximum="b")
    assert aggregate_value("avg", strings) is None
    assert aggregate_value("max", strings) == "b"


# --- temporal query ------------------------------------------------------------------------------


def test_temporal_query_windows() -> None:
    query = parse_temporal_query(
        {"timerel": "between", "timeAt": "2020-08-01T12:00:00Z", "endTimeAt": "2020-08-01T13:00:00Z"},
        aggregated=False,
    )
    assert query.bounds() == (T0 - 3 * 60 * US, T0 + 57 * 60 * US)
    assert parse_temporal_query({"timerel": "before", "timeAt": "2020-08-01T12:03:00Z"}, aggregated=False).bounds() == (
        None,
        T0,
    )
    assert parse_temporal_query({}, aggregated=False) == TemporalQuery()


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"timerel": "after"}, "timeAt"),  # ETSI 020_09_01
        ({"timerel": "before"}, "timeAt"),  # 020_09_02
        ({"timerel": "between", "timeAt": "2020-08-01T12:00:00Z"}, "endTimeAt"),  # 020_09_03
        ({"timerel": "during", "timeAt": "2020-08-01T12:00:00Z"}, "timerel"),
        ({"timeAt": "2020-08-01T12:00:00Z"}, "timerel"),
        ({"timerel": "after", "timeAt": "noon"}, "timeAt"),
        ({"timerel": "between", "timeAt": "2020-08-01T12:00:00Z", "endTimeAt": "2020-08-01T11:00:00Z"}, "endTimeAt"),
        ({"timerel": "after", "timeAt": "2020-08-01T12:00:00Z", "endTimeAt": "soon"}, "endTimeAt"),
        ({"timeproperty": "expiresAt"}, "timeproperty"),
        ({"lastN": "0"}, "lastN"),
        ({"lastN": "1.5"}, "lastN"),
        ({"lastN": 0}, "lastN"),
        ({"lastN": True}, "lastN"),
        ({"aggrMethods": "avg,median"}, "aggrMethods"),
        ({"aggrMethods": 3}, "aggrMethods"),
        ({"aggrMethods": "avg", "aggrPeriodDuration": "one hour"}, "aggrPeriodDuration"),
    ],
)
def test_bad_temporal_queries_name_the_parameter(params: dict[str, Any], named: str) -> None:
    with pytest.raises(BadRequestData, match=named):
        parse_temporal_query(params, aggregated=True)


def test_aggregated_needs_methods_and_accepts_both_spellings() -> None:
    with pytest.raises(BadRequestData, match="aggrMethods"):
        parse_temporal_query({}, aggregated=True)
    assert parse_temporal_query({"aggrMethods": ["avg", "max,avg"]}, aggregated=True).aggr_methods == ("avg", "max")
    assert parse_temporal_query({"aggrMethods": "sum"}, aggregated=True).aggr_period is None
    assert parse_temporal_query({"lastN": 3}, aggregated=False).last_n == 3
    assert parse_temporal_query({"lastN": "12"}, aggregated=False).last_n == 12


def test_representations() -> None:
    assert parse_representation([], None) == ("normalized", False)
    assert parse_representation(["temporalValues,sysAttrs"], None) == ("temporalValues", True)
    # format takes precedence over options (ETSI 021_19_02)
    assert parse_representation(["aggregatedValues"], "temporalValues") == ("temporalValues", False)
    with pytest.raises(InvalidRequest):
        parse_representation(["temporalValues,invalidOptions"], None)
    with pytest.raises(InvalidRequest):
        parse_representation([], "invalidFormat")
    with pytest.raises(BadRequestData):
        parse_representation(["temporalValues,aggregatedValues"], None)


# --- rows ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "instance",
    [
        {"type": "Property", "value": 21.5, "observedAt": "2020-08-01T12:03:00Z", "unitCode": "CEL"},
        {"type": "Property", "value": 67},
        {"type": "Property", "value": True},
        {"type": "Property", "value": [1, 2, 3]},
        {"type": "Property", "value": {"a": 1}, "datasetId": "urn:ngsi-ld:Dataset:1"},
        {"type": "Property", "value": 2**60},
        {"type": "Relationship", "object": "urn:ngsi-ld:Car:1", "https://x/since": {"type": "Property", "value": 3}},
        {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-0.55, 47.48]}},
        {"type": "LanguageProperty", "languageMap": {"fr": "Grand Place", "nl": "Grote Markt"}},
        {"type": "ListProperty", "valueList": [1, "a"]},
        {"type": "JsonProperty", "json": {"value": 120}},
        {"type": "VocabProperty", "vocab": "https://x/monument"},
        {"type": "ListRelationship", "objectList": ["urn:a:1", "urn:a:2"]},
    ],
)
def test_instances_round_trip_through_rows(instance: dict[str, Any]) -> None:
    encoded = encode_instance({**instance, "createdAt": "x", "modifiedAt": "y"})
    decoded = decode_instance(*encoded, instance.get("datasetId"))
    assert decoded == instance
    assert type(decoded.get("value")) is type(instance.get("value"))


def test_numbers_are_stored_as_numbers() -> None:
    _kind, num, value, *_ = encode_instance({"type": "Property", "value": 21.5})
    assert (num, value) == (21.5, None)
    assert encode_instance({"type": "Property", "value": False})[1:3] == (0.0, "false")
    assert encode_instance({"type": "Property", "value": [1, 2]})[1:3] == (2.0, "[1,2]")
    assert encode_instance({"type": "Property", "value": "on"})[1:3] == (None, '"on"')


def test_deletion_instances_carry_the_ngsi_ld_null() -> None:
    assert deletion_instance("Relationship") == {"type": "Relationship", "object": NULL_URI}
    assert deletion_instance("LanguageProperty") == {"type": "LanguageProperty", "languageMap": {"@none": NULL_URI}}


def test_instance_uris() -> None:
    assert instance_uri(255) == "urn:ngsi-ld:Instance:00000000000000ff"
    assert parse_instance_uri(instance_uri(2**62 + 5)) == 2**62 + 5
    assert parse_instance_uri("urn:ngsi-ld:Instance:xyz") is None
    assert parse_instance_uri("urn:other:1") is None


# --- representations -----------------------------------------------------------------------------


def stored(value: Any, observed: str, iid: int = 1, **extra: Any) -> StoredInstance:
    instance = {"type": "Property", "value": value, "observedAt": observed, **extra}
    ts = parse_time(observed, "t")
    return StoredInstance(ts=ts, iid=iid, instance=instance, created_at=ts + US, modified_at=ts + 2 * US)


SPEED = Terms.base + "speed"


def test_normalized_representation_4_5_7() -> None:
    series = [
        SeriesResult(
            SPEED, None, "Property", [stored(80, "2020-08-01T12:05:00Z", 2), stored(120, "2020-08-01T12:03:00Z", 1)]
        )
    ]
    entity = render_temporal_entity("urn:ngsi-ld:Vehicle:A", [Terms.base + "Vehicle"], series, Terms(), "normalized")
    assert entity == {
        "id": "urn:ngsi-ld:Vehicle:A",
        "type": "Vehicle",
        "speed": [
            {"type": "Property", "value": 120, "observedAt": "2020-08-01T12:03:00Z", "instanceId": instance_uri(1)},
            {"type": "Property", "value": 80, "observedAt": "2020-08-01T12:05:00Z", "instanceId": instance_uri(2)},
        ],
    }
    with_sys = render_temporal_entity("urn:x:1", ["T"], series, Terms(), "normalized", sys_attrs=True)
    assert with_sys["speed"][0]["createdAt"] == "2020-08-01T12:03:01.000000Z"
    by_modified = render_temporal_entity("urn:x:1", ["T"], series, Terms(), "normalized", timeproperty="modifiedAt")
    assert by_modified["speed"][0]["modifiedAt"] == "2020-08-01T12:03:02.000000Z"


def test_simplified_representation_4_5_9() -> None:
    series = [
        SeriesResult(SPEED, "urn:ngsi-ld:Dataset:Speed", "Property", [stored(60, "2020-09-01T12:05:00Z")]),
        SeriesResult(SPEED, "urn:ngsi-ld:Dataset:Common", "Property", [stored(80, "2020-09-01T12:05:00Z")]),
        SeriesResult(
            Terms.base + "street",
            None,
            "LanguageProperty",
            [
                StoredInstance(
                    ts=T0,
                    iid=3,
                    instance={
                        "type": "LanguageProperty",
                        "languageMap": {"fr": "Grand Place"},
                        "observedAt": "2020-08-01T12:03:00Z",
                    },
                    created_at=T0,
                    modified_at=T0,
                )
            ],
        ),
    ]
    entity = render_temporal_entity("urn:x:1", [Terms.base + "Vehicle"], series, Terms(), "temporalValues")
    assert entity["speed"] == [
        {"type": "Property", "datasetId": "urn:ngsi-ld:Dataset:Speed", "values": [[60, "2020-09-01T12:05:00Z"]]},
        {"type": "Property", "datasetId": "urn:ngsi-ld:Dataset:Common", "values": [[80, "2020-09-01T12:05:00Z"]]},
    ]
    assert entity["street"] == {
        "type": "LanguageProperty",
        "languageMaps": [[{"languageMap": {"fr": "Grand Place"}}, "2020-08-01T12:03:00Z"]],
    }


def test_aggregated_representation_4_5_19() -> None:
    period = Stats(
        start=T0, end=T0 + HOUR_US, count=3, num_count=3, total=300.0, total_sq=30800.0, minimum=80.0, maximum=120.0
    )
    series = [SeriesResult(SPEED, None, "Property", periods=[period])]
    entity = render_temporal_entity(
        "urn:x:1", [Terms.base + "Vehicle"], series, Terms(), "aggregatedValues", aggr_methods=["avg", "max"]
    )
    assert entity["speed"] == {
        "type": "Property",
        "avg": [[100.0, "2020-08-01T12:03:00Z", "2020-08-01T13:03:00Z"]],
        "max": [[120.0, "2020-08-01T12:03:00Z", "2020-08-01T13:03:00Z"]],
    }


def test_pick_and_omit() -> None:
    entity = {"id": "urn:x:1", "type": "Vehicle", "speed": [], "fuelLevel": []}
    assert project(entity, {"id", "speed"}, None) == {"id": "urn:x:1", "speed": []}
    assert project(entity, None, {"type", "speed"}) == {"id": "urn:x:1", "fuelLevel": []}
    assert project(entity, {"unknown"}, None) == {}


# --- pagination (6.3.10) -------------------------------------------------------------------------


def minutes(n: int) -> int:
    return T0 + n * 60 * US


def test_forward_page_stops_at_the_earliest_cut() -> None:
    query = TemporalQuery()
    page = page_range(
        cut=[(minutes(0), minutes(9)), (minutes(2), minutes(11))], spans=[(minutes(0), minutes(11))], query=query
    )
    assert page == TimeRange(minutes(0), minutes(9), "*")
    assert page.header() == "date-time 2020-08-01T12:03:00Z-2020-08-01T12:12:00Z/*"
    after = TemporalQuery(timerel="after", time_at=minutes(-60))
    assert page_range([(minutes(0), minutes(9))], [(minutes(0), minutes(9))], after) == TimeRange(
        minutes(-60), minutes(9), "*"
    )
    assert page_range([], [(minutes(0), minutes(9))], query) is None


def test_backward_page_for_last_n() -> None:
    query = TemporalQuery(last_n=20)
    page = page_range(
        cut=[(minutes(10), minutes(19)), (minutes(12), minutes(21))], spans=[(minutes(10), minutes(21))], query=query
    )
    assert page == TimeRange(minutes(21), minutes(12), "20")
    before = TemporalQuery(timerel="before", time_at=minutes(100), last_n=20)
    assert page_range([(minutes(10), minutes(19))], [(minutes(10), minutes(19))], before) == TimeRange(
        minutes(100), minutes(10), "20"
    )
    between = TemporalQuery(timerel="between", time_at=minutes(0), end_time_at=minutes(50), last_n=20)
    assert page_range([(minutes(10), minutes(19))], [(minutes(10), minutes(19))], between).first == minutes(50)  # type: ignore[union-attr]


def test_trim_and_merge() -> None:
    instances = [stored(i, format_time(minutes(i)), iid=i) for i in range(5)]
    forward = TimeRange(minutes(0), minutes(2), "*")
    assert [s.iid for s in trim(instances, forward, TemporalQuery())] == [0, 1, 2]
    backward = TimeRange(minutes(4), minutes(3), "2")
    assert [s.iid for s in trim(instances, backward, TemporalQuery(last_n=2))] == [3, 4]
    assert merge_ranges([TimeRange(5, 9, "*"), TimeRange(3, 12, "*")], TemporalQuery()) == TimeRange(3, 9, "*")
    assert merge_ranges([TimeRange(9, 5, "2"), TimeRange(12, 3, "2")], TemporalQuery(last_n=2)) == TimeRange(12, 5, "2")
    assert merge_ranges([], TemporalQuery()) is None


def test_duration_of_zero_is_whole_range() -> None:
    assert Duration(0, 0).is_zero
    assert not parse_duration("PT1S").is_zero


def test_settle_range_closes_the_open_end_on_what_is_shown() -> None:
    forward = TimeRange(minutes(0), minutes(9), "*")
    assert settle_range(forward, [minutes(3), minutes(9)], TemporalQuery()) == TimeRange(minutes(3), minutes(9), "*")
    after = TemporalQuery(timerel="after", time_at=minutes(-5))
    assert settle_range(TimeRange(minutes(-5), minutes(9), "*"), [minutes(3)], after).first == minutes(-5)
    backward = TimeRange(minutes(20), minutes(10), "5")
    assert settle_range(backward, [minutes(10), minutes(30)], TemporalQuery(last_n=5)).first == minutes(30)
    before = TemporalQuery(timerel="before", time_at=minutes(99), last_n=5)
    assert settle_range(TimeRange(minutes(99), minutes(10), "5"), [minutes(30)], before).first == minutes(99)
    assert settle_range(forward, [], TemporalQuery()) == forward
