-- A re-queued job (expired lease, failed attempt) waits until not_before: exponential
-- backoff instead of hammering a worker pool that just lost a member.
ALTER TABLE jobs ADD COLUMN not_before timestamptz;
