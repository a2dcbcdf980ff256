-- Fewer index entries move when a status changes (issue 21: a release marking 100,000 running
-- deployments). A status change used to rewrite an entry in two indexes for every row.
--
-- The release's deployments are found by platform alone: platform never changes, so no status
-- change touches this index; the status is checked on the row.
DROP INDEX deployments_by_platform_status;
CREATE INDEX deployments_by_platform ON deployments (platform);
-- The deployment loop reads due push deployments only (DeploymentStatus::is_due, the same list
-- in the same order as alien_store::sql::due_statuses, which a unit test compares): a running
-- fleet has no entry here, and marking it update-pending adds entries without removing any.
DROP INDEX deployments_due;
CREATE INDEX deployments_due ON deployments (status, next_step_after)
    WHERE deployment_model = 'push'
    AND status IN ('pending', 'provisioning', 'update-pending', 'updating', 'delete-pending', 'deleting');
