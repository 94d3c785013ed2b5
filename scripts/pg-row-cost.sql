-- What PostgreSQL spends inside the server to store an append, one row per event against one
-- row per partition with the events packed in one bytea (BENCHMARKS.md, "Where PostgreSQL's
-- time goes"). Only the INSERT is timed, in one transaction, so client, protocol and commit
-- costs are left out. 600 appends of 84 events (256-byte payloads, 4 partitions, 21 events per
-- partition and append), three rounds. Run:
--   psql -qtA postgres://postgres@127.0.0.1:54329/postgres -f scripts/pg-row-cost.sql
DROP SCHEMA IF EXISTS tributary_row_cost CASCADE;
CREATE SCHEMA tributary_row_cost;
SET search_path = tributary_row_cost;

-- The events table of migrations/0001 (as of migration 0005: one index, the primary key).
CREATE TABLE events (
    stream_id BIGINT NOT NULL, partition INT NOT NULL, "offset" BIGINT NOT NULL,
    event_id BYTEA NOT NULL, ts BIGINT NOT NULL, event_type TEXT NOT NULL,
    schema_version INT NOT NULL, key BYTEA, correlation_id TEXT, causation_id TEXT,
    headers TEXT, content_type TEXT NOT NULL, payload BYTEA NOT NULL,
    PRIMARY KEY (stream_id, partition, "offset"));

-- One row per partition and append, kept in the page (no TOAST, no compression).
CREATE TABLE batches (
    stream_id BIGINT NOT NULL, partition INT NOT NULL, first_offset BIGINT NOT NULL,
    last_offset BIGINT NOT NULL, first_ts BIGINT NOT NULL, last_ts BIGINT NOT NULL,
    bytes INT NOT NULL, body BYTEA NOT NULL,
    PRIMARY KEY (stream_id, partition, first_offset)) WITH (toast_tuple_target = 8160);
ALTER TABLE batches ALTER COLUMN body SET STORAGE EXTERNAL;

-- The append statement of stores/postgres/src/append_sql.rs for a write with keys.
CREATE FUNCTION rows_ms() RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE p int[]; o bigint[]; id bytea[]; t bigint[]; ty text[]; v int[]; k bytea[]; pl bytea[];
        i int; base bigint := 0; t0 timestamptz; total float8 := 0;
BEGIN
  FOR i IN 1..600 LOOP
    p := ARRAY(SELECT g % 4 FROM generate_series(0, 83) g);
    o := ARRAY(SELECT base + g / 4 FROM generate_series(0, 83) g);
    id := ARRAY(SELECT decode(md5(g::text || i::text), 'hex') FROM generate_series(0, 83) g);
    t := array_fill(1764000000000::bigint, ARRAY[84]);
    ty := array_fill('bench'::text, ARRAY[84]);
    v := array_fill(1, ARRAY[84]);
    k := ARRAY(SELECT convert_to((g % 1024)::text, 'UTF8') FROM generate_series(0, 83) g);
    pl := array_fill(decode(repeat('ab', 256), 'hex'), ARRAY[84]);
    t0 := clock_timestamp();
    INSERT INTO events (stream_id, partition, "offset", event_id, ts, event_type, schema_version,
                        key, correlation_id, causation_id, headers, content_type, payload)
      SELECT 1, unnest(p), unnest(o), unnest(id), unnest(t), unnest(ty), unnest(v), unnest(k),
             NULL::text, NULL::text, NULL::text, 'application/octet-stream', unnest(pl);
    total := total + extract(epoch FROM clock_timestamp() - t0);
    base := base + 21;
  END LOOP;
  RETURN total * 1000;
END $$;

-- The same events, 21 of about 300 bytes each per partition, packed by the client.
CREATE FUNCTION packed_ms() RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE b bytea[]; i int; base bigint := 0; t0 timestamptz; total float8 := 0;
BEGIN
  FOR i IN 1..600 LOOP
    b := ARRAY(SELECT decode(repeat(md5(i::text || q::text), 21 * 300 / 16), 'hex')
               FROM generate_series(0, 3) q);
    t0 := clock_timestamp();
    INSERT INTO batches (stream_id, partition, first_offset, last_offset, first_ts, last_ts,
                         bytes, body)
      SELECT 1, q, base, base + 20, 1764000000000, 1764000000000, octet_length(b[q + 1]),
             b[q + 1]
      FROM generate_series(0, 3) q;
    total := total + extract(epoch FROM clock_timestamp() - t0);
    base := base + 21;
  END LOOP;
  RETURN total * 1000;
END $$;

SELECT 'one row per event: ms for 50,400 events', round(rows_ms()::numeric, 1);
SELECT 'packed, one row per partition and append: ms', round(packed_ms()::numeric, 1);
TRUNCATE events, batches;
SELECT 'one row per event: ms for 50,400 events', round(rows_ms()::numeric, 1);
SELECT 'packed, one row per partition and append: ms', round(packed_ms()::numeric, 1);
TRUNCATE events, batches;
SELECT 'one row per event: ms for 50,400 events', round(rows_ms()::numeric, 1);
SELECT 'packed, one row per partition and append: ms', round(packed_ms()::numeric, 1);
DROP SCHEMA tributary_row_cost CASCADE;
