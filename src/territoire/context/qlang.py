"""NGSI-LD Query Language (``q``) and Scope Query Language (``scopeQ``).

References: ETSI GS CIM 009 v1.8 (and v1.9.1 wording), clause 4.9 "NGSI-LD Query Language",
clause 4.19 "NGSI-LD Scope Query Language", clause 4.6.3 (date/time data types) and
clause 5.5.7 (term to IRI expansion).

The module offers, for both languages, a parser producing a small immutable AST, a pure Python
evaluator over the internal entity format (``docs/dev/internal-format.md``), and compilers to SQL
``WHERE`` fragments for SQLite (JSON1) and PostgreSQL (jsonb).  The three back ends implement
exactly the same semantics (the unit tests check it on a shared fixture set).

Grammar accepted by :func:`parse_q` (a superset of the clause 4.9 ABNF)
------------------------------------------------------------------------

* Query terms are combined with ``;`` (AND) and ``|`` (OR); AND binds tighter than OR; parentheses
  group (any nesting, up to :data:`MAX_NESTING` levels).  Spaces around tokens are ignored.
* A term is ``Attribute`` alone (existence test) or ``Attribute Operator Value`` with the operators
  ``==``, ``!=``, ``>``, ``>=``, ``<``, ``<=``, ``~=`` (regex match), ``!~=`` (regex no-match).
* ``Attribute`` is a dotted path ``a.b.c`` (``a`` an attribute, ``b``, ``c`` sub-attributes) whose
  last name may be one of the metadata names ``observedAt``, ``unitCode``, ``datasetId``,
  ``createdAt``, ``modifiedAt`` (only as second or later name), optionally followed by a trailing
  path in brackets, ``a[b.c]`` (v1.9) or ``a[b][c]`` (v1.8 ``compoundAttrName``), addressing members
  of the JSON value.  ``name[fr]`` addresses one language of a LanguageProperty, ``name[*]`` all
  of them.  Names start with a Unicode letter, then letters, digits, ``_`` (a ``prefix:name``
  compact form is accepted); bracketed keys additionally accept ``-`` (language tags).
  Linked-entity paths (``a{b}``, v1.9) are not supported.
* Values: JSON numbers (``-1``, ``2.5e3``), JSON strings in double quotes with JSON escapes,
  ``true``/``false``, ``dateTime`` (``2024-01-31T10:00:00Z``, any UTC offset, which is converted
  to UTC; a space instead of ``+`` in the offset, left by URL decoding, is accepted), ``date``
  (``2024-01-31``), ``time`` (``10:00:00Z``), unquoted URIs (``urn:ngsi-ld:X:1``) and unquoted
  bare terms (``Male``, for VocabProperty).  Value lists ``a==1,2,3`` and ranges ``a==1..5``
  are allowed with ``==``/``!=`` only; booleans, URIs and terms only with ``==``/``!=``.
  Unquoted values end at ``;``, ``|``, ``)``, ``,``, ``..`` or a space: quote strings containing
  these.
* Regular expressions after ``~=``/``!~=``: either a JSON string (``name~="(?i)^park"``) or a raw
  pattern that ends at the first ``;``, ``|`` or ``)`` not nested in parentheses or brackets of
  the pattern (so ``a~=x|y`` means ``(a~=x)|y``: write ``a~=(x|y)``).  Patterns use Python
  :mod:`re` syntax (also valid for PostgreSQL ``~`` in the common subset) and must compile.

Errors: syntax errors raise :class:`BadRequestData` ("Invalid q at position N: ..."); a query longer
than :data:`MAX_QUERY_LENGTH` characters or nested deeper than :data:`MAX_NESTING` raises
:class:`TooComplexQuery`.

Evaluation semantics (clause 4.9)
---------------------------------

Attribute names (first name and sub-attribute names) are terms expanded with the request
``@context`` through the ``expand`` callable given to the evaluator/compilers; bracketed keys,
language tags and metadata names are never expanded.  Querying ``id``/``type`` is not part of the
q language (clause 4.9 targets attributes; use the ``id``/``idPattern``/``type`` parameters): such
names are treated like any other attribute name.

For a term, each *instance* of the attribute is examined (default instance and every datasetId);
the entity matches if *any* instance matches.  Terms are evaluated independently: in
``a>1;a<5`` the two terms may be satisfied by different instances.  Within an instance, the
sub-attributes are walked, then the target is:

* metadata name last: the value of that member (``observedAt``...);
* bracketed keys: the member path inside ``json`` for a JsonProperty, the language for a
  LanguageProperty (single key), inside ``value`` for any other type; ``[*]``: every value of
  ``languageMap``;
* otherwise, by the instance ``type``: Property/GeoProperty (and unknown types) ``value`` (a
  JSON-LD value object ``{"@value": v, ...}`` compares as ``v``), Relationship ``object``,
  ListRelationship ``objectList``, ListProperty ``valueList``, JsonProperty ``json``,
  VocabProperty ``vocab``, LanguageProperty every value of ``languageMap``.

The target is then flattened one level: an array target contributes its elements ("is included in
the target value, if the latter is an array"), a JSON object target contributes nothing
comparable.  An element matches a value only if the data types agree (clause 4.9: "If there is no
equality between the target value data type and the Query Term value data type, then it shall be
considered as not matching"):

* numbers with numbers (ints and floats compare numerically);
* quoted strings, URIs and bare terms with strings, by code point order (no collation);
* booleans with booleans (``==``/``!=`` only);
* dateTime/date literals with strings that start with ``YYYY-MM-DD``, time literals with strings
  that start with ``HH:MM``; both sides are canonicalised (a trailing ``Z`` or ``+00:00`` removed,
  trailing zeros of the fraction removed, missing seconds added) and compared as strings, so
  ``2024-01-01T10:00:00Z`` equals ``2024-01-01T10:00:00.000000Z``.  A date compares as the start
  of that day.  Stored strings with other UTC offsets are compared as they are.
* For VocabProperty and ``==``/``!=``, a string/URI/term value matches the stored vocab if equal to
  the value as given or to ``expand(value)``.
* Relationship and ListRelationship targets only take part in ``==``/``!=`` (and existence).

Operators:

* ``==``: some element equals some listed value (or lies in the inclusive range);
* ``>``, ``>=``, ``<``, ``<=``: some element compares accordingly;
* ``!=``: the target exists and *no* element equals any listed value / lies in the range -- so,
  per clause 4.9, a target of another data type is "unequal" and matches;
* ``~=``: some string element matches (``re.search`` semantics); ``!~=``: the target has at least one
  string element and none matches;
* bare attribute: the target exists (attribute, sub-attribute, metadata member, or the bracketed
  member path -- a JSON ``null`` member exists).

Back ends: :func:`matches` / :func:`compile_matcher` evaluate in Python;
:func:`compile_q_sqlite` and :func:`compile_q_postgres` return WHERE fragments giving the same
results.  An attribute with a single instance is addressed directly inside the document (scalar
JSON functions), several instances are iterated.  On PostgreSQL, run the queries with
``jit = off``: the JSON functions get high cost estimates and JIT compilation would take far
longer (~1 s) than the execution (milliseconds).  Regular expressions are evaluated by Python
:mod:`re` (evaluator, SQLite ``REGEXP``) and by PostgreSQL ``~`` (ARE): keep to the common syntax.

Scope queries (clause 4.19): ``/A/B`` matches entities having the scope ``/A/B``; ``/A/#`` the scope
``/A`` and every scope below; ``+`` matches exactly one (non-empty) level; ``/#`` matches any entity
having at least one scope.  Patterns are combined with ``;`` (AND), ``|`` or ``,`` (OR) and
parentheses; AND binds tighter.  The leading ``/`` of stored scopes is optional (clause 4.18
grammar) and ignored when matching.  An AND requires each pattern to be matched by some scope of
the entity (not necessarily the same one).
"""

from __future__ import annotations

import enum
import functools
import itertools
import json
import operator
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, NoReturn, TypeAlias

from territoire.context.errors import BadRequestData, TooComplexQuery

__all__ = [
    "MAX_NESTING",
    "MAX_QUERY_LENGTH",
    "MAX_TERMS",
    "METADATA_NAMES",
    "QAnd",
    "QAttrPath",
    "QExpr",
    "QOp",
    "QOr",
    "QRange",
    "QTerm",
    "QValue",
    "QValueKind",
    "ScopeAnd",
    "ScopeExpr",
    "ScopeOr",
    "ScopePattern",
    "compile_matcher",
    "compile_q_postgres",
    "compile_q_sqlite",
    "compile_scope_postgres",
    "compile_scope_sqlite",
    "matches",
    "matches_scope",
    "parse_q",
    "parse_scope_q",
    "register_sqlite_functions",
]

