-- Live workers and what they offer: a trainer advertises its GPUs (count and the
-- memory of the smallest), refreshed every few seconds; the scheduler dispatches a
-- training job that asks for GPUs only while a live trainer has what it needs.
CREATE TABLE workers (
    name           text PRIMARY KEY,
    role           text NOT NULL CHECK (role IN ('trainer', 'scorer')),
    gpus           integer NOT NULL DEFAULT 0 CHECK (gpus >= 0),
    gpu_memory_mib bigint NOT NULL DEFAULT 0 CHECK (gpu_memory_mib >= 0),
    started_at     timestamptz NOT NULL DEFAULT now(),
    last_seen      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workers_live ON workers (role, last_seen);

-- GPUs a job asks for (`parameters.gpus`), 0 when absent or not a number.
CREATE FUNCTION job_gpus(parameters jsonb) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(parameters -> 'gpus') = 'number' THEN (parameters ->> 'gpus')::numeric::integer ELSE 0 END
$$;
