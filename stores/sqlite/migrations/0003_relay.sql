-- Relay positions of cross-service streams (SPEC 9): per partition, the first offset the
-- broker has not confirmed. Removed with the stream.

CREATE TABLE tributary_relay (
    stream_id   INTEGER NOT NULL REFERENCES tributary_streams (id) ON DELETE CASCADE,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (stream_id, partition)
) WITHOUT ROWID;
