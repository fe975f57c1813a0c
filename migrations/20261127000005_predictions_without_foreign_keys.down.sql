DROP TRIGGER jobs_delete_predictions ON jobs;
DROP FUNCTION delete_job_predictions();
DROP INDEX predictions_model_version;
ALTER TABLE predictions ADD CONSTRAINT predictions_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs(id) ON DELETE CASCADE;
ALTER TABLE predictions ADD CONSTRAINT predictions_model_version_id_fkey FOREIGN KEY (model_version_id) REFERENCES model_versions(id);
