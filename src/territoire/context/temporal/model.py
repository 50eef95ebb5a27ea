"""Temporal NGSI-LD, the pure part: times, durations, temporal queries, buckets, representations.

Everything here is I/O-free and works on two shapes:

* times are integers, **microseconds since 1970-01-01T00:00:00Z** ("µs" below), the unit the
  storage layer keys instances on (clause 4.11 times are DateTime values; we keep µs precision);
* instances are in the internal form of ``docs/dev/internal-format.md`` (expanded names).

References are to ETSI GS CIM 009 v1.8: temporal query (4.11), temporal representation
(4.5.7, 4.5.8), simplified temporal representation (4.5.9), aggregated temporal representation
(4.5.19), TemporalQuery data type (5.2.21), temporal operations (5.6.11-5.6.16, 5.7.3, 5.7.4)
and the pagination of temporal results (6.3.10).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import orjson

from territoire.context.errors import BadRequestData, InvalidRequest
from territoire.context.model import NULL_URI, VALUE_MEMBER, Instance, Terms, render_instance

# ---------------------------------------------------------------------------------------------
# Times
# ---------------------------------------------------------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Microseconds per second.
US = 1_000_000
#: Microseconds per hour and per day.
HOUR_US = 3600 * US
DAY_US = 86400 * US


def to_us(moment: datetime) -> int:
    """A timezone-aware datetime as µs since the epoch (exact, no float rounding)."""
    delta = moment - EPOCH
    return (delta.days * 86400 + delta.seconds) * US + delta.microseconds


def from_us(us: int) -> datetime:
    """µs since the epoch as a UTC datetime."""
    return EPOCH + timedelta(microseconds=us)


def parse_time(text: Any, param: str) -> int:
    """An ISO 8601 date-time (clause 4.6.3) in µs; a time without offset is read as UTC.

    Raises BadRequestData naming ``param`` (the query parameter or member being parsed).
    """
    if not isinstance(text, str) or not text:
        raise BadRequestData(f"{param} must be an ISO 8601 date-time such as 2026-11-22T08:00:00Z, got {text!r}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequestData(f"{param} is not a valid ISO 8601 date-time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_us(moment)


def format_time(us: int) -> str:
    """µs as an ISO 8601 UTC date-time, fractional seconds only when not zero.

    ``2020-08-01T12:03:00Z``, ``2020-08-01T12:03:00.250000Z``: the form the aggregated
    representation and Content-Range use.
    """
    moment = from_us(us)
    base = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    return f"{base}.{moment.microsecond:06d}Z" if moment.microsecond else f"{base}Z"


def system_time(us: int) -> str:
    """µs in the fixed-width form of system timestamps (createdAt, modifiedAt, deletedAt)."""
    moment = from_us(us)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def month_start(us: int) -> tuple[int, int]:
    """(year, month) of a time; months are the partitions of the PostgreSQL history table."""
    moment = from_us(us)
    return moment.year, moment.month


def month_bounds(year: int, month: int) -> tuple[int, int]:
    """[start, end) of a calendar month in µs."""
    start = to_us(datetime(year, month, 1, tzinfo=UTC))
    end = to_us(datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC))
    return start, end


# ---------------------------------------------------------------------------------------------
# ISO 8601 durations (aggrPeriodDuration, clause 4.5.19)
# ---------------------------------------------------------------------------------------------

_NUMBER = r"(\d+(?:[.,]\d+)?)"
_DURATION = re.compile(
    rf"^P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:{_NUMBER}W)?(?:{_NUMBER}D)?"
    rf"(?:T(?=\d)(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?$"
)


@dataclass(frozen=True)
class Duration:
    """An ISO 8601 duration: calendar months (years count 12) plus a fixed number of µs.

    Days and weeks are fixed (86,400 s, 604,800 s): times are UTC, which has no daylight
    saving, and leap seconds are not represented by ISO 8601 date-times in practice.
    """

    months: int
    micros: int
    text: str = ""

    @property
    def is_zero(self) -> bool:
        """PT0S / P0D: one period spanning the whole time range of the query (4.5.19)."""
        return self.months == 0 and self.micros == 0

    @property
    def is_calendar(self) -> bool:
        """True if the duration counts months or years, whose length varies."""
        return self.months != 0

    def add(self, us: int, times: int = 1) -> int:
        """``us`` moved by ``times`` durations (negative goes back); the day of month is clamped."""
        if self.months:
            moment = from_us(us)
            total = moment.year * 12 + (moment.month - 1) + self.months * times
            year, month0 = divmod(total, 12)
            if year < 1 or year > 9999:
                raise BadRequestData(f"aggrPeriodDuration {self.text} takes the periods outside years 1..9999")
            day = min(moment.day, calendar.monthrange(year, month0 + 1)[1])
            us = to_us(moment.replace(year=year, month=month0 + 1, day=day))
        return us + self.micros * times


def parse_duration(text: Any, param: str = "aggrPeriodDuration") -> Duration:
    """Parse ``P[n]Y[n]M[n]DT[n]H[n]M[n]S`` or ``P[n]W`` (decimals allowed below months).

    Raises BadRequestData naming ``param``.
    """
    if not isinstance(text, str):
        raise BadRequestData(f"{param} must be an ISO 8601 duration such as PT1H or P1D, got {text!r}")
    match = _DURATION.match(text)
    if match is None:
        raise BadRequestData(f"{param} is not a valid ISO 8601 duration (for example PT1H, P1D, P1M): {text!r}")
    years, months, weeks, days, hours, minutes, seconds = match.groups()
    try:
        fixed = Decimal(0)
        for part, unit in ((weeks, 604_800), (days, 86_400), (hours, 3_600), (minutes, 60), (seconds, 1)):
            if part:
                fixed += Decimal(part.replace(",", ".")) * unit
    except InvalidOperation:  # pragma: no cover - the regular expression only lets numbers through
        raise BadRequestData(f"{param} is not a valid ISO 8601 duration: {text!r}") from None
    return Duration(
        months=int(years or 0) * 12 + int(months or 0),
        micros=int((fixed * US).to_integral_value()),
        text=text,
    )


# ---------------------------------------------------------------------------------------------
# Temporal query (clause 4.11, data type 5.2.21)
# ---------------------------------------------------------------------------------------------

TIMERELS = ("before", "after", "between")
TIME_PROPERTIES = ("observedAt", "createdAt", "modifiedAt", "deletedAt")
AGGR_METHODS = ("totalCount", "distinctCount", "sum", "avg", "min", "max", "stddev", "sumsq")
Representation = Literal["normalized", "temporalValues", "aggregatedValues"]


@dataclass(frozen=True)
class TemporalQuery:
    """A validated temporal query; times in µs.

    The window is ``before``: t < timeAt, ``after``: t >= timeAt, ``between``:
    timeAt <= t < endTimeAt, where t is the instance's ``timeproperty``.
    """

    timerel: str | None = None
    time_at: int | None = None
    end_time_at: int | None = None
    timeproperty: str = "observedAt"
    last_n: int | None = None
    aggr_methods: tuple[str, ...] = ()
    aggr_period: Duration | None = None

    def bounds(self) -> tuple[int | None, int | None]:
        """The window as ``[low, high)`` in µs; None means unbounded."""
        if self.timerel == "before":
            return None, self.time_at
        if self.timerel == "after":
            return self.time_at, None
        if self.timerel == "between":
            return self.time_at, self.end_time_at
        return None, None


def _present(value: Any) -> bool:
    return value is not None and value != ""


def parse_last_n(raw: Any) -> int | None:
    """lastN: a positive integer (5.2.21), given as a number (JSON) or a string (query)."""
    if not _present(raw):
        return None
    if isinstance(raw, bool):
        raise BadRequestData(f"lastN must be a positive integer, got {raw!r}")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and re.fullmatch(r"\+?\d+", raw.strip()):
        value = int(raw)
    else:
        raise BadRequestData(f"lastN must be a positive integer, got {raw!r}")
    if value < 1:
        raise BadRequestData(f"lastN must be a positive integer, got {raw!r}")
    return value


def parse_aggr_methods(raw: Any) -> tuple[str, ...]:
    """aggrMethods: a comma separated string or a list of method names (4.5.19, 5.2.21)."""
    if not _present(raw):
        return ()
    if isinstance(raw, str):
        names = [part.strip() for part in raw.split(",")]
    elif isinstance(raw, list) and all(isinstance(part, str) for part in raw):
        names = [part.strip() for item in raw for part in item.split(",")]
    else:
        raise BadRequestData(f"aggrMethods must be a list of method names, got {raw!r}")
    methods: list[str] = []
    for name in names:
        if name not in AGGR_METHODS:
            raise BadRequestData(f"aggrMethods: {name!r} is not an aggregation method; use {', '.join(AGGR_METHODS)}")
        if name not in methods:
            methods.append(name)
    if not methods:
        raise BadRequestData("aggrMethods must name at least one aggregation method")
    return tuple(methods)


def parse_temporal_query(params: Mapping[str, Any], *, aggregated: bool) -> TemporalQuery:
    """Validate the temporal query parameters (GET query string or a ``temporalQ`` object).

    Keys: timerel, timeAt, endTimeAt, timeproperty, lastN, aggrMethods, aggrPeriodDuration.
    Every error is a BadRequestData naming the offending parameter (never a 500).
    """
    timerel = params.get("timerel")
    time_at_raw = params.get("timeAt")
    end_raw = params.get("endTimeAt")
    if _present(timerel):
        if timerel not in TIMERELS:
            raise BadRequestData(f"timerel must be one of before, after or between, got {timerel!r}")
        if not _present(time_at_raw):
            raise BadRequestData(f"timeAt is required with timerel={timerel}")
    elif _present(time_at_raw):
        raise BadRequestData("timerel (before, after or between) is required with timeAt")
    else:
        timerel = None
    time_at = parse_time(time_at_raw, "timeAt") if _present(time_at_raw) else None
    end_time_at = None
    if timerel == "between":
        if not _present(end_raw):
            raise BadRequestData("endTimeAt is required with timerel=between")
        end_time_at = parse_time(end_raw, "endTimeAt")
        if time_at is not None and end_time_at <= time_at:
            raise BadRequestData("endTimeAt must be later than timeAt")
    elif _present(end_raw):
        parse_time(end_raw, "endTimeAt")  # still reject a malformed date, even where it is unused
    timeproperty = params.get("timeproperty")
    if not _present(timeproperty):
        timeproperty = "observedAt"
    elif timeproperty not in TIME_PROPERTIES:
        raise BadRequestData(f"timeproperty must be one of {', '.join(TIME_PROPERTIES)}, got {timeproperty!r}")
    last_n = parse_last_n(params.get("lastN"))
    methods = parse_aggr_methods(params.get("aggrMethods"))
    period_raw = params.get("aggrPeriodDuration")
    period = parse_duration(period_raw) if _present(period_raw) else None
    if aggregated and not methods:
        raise BadRequestData("aggrMethods is required with the aggregated temporal representation")
    return TemporalQuery(
        timerel=timerel,
        time_at=time_at,
        end_time_at=end_time_at,
        timeproperty=str(timeproperty),
        last_n=last_n,
        aggr_methods=methods,
        aggr_period=period if aggregated else None,
    )


REPRESENTATION_OPTIONS = {"temporalValues", "aggregatedValues", "sysAttrs", "normalized", "simplified"}
_FORMATS: dict[str, Representation] = {
    "normalized": "normalized",
    "temporalValues": "temporalValues",
    "simplified": "temporalValues",
    "aggregatedValues": "aggregatedValues",
}


def parse_representation(options: Iterable[str], fmt: str | None) -> tuple[Representation, bool]:
    """The representation and sysAttrs from ``options`` and ``format`` (6.3.12, 6.3.20).

    ``format`` takes precedence over ``options``; unknown values are InvalidRequest, as the
    ETSI conformance suite expects (021_20).
    """
    chosen: list[Representation] = []
    sys_attrs = False
    for value in options:
        for option in value.split(","):
            option = option.strip()
            if not option:
                continue
            if option not in REPRESENTATION_OPTIONS:
                allowed = ", ".join(sorted(REPRESENTATION_OPTIONS))
                raise InvalidRequest(f"options: unknown option {option!r}; allowed here: {allowed}")
            if option == "sysAttrs":
                sys_attrs = True
            elif _FORMATS[option] not in chosen:
                chosen.append(_FORMATS[option])
    if fmt is not None and fmt != "":
        if fmt not in _FORMATS:
            raise InvalidRequest(f"format must be normalized, temporalValues or aggregatedValues, got {fmt!r}")
        return _FORMATS[fmt], sys_attrs
    if len(chosen) > 1:
        raise BadRequestData("options asks for more than one temporal representation")
    return (chosen[0] if chosen else "normalized"), sys_attrs


# ---------------------------------------------------------------------------------------------
# Aggregation periods (clause 4.5.19)
# ---------------------------------------------------------------------------------------------


def floor_bucket(ts: int, origin: int, period: int) -> int:
    """Start of the fixed-length period (µs) containing ``ts``, periods aligned on ``origin``."""
    return origin + ((ts - origin) // period) * period


def calendar_buckets(origin: int, duration: Duration, low: int, high: int, limit: int) -> list[tuple[int, int]]:
    """The [start, end) periods aligned on ``origin`` that cover ``[low, high]`` (µs).

    Used for durations counting months or years, whose periods differ in length.
    Raises BadRequestData if more than ``limit`` periods would be needed.
    """
    if duration.is_zero:
        raise ValueError("a zero duration has no periods")
    step = 0
    while duration.add(origin, step) > low:
        step -= 1
        if -step > limit:
            raise BadRequestData(f"aggrPeriodDuration {duration.text} gives more than {limit} periods")
    while duration.add(origin, step + 1) <= low:
        step += 1
    buckets: list[tuple[int, int]] = []
    start = duration.add(origin, step)
    while start <= high:
        end = duration.add(origin, step + 1)
        buckets.append((start, end))
        if len(buckets) > limit:
            raise BadRequestData(f"aggrPeriodDuration {duration.text} gives more than {limit} periods")
        step += 1
        start = end
    return buckets


@dataclass(frozen=True)
class Stats:
    """What SQL computed over one period of one attribute: counts, sums, extremes."""

    start: int
    end: int
    count: int
    distinct: int | None = None
    num_count: int = 0
    total: float | None = None
    total_sq: float | None = None
    minimum: Any = None
    maximum: Any = None
    stddev: float | None = None


def aggregate_value(method: str, stats: Stats) -> Any:
    """The value of one aggregation method over one period (4.5.19).

    totalCount counts the instances, distinctCount their distinct values; sum, avg, stddev
    and sumsq apply to numbers (Booleans count as 1/0, arrays as their length); min and
    max also order strings and DateTimes. A method that does not apply is null. stddev is
    the sample standard deviation (n - 1), null for fewer than two numbers.
    """
    if method == "totalCount":
        return stats.count
    if method == "distinctCount":
        return stats.distinct
    if method == "min":
        return stats.minimum
    if method == "max":
        return stats.maximum
    if stats.num_count == 0 or stats.total is None:
        return None
    if method == "sum":
        return float(stats.total)
    if method == "avg":
        return float(stats.total) / stats.num_count
    if method == "sumsq":
        return float(stats.total_sq) if stats.total_sq is not None else None
    if method == "stddev":
        if stats.stddev is not None:
            return float(stats.stddev)
        if stats.num_count < 2 or stats.total_sq is None:
            return None
        n = stats.num_count
        variance = (float(stats.total_sq) - float(stats.total) ** 2 / n) / (n - 1)
        return max(variance, 0.0) ** 0.5
    raise ValueError(f"unknown aggregation method {method}")  # pragma: no cover - validated before


# ---------------------------------------------------------------------------------------------
# Instances as rows
# ---------------------------------------------------------------------------------------------

ATTRIBUTE_TYPES = (
    "Property",
    "Relationship",
    "GeoProperty",
    "LanguageProperty",
    "ListProperty",
    "JsonProperty",
    "VocabProperty",
    "ListRelationship",
)
KIND_CODES = {name: code for code, name in enumerate(ATTRIBUTE_TYPES)}
#: ``kind`` flags: the value is the ``num`` column (a JSON float / a JSON integer).
FLAG_FLOAT = 8
FLAG_INT = 16
#: ``kind`` flag: an hourly mean written by the retention job in place of raw instances.
FLAG_DOWNSAMPLED = 32
_TYPE_MASK = 7
#: Members stored in their own columns (or not at all, like the system times).
_COLUMN_MEMBERS = frozenset({"type", "observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt", "deletedAt"})
#: Members an instance without sub-attributes has (fast path of :func:`encode_instance`).
_PLAIN = _COLUMN_MEMBERS | frozenset(VALUE_MEMBER.values())
#: JSON integers stored in the float ``num`` column must round-trip exactly.
_EXACT_INT = 2**53
#: The NGSI-LD Null of each attribute type, value of a deletion instance (4.5.7).
NULL_VALUES: dict[str, Any] = {
    "Property": NULL_URI,
    "GeoProperty": NULL_URI,
    "Relationship": NULL_URI,
    "LanguageProperty": {"@none": NULL_URI},
    "ListProperty": [NULL_URI],
    "JsonProperty": NULL_URI,
    "VocabProperty": NULL_URI,
    "ListRelationship": [NULL_URI],
}

#: (kind, num, value JSON, observedAt, unitCode, other members JSON)
EncodedInstance = tuple[int, float | None, str | None, str | None, str | None, str | None]


def encode_instance(instance: Instance) -> EncodedInstance:
    """Split an internal instance into the history columns.

    Numbers go to ``num`` (so SQL aggregates them) and are not repeated as JSON; Booleans
    and arrays keep their JSON value and also put 1/0 or their length in ``num``.
    """
    attr_type = instance["type"]
    code = KIND_CODES[attr_type]
    member = VALUE_MEMBER[attr_type]
    value: Any = instance.get(member)
    num: float | None = None
    text: str | None = None
    value_type = type(value)
    if value_type is float and attr_type == "Property":
        code |= FLAG_FLOAT
        num = value
    elif value_type is int and attr_type == "Property" and -_EXACT_INT <= value <= _EXACT_INT:
        code |= FLAG_INT
        num = float(value)
    else:
        text = orjson.dumps(value).decode()
        if value_type is bool:
            num = 1.0 if value else 0.0
        elif value_type is list:
            num = float(len(value))
    extra: dict[str, Any] | None = None
    if not _PLAIN.issuperset(instance):
        for key, item in instance.items():
            if key != member and key not in _COLUMN_MEMBERS:
                if extra is None:
                    extra = {}
                extra[key] = item
    return (
        code,
        num,
        text,
        instance.get("observedAt"),
        instance.get("unitCode"),
        orjson.dumps(extra).decode() if extra else None,
    )


def deletion_instance(attr_type: str) -> Instance:
    """The instance recording the deletion of an attribute: its type and the NGSI-LD Null."""
    return {"type": attr_type, VALUE_MEMBER[attr_type]: NULL_VALUES[attr_type]}


def decode_instance(
    kind: int,
    num: float | None,
    value: Any,
    observed_at: str | None,
    unit_code: str | None,
    extra: Any,
    dataset_id: str | None,
) -> Instance:
    """Rebuild the internal instance from its columns (``value``/``extra``: JSON text or parsed)."""
    attr_type = ATTRIBUTE_TYPES[kind & _TYPE_MASK]
    member = VALUE_MEMBER[attr_type]
    instance: Instance = {"type": attr_type}
    if kind & FLAG_FLOAT:
        instance[member] = num
    elif kind & FLAG_INT:
        instance[member] = int(num) if num is not None else None
    else:
        instance[member] = orjson.loads(value) if isinstance(value, str | bytes) else value
    if observed_at is not None:
        instance["observedAt"] = observed_at
    if unit_code is not None:
        instance["unitCode"] = unit_code
    if dataset_id:
        instance["datasetId"] = dataset_id
    if extra is not None:
        instance.update(orjson.loads(extra) if isinstance(extra, str | bytes) else extra)
    return instance


@dataclass
class StoredInstance:
    """One instance read back from the history, with its times in µs."""

    ts: int  # observedAt, else the time it was written (its modifiedAt) or deleted
    iid: int
    instance: Instance
    created_at: int
    modified_at: int
    deleted_at: int | None = None

    def time(self, timeproperty: str) -> int:
        """The instance's value of a temporal property (µs); deletedAt of a live one is 0."""
        if timeproperty == "createdAt":
            return self.created_at
        if timeproperty == "modifiedAt":
            return self.modified_at
        if timeproperty == "deletedAt":
            return self.deleted_at if self.deleted_at is not None else 0
        return self.ts


