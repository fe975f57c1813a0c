-- A registry of named models: a registered model belongs to a team, has a task and a
-- label set, and owns its versions and its aliases. Aliases ('production', ...) were
-- the team's; now each registered model has its own, so a stance model and a sentiment
-- model no longer compete for one 'production', and promotion compares versions of one
-- model only.
CREATE TABLE registered_models (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id      uuid NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    task         text NOT NULL CHECK (task IN ('sentiment', 'stance')),
    label_names  text[] NOT NULL CHECK (cardinality(label_names) >= 2),
    description  text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    tags         jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(tags) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (team_id, name)
);

ALTER TABLE model_versions ADD COLUMN registered_model_id uuid REFERENCES registered_models(id) ON DELETE CASCADE;
CREATE INDEX model_versions_registered_model ON model_versions (registered_model_id, created_at);

-- The task a label set is for: stance where it has favor or against.
CREATE FUNCTION absa_task_of(labels text[]) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN labels && ARRAY['favor', 'against'] THEN 'stance' ELSE 'sentiment' END
$$;

-- The registered model a version without one joins: the team's model named after the
-- task when its labels match, else one named after the task and the labels.
CREATE FUNCTION absa_default_registered_model(team uuid, labels text[]) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    task text := absa_task_of(labels);
    found uuid;
    candidate text;
BEGIN
    FOREACH candidate IN ARRAY ARRAY[task, left(task || '-' || regexp_replace(lower(array_to_string(labels, '-')), '[^a-z0-9_-]', '', 'g'), 63)] LOOP
        INSERT INTO registered_models (team_id, name, task, label_names) VALUES (team, candidate, task, labels)
        ON CONFLICT (team_id, name) DO NOTHING;
        SELECT id INTO found FROM registered_models WHERE team_id = team AND name = candidate AND label_names = labels;
        IF found IS NOT NULL THEN
            RETURN found;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'no registered model fits labels % of team %', labels, team;
END
$$;

CREATE FUNCTION absa_version_registered_model() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.registered_model_id IS NULL THEN
        NEW.registered_model_id := absa_default_registered_model(NEW.team_id, NEW.label_names);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER model_versions_registered_model BEFORE INSERT ON model_versions
    FOR EACH ROW EXECUTE FUNCTION absa_version_registered_model();

UPDATE model_versions SET registered_model_id = absa_default_registered_model(team_id, label_names) WHERE registered_model_id IS NULL;
ALTER TABLE model_versions ALTER COLUMN registered_model_id SET NOT NULL;

-- Aliases belong to a registered model.
ALTER TABLE model_aliases ADD COLUMN registered_model_id uuid REFERENCES registered_models(id) ON DELETE CASCADE;
UPDATE model_aliases a SET registered_model_id = v.registered_model_id FROM model_versions v WHERE v.id = a.model_version_id;
ALTER TABLE model_aliases ALTER COLUMN registered_model_id SET NOT NULL;
ALTER TABLE model_aliases DROP CONSTRAINT model_aliases_pkey;
ALTER TABLE model_aliases ADD PRIMARY KEY (registered_model_id, name);
CREATE INDEX model_aliases_team ON model_aliases (team_id, name);
ALTER TABLE model_alias_events ADD COLUMN registered_model_id uuid REFERENCES registered_models(id) ON DELETE CASCADE;
