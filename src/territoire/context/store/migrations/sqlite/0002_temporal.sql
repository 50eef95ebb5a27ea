-- History of attribute values (temporal API, ETSI GS CIM 009 v1.8 clauses 4.5.7, 5.6.11-5.6.16, 5.7.3-5.7.4).
-- One series per (tenant, entity, attribute, datasetId); its key is a 64-bit hash of those names;
-- types: the entity's types (JSON list of IRIs), for retention per type.
CREATE TABLE temporal_series (
    sid INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    attr TEXT NOT NULL,
    dataset_id TEXT NOT NULL DEFAULT '',
    types TEXT NOT NULL
);
CREATE INDEX temporal_series_by_entity ON temporal_series (tenant, entity_id);
-- One row per temporal instance; times are integer microseconds since 1970-01-01T00:00:00Z.
-- ts: observedAt, else the time the instance was written (or deleted). num: the value when it is a
-- number (Booleans 1/0, arrays their length) so that aggregation runs in SQL. The primary key
-- (series, time) of this WITHOUT ROWID table is the covering index every read uses.
CREATE TABLE temporal_instances (
    sid INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    iid INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    num REAL,
    value TEXT,
    observed_at TEXT,
    unit_code TEXT,
    extra TEXT,
    created_at INTEGER NOT NULL,
    modified_at INTEGER NOT NULL,
    deleted_at INTEGER,
    PRIMARY KEY (sid, ts)
) WITHOUT ROWID;
-- Retention per tenant and entity type ('*': every other type): raw instances kept raw_days, then
-- (if aggregate_days is set) hourly means kept until aggregate_days.
CREATE TABLE temporal_retention (
    tenant TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    raw_days INTEGER NOT NULL,
    aggregate_days INTEGER,
    PRIMARY KEY (tenant, entity_type)
);