INSTANCE_PREFIX = "urn:ngsi-ld:Instance:"


def instance_uri(iid: int) -> str:
    """The instanceId (a URI, 4.5.7) of a stored instance."""
    return f"{INSTANCE_PREFIX}{iid:016x}"


def parse_instance_uri(text: str) -> int | None:
    """The stored id of an instanceId made by :func:`instance_uri`, or None if it is not one."""
    if not text.startswith(INSTANCE_PREFIX):
        return None
    digits = text[len(INSTANCE_PREFIX) :]
    if not re.fullmatch(r"[0-9a-f]{16}", digits):
        return None
    return int(digits, 16)


# ---------------------------------------------------------------------------------------------
# Representations (4.5.7-4.5.9, 4.5.19)
# ---------------------------------------------------------------------------------------------

#: Member of the simplified temporal representation holding the [value, time] pairs (4.5.9).
SIMPLIFIED_KEYS = {
    "Property": "values",
    "GeoProperty": "values",
    "Relationship": "objects",
    "LanguageProperty": "languageMaps",
    "ListProperty": "valueLists",
    "JsonProperty": "jsons",
    "VocabProperty": "vocabs",
    "ListRelationship": "objectLists",
}
#: Types whose simplified value is wrapped in an object naming the member.
_WRAPPED = frozenset({"LanguageProperty", "JsonProperty", "VocabProperty"})


