-- Client Idempotency-Keys of uploads: a retried upload returns the first answer
-- instead of appending its rows a second time.
CREATE TABLE upload_keys (
    team_id         uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    idempotency_key text NOT NULL,
    request_hash    text NOT NULL,
    response        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, idempotency_key)
);