MAX_QUERY_LENGTH = 10_000
"""Longest accepted q / scopeQ string (characters); longer ones raise TooComplexQuery."""

MAX_NESTING = 50
"""Deepest accepted parenthesis nesting; deeper raises TooComplexQuery."""

MAX_TERMS = 32
"""Most query terms accepted in a q (each compiles to a sizeable SQL fragment); more raise
TooComplexQuery."""

METADATA_NAMES = frozenset({"observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt"})
"""Names that, last in a dotted path of two or more names, address an instance's metadata."""

Expand: TypeAlias = Callable[[str], str]
_Frag: TypeAlias = tuple[str, list[Any]]


# ---------------------------------------------------------------------------------------------
# AST
# ---------------------------------------------------------------------------------------------


class QOp(enum.Enum):
    """Comparison operators of clause 4.9."""

    EQ = "=="
    NE = "!="
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    MATCH = "~="
    NOT_MATCH = "!~="


class QValueKind(enum.Enum):
    """Data type of a query value."""

    NUMBER = "number"
    STRING = "string"  # a quoted JSON string
    URI = "uri"  # an unquoted URI or bare term (compared as a string)
    BOOLEAN = "boolean"
    DATETIME = "dateTime"
    DATE = "date"
    TIME = "time"


_TEXT_KINDS = frozenset({QValueKind.STRING, QValueKind.URI})
_DAY_KINDS = frozenset({QValueKind.DATE, QValueKind.DATETIME})


@dataclass(frozen=True, slots=True)
class QValue:
    """A literal value.  For temporal kinds ``value`` is the canonical string (see module doc)."""

    kind: QValueKind
    value: int | float | str | bool
    text: str


@dataclass(frozen=True, slots=True)
class QRange:
    """An inclusive range ``low..high`` (clause 4.9 production ``Range``)."""

    low: QValue
    high: QValue


@dataclass(frozen=True, slots=True)
class QAttrPath:
    """An attribute path: ``names[0]`` is the attribute, ``names[1:]`` sub-attributes (raw terms).

    ``metadata`` is a trailing metadata name (``observedAt``...), ``keys`` the bracketed trailing
    path (raw JSON member names, a language tag, or ``("*",)``).
    """

    names: tuple[str, ...]
    metadata: str | None = None
    keys: tuple[str, ...] = ()
    text: str = ""


@dataclass(frozen=True, slots=True)
class QTerm:
    """A query term.  ``op is None`` means an existence test.

    Exactly one of ``values`` (one value or a value list), ``range`` and ``pattern`` is set when
    ``op`` is set (``pattern`` for ``~=``/``!~=``).
    """

    path: QAttrPath
    op: QOp | None = None
    values: tuple[QValue, ...] = ()
    range: QRange | None = None
    pattern: str | None = None
    position: int = field(default=0, compare=False)
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class QAnd:
    """Conjunction (``;``)."""

    operands: tuple[QExpr, ...]


@dataclass(frozen=True, slots=True)
class QOr:
    """Disjunction (``|``)."""

    operands: tuple[QExpr, ...]


QExpr: TypeAlias = "QTerm | QAnd | QOr"


@dataclass(frozen=True, slots=True)
class ScopePattern:
    """A scope pattern: ``levels`` (``"+"`` = one level wildcard) and a trailing ``/#``.

    ``levels == ()`` with ``descendants`` is ``/#``: any non-empty scope.
    """

    levels: tuple[str, ...]
    descendants: bool = False
    text: str = ""


@dataclass(frozen=True, slots=True)
class ScopeAnd:
    """Conjunction (``;``) of scope queries."""

    operands: tuple[ScopeExpr, ...]


@dataclass(frozen=True, slots=True)
class ScopeOr:
    """Disjunction (``|`` or ``,``) of scope queries."""

    operands: tuple[ScopeExpr, ...]


ScopeExpr: TypeAlias = "ScopePattern | ScopeAnd | ScopeOr"


# ---------------------------------------------------------------------------------------------
# Lexical helpers
# ---------------------------------------------------------------------------------------------

_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_DATETIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})?"
)
_DATETIME_NO_OFFSET_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?")
_SPACE_OFFSET_RE = re.compile(r" ([0-9]{2}:?[0-9]{2})")
_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_TIME_RE = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?(Z|[+-]00:?00)?")
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s\"<>\\^`{}|]+")
_WORD_RE = re.compile(r"[^\W\d_]\w*")

# Prefix tests deciding whether a stored string is a date(-time) or a time (same in SQL).
_DAY_PREFIX_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME_PREFIX_RE = re.compile(r"[0-9]{2}:[0-9]{2}")
_DAY_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"
_TIME_GLOB = "[0-9][0-9]:[0-9][0-9]*"
_DAY_PG_RE = "^[0-9]{4}-[0-9]{2}-[0-9]{2}"
_TIME_PG_RE = "^[0-9]{2}:[0-9]{2}"

_VALUE_DELIMS = frozenset(";|),") | frozenset(" \t\r\n")
_SPACES = " \t\r\n"


def _canon_temporal(s: str) -> str:
    """Canonical form of an ISO date/time string for comparisons (mirrored in SQL)."""
    if s.endswith("Z"):
        s = s[:-1]
    elif s.endswith("+00:00"):
        s = s[:-6]
    if "." in s:
        return s.rstrip("0").rstrip(".")
    if len(s) in (5, 16):  # HH:MM or YYYY-MM-DDTHH:MM: add the seconds
        return s + ":00"
    return s


@functools.lru_cache(maxsize=512)
def _compile_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _regexp(pattern: str | None, value: Any) -> bool:
    """``re.search`` of ``pattern`` in ``value``; False for non-strings (SQLite REGEXP function)."""
    if pattern is None or not isinstance(value, str):
        return False
    return _compile_regex(pattern).search(value) is not None


