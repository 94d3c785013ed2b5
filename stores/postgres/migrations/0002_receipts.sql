-- Read receipts of ReadReceipt subscriptions (SPEC 6), one per (subscription, consumer,
-- event). Times are Unix milliseconds; `read_at` is NULL until the event is read;
-- `timed_out` is the `delivered_at` of the delivery whose unread timeout has fired.

CREATE TABLE tributary_receipts (
    sub_id       BIGINT NOT NULL REFERENCES tributary_subscriptions (id) ON DELETE CASCADE,
    consumer     TEXT COLLATE "C" NOT NULL,
    partition    INT NOT NULL,
    "offset"     BIGINT NOT NULL,
    delivered_at BIGINT NOT NULL,
    read_at      BIGINT,
    timed_out    BIGINT,
    PRIMARY KEY (sub_id, consumer, partition, "offset")
);
-- The cleanup finds receipts by their last change.
CREATE INDEX tributary_receipts_by_change
    ON tributary_receipts (sub_id, GREATEST(delivered_at, COALESCE(read_at, 0)));
