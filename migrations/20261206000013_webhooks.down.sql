-- Undoes 20261206000013_webhooks.up.sql: registrations and their delivery logs go.
DROP TRIGGER jobs_webhooks ON jobs;
DROP FUNCTION queue_job_webhooks();
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
