-- Version 6: events stored in record batches, one row per partition and append, instead of one
-- row per event. Each row costs the server a heap tuple and an index entry whatever its size,
-- and those were most of its CPU per event (BENCHMARKS.md). `body` holds the events
-- (tributary-store-api's `batch` module), sorted by offset; `bytes` is what size-based retention
-- counts (payloads and keys). The rows of earlier versions are moved into batches when the
-- store opens (`PgStore::open`), after which `tributary_events` stays empty.

CREATE TABLE tributary_batches (
    stream_id    BIGINT NOT NULL,
    partition    INT NOT NULL,
    first_offset BIGINT NOT NULL,
    last_offset  BIGINT NOT NULL,
    first_ts     BIGINT NOT NULL,
    last_ts      BIGINT NOT NULL,
    bytes        BIGINT NOT NULL,
    body         BYTEA NOT NULL,
    PRIMARY KEY (stream_id, partition, first_offset)
) WITH (toast_tuple_target = 8160);
-- Bodies are kept in the row up to a page and never compressed (payloads are often already).
ALTER TABLE tributary_batches ALTER COLUMN body SET STORAGE EXTERNAL;
-- A search by time: the first batch whose last event is at or after the time.
CREATE INDEX tributary_batches_by_time ON tributary_batches (stream_id, partition, last_ts, first_offset);
