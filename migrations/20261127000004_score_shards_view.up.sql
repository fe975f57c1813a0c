-- Shards are child jobs now (kind 'score_shard', parent_id = the 'score' job, their seq
-- range in parameters), so they get leases, retries, backoff and dispatch from the job
-- system itself. The score_shards table, never written, becomes a view over them so
-- dashboards can still show a scoring job's progress shard by shard.
DROP TABLE score_shards;

CREATE VIEW score_shards AS
SELECT parent_id                           AS job_id,
       (parameters->>'shard')::integer     AS shard,
       (parameters->>'seq_from')::bigint   AS seq_from,
       (parameters->>'seq_to')::bigint     AS seq_to,    -- exclusive
       state,
       attempts,
       progress,
       last_error,
       updated_at,
       id                                  AS shard_job_id
FROM jobs
WHERE kind = 'score_shard' AND parent_id IS NOT NULL;

-- The scheduler counts each running parent's children by state every pass.
DROP INDEX jobs_parent;
CREATE INDEX jobs_parent_state ON jobs (parent_id, state) WHERE parent_id IS NOT NULL;
