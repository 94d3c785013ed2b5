-- Tributary's SQLite schema, version 1 (the same tables as the PostgreSQL store).

CREATE TABLE tributary_streams (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    config     TEXT NOT NULL,
    partitions INTEGER NOT NULL
);

CREATE TABLE tributary_partitions (
    stream_id    INTEGER NOT NULL REFERENCES tributary_streams (id) ON DELETE CASCADE,
    partition    INTEGER NOT NULL,
    first_offset INTEGER NOT NULL DEFAULT 0,
    next_floor   INTEGER NOT NULL DEFAULT 0,
    last_ts      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stream_id, partition)
) WITHOUT ROWID;

CREATE TABLE tributary_events (
    stream_id      INTEGER NOT NULL,
    partition      INTEGER NOT NULL,
    "offset"       INTEGER NOT NULL,
    event_id       BLOB NOT NULL,
    ts             INTEGER NOT NULL,
    event_type     TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    key            BLOB,
    correlation_id TEXT,
    causation_id   TEXT,
    headers        TEXT,
    content_type   TEXT NOT NULL,
    payload        BLOB NOT NULL,
    PRIMARY KEY (stream_id, partition, "offset")
) WITHOUT ROWID;
CREATE INDEX tributary_events_by_time ON tributary_events (stream_id, partition, ts);

CREATE TABLE tributary_dedup (
    stream_id  INTEGER NOT NULL,
    partition  INTEGER NOT NULL,
    "offset"   INTEGER NOT NULL,
    event_id   BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (stream_id, partition, "offset")
) WITHOUT ROWID;
CREATE INDEX tributary_dedup_by_expiry ON tributary_dedup (stream_id, expires_at);

CREATE TABLE tributary_subscriptions (
    id            INTEGER PRIMARY KEY,
    stream_id     INTEGER NOT NULL REFERENCES tributary_streams (id) ON DELETE CASCADE,
    config        TEXT NOT NULL,
    start_offsets TEXT NOT NULL
);

CREATE TABLE tributary_cursors (
    sub_id    INTEGER NOT NULL REFERENCES tributary_subscriptions (id) ON DELETE CASCADE,
    consumer  TEXT NOT NULL,
    partition INTEGER NOT NULL,
    floor     INTEGER NOT NULL,
    acked     TEXT NOT NULL,
    PRIMARY KEY (sub_id, consumer, partition)
) WITHOUT ROWID;

CREATE TABLE tributary_deleted_streams (
    stream_id INTEGER PRIMARY KEY
);
