DROP INDEX jobs_parent_state;
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;

DROP VIEW score_shards;
CREATE TABLE score_shards (
    job_id           uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    shard            integer NOT NULL,
    seq_from         bigint NOT NULL,
    seq_to           bigint NOT NULL,    -- exclusive
    state            text NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    lease_owner      text,
    lease_expires_at timestamptz,
    instances        integer,
    last_error       text,
    PRIMARY KEY (job_id, shard)
);