@dataclass
class SeriesResult:
    """The history of one attribute instance (attribute + datasetId) as one response shows it."""

    attr: str
    dataset_id: str | None
    attr_type: str
    instances: list[StoredInstance] = field(default_factory=list)
    periods: list[Stats] | None = None  # aggregated representation only


def time_text(stored: StoredInstance, timeproperty: str) -> str:
    """The time shown with an instance: observedAt as it was sent, else a system time."""
    if timeproperty == "observedAt":
        observed = stored.instance.get("observedAt")
        return str(observed) if observed is not None else system_time(stored.ts)
    return system_time(stored.time(timeproperty))


def _compact_vocab(value: Any, terms: Terms) -> Any:
    if isinstance(value, list):
        return [terms.compact(v) if isinstance(v, str) else v for v in value]
    return terms.compact(value) if isinstance(value, str) else value


def render_normalized(
    stored: StoredInstance, terms: Terms, timeproperty: str, *, sys_attrs: bool, lang: str | None = None
) -> dict[str, Any]:
    """One instance in the temporal representation (4.5.7): normalized, with its instanceId."""
    rendered: dict[str, Any] = render_instance(stored.instance, terms, "normalized", sys_attrs=False, lang=lang)
    rendered["instanceId"] = instance_uri(stored.iid)
    if sys_attrs or timeproperty == "createdAt":
        rendered["createdAt"] = system_time(stored.created_at)
    if sys_attrs or timeproperty == "modifiedAt":
        rendered["modifiedAt"] = system_time(stored.modified_at)
    if stored.deleted_at is not None:
        rendered["deletedAt"] = system_time(stored.deleted_at)
    return rendered


