-- Version 6: no index on the events' timestamps. Within a partition the timestamps never
-- decrease with the offset, so a search by time bisects the offset index instead
-- (`TimeSearch` in tributary-store-api), and each appended event costs one index insertion
-- fewer (publishing measured a tenth to a third faster, BENCHMARKS.md).
DROP INDEX tributary_events_by_time;
