-- Entities, their types, their geometries (R*Tree), hosted @contexts, per-tenant validation.
CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE entities (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    types TEXT NOT NULL,
    scopes TEXT,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE UNIQUE INDEX entities_by_id ON entities (tenant, id);
CREATE TABLE entity_types (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (tenant, type, id)
) WITHOUT ROWID;
CREATE INDEX entity_types_by_entity ON entity_types (tenant, id);
-- Every GeoProperty instance. Points (nearly all of a territory's assets) are indexed on a
-- 0.01 degree longitude grid column plus latitude, a plain B-tree that is 3x cheaper to write
-- than an R*Tree; other geometries go to an R*Tree on their bounding boxes.
CREATE TABLE entity_geo (
    gid INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    attr TEXT NOT NULL,
    cx INTEGER,
    minx REAL NOT NULL, miny REAL NOT NULL, maxx REAL NOT NULL, maxy REAL NOT NULL,
    geojson TEXT NOT NULL
);
CREATE INDEX entity_geo_by_entity ON entity_geo (tenant, id);
CREATE INDEX entity_geo_points ON entity_geo (tenant, attr, cx, miny) WHERE cx IS NOT NULL;
CREATE VIRTUAL TABLE entity_geo_rtree USING rtree (gid, minx, maxx, miny, maxy);
CREATE TRIGGER entity_geo_rtree_insert AFTER INSERT ON entity_geo WHEN new.cx IS NULL BEGIN
    INSERT INTO entity_geo_rtree VALUES (new.gid, new.minx, new.maxx, new.miny, new.maxy);
END;
CREATE TRIGGER entity_geo_rtree_delete AFTER DELETE ON entity_geo WHEN old.cx IS NULL BEGIN
    DELETE FROM entity_geo_rtree WHERE gid = old.gid;
END;
CREATE TABLE jsonld_contexts (
    local_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE type_validation (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    PRIMARY KEY (tenant, type)
);
