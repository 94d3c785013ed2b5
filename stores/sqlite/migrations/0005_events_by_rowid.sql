-- Events move to a rowid table: rows are appended in the order they are written, at the
-- right edge of the table's B-tree, instead of into a B-tree ordered by (stream, partition,
-- offset) in which the partitions written together are hot spots in the middle: rows of a few
-- hundred bytes there made every commit split and rebalance pages (CPU, and more pages written
-- to the WAL). Only the small entries of the offset index go there now; every read by offset
-- uses that index.

CREATE TABLE tributary_events_by_rowid (
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
    payload        BLOB NOT NULL
);

INSERT INTO tributary_events_by_rowid (stream_id, partition, "offset", event_id, ts, event_type,
    schema_version, key, correlation_id, causation_id, headers, content_type, payload)
SELECT stream_id, partition, "offset", event_id, ts, event_type,
    schema_version, key, correlation_id, causation_id, headers, content_type, payload
FROM tributary_events ORDER BY ts, stream_id, partition, "offset";

DROP TABLE tributary_events;
ALTER TABLE tributary_events_by_rowid RENAME TO tributary_events;
CREATE UNIQUE INDEX tributary_events_by_offset ON tributary_events (stream_id, partition, "offset");
CREATE INDEX tributary_events_by_time ON tributary_events (stream_id, partition, ts);
