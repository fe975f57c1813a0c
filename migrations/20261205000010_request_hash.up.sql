-- A digest of the request behind a client's idempotency key, so that the same key
-- with another request is refused instead of answered with the old job.
ALTER TABLE jobs ADD COLUMN request_hash text;