def register_sqlite_functions(conn: sqlite3.Connection) -> None:
    """Register ``regexp(pattern, value)`` (used by ``X REGEXP Y``) on a SQLite connection.

    Compiled patterns are cached; NULL or non-text values do not match.
    """

    def regexp(pattern: Any, value: Any) -> int:
        return 1 if isinstance(pattern, str) and _regexp(pattern, value) else 0

    conn.create_function("regexp", 2, regexp, deterministic=True)


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, what: str) -> None:
        if not isinstance(text, str):
            raise BadRequestData(f"Invalid {what}: not a string")
        if len(text) > MAX_QUERY_LENGTH:
            raise TooComplexQuery(f"The {what} is too long ({len(text)} characters, at most {MAX_QUERY_LENGTH})")
        self.s = text
        self.n = len(text)
        self.pos = 0
        self.what = what
        self.depth = 0
        self.terms = 0

    # -- utilities -------------------------------------------------------------------------

    def error(self, message: str, pos: int | None = None) -> NoReturn:
        where = self.pos if pos is None else pos
        raise BadRequestData(f"Invalid {self.what} at position {where}: {message}")

    def peek(self, k: int = 1) -> str:
        return self.s[self.pos : self.pos + k]

    def at_end(self) -> bool:
        return self.pos >= self.n

    def skip_ws(self) -> None:
        while self.pos < self.n and self.s[self.pos] in _SPACES:
            self.pos += 1

    def describe_here(self) -> str:
        if self.at_end():
            return "end of query"
        return repr(self.s[self.pos])

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise TooComplexQuery(f"The {self.what} nests parentheses deeper than {MAX_NESTING} levels")

    # -- q ---------------------------------------------------------------------------------

    def parse_query(self) -> QExpr:
        self.skip_ws()
        if self.at_end():
            self.error("the query is empty")
        expr = self.q_or()
        self.skip_ws()
        if not self.at_end():
            if self.peek() == ")":
                self.error("unexpected ')' without matching '('")
            self.error(f"expected ';', '|' or end of query, found {self.describe_here()}")
        return expr

    def q_or(self) -> QExpr:
        items = [self.q_and()]
        while True:
            self.skip_ws()
            if self.peek() != "|":
                break
            self.pos += 1
            items.append(self.q_and())
        if len(items) == 1:
            return items[0]
        flat: list[QExpr] = []
        for it in items:
            flat.extend(it.operands if isinstance(it, QOr) else (it,))
        return QOr(tuple(flat))

    def q_and(self) -> QExpr:
        items = [self.q_primary()]
        while True:
            self.skip_ws()
            if self.peek() != ";":
                break
            self.pos += 1
            items.append(self.q_primary())
        if len(items) == 1:
            return items[0]
        flat: list[QExpr] = []
        for it in items:
            flat.extend(it.operands if isinstance(it, QAnd) else (it,))
        return QAnd(tuple(flat))

    def q_primary(self) -> QExpr:
        self.skip_ws()
        if self.peek() == "(":
            start = self.pos
            self.pos += 1
            self.enter()
            expr = self.q_or()
            self.skip_ws()
            if self.peek() != ")":
                self.error(f"expected ')' to close the '(' at position {start}, found {self.describe_here()}")
            self.pos += 1
            self.depth -= 1
            return expr
        return self.q_term()

    def q_term(self) -> QTerm:
        start = self.pos
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise TooComplexQuery(f"The q has more than {MAX_TERMS} query terms")
        path = self.q_path()
        self.skip_ws()
        op = self.q_operator()
        if op is None:
            if not self.at_end() and self.peek() not in ";|)":
                self.error(f"expected an operator, ';', '|', ')' or end of query, found {self.describe_here()}")
            return QTerm(path=path, position=start)
        if op in (QOp.MATCH, QOp.NOT_MATCH):
            pattern, compiled = self.q_regex(op)
            return QTerm(path=path, op=op, pattern=pattern, position=start, regex=compiled)
        first = self.q_value(op)
        self.skip_ws()
        if self.s.startswith("..", self.pos):
            dots = self.pos
            self.pos += 2
            if op not in (QOp.EQ, QOp.NE):
                self.error(f"a range is only allowed with '==' or '!=', not '{op.value}'", dots)
            self.skip_ws()
            second = self.q_value(op, after="..")
            self.check_range(first, second, dots)
            return QTerm(path=path, op=op, range=QRange(first, second), position=start)
        if self.peek() == ",":
            if op not in (QOp.EQ, QOp.NE):
                self.error(f"a value list is only allowed with '==' or '!=', not '{op.value}'")
            values = [first]
            while self.peek() == ",":
                self.pos += 1
                self.skip_ws()
                values.append(self.q_value(op, after=","))
                self.skip_ws()
            if self.s.startswith("..", self.pos):
                self.error("a range cannot be part of a value list")
            return QTerm(path=path, op=op, values=tuple(values), position=start)
        return QTerm(path=path, op=op, values=(first,), position=start)

    def check_range(self, low: QValue, high: QValue, pos: int) -> None:
        def family(k: QValueKind) -> str:
            if k is QValueKind.NUMBER:
                return "number"
            if k is QValueKind.STRING:
                return "string"
            if k in _DAY_KINDS:
                return "date"
            if k is QValueKind.TIME:
                return "time"
            return ""

        fl, fh = family(low.kind), family(high.kind)
        if not fl or not fh:
            self.error("range bounds must be numbers, quoted strings, dates, date-times or times", pos)
        if fl != fh:
            self.error(f"range bounds must have the same data type ({fl} vs {fh})", pos)

    def q_name(self, what: str) -> str:
        start = self.pos
        s, n = self.s, self.n
        if self.at_end() or not s[self.pos].isalpha():
            if not self.at_end() and s[self.pos] == "{":
                self.error("linked-entity queries ('{...}') are not supported")
            self.error(f"expected {what}, found {self.describe_here()}")
        self.pos += 1
        while self.pos < n:
            c = s[self.pos]
            if c.isalnum() or c == "_":
                self.pos += 1
            elif c == ":" and self.pos + 1 < n and s[self.pos + 1].isalpha():
                self.pos += 2
            else:
                break
        return s[start : self.pos]

    def q_key(self) -> str:
        start = self.pos
        s, n = self.s, self.n
        if self.at_end() or not (s[self.pos].isalpha() or s[self.pos] == "_"):
            self.error(f"expected a member name, found {self.describe_here()}")
        self.pos += 1
        while self.pos < n and (s[self.pos].isalnum() or s[self.pos] in "_-"):
            self.pos += 1
        return s[start : self.pos]

    def q_path(self) -> QAttrPath:
        start = self.pos
        names = [self.q_name("an attribute name")]
        while self.peek() == "." and not self.s.startswith("..", self.pos):
            self.pos += 1
            names.append(self.q_name("a sub-attribute name after '.'"))
        keys: list[str] = []
        keys_pos = self.pos
        while self.peek() == "[":
            open_pos = self.pos
            self.pos += 1
            if self.peek() == "*":
                self.pos += 1
                group = ["*"]
            else:
                group = [self.q_key()]
                while self.peek() == "." and not self.s.startswith("..", self.pos):
                    self.pos += 1
                    group.append(self.q_key())
            if self.peek() != "]":
                self.error(f"expected ']' to close the '[' at position {open_pos}, found {self.describe_here()}")
            self.pos += 1
            keys.extend(group)
        if "*" in keys and len(keys) != 1:
            self.error("'[*]' (any language) cannot be combined with other keys", start)
        if self.peek() == "{":
            self.error("linked-entity queries ('{...}') are not supported")
        if keys and self.peek() == "." and not self.s.startswith("..", self.pos):
            self.error("a '.' cannot follow a bracketed path")
        metadata = None
        if len(names) >= 2 and names[-1] in METADATA_NAMES:
            metadata = names.pop()
            if keys:
                self.error(f"a bracketed path cannot follow the metadata name '{metadata}'", keys_pos)
        return QAttrPath(tuple(names), metadata, tuple(keys), self.s[start : self.pos])

    def q_operator(self) -> QOp | None:
        for op in (QOp.NOT_MATCH, QOp.EQ, QOp.NE, QOp.GE, QOp.LE, QOp.MATCH, QOp.GT, QOp.LT):
            if self.s.startswith(op.value, self.pos):
                self.pos += len(op.value)
                return op
        c = self.peek()
        if c == "=":
            self.error("invalid operator '=' (equality is '==')")
        if c in ("!", "~"):
            self.error(f"invalid operator starting with {c!r}")
        return None

    def q_regex(self, op: QOp) -> tuple[str, re.Pattern[str]]:
        start = self.pos
        if self.peek() == '"':
            pattern = self.q_string().value
            assert isinstance(pattern, str)
            offset = 1
        else:
            s, n = self.s, self.n
            j = self.pos
            depth = 0
            in_class = False
            while j < n:
                c = s[j]
                if c == "\\":
                    j += 2
                    continue
                if in_class:
                    if c == "]":
                        in_class = False
                elif c == "[":
                    in_class = True
                    j += 1
                    if j < n and s[j] == "^":
                        j += 1
                    if j < n and s[j] == "]":
                        j += 1
                    continue
                elif c == "(":
                    depth += 1
                elif c == ")":
                    if depth == 0:
                        break
                    depth -= 1
                elif c in ";|" and depth == 0:
                    break
                j += 1
            j = min(j, n)
            pattern = s[self.pos : j]
            self.pos = j
            offset = 0
        if not pattern:
            self.error(f"expected a regular expression after '{op.value}'", start)
        try:
            compiled = _compile_regex(pattern)
        except re.error as exc:
            self.error(f"invalid regular expression: {exc.msg}", start + offset + (exc.pos or 0))
        return pattern, compiled

    def q_string(self) -> QValue:
        start = self.pos
        s, n = self.s, self.n
        j = start + 1
        while j < n and s[j] != '"':
            j += 2 if s[j] == "\\" else 1
        if j >= n:
            self.error("unterminated string", start)
        raw = s[start : j + 1]
        try:
            value = json.loads(raw)
        except ValueError:
            self.error("invalid string (bad escape or control character)", start)
        self.pos = j + 1
        return QValue(QValueKind.STRING, value, raw)

    def q_value(self, op: QOp, after: str | None = None) -> QValue:
        label = after or op.value
        self.skip_ws()
        if self.at_end() or self.peek() in _VALUE_DELIMS:
            self.error(f"expected a value after '{label}'")
        if self.peek() == '"':
            value = self.q_string()
        else:
            start = self.pos
            s, n = self.s, self.n
            j = start
            while j < n and s[j] not in _VALUE_DELIMS and not s.startswith("..", j):
                j += 1
            token = s[start:j]
            if _DATETIME_NO_OFFSET_RE.fullmatch(token):
                # URL decoding turns the '+' of a UTC offset into a space.
                m = _SPACE_OFFSET_RE.match(s, j)
                if m and (m.end() >= n or s[m.end()] in _VALUE_DELIMS or s.startswith("..", m.end())):
                    token = token + "+" + m.group(1)
                    j = m.end()
            if not token:
                self.error(f"expected a value after '{label}'")
            self.pos = j
            value = self.classify(token, start)
        if op not in (QOp.EQ, QOp.NE):
            if value.kind is QValueKind.BOOLEAN:
                self.error(f"a boolean can only be compared with '==' or '!=', not '{op.value}'", start)
            if value.kind is QValueKind.URI:
                self.error(
                    f"'{value.text}' is not a number, quoted string, date, date-time or time "
                    f"(only those can be used with '{op.value}')",
                    start,
                )
        return value

    def classify(self, token: str, start: int) -> QValue:
        if token in ("true", "false"):
            return QValue(QValueKind.BOOLEAN, token == "true", token)
        if _NUMBER_RE.fullmatch(token):
            number: int | float
            if any(c in token for c in ".eE"):
                number = float(token)
                if number in (float("inf"), float("-inf")):
                    self.error(f"number out of range: {token}", start)
            else:
                number = int(token)
                if not -(2**63) <= number < 2**63:
                    number = float(number)  # as stored by JSON engines
            return QValue(QValueKind.NUMBER, number, token)
        m = _DATETIME_RE.fullmatch(token)
        if m:
            return QValue(QValueKind.DATETIME, self.canon_datetime(m, start), token)
        m = _DATE_RE.fullmatch(token)
        if m:
            try:
                date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            except ValueError:
                self.error(f"invalid date: {token}", start)
            return QValue(QValueKind.DATE, token, token)
        m = _TIME_RE.fullmatch(token)
        if m:
            hh, mm, ss = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
            if hh > 23 or mm > 59 or ss > 59:
                self.error(f"invalid time: {token}", start)
            text = f"{m.group(1)}:{m.group(2)}:{m.group(3) or '00'}"
            if m.group(4):
                text += "." + m.group(4)
            return QValue(QValueKind.TIME, _canon_temporal(text), token)
        if _URI_RE.fullmatch(token) or _WORD_RE.fullmatch(token):
            return QValue(QValueKind.URI, token, token)
        self.error(
            f"invalid value {token!r} (expected a number, a quoted string, true/false, a date/time or a URI)",
            start,
        )

    def canon_datetime(self, m: re.Match[str], start: int) -> str:
        y, mo, d, hh, mi, ss, frac, off = m.groups()
        try:
            dt = datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss or 0))
        except ValueError:
            self.error(f"invalid date-time: {m.group(0)}", start)
        if off in (None, "Z") or off.replace(":", "") in ("+0000", "-0000"):
            text = f"{y}-{mo}-{d}T{hh}:{mi}:{ss or '00'}"
            if frac:
                text += "." + frac
            return _canon_temporal(text)
        sign = 1 if off[0] == "+" else -1
        digits = off[1:].replace(":", "")
        oh, om = int(digits[:2]), int(digits[2:])
        if oh > 23 or om > 59:
            self.error(f"invalid UTC offset: {off}", start)
        micro = int((frac or "0")[:6].ljust(6, "0"))
        tz = timezone(sign * timedelta(hours=oh, minutes=om))
        utc = dt.replace(microsecond=micro, tzinfo=tz).astimezone(UTC)
        text = utc.strftime("%Y-%m-%dT%H:%M:%S")
        if utc.microsecond:
            text += f".{utc.microsecond:06d}"
        return _canon_temporal(text)

    # -- scopeQ ----------------------------------------------------------------------------

    def parse_scope(self) -> ScopeExpr:
        self.skip_ws()
        if self.at_end():
            self.error("the scope query is empty")
        expr = self.s_or()
        self.skip_ws()
        if not self.at_end():
            if self.peek() == ")":
                self.error("unexpected ')' without matching '('")
            self.error(f"expected ';', '|', ',' or end of query, found {self.describe_here()}")
        return expr

    def s_or(self) -> ScopeExpr:
        items = [self.s_and()]
        while True:
            self.skip_ws()
            if self.peek() not in ("|", ","):
                break
            self.pos += 1
            items.append(self.s_and())
        if len(items) == 1:
            return items[0]
        flat: list[ScopeExpr] = []
        for it in items:
            flat.extend(it.operands if isinstance(it, ScopeOr) else (it,))
        return ScopeOr(tuple(flat))

    def s_and(self) -> ScopeExpr:
        items = [self.s_primary()]
        while True:
            self.skip_ws()
            if self.peek() != ";":
                break
            self.pos += 1
            items.append(self.s_primary())
        if len(items) == 1:
            return items[0]
        flat: list[ScopeExpr] = []
        for it in items:
            flat.extend(it.operands if isinstance(it, ScopeAnd) else (it,))
        return ScopeAnd(tuple(flat))

    def s_primary(self) -> ScopeExpr:
        self.skip_ws()
        if self.peek() == "(":
            start = self.pos
            self.pos += 1
            self.enter()
            expr = self.s_or()
            self.skip_ws()
            if self.peek() != ")":
                self.error(f"expected ')' to close the '(' at position {start}, found {self.describe_here()}")
            self.pos += 1
            self.depth -= 1
            return expr
        return self.s_pattern()

    def s_pattern(self) -> ScopePattern:
        start = self.pos
        if self.peek() != "/":
            self.error(f"expected '/' starting a scope, found {self.describe_here()}")
        levels: list[str] = []
        descendants = False
        while self.peek() == "/":
            self.pos += 1
            c = self.peek()
            if c == "#":
                self.pos += 1
                descendants = True
                break
            if c == "+":
                self.pos += 1
                levels.append("+")
            else:
                lstart = self.pos
                while self.pos < self.n and (self.s[self.pos].isalnum() or self.s[self.pos] in "_-"):
                    self.pos += 1
                if self.pos == lstart:
                    self.error(f"expected a scope level, '+' or '#' after '/', found {self.describe_here()}")
                levels.append(self.s[lstart : self.pos])
        if not self.at_end() and self.peek() not in ";|,)" + _SPACES:
            self.error(f"unexpected {self.describe_here()} in scope")
        return ScopePattern(tuple(levels), descendants, self.s[start : self.pos])


