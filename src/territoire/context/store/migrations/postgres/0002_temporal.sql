-- History of attribute values (temporal API, ETSI GS CIM 009 v1.8 clauses 4.5.7, 5.6.11-5.6.16, 5.7.3-5.7.4).
-- One series per (tenant, entity, attribute, datasetId); its key is a 64-bit hash of those names;
-- types: the entity's types (JSON list of IRIs), for retention per type.
CREATE TABLE temporal_series (
    sid BIGINT PRIMARY KEY,
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    attr TEXT NOT NULL,
    dataset_id TEXT NOT NULL DEFAULT '',
    types TEXT NOT NULL
);
CREATE INDEX temporal_series_by_entity ON temporal_series (tenant, entity_id);
-- One row per temporal instance, partitioned by month of ts (partitions are created on demand,
-- named temporal_instances_yYYYYmMM). ts: observedAt, else the time the instance was written (or
-- deleted). num: the value when it is a number (Booleans 1/0, arrays their length) so that
-- aggregation runs in SQL; value: the JSON value otherwise.
CREATE TABLE temporal_instances (
    sid BIGINT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    iid BIGINT NOT NULL,
    kind SMALLINT NOT NULL,
    num DOUBLE PRECISION,
    value JSONB,
    observed_at TEXT,
    unit_code TEXT,
    extra JSONB,
    created_at TIMESTAMPTZ NOT NULL,
    modified_at TIMESTAMPTZ NOT NULL,
    deleted_at TIMESTAMPTZ
) PARTITION BY RANGE (ts);
-- (entity, attribute, time) through the series key, with what aggregation reads (index-only scans).
CREATE UNIQUE INDEX temporal_instances_series_time ON temporal_instances (sid, ts) INCLUDE (num, kind, deleted_at);
CREATE INDEX temporal_instances_time_brin ON temporal_instances USING brin (ts);
-- Retention per tenant and entity type ('*': every other type): raw instances kept raw_days, then
-- (if aggregate_days is set) hourly means kept until aggregate_days.
CREATE TABLE temporal_retention (
    tenant TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    raw_days INTEGER NOT NULL,
    aggregate_days INTEGER,
    PRIMARY KEY (tenant, entity_type)
);
