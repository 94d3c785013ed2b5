-- Read receipts of ReadReceipt subscriptions (SPEC 6), one per (subscription, consumer,
-- event). Times are Unix milliseconds; `read_at` is NULL until the event is read;
-- `timed_out` is the `delivered_at` of the delivery whose unread timeout has fired.

CREATE TABLE tributary_receipts (
    sub_id       INTEGER NOT NULL REFERENCES tributary_subscriptions (id) ON DELETE CASCADE,
    consumer     TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    "offset"     INTEGER NOT NULL,
    delivered_at INTEGER NOT NULL,
    read_at      INTEGER,
    timed_out    INTEGER,
    PRIMARY KEY (sub_id, consumer, partition, "offset")
) WITHOUT ROWID;
-- The cleanup finds receipts by their last change.
CREATE INDEX tributary_receipts_by_change
    ON tributary_receipts (sub_id, max(delivered_at, coalesce(read_at, 0)));
