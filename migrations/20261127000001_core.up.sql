-- Core of the service: who owns things, and the jobs they submit.
-- Later migrations add datasets, corpora, artifacts, model versions and predictions.

CREATE TABLE teams (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per unit of work. Postgres is the source of truth; RabbitMQ only carries
-- the id. A worker claims a job by setting lease_owner/lease_expires_at.
CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    team_id          uuid NOT NULL REFERENCES teams(id),
    kind             text NOT NULL CHECK (kind IN ('train', 'score', 'score_shard', 'sweep')),
    state            text NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         integer NOT NULL DEFAULT 0,
    parameters       jsonb NOT NULL DEFAULT '{}'::jsonb,
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 3,
    lease_owner      text,
    lease_expires_at timestamptz,
    progress         double precision NOT NULL DEFAULT 0,
    last_error       text,
    idempotency_key  text,
    parent_id        uuid REFERENCES jobs(id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (team_id, idempotency_key)
);
CREATE INDEX jobs_dispatch ON jobs (state, priority DESC, created_at);
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;

-- What happened to a job, in order: claims, resumes, retries, errors.
CREATE TABLE job_events (
    id          bigserial PRIMARY KEY,
    job_id      uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX job_events_job ON job_events (job_id, id);
