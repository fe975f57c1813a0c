-- Webhooks: a team registers URLs; every state change of its jobs (shards excepted:
-- their parent's changes are reported) is POSTed there, signed, retried with backoff.
-- The deliveries are written by a trigger in the transaction that changes the state,
-- so no code path can change a job without its delivery being queued, and a change
-- that rolls back queues nothing.
CREATE TABLE webhooks (
    id          uuid PRIMARY KEY,
    team_id     uuid NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    url         text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2000),
    -- The HMAC key of the signature header; shown to the team once, at registration.
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_team ON webhooks (team_id);

CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    webhook_id       uuid NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    job_id           uuid NOT NULL,
    payload          jsonb NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- Set once: answered 2xx, or given up after the last attempt.
    delivered_at     timestamptz,
    gave_up_at       timestamptz,
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE delivered_at IS NULL AND gave_up_at IS NULL;
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);

CREATE FUNCTION queue_job_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind <> 'score_shard' AND (TG_OP = 'INSERT' OR OLD.state IS DISTINCT FROM NEW.state) THEN
        INSERT INTO webhook_deliveries (webhook_id, job_id, payload)
        SELECT w.id, NEW.id,
               jsonb_build_object('type', 'job.state_changed', 'job_id', NEW.id, 'kind', NEW.kind, 'state', NEW.state,
                                  'previous_state', CASE WHEN TG_OP = 'UPDATE' THEN OLD.state END,
                                  'at', to_jsonb(clock_timestamp()))
        FROM webhooks w WHERE w.team_id = NEW.team_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_webhooks AFTER INSERT OR UPDATE OF state ON jobs
    FOR EACH ROW EXECUTE FUNCTION queue_job_webhooks();