def parse_q(text: str) -> QExpr:
    """Parse an NGSI-LD ``q`` string (clause 4.9) into an AST.

    Raises BadRequestData on syntax errors and invalid regular expressions, TooComplexQuery when
    longer than MAX_QUERY_LENGTH or nested deeper than MAX_NESTING.
    """
    return _Parser(text, "q").parse_query()


def parse_scope_q(text: str) -> ScopeExpr:
    """Parse an NGSI-LD ``scopeQ`` string (clause 4.19) into an AST."""
    return _Parser(text, "scopeQ").parse_scope()


# ---------------------------------------------------------------------------------------------
# Resolution (term expansion) shared by all back ends
# ---------------------------------------------------------------------------------------------

# Member holding the target of an instance, by NGSI-LD attribute type (clause 4.9); any other
# or missing type uses "value".
_TYPE_MEMBER: dict[str, str] = {
    "Property": "value",
    "GeoProperty": "value",
    "Relationship": "object",
    "ListRelationship": "objectList",
    "ListProperty": "valueList",
    "JsonProperty": "json",
    "VocabProperty": "vocab",
    "LanguageProperty": "languageMap",
}
_RELATIONSHIP_TYPES = ("Relationship", "ListRelationship")


@dataclass(frozen=True, slots=True)
class _RTerm:
    """A term with its attribute names expanded."""

    term: QTerm
    attr: str
    subs: tuple[str, ...]
    vocab_values: tuple[str, ...]

    @property
    def eq_class(self) -> bool:
        """Whether the operator is ``==``/``!=`` (the only ones relationships take part in)."""
        return self.term.op in (QOp.EQ, QOp.NE)


_BAD_KEY_RE = re.compile(r'["\\\x00-\x1f]')


def _checked_iri(term: str, iri: str, position: int) -> str:
    if not isinstance(iri, str) or not iri or _BAD_KEY_RE.search(iri):
        raise BadRequestData(f"Invalid q at position {position}: '{term}' expands to an invalid attribute name {iri!r}")
    return iri


def _resolve_term(term: QTerm, expand: Expand) -> _RTerm:
    names = term.path.names
    attr = _checked_iri(names[0], expand(names[0]), term.position)
    subs = tuple(_checked_iri(n, expand(n), term.position) for n in names[1:])
    vocab: list[str] = []
    if term.op in (QOp.EQ, QOp.NE):
        for v in term.values:
            if v.kind in _TEXT_KINDS:
                assert isinstance(v.value, str)
                vocab.append(expand(v.value))
    return _RTerm(term, attr, subs, tuple(vocab))


# ---------------------------------------------------------------------------------------------
# Python evaluator
# ---------------------------------------------------------------------------------------------

_MISSING = object()
_PY_OPS: dict[QOp, Callable[[Any, Any], bool]] = {
    QOp.EQ: operator.eq,
    QOp.GT: operator.gt,
    QOp.GE: operator.ge,
    QOp.LT: operator.lt,
    QOp.LE: operator.le,
}


def _flat1(x: Any) -> list[Any]:
    """Elements of a target: an array's elements, nothing for an object, else the value itself."""
    if isinstance(x, list):
        return x
    if isinstance(x, dict):
        return []
    return [x]


def _lang_values(lm: Any) -> list[Any]:
    out: list[Any] = []
    if isinstance(lm, dict):
        for v in lm.values():
            out.extend(_flat1(v))
    return out


def _node_type(node: Mapping[str, Any]) -> str | None:
    t = node.get("type")
    return t if isinstance(t, str) else None


