-- Entities, their types, their geometries (PostGIS), hosted @contexts, per-tenant validation.
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE entities (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    types TEXT[] NOT NULL,
    scopes TEXT[],
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    data JSONB NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE entity_types (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (tenant, type, id)
);
CREATE INDEX entity_types_by_entity ON entity_types (tenant, id);
CREATE TABLE entity_geo (
    gid BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    attr TEXT NOT NULL,
    geojson JSONB NOT NULL,
    geom geometry(Geometry, 4326) NOT NULL
);
CREATE INDEX entity_geo_by_entity ON entity_geo (tenant, id);
CREATE INDEX entity_geo_geom ON entity_geo USING gist (geom);
CREATE TABLE jsonld_contexts (
    local_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    kind TEXT NOT NULL,
    body JSONB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE type_validation (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    PRIMARY KEY (tenant, type)
);