def simplified_pair(stored: StoredInstance, terms: Terms, timeproperty: str) -> list[Any]:
    """``[value, time]`` of the simplified temporal representation (4.5.9)."""
    instance = stored.instance
    attr_type = instance["type"]
    member = VALUE_MEMBER[attr_type]
    value = instance.get(member)
    if attr_type == "VocabProperty":
        value = _compact_vocab(value, terms)
    if attr_type in _WRAPPED:
        value = {member: value}
    return [value, time_text(stored, timeproperty)]


def _series_head(series: SeriesResult) -> dict[str, Any]:
    head: dict[str, Any] = {"type": series.attr_type}
    if series.dataset_id:
        head["datasetId"] = series.dataset_id
    return head


def render_temporal_entity(
    entity_id: str,
    types: Sequence[str],
    series: Sequence[SeriesResult],
    terms: Terms,
    representation: Representation,
    *,
    timeproperty: str = "observedAt",
    aggr_methods: Sequence[str] = (),
    sys_attrs: bool = False,
    lang: str | None = None,
) -> dict[str, Any]:
    """An EntityTemporal (5.2.20) in the chosen representation, names compacted with ``terms``.

    Normalized: each attribute is the list of its instances (all datasetIds together).
    Simplified (temporalValues) and aggregated: one object per datasetId, a list if several.
    Instances are listed oldest first.
    """
    names = [terms.compact(t) for t in types]
    out: dict[str, Any] = {"id": entity_id, "type": names[0] if len(names) == 1 else names}
    grouped: dict[str, list[SeriesResult]] = {}
    for item in series:
        grouped.setdefault(item.attr, []).append(item)
    for attr, items in grouped.items():
        name = terms.compact(attr)
        if representation == "normalized":
            stored = sorted(
                (s for item in items for s in item.instances), key=lambda s: (s.time(timeproperty), s.ts, s.iid)
            )
            out[name] = [render_normalized(s, terms, timeproperty, sys_attrs=sys_attrs, lang=lang) for s in stored]
            continue
        objects: list[dict[str, Any]] = []
        for item in items:
            head = _series_head(item)
            if representation == "temporalValues":
                ordered = sorted(item.instances, key=lambda s: (s.time(timeproperty), s.ts, s.iid))
                head[SIMPLIFIED_KEYS[item.attr_type]] = [simplified_pair(s, terms, timeproperty) for s in ordered]
            else:
                for method in aggr_methods:
                    head[method] = [
                        [aggregate_value(method, period), format_time(period.start), format_time(period.end)]
                        for period in item.periods or []
                    ]
            objects.append(head)
        out[name] = objects[0] if len(objects) == 1 else objects
    return out