def _py_cmp(el: Any, op: QOp, v: QValue) -> bool:
    kind = v.kind
    if kind is QValueKind.NUMBER:
        if isinstance(el, bool) or not isinstance(el, int | float):
            return False
        return _PY_OPS[op](el, v.value)
    if kind is QValueKind.BOOLEAN:
        return isinstance(el, bool) and el is v.value and op is QOp.EQ
    if not isinstance(el, str):
        return False
    if kind in _TEXT_KINDS:
        return _PY_OPS[op](el, v.value)
    if kind in _DAY_KINDS:
        if not _DAY_PREFIX_RE.match(el):
            return False
    elif not _TIME_PREFIX_RE.match(el):
        return False
    return _PY_OPS[op](_canon_temporal(el), v.value)


def _py_eq(rt: _RTerm, vocab: bool, el: Any) -> bool:
    t = rt.term
    if t.range is not None:
        return _py_cmp(el, QOp.GE, t.range.low) and _py_cmp(el, QOp.LE, t.range.high)
    if any(_py_cmp(el, QOp.EQ, v) for v in t.values):
        return True
    return vocab and isinstance(el, str) and el in rt.vocab_values


def _py_nav(x: Any, keys: Sequence[str]) -> Any:
    for k in keys:
        if isinstance(x, dict) and k in x:
            x = x[k]
        else:
            return _MISSING
    return x


