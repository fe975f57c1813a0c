DROP TABLE job_events;
DROP TABLE jobs;
DROP TABLE teams;
