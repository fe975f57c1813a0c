-- Back to one alias name per team: where two models held the same alias name, the one
-- moved last keeps it.
ALTER TABLE model_alias_events DROP COLUMN registered_model_id;
DELETE FROM model_aliases a USING model_aliases b
    WHERE a.team_id = b.team_id AND a.name = b.name AND (a.updated_at, a.registered_model_id) < (b.updated_at, b.registered_model_id);
DROP INDEX model_aliases_team;
ALTER TABLE model_aliases DROP CONSTRAINT model_aliases_pkey;
ALTER TABLE model_aliases ADD PRIMARY KEY (team_id, name);
ALTER TABLE model_aliases DROP COLUMN registered_model_id;
DROP TRIGGER model_versions_registered_model ON model_versions;
DROP FUNCTION absa_version_registered_model();
DROP FUNCTION absa_default_registered_model(uuid, text[]);
DROP FUNCTION absa_task_of(text[]);
DROP INDEX model_versions_registered_model;
ALTER TABLE model_versions DROP COLUMN registered_model_id;
DROP TABLE registered_models;
