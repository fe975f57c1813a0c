-- Free-form `key: value` tags on jobs (a team's own labels: owner, experiment, ticket),
-- set at submission and filtered on in listings (`tags @> {"key": "value"}`).
ALTER TABLE jobs ADD COLUMN tags jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(tags) = 'object');
CREATE INDEX jobs_tags ON jobs USING gin (tags jsonb_path_ops) WHERE tags <> '{}'::jsonb;
