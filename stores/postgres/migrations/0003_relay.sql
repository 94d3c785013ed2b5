-- Relay positions of cross-service streams (SPEC 9): per partition, the first offset the
-- broker has not confirmed. Removed with the stream.

CREATE TABLE tributary_relay (
    stream_id   BIGINT NOT NULL REFERENCES tributary_streams (id) ON DELETE CASCADE,
    partition   INT NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (stream_id, partition)
);
