-- A release finds its deployments by platform alone (as on SQLite, migration 0004): platform
-- never changes, so marking a fleet update-pending moves no entry of this index, and an update
-- that touches no indexed column can stay a heap-only (HOT) update.
DROP INDEX deployments_by_platform_status;
CREATE INDEX deployments_by_platform ON deployments (platform);