def project(entity: dict[str, Any], pick: set[str] | None, omit: set[str] | None) -> dict[str, Any]:
    """Apply ``pick`` / ``omit`` (4.21) to a rendered entity (member names, id and type included)."""
    return {
        key: value
        for key, value in entity.items()
        if (pick is None or key in pick) and (omit is None or key not in omit)
    }


# ---------------------------------------------------------------------------------------------
# Pagination of temporal results (6.3.10)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeRange:
    """The Content-Range of a partial temporal response: ``date-time <first>-<last>/<size>``.

    Forward pages (no lastN) go from the oldest instance to the newest returned one, size
    ``*``; backward pages (lastN) go from the newest to the oldest returned one, size lastN.
    """

    first: int
    last: int
    size: str

    def header(self) -> str:
        return f"date-time {format_time(self.first)}-{format_time(self.last)}/{self.size}"


def page_range(
    cut: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]], query: TemporalQuery
) -> TimeRange | None:
    """The range one entity's response may show, given the (oldest, newest) time of its series
    that the server cut (``cut``) and of all its series (``spans``); None if nothing was cut.

    Forward (no lastN): up to the earliest "newest" of the cut series, so that the next page
    skips no instance of any attribute; it starts at timeAt (after, between) or at the oldest
    instance shown. Backward (lastN): down to the latest "oldest" of the cut series, from
    timeAt (before), endTimeAt (between) or the newest instance shown.
    """
    if not cut:
        return None
    if query.last_n is None:
        last = min(newest for _, newest in cut)
        if query.timerel in ("after", "between") and query.time_at is not None:
            first = query.time_at
        else:
            first = min(oldest for oldest, _ in spans)
        return TimeRange(first, last, "*")
    lowest = max(oldest for oldest, _ in cut)
    if query.timerel == "before" and query.time_at is not None:
        first = query.time_at
    elif query.timerel == "between" and query.end_time_at is not None:
        first = query.end_time_at
    else:
        first = max(newest for _, newest in spans)
    return TimeRange(first, lowest, str(query.last_n))


