"""The storage interface every backend implements, with identical behaviour.

Entities are stored in the internal form of ``docs/dev/internal-format.md``. Stores know nothing
of @context nor of representations: the API layer expands names before calling them.

Writes go through :meth:`Store.modify`, which loads the named entities under a lock, lets a pure
function decide what to write, and commits the result atomically. Every operation of the API
(create, merge, replace, batch ...) is such a function, so both backends share the semantics.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from territoire.context.geo import GeoQuery
from territoire.context.model import Entity

DEFAULT_TENANT = ""


@dataclass(frozen=True)
class TypeExpr:
    """An entity type selection (clause 4.17): OR of AND-groups of expanded type IRIs.

    ``[["A"], ["B", "C"]]`` means ``A | (B ; C)``.
    """

    any_of: tuple[tuple[str, ...], ...]


@dataclass
class EntityQuery:
    """What GET /entities and POST /entityOperations/query ask for, with names already expanded."""

    ids: Sequence[str] | None = None
    id_pattern: str | None = None
    types: TypeExpr | None = None
    attrs: Sequence[str] | None = None  # entity must have at least one of these attributes
    q: Any = None  # qlang.QExpr
    scope_q: Any = None  # qlang.ScopeExpr
    geo: GeoQuery | None = None
    geoproperty: str | None = None  # expanded IRI of the geoproperty the geo-query applies to
    expand: Callable[[str], str] = str  # term -> IRI, for names inside q
    limit: int = 20
    offset: int = 0
    count: bool = False


@dataclass
class QueryResult:
    entities: list[Entity]
    count: int | None = None


@dataclass
class ChangeSet:
    """What a :meth:`Store.modify` callback decided: entities to write and ids to delete."""

    upserts: list[Entity] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AttributeInfo:
    """Discovery: one attribute name with the entity types and attribute types it appears with."""

    attribute: str
    type_names: tuple[str, ...]
    attribute_types: tuple[str, ...]
    count: int


@dataclass(frozen=True)
class TypeInfo:
    type_name: str
    entity_count: int
    attributes: tuple[tuple[str, tuple[str, ...]], ...]  # (attribute IRI, attribute types)


Mutation = Callable[[dict[str, Entity]], ChangeSet]


class Store(abc.ABC):
    """One tenant-aware entity store; see module docstring."""

    backend: str

    @abc.abstractmethod
    def migrate(self) -> list[int]:
        """Apply pending schema migrations; return the versions applied."""

    @abc.abstractmethod
    def schema_version(self) -> int: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    # --- tenants -----------------------------------------------------------------------------

    @abc.abstractmethod
    def tenant_exists(self, tenant: str) -> bool: ...

    @abc.abstractmethod
    def list_tenants(self) -> list[str]: ...

    # --- entities ----------------------------------------------------------------------------

    @abc.abstractmethod
    def get_entities(self, tenant: str, ids: Sequence[str]) -> dict[str, Entity]:
        """The stored entities among ``ids`` (missing ones are absent from the result)."""

    def get_entity(self, tenant: str, entity_id: str) -> Entity | None:
        return self.get_entities(tenant, [entity_id]).get(entity_id)

    @abc.abstractmethod
    def modify(self, tenant: str, ids: Sequence[str], mutation: Mutation) -> ChangeSet:
        """Atomically: lock and load ``ids``, call ``mutation(existing)``, write its ChangeSet.

        Creates the tenant on its first write. If ``mutation`` raises, nothing is written.
        """

    @abc.abstractmethod
    def query(self, tenant: str, query: EntityQuery) -> QueryResult: ...

    # --- discovery ---------------------------------------------------------------------------

    @abc.abstractmethod
    def type_infos(self, tenant: str, type_iri: str | None = None) -> list[TypeInfo]: ...

    @abc.abstractmethod
    def attribute_infos(self, tenant: str, attr_iri: str | None = None) -> list[AttributeInfo]: ...

    # --- configuration tables ----------------------------------------------------------------

    @abc.abstractmethod
    def required_validations(self, tenant: str) -> dict[str, str]:
        """Entity type IRI -> Smart Data Models schema name, for types this tenant validates."""

    @abc.abstractmethod
    def set_validation(self, tenant: str, type_iri: str, schema_name: str | None) -> None: ...

    @abc.abstractmethod
    def load_contexts(self) -> list[Any]: ...

    @abc.abstractmethod
    def save_context(self, ctx: Any) -> None: ...

    @abc.abstractmethod
    def delete_context(self, local_id: str) -> None: ...
