-- NGSI-LD subscriptions (ETSI GS CIM 009 v1.8, 5.2.12) and their durable notification outbox.
-- `data` holds the subscription in the internal form (names expanded); the other columns are what
-- the write hook, the delivery worker and the periodic scheduler filter on or update often.
CREATE TABLE subscriptions (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    is_active INTEGER NOT NULL DEFAULT 1,
    expires_at REAL,                      -- epoch [s], NULL: never
    time_interval REAL,                   -- periodic subscriptions [s]
    next_periodic REAL,                   -- epoch [s] of the next periodic notification
    times_sent INTEGER NOT NULL DEFAULT 0,
    times_failed INTEGER NOT NULL DEFAULT 0,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_notification TEXT,
    last_success TEXT,
    last_failure TEXT,
    notify_status TEXT,                   -- 'ok' / 'failed' once a notification was attempted
    not_before REAL NOT NULL DEFAULT 0,   -- epoch [s]: throttling or retry backoff gate
    PRIMARY KEY (tenant, id)
);
CREATE INDEX subscriptions_periodic ON subscriptions (next_periodic) WHERE time_interval IS NOT NULL;
-- Bumped on every change of a tenant's subscriptions: write hooks of every process re-read it
-- inside the entity write transaction to know whether their in-memory copy is current.
CREATE TABLE subscription_versions (
    tenant TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
-- One row per (subscription, entity change), written in the entity write's transaction and
-- deleted only once the receiver acknowledged it (at-least-once delivery).
CREATE TABLE notification_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    trigger_reason TEXT NOT NULL,
    payload TEXT NOT NULL,                -- the rendered data item (JSON)
    created_at REAL NOT NULL,
    available_at REAL NOT NULL,           -- epoch [s]: due time, or end of a worker's lease
    claimed_by TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX notification_outbox_due ON notification_outbox (available_at, seq);
CREATE INDEX notification_outbox_by_subscription ON notification_outbox (tenant, subscription_id);
CREATE INDEX notification_outbox_by_owner ON notification_outbox (claimed_by) WHERE claimed_by IS NOT NULL;