def merge_ranges(ranges: Sequence[TimeRange], query: TemporalQuery) -> TimeRange | None:
    """One range for a page of several entities (the narrowest that is safe for all)."""
    if not ranges:
        return None
    if query.last_n is None:
        return TimeRange(min(r.first for r in ranges), min(r.last for r in ranges), "*")
    return TimeRange(max(r.first for r in ranges), max(r.last for r in ranges), str(query.last_n))


def settle_range(page: TimeRange, shown: Sequence[int], query: TemporalQuery) -> TimeRange:
    """The final range of a page once every entity was trimmed to it: its open end (not given by
    timeAt / endTimeAt) is the oldest (forward) or newest (backward) time actually shown."""
    if not shown:
        return page
    if query.last_n is None:
        anchored = query.timerel in ("after", "between") and query.time_at is not None
        return page if anchored else TimeRange(min(shown), page.last, page.size)
    anchored = query.timerel in ("before", "between")
    return page if anchored else TimeRange(max(shown), page.last, page.size)


def trim(instances: list[StoredInstance], page: TimeRange, query: TemporalQuery) -> list[StoredInstance]:
    """The instances of a series inside a page's range."""
    if query.last_n is None:
        return [s for s in instances if s.time(query.timeproperty) <= page.last]
    return [s for s in instances if s.time(query.timeproperty) >= page.last]
