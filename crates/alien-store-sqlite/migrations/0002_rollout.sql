-- Staged rollouts per deployment group (spec/deployer.md "Rollout policy").
-- The policy as JSON ({batchSize?, batchDelaySecs?, pauseOnFailure?}); NULL: no policy.
ALTER TABLE deployment_groups ADD COLUMN rollout TEXT;
-- Updates begun in the group's current batch.
ALTER TABLE deployment_groups ADD COLUMN rollout_batch_begun INTEGER NOT NULL DEFAULT 0;
-- When a deployment of the group last left `updating` (the end of a batch, for batchDelaySecs).
ALTER TABLE deployment_groups ADD COLUMN rollout_last_done_at INTEGER;
-- The rollout gate counts a group's deployments in flight or failed.
CREATE INDEX deployments_in_flight ON deployments (deployment_group_id, status)
    WHERE status IN ('updating', 'update-failed');
