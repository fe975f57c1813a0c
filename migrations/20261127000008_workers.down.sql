DROP FUNCTION job_gpus(jsonb);
DROP TABLE workers;
