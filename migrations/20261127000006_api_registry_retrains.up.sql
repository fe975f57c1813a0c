-- What the HTTP API needs: API keys (hashed) with roles, model aliases, and retrain
-- schedules the scheduler fires.

-- A key is shown once at creation; only its SHA-256 is kept.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    team_id     uuid NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('analyst', 'mlops', 'admin')),
    key_hash    text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Named pointers at model versions ('production', 'candidate', anything).
CREATE TABLE model_aliases (
    team_id          uuid NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    name             text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    model_version_id uuid NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, name)
);

-- Every move of an alias, for the registry's history.
CREATE TABLE model_alias_events (
    id               bigserial PRIMARY KEY,
    team_id          uuid NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    alias            text NOT NULL,
    model_version_id uuid NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
    previous_id      uuid,
    reason           jsonb NOT NULL DEFAULT '{}'::jsonb,
    at               timestamptz NOT NULL DEFAULT now()
);

-- Retrains: on a cron schedule, and/or when the dataset gains labelled rows.
CREATE TABLE retrain_schedules (
    id              uuid PRIMARY KEY,
    team_id         uuid NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    name            text NOT NULL,
    dataset_id      uuid NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    job_parameters  jsonb NOT NULL,            -- the training job's parameters
    cron            text,
    on_new_rows     boolean NOT NULL DEFAULT false,
    next_run_at     timestamptz,               -- next cron firing
    seen_rows       bigint NOT NULL DEFAULT 0, -- dataset rows when it last fired (or was created)
    last_fired_at   timestamptz,
    last_job_id     uuid REFERENCES jobs(id) ON DELETE SET NULL,
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (team_id, name),
    CHECK (cron IS NOT NULL OR on_new_rows)
);
CREATE INDEX retrain_schedules_due ON retrain_schedules (next_run_at) WHERE enabled;
