-- Version 7: events stored in record batches, one row per partition and append, instead of one
-- row per event (as the PostgreSQL store does since its version 6): each row costs an index
-- entry and its share of the B-tree's pages whatever its size. `body` holds the events
-- (tributary-store-api's `batch` module), sorted by offset; `bytes` is what size-based retention
-- counts (payloads and keys). The rows of earlier versions are moved into batches when the
-- store opens (`SqliteStore::open`), after which `tributary_events` stays empty.
--
-- A rowid table, as for the events of version 5: rows are appended at the right edge of the
-- table's B-tree, and the unique index on the first offsets finds them.

CREATE TABLE tributary_batches (
    stream_id    INTEGER NOT NULL,
    partition    INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    last_offset  INTEGER NOT NULL,
    first_ts     INTEGER NOT NULL,
    last_ts      INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    body         BLOB NOT NULL
);
CREATE UNIQUE INDEX tributary_batches_by_offset
    ON tributary_batches (stream_id, partition, first_offset);
-- A search by time: the first batch whose last event is at or after the time.
CREATE INDEX tributary_batches_by_time
    ON tributary_batches (stream_id, partition, last_ts, first_offset);

-- A partition's batches never overlap: an insert of a batch that would is refused, so an
-- append of offsets already taken fails whole (its transaction is rolled back) and the store
-- then tells an identical repeat from a conflict. One look-up in the unique index: the batch
-- with the greatest first offset not above the new last offset is the only one that can
-- overlap.
CREATE TRIGGER tributary_batches_never_overlap BEFORE INSERT ON tributary_batches
BEGIN
    SELECT RAISE(ABORT, 'tributary: a stored batch overlaps the new one')
    WHERE (SELECT b.last_offset FROM tributary_batches b
           WHERE b.stream_id = NEW.stream_id AND b.partition = NEW.partition
             AND b.first_offset <= NEW.last_offset
           ORDER BY b.first_offset DESC LIMIT 1) >= NEW.first_offset;
END;
