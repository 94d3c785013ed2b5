-- Tributary's PostgreSQL schema, version 1.
-- Streams have a surrogate id so that a deleted stream's rows can be removed in batches
-- while a new stream of the same name starts empty.

CREATE TABLE tributary_streams (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    config      TEXT NOT NULL,            -- StreamConfig as JSON
    partitions  INT NOT NULL
);

-- Per partition: what survives the removal of events (retention): the first offset kept and
-- the next offset at the time of the last removal.
CREATE TABLE tributary_partitions (
    stream_id    BIGINT NOT NULL REFERENCES tributary_streams (id) ON DELETE CASCADE,
    partition    INT NOT NULL,
    first_offset BIGINT NOT NULL DEFAULT 0,
    next_floor   BIGINT NOT NULL DEFAULT 0,
    last_ts      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (stream_id, partition)
);

CREATE TABLE tributary_events (
    stream_id      BIGINT NOT NULL,
    partition      INT NOT NULL,
    "offset"       BIGINT NOT NULL,
    event_id       BYTEA NOT NULL,
    ts             BIGINT NOT NULL,
    event_type     TEXT NOT NULL,
    schema_version INT NOT NULL,
    key            BYTEA,
    correlation_id TEXT,
    causation_id   TEXT,
    headers        TEXT,                   -- JSON object, NULL when empty
    content_type   TEXT NOT NULL,
    payload        BYTEA NOT NULL,
    PRIMARY KEY (stream_id, partition, "offset")
);
-- Replay and subscriptions from a time.
CREATE INDEX tributary_events_by_time ON tributary_events (stream_id, partition, ts);

-- Producer ids of the dedup window, with their expiry.
CREATE TABLE tributary_dedup (
    stream_id  BIGINT NOT NULL,
    partition  INT NOT NULL,
    "offset"   BIGINT NOT NULL,
    event_id   BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (stream_id, partition, "offset")
);
CREATE INDEX tributary_dedup_by_expiry ON tributary_dedup (stream_id, expires_at);

CREATE TABLE tributary_subscriptions (
    id            BIGINT PRIMARY KEY,
    stream_id     BIGINT NOT NULL REFERENCES tributary_streams (id) ON DELETE CASCADE,
    config        TEXT NOT NULL,          -- SubscriptionConfig as JSON
    start_offsets TEXT NOT NULL           -- JSON array, one per partition
);

CREATE TABLE tributary_cursors (
    sub_id    BIGINT NOT NULL REFERENCES tributary_subscriptions (id) ON DELETE CASCADE,
    consumer  TEXT NOT NULL,              -- '' for an exclusive subscription's one cursor
    partition INT NOT NULL,
    floor     BIGINT NOT NULL,
    acked     TEXT NOT NULL,              -- JSON array of offsets above the floor
    PRIMARY KEY (sub_id, consumer, partition)
);

-- Streams deleted whose events and dedup ids are still being removed in batches.
CREATE TABLE tributary_deleted_streams (
    stream_id BIGINT PRIMARY KEY
);

-- The inbox of exactly-once consumers: an event id recorded in the consumer's own
-- transaction, together with its side effects.
CREATE TABLE tributary_inbox (
    subscription TEXT NOT NULL,
    event_id     BYTEA NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription, event_id)
);
