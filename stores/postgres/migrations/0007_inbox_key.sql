-- Version 7: the inbox's record key is (stream, subscription, consumer, event id) (SPEC 5).
-- `consumer` is the consumer's id where every consumer of the subscription gets every event
-- (Broadcast, ReadReceipt), and '' where its consumers share the events (Exclusive,
-- ConsumerGroup), so that two broadcast consumers no longer skip each other's side effects.
-- Records made before this version keep stream '' and consumer '' (no stream has an empty
-- name): `Inbox::record` still counts one of them as processed for its subscription, as
-- before, so an event recorded but not yet acknowledged at the upgrade is not processed again.
ALTER TABLE tributary_inbox ADD COLUMN stream TEXT NOT NULL DEFAULT '';
ALTER TABLE tributary_inbox ADD COLUMN consumer TEXT NOT NULL DEFAULT '';
ALTER TABLE tributary_inbox DROP CONSTRAINT tributary_inbox_pkey;
ALTER TABLE tributary_inbox ADD PRIMARY KEY (stream, subscription, consumer, event_id);