def _py_keyed_target(node: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    ntype = _node_type(node)
    if ntype == "JsonProperty":
        member = "json"
    elif ntype == "LanguageProperty":
        if len(keys) != 1:
            return _MISSING
        member = "languageMap"
    else:
        member = "value"
    return _py_nav(node[member], keys) if member in node else _MISSING


def _py_target_exists(rt: _RTerm, node: Mapping[str, Any]) -> bool:
    path = rt.term.path
    if path.metadata is not None:
        return path.metadata in node
    if path.keys == ("*",):
        return "languageMap" in node
    if path.keys:
        return _py_keyed_target(node, path.keys) is not _MISSING
    return True


def _py_elements(rt: _RTerm, node: Mapping[str, Any]) -> tuple[bool, list[Any]]:
    """Target elements of an instance (or sub-attribute) node, and whether it is a vocab target."""
    path = rt.term.path
    if path.metadata is not None:
        return False, (_flat1(node[path.metadata]) if path.metadata in node else [])
    if path.keys == ("*",):
        return False, _lang_values(node.get("languageMap"))
    if path.keys:
        x = _py_keyed_target(node, path.keys)
        return False, ([] if x is _MISSING else _flat1(x))
    ntype = _node_type(node)
    member = _TYPE_MEMBER.get(ntype, "value") if ntype is not None else "value"
    if ntype in _RELATIONSHIP_TYPES and not rt.eq_class:
        return False, []
    if member not in node:
        return False, []
    x = node[member]
    if member == "languageMap":
        return False, _lang_values(x)
    if member == "value" and isinstance(x, dict):
        return False, ([x["@value"]] if "@value" in x else [])
    return member == "vocab", _flat1(x)


def _py_node_match(rt: _RTerm, node: Mapping[str, Any]) -> bool:
    t = rt.term
    op = t.op
    if op is None:
        return _py_target_exists(rt, node)
    vocab, els = _py_elements(rt, node)
    if op is QOp.EQ:
        return any(_py_eq(rt, vocab, el) for el in els)
    if op is QOp.NE:
        return _py_target_exists(rt, node) and not any(_py_eq(rt, vocab, el) for el in els)
    if op in (QOp.MATCH, QOp.NOT_MATCH):
        strings = [el for el in els if isinstance(el, str)]
        found = any(_regexp(t.pattern, el) for el in strings)
        return found if op is QOp.MATCH else (bool(strings) and not found)
    v = t.values[0]
    return any(_py_cmp(el, op, v) for el in els)


def _py_term(rt: _RTerm) -> Callable[[Mapping[str, Any]], bool]:
    def run(attrs: Mapping[str, Any]) -> bool:
        instances = attrs.get(rt.attr)
        if not isinstance(instances, list):
            return False
        for inst in instances:
            node: Any = inst
            for s in rt.subs:
                node = node.get(s) if isinstance(node, dict) else None
            if isinstance(node, dict) and _py_node_match(rt, node):
                return True
        return False

    return run


def _py_build(expr: QExpr, expand: Expand) -> Callable[[Mapping[str, Any]], bool]:
    if isinstance(expr, QTerm):
        return _py_term(_resolve_term(expr, expand))
    parts = [_py_build(e, expand) for e in expr.operands]
    if isinstance(expr, QAnd):
        return lambda attrs: all(p(attrs) for p in parts)
    return lambda attrs: any(p(attrs) for p in parts)


def _attrs_of(entity: Mapping[str, Any]) -> Mapping[str, Any]:
    attrs = entity.get("attrs") if "attrs" in entity else entity
    return attrs if isinstance(attrs, Mapping) else {}


def compile_matcher(expr: QExpr, expand: Expand) -> Callable[[Mapping[str, Any]], bool]:
    """Expand the attribute names of ``expr`` once and return a predicate over entities.

    The predicate takes an internal entity (its ``attrs`` member is used) or an ``attrs`` mapping.
    """
    run = _py_build(expr, expand)
    return lambda entity: run(_attrs_of(entity))


def matches(expr: QExpr, entity: Mapping[str, Any], expand: Expand) -> bool:
    """Whether the internal (expanded) ``entity`` matches the q expression (see module doc)."""
    return compile_matcher(expr, expand)(entity)


# ---------------------------------------------------------------------------------------------
# Scope evaluation (shared helpers)
# ---------------------------------------------------------------------------------------------


def _scope_regex(p: ScopePattern) -> str:
    body = "/".join("[^/]+" if lv == "+" else re.escape(lv) for lv in p.levels)
    return "(?s)\\A" + body + ("(/.*)?" if p.descendants else "") + "\\Z"


def _scope_leaf_py(p: ScopePattern, scopes: Sequence[str]) -> bool:
    if not p.levels:
        return bool(scopes)
    if "+" in p.levels:
        rx = _scope_regex(p)
        return any(_regexp(rx, s.lstrip("/")) for s in scopes)
    joined = "/".join(p.levels)
    for s in scopes:
        v = s.lstrip("/")
        if v == joined or (p.descendants and v.startswith(joined + "/")):
            return True
    return False


def matches_scope(expr: ScopeExpr, scopes: Sequence[str] | None) -> bool:
    """Whether an entity with the given scopes (None = no scope) matches a scopeQ (clause 4.19)."""
    values = [s for s in (scopes or ()) if isinstance(s, str)]
    if isinstance(expr, ScopePattern):
        return _scope_leaf_py(expr, values)
    if isinstance(expr, ScopeAnd):
        return all(matches_scope(e, values) for e in expr.operands)
    return any(matches_scope(e, values) for e in expr.operands)


# ---------------------------------------------------------------------------------------------
# SQL compilers
# ---------------------------------------------------------------------------------------------
#
# A term compiles to a predicate over the instances of its attribute.  The predicate dispatches
# on the instance ``type`` (a CASE) to the one member holding the target and evaluates an element
# predicate P on the target's elements; element predicates never yield NULL, so that the ``NOT``
# of != and !~= is exact.  Performance: when the attribute has exactly one instance (the usual
# case) the instance is addressed directly inside the document (``$."A"[0]`` / ``data -> A -> 0``)
# with scalar JSON functions; otherwise the instances are iterated with json_each /
# jsonb_array_elements.  Both forms are generated: ``CASE <array length> WHEN 1 THEN <direct>
# ELSE EXISTS (<loop>) END``.

_COLUMN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
_SQL_OPS = {QOp.EQ: "=", QOp.GT: ">", QOp.GE: ">=", QOp.LT: "<", QOp.LE: "<="}
_FIXED_MEMBERS = frozenset(
    {"type", "value", "object", "objectList", "valueList", "json", "vocab", "languageMap", "@value"} | METADATA_NAMES
)


def _family(kind: QValueKind) -> str:
    """Comparison family of a value kind (booleans are handled apart)."""
    if kind is QValueKind.NUMBER:
        return "number"
    if kind in _TEXT_KINDS:
        return "text"
    if kind in _DAY_KINDS:
        return "day"
    return "time"


def _check_column(col: str) -> str:
    if not _COLUMN_RE.fullmatch(col):
        raise ValueError(f"invalid SQL column reference: {col!r}")
    return col


def _combine(frags: Sequence[_Frag], sep: str) -> _Frag:
    if len(frags) == 1:
        return frags[0]
    params: list[Any] = []
    for _, p in frags:
        params.extend(p)
    return "(" + f" {sep} ".join(f for f, _ in frags) + ")", params


def _case(subject: _Frag, branches: Sequence[tuple[str, _Frag]], default: _Frag) -> _Frag:
    """``CASE subject WHEN 'lit' THEN ... ELSE default END`` (literals are fixed type names)."""
    sql = f"CASE {subject[0]}"
    params = list(subject[1])
    for lit, (b_sql, b_params) in branches:
        sql += f" WHEN '{lit}' THEN {b_sql}"
        params += b_params
    sql += f" ELSE {default[0]} END"
    return sql, params + default[1]


_Pred: TypeAlias = Callable[[Any], _Frag]


class _TermCompiler:
    """Dialect-independent assembly; subclasses provide the JSON primitives.

    ``ref`` designates an instance (dialect-specific); an element predicate maps an element
    handle (dialect-specific) to a fragment.
    """

    false = "false"
    use_direct = True  # address single instances directly (tests turn it off to cover the loop)

    def __init__(self, expand: Expand, data_col: str) -> None:
        self.expand = expand
        self.data_col = _check_column(data_col)
        self.counter = itertools.count(1)

    def compile(self, expr: QExpr) -> _Frag:
        if isinstance(expr, QTerm):
            return self.term(_resolve_term(expr, self.expand))
        parts = [self.compile(e) for e in expr.operands]
        return _combine(parts, "AND" if isinstance(expr, QAnd) else "OR")

    # -- primitives (per dialect) -------------------------------------------------------------

    def term(self, rt: _RTerm) -> _Frag:
        raise NotImplementedError

    def node_type(self, ref: Any, subs: tuple[str, ...]) -> _Frag:
        raise NotImplementedError

    def path_exists(self, ref: Any, path: tuple[str, ...]) -> _Frag:
        raise NotImplementedError

    def node_is_object(self, ref: Any, subs: tuple[str, ...]) -> _Frag:
        raise NotImplementedError

    def any_at(self, ref: Any, path: tuple[str, ...], p: _Pred, unwrap: bool) -> _Frag:
        """Some element of the JSON at ``path`` satisfies ``p``: the value itself if scalar, its
        elements if an array, nothing if an object (but its ``@value`` if ``unwrap``)."""
        raise NotImplementedError

    def any_lang(self, ref: Any, path: tuple[str, ...], p: _Pred) -> _Frag:
        """Some value of the language map at ``path`` (flattened one level) satisfies ``p``."""
        raise NotImplementedError

    def test(self, el: Any, family: str, clauses: Sequence[tuple[str, list[Any]]]) -> _Frag:
        """Element of ``family`` (number/text/day/time) satisfying all ``clauses``.

        A clause is ``(op, values)``: ``op`` is a SQL comparison operator with one value, ``IN``
        with several or ``BETWEEN`` with two (inclusive).  Date/time families compare canonical
        forms.
        """
        raise NotImplementedError

    def test_bool(self, el: Any, values: Sequence[bool]) -> _Frag:
        raise NotImplementedError

    def is_string(self, el: Any) -> _Frag:
        raise NotImplementedError

    def regex(self, el: Any, pattern: str) -> _Frag:
        raise NotImplementedError

    # -- assembly -----------------------------------------------------------------------------

    def any_element(self, rt: _RTerm, ref: Any, p: _Pred, p_vocab: _Pred) -> _Frag:
        """Some target element of the instance satisfies ``p`` (mirrors ``_py_elements``)."""
        path = rt.term.path
        subs = rt.subs
        no: _Frag = (self.false, [])
        if path.metadata is not None:
            return self.any_at(ref, (*subs, path.metadata), p, False)
        if path.keys == ("*",):
            return self.any_lang(ref, (*subs, "languageMap"), p)
        if path.keys:
            keys = path.keys
            lang = self.any_at(ref, (*subs, "languageMap", *keys), p, False) if len(keys) == 1 else no
            return _case(
                self.node_type(ref, subs),
                [("JsonProperty", self.any_at(ref, (*subs, "json", *keys), p, False)), ("LanguageProperty", lang)],
                self.any_at(ref, (*subs, "value", *keys), p, False),
            )
        rel = rt.eq_class
        branches: list[tuple[str, _Frag]] = [
            ("Relationship", self.any_at(ref, (*subs, "object"), p, False) if rel else no),
            ("ListRelationship", self.any_at(ref, (*subs, "objectList"), p, False) if rel else no),
            ("ListProperty", self.any_at(ref, (*subs, "valueList"), p, False)),
            ("JsonProperty", self.any_at(ref, (*subs, "json"), p, False)),
            ("VocabProperty", self.any_at(ref, (*subs, "vocab"), p_vocab, False)),
            ("LanguageProperty", self.any_lang(ref, (*subs, "languageMap"), p)),
        ]
        return _case(self.node_type(ref, subs), branches, self.any_at(ref, (*subs, "value"), p, True))

    def target_exists(self, rt: _RTerm, ref: Any) -> _Frag | None:
        """The target exists in the instance (mirrors ``_py_target_exists``); None = always."""
        path = rt.term.path
        subs = rt.subs
        if path.metadata is not None:
            return self.path_exists(ref, (*subs, path.metadata))
        if path.keys == ("*",):
            return self.path_exists(ref, (*subs, "languageMap"))
        if path.keys:
            keys = path.keys
            lang = self.path_exists(ref, (*subs, "languageMap", *keys)) if len(keys) == 1 else (self.false, [])
            return _case(
                self.node_type(ref, subs),
                [("JsonProperty", self.path_exists(ref, (*subs, "json", *keys))), ("LanguageProperty", lang)],
                self.path_exists(ref, (*subs, "value", *keys)),
            )
        return self.node_is_object(ref, subs) if subs else None

    def instance_predicate(self, rt: _RTerm, ref: Any) -> _Frag | None:
        """The term holds for the instance ``ref`` (mirrors ``_py_node_match``); None = always."""
        t = rt.term
        op = t.op

        def eq(el: Any) -> _Frag:
            if t.range is not None:
                family = _family(t.range.low.kind)
                return self.test(el, family, [("BETWEEN", [t.range.low.value, t.range.high.value])])
            frags: list[_Frag] = []
            bools = list(dict.fromkeys(v.value for v in t.values if v.kind is QValueKind.BOOLEAN))
            if bools:
                frags.append(self.test_bool(el, [bool(b) for b in bools]))
            for family in ("number", "text", "day", "time"):
                vals = list(dict.fromkeys(v.value for v in t.values if _family(v.kind) == family))
                vals = [v for v in vals if not isinstance(v, bool)]
                if vals:
                    frags.append(self.test(el, family, [("=", vals)] if len(vals) == 1 else [("IN", vals)]))
            return _combine(frags, "OR")

        def eq_vocab(el: Any) -> _Frag:
            if not rt.vocab_values:
                return eq(el)
            return _combine([eq(el), self.test(el, "text", [("IN", list(rt.vocab_values))])], "OR")

        def regex(el: Any) -> _Frag:
            assert t.pattern is not None
            return self.regex(el, t.pattern)

        def ordered(el: Any) -> _Frag:
            assert op is not None
            v = t.values[0]
            return self.test(el, _family(v.kind), [(_SQL_OPS[op], [v.value])])

        if op is None:
            return self.target_exists(rt, ref)
        if op is QOp.EQ:
            return self.any_element(rt, ref, eq, eq_vocab)
        if op is QOp.NE:
            some = self.any_element(rt, ref, eq, eq_vocab)
            exists = self.target_exists(rt, ref)
            neg = (f"NOT ({some[0]})", some[1])
            return neg if exists is None else (f"{exists[0]} AND {neg[0]}", exists[1] + neg[1])
        if op is QOp.MATCH:
            return self.any_element(rt, ref, regex, regex)
        if op is QOp.NOT_MATCH:
            has = self.any_element(rt, ref, self.is_string, self.is_string)
            found = self.any_element(rt, ref, regex, regex)
            return f"({has[0]}) AND NOT ({found[0]})", has[1] + found[1]
        return self.any_element(rt, ref, ordered, ordered)

    @staticmethod
    def _and(guard: _Frag, pred: _Frag | None) -> _Frag:
        if pred is None:
            return guard
        return f"{guard[0]} AND ({pred[0]})", guard[1] + pred[1]


# ---------------------------------------------------------------------------------------------
# SQLite compiler
# ---------------------------------------------------------------------------------------------


def _sq_path(keys: Sequence[str], prefix: str = "$") -> str:
    """A SQLite JSON path with quoted keys (keys never contain '"' or '\\')."""
    return prefix + "".join(f'."{k}"' for k in keys)


def _sqlite_canon(s: str) -> str:
    s1 = (
        f"(CASE WHEN substr({s}, -1) = 'Z' THEN substr({s}, 1, length({s}) - 1) "
        f"WHEN substr({s}, -6) = '+00:00' THEN substr({s}, 1, length({s}) - 6) ELSE {s} END)"
    )
    return (
        f"(CASE WHEN instr({s1}, '.') > 0 THEN rtrim(rtrim({s1}, '0'), '.') "
        f"WHEN length({s1}) IN (5, 16) THEN {s1} || ':00' ELSE {s1} END)"
    )


@dataclass(frozen=True, slots=True)
class _SqRef:
    """An instance: the JSON document ``doc`` holding it at path ``prefix``.

    ``direct``: ``doc`` is the entity document (scalar functions on it share SQLite's parse cache,
    table-valued json_each(doc) would re-parse it); otherwise ``doc`` is the instance's own text.
    """

    doc: str
    prefix: str
    direct: bool

    def path(self, keys: Sequence[str]) -> str:
        return _sq_path(keys, self.prefix)


class _SqliteCompiler(_TermCompiler):
    """Elements are ``(value_sql, type_sql, params)``: ``type_sql`` is a json_type() result and
    ``params`` the parameters of one occurrence of either expression."""

    false = "0"

    def term(self, rt: _RTerm) -> _Frag:
        n = next(self.counter)
        i = f"i{n}"
        data = self.data_col
        attr_path = _sq_path((rt.attr,))
        first = _SqRef(data, attr_path + "[0]", True)
        loop = _SqRef(f"{i}.value", "$", False)
        direct = self._and((f"json_type({data}, ?) = 'object'", [first.prefix]), self.instance_predicate(rt, first))
        looped = self._and((f"{i}.type = 'object'", []), self.instance_predicate(rt, loop))
        if not self.use_direct:
            return f"EXISTS (SELECT 1 FROM json_each({data}, ?) AS {i} WHERE {looped[0]})", [attr_path, *looped[1]]
        return (
            f"(CASE json_array_length({data}, ?) WHEN 1 THEN {direct[0]} "
            f"ELSE EXISTS (SELECT 1 FROM json_each({data}, ?) AS {i} WHERE {looped[0]}) END)",
            [attr_path, *direct[1], attr_path, *looped[1]],
        )

    def node_type(self, ref: Any, subs: tuple[str, ...]) -> _Frag:
        return f"json_extract({ref.doc}, ?)", [ref.path((*subs, "type"))]

    def path_exists(self, ref: Any, path: tuple[str, ...]) -> _Frag:
        return f"(json_type({ref.doc}, ?) IS NOT NULL)", [ref.path(path)]

    def node_is_object(self, ref: Any, subs: tuple[str, ...]) -> _Frag:
        return f"(json_type({ref.doc}, ?) IS 'object')", [ref.path(subs)]

    def any_at(self, ref: Any, path: tuple[str, ...], p: _Pred, unwrap: bool) -> _Frag:
        doc = ref.doc
        jp = ref.path(path)
        x = f"x{next(self.counter)}"
        if not ref.direct:
            # json_each over a path yields the scalar itself (key NULL), the elements of an array
            # (integer keys) or the members of an object (text keys: skipped, except "@value"
            # when unwrapping a JSON-LD value object).
            sql, params = p((f"{x}.value", f"{x}.type", []))
            keep = f"(typeof({x}.key) <> 'text' OR {x}.key = '@value')" if unwrap else f"typeof({x}.key) <> 'text'"
            return f"EXISTS (SELECT 1 FROM json_each({doc}, ?) AS {x} WHERE {keep} AND {sql})", [jp, *params]
        arr_sql, arr_params = p((f"{x}.value", f"{x}.type", []))
        obj: _Frag = (self.false, [])
        if unwrap:
            obj = p((f"json_extract({doc}, ?)", f"json_type({doc}, ?)", [ref.path((*path, "@value"))]))
        s_sql, s_params = p((f"json_extract({doc}, ?)", f"json_type({doc}, ?)", [jp]))
        return (
            f"CASE json_type({doc}, ?) "
            f"WHEN 'array' THEN EXISTS (SELECT 1 FROM json_each(json_extract({doc}, ?)) AS {x} WHERE {arr_sql}) "
            f"WHEN 'object' THEN {obj[0]} ELSE {s_sql} END",
            [jp, jp, *arr_params, *obj[1], *s_params],
        )

    def any_lang(self, ref: Any, path: tuple[str, ...], p: _Pred) -> _Frag:
        n = next(self.counter)
        lm, x = f"l{n}", f"x{n}"
        sql, params = p((f"{x}.value", f"{x}.type", []))
        lp = ref.path(path)
        if ref.direct:
            src, src_params = (
                f"CASE json_type({ref.doc}, ?) WHEN 'object' THEN json_extract({ref.doc}, ?) END",
                [lp, lp],
            )
            from_sql = f"json_each({src}) AS {lm}, json_each({src}, {lm}.fullkey) AS {x}"
            from_params = [*src_params, *src_params]
        else:
            from_sql = f"json_each({ref.doc}, ?) AS {lm}, json_each({ref.doc}, {lm}.fullkey) AS {x}"
            from_params = [lp]
        where = f"typeof({lm}.key) = 'text' AND typeof({x}.key) <> 'text' AND {sql}"
        return f"EXISTS (SELECT 1 FROM {from_sql} WHERE {where})", [*from_params, *params]

    def test(self, el: Any, family: str, clauses: Sequence[tuple[str, list[Any]]]) -> _Frag:
        value, typ, ap = el
        if family == "number":
            guard, params, x, xp = f"coalesce({typ}, '') IN ('integer', 'real')", [*ap], value, ap
        elif family == "text":
            guard, params, x, xp = f"coalesce({typ}, '') = 'text'", [*ap], value, ap
        else:
            glob = _DAY_GLOB if family == "day" else _TIME_GLOB
            guard, params = f"coalesce({typ}, '') = 'text' AND {value} GLOB '{glob}'", [*ap, *ap]
            x = _sqlite_canon(value)
            xp = ap * x.count(value)
        parts = [guard]
        for op_sql, vals in clauses:
            if op_sql == "IN":  # one parameter: a JSON array
                parts.append(f"{x} IN (SELECT value FROM json_each(?))")
                params += [*xp, json.dumps(vals)]
                continue
            parts.append(f"{x} BETWEEN ? AND ?" if op_sql == "BETWEEN" else f"{x} {op_sql} ?")
            params += [*xp, *vals]
        return "(" + " AND ".join(parts) + ")", params

    def test_bool(self, el: Any, values: Sequence[bool]) -> _Frag:
        _, typ, ap = el
        names = ", ".join("'true'" if b else "'false'" for b in values)
        return f"(coalesce({typ}, '') IN ({names}))", [*ap]

    def is_string(self, el: Any) -> _Frag:
        _, typ, ap = el
        return f"(coalesce({typ}, '') = 'text')", [*ap]

    def regex(self, el: Any, pattern: str) -> _Frag:
        value, typ, ap = el
        return f"(coalesce({typ}, '') = 'text' AND {value} REGEXP ?)", [*ap, *ap, pattern]


def compile_q_sqlite(expr: QExpr, expand: Expand, data_col: str = "e.data") -> tuple[str, list[Any]]:
    """Compile a q expression to a SQLite WHERE fragment with ``?`` placeholders.

    ``data_col`` holds the JSON text of the entity's ``attrs`` (see the internal format doc).  The
    connection needs :func:`register_sqlite_functions` for regular expressions.
    """
    return _SqliteCompiler(expand, data_col).compile(expr)


# ---------------------------------------------------------------------------------------------
# PostgreSQL compiler
# ---------------------------------------------------------------------------------------------


def _pg_canon(s: str) -> str:
    s1 = (
        f"(CASE WHEN right({s}, 1) = 'Z' THEN left({s}, -1) "
        f"WHEN right({s}, 6) = '+00:00' THEN left({s}, -6) ELSE {s} END)"
    )
    return (
        f"(CASE WHEN strpos({s1}, '.') > 0 THEN rtrim(rtrim({s1}, '0'), '.') "
        f"WHEN length({s1}) IN (5, 16) THEN {s1} || ':00' ELSE {s1} END)"
    )


class _PostgresCompiler(_TermCompiler):
    """Instance refs and elements are ``(jsonb_sql, params)`` pairs."""

    def term(self, rt: _RTerm) -> _Frag:
        n = next(self.counter)
        i = f"i{n}"
        data = self.data_col
        attr = f"({data} -> %s::text)"
        arr = f"(CASE jsonb_typeof({attr}) WHEN 'array' THEN {attr} END)"
        first: _Frag = (f"({data} -> %s::text -> 0)", [rt.attr])
        loop: _Frag = (f"{i}.v", [])
        direct = self._and((f"jsonb_typeof({first[0]}) = 'object'", first[1]), self.instance_predicate(rt, first))
        looped = self._and((f"jsonb_typeof({i}.v) = 'object'", []), self.instance_predicate(rt, loop))
        if not self.use_direct:
            return (
                f"EXISTS (SELECT 1 FROM jsonb_array_elements({arr}) AS {i}(v) WHERE {looped[0]})",
                [rt.attr, rt.attr, *looped[1]],
            )
        return (
            f"(CASE jsonb_array_length({arr}) WHEN 1 THEN {direct[0]} "
            f"ELSE EXISTS (SELECT 1 FROM jsonb_array_elements({arr}) AS {i}(v) WHERE {looped[0]}) END)",
            [rt.attr, rt.attr, *direct[1], rt.attr, rt.attr, *looped[1]],
        )

    @staticmethod
    def _at(ref: _Frag, path: tuple[str, ...]) -> _Frag:
        if all(k in _FIXED_MEMBERS for k in path):  # no user data: literal path
            return f"({ref[0]} #> '{{{','.join(path)}}}')", list(ref[1])
        return f"({ref[0]} #> %s::text[])", [*ref[1], list(path)]

    def node_type(self, ref: Any, subs: tuple[str, ...]) -> _Frag:
        sql, params = self._at(ref, (*subs, "type"))
        return f"({sql} #>> '{{}}')", params

    def path_exists(self, ref: Any, path: tuple[str, ...]) -> _Frag:
        sql, params = self._at(ref, path)
        return f"({sql} IS NOT NULL)", params

    def node_is_object(self, ref: Any, subs: tuple[str, ...]) -> _Frag:
        sql, params = self._at(ref, subs)
        return f"(jsonb_typeof({sql}) IS NOT DISTINCT FROM 'object')", params

    def any_at(self, ref: Any, path: tuple[str, ...], p: _Pred, unwrap: bool) -> _Frag:
        t_sql, t_params = self._at(ref, path)
        x = f"x{next(self.counter)}"
        arr_sql, arr_params = p((f"{x}.j", []))
        obj: _Frag = ("false", [])
        if unwrap:
            obj = p((f"({t_sql} -> '@value')", t_params))
        s_sql, s_params = p((t_sql, t_params))
        return (
            f"CASE jsonb_typeof({t_sql}) "
            f"WHEN 'array' THEN EXISTS (SELECT 1 FROM jsonb_array_elements({t_sql}) AS {x}(j) WHERE {arr_sql}) "
            f"WHEN 'object' THEN {obj[0]} ELSE {s_sql} END",
            [*t_params, *t_params, *arr_params, *obj[1], *s_params],
        )

    def any_lang(self, ref: Any, path: tuple[str, ...], p: _Pred) -> _Frag:
        n = next(self.counter)
        lm, x = f"l{n}", f"x{n}"
        t_sql, t_params = self._at(ref, path)
        sql, params = p((f"{x}.j", []))
        lv = f"{lm}.v"
        return (
            f"EXISTS (SELECT 1 FROM jsonb_each(CASE WHEN jsonb_typeof({t_sql}) = 'object' THEN {t_sql} END) "
            f"AS {lm}(k, v), jsonb_array_elements(CASE jsonb_typeof({lv}) WHEN 'array' THEN {lv} "
            f"WHEN 'object' THEN '[]'::jsonb ELSE jsonb_build_array({lv}) END) AS {x}(j) WHERE {sql})",
            [*t_params, *t_params, *params],
        )

    def test(self, el: Any, family: str, clauses: Sequence[tuple[str, list[Any]]]) -> _Frag:
        j, jp = el
        text = f"({j} #>> '{{}}')"
        if family == "number":
            guard, params = f"jsonb_typeof({j}) = 'number'", [*jp]
            x, xp, ph, collate = f"({j})::numeric", jp, "%s::numeric", ""
        elif family == "text":
            guard, params = f"jsonb_typeof({j}) = 'string'", [*jp]
            x, xp, ph, collate = text, jp, "%s::text", ' COLLATE "C"'
        else:
            prefix = _DAY_PG_RE if family == "day" else _TIME_PG_RE
            guard, params = f"jsonb_typeof({j}) = 'string' AND {text} ~ '{prefix}'", [*jp, *jp]
            x = _pg_canon(text)
            xp, ph, collate = jp * x.count(text), "%s::text", ' COLLATE "C"'
        parts = []
        for op_sql, vals in clauses:
            if op_sql == "IN":  # one parameter: an array
                parts.append(f"{x} = ANY(%s::text[]{'::numeric[]' if family == 'number' else ''})")
                params += [*xp, [str(v) for v in vals]]
                continue
            if op_sql == "BETWEEN":
                parts.append(f"{x}{collate} BETWEEN {ph} AND {ph}")
            else:
                parts.append(f"{x}{'' if op_sql == '=' else collate} {op_sql} {ph}")
            params += [*xp, *vals]
        return f"(CASE WHEN {guard} THEN {' AND '.join(parts)} ELSE false END)", params

    def test_bool(self, el: Any, values: Sequence[bool]) -> _Frag:
        j, jp = el
        parts = [f"({j}) IS NOT DISTINCT FROM '{'true' if b else 'false'}'::jsonb" for b in values]
        return "(" + " OR ".join(parts) + ")", jp * len(parts)

    def is_string(self, el: Any) -> _Frag:
        j, jp = el
        return f"(jsonb_typeof({j}) IS NOT DISTINCT FROM 'string')", [*jp]

    def regex(self, el: Any, pattern: str) -> _Frag:
        j, jp = el
        return (
            f"(CASE WHEN jsonb_typeof({j}) = 'string' THEN ({j} #>> '{{}}') ~ %s::text ELSE false END)",
            [*jp, *jp, pattern],
        )


def compile_q_postgres(expr: QExpr, expand: Expand, data_col: str = "e.data") -> tuple[str, list[Any]]:
    """Compile a q expression to a PostgreSQL WHERE fragment with ``%s`` placeholders (psycopg 3).

    ``data_col`` is the ``jsonb`` column holding the entity's ``attrs``.  The fragment contains no
    other ``%`` character.  Run it with JIT disabled (``jit = off``): the nested JSON functions
    get high cost estimates and LLVM compilation would dominate the query time.
    """
    return _PostgresCompiler(expand, data_col).compile(expr)


# ---------------------------------------------------------------------------------------------
# Scope compilers
# ---------------------------------------------------------------------------------------------


def _scope_sql(expr: ScopeExpr, leaf: Callable[[ScopePattern], _Frag]) -> _Frag:
    if isinstance(expr, ScopePattern):
        return leaf(expr)
    parts = [_scope_sql(e, leaf) for e in expr.operands]
    return _combine(parts, "AND" if isinstance(expr, ScopeAnd) else "OR")


def compile_scope_sqlite(expr: ScopeExpr, scopes_col: str = "e.scopes") -> tuple[str, list[Any]]:
    """Compile a scopeQ to a SQLite WHERE fragment; ``scopes_col`` is a JSON list text or NULL."""
    col = _check_column(scopes_col)

    def leaf(p: ScopePattern) -> _Frag:
        if not p.levels:
            return f"EXISTS (SELECT 1 FROM json_each({col}) AS s WHERE s.type = 'text')", []
        v = "ltrim(s.value, '/')"
        params: list[Any]
        if "+" in p.levels:
            cond, params = f"{v} REGEXP ?", [_scope_regex(p)]
        else:
            joined = "/".join(p.levels)
            if p.descendants:
                cond = f"({v} = ? OR substr({v}, 1, ?) = ?)"
                params = [joined, len(joined) + 1, joined + "/"]
            else:
                cond, params = f"{v} = ?", [joined]
        return f"EXISTS (SELECT 1 FROM json_each({col}) AS s WHERE s.type = 'text' AND {cond})", params

    return _scope_sql(expr, leaf)


def compile_scope_postgres(expr: ScopeExpr, scopes_col: str = "e.scopes") -> tuple[str, list[Any]]:
    """Compile a scopeQ to a PostgreSQL WHERE fragment; ``scopes_col`` is ``text[]`` or NULL."""
    col = _check_column(scopes_col)

    def leaf(p: ScopePattern) -> _Frag:
        if not p.levels:
            return f"EXISTS (SELECT 1 FROM unnest({col}) AS s(v) WHERE s.v IS NOT NULL)", []
        v = "ltrim(s.v, '/')"
        params: list[Any]
        if "+" in p.levels:
            cond, params = f"{v} ~ %s::text", [_scope_regex(p)]
        else:
            joined = "/".join(p.levels)
            if p.descendants:
                cond = f"({v} = %s::text OR starts_with({v}, %s::text))"
                params = [joined, joined + "/"]
            else:
                cond, params = f"{v} = %s::text", [joined]
        return f"EXISTS (SELECT 1 FROM unnest({col}) AS s(v) WHERE s.v IS NOT NULL AND {cond})", params

    return _scope_sql(expr, leaf)
