-- Tables for BI: three views over predictions, readable by per-team login roles that
-- see only their own team's rows and nothing else.
--
-- How the pieces fit:
-- * `absa_bi` (NOLOGIN) is the group every BI login belongs to; it may SELECT the three
--   views and nothing else.
-- * `absa_bi_owner` (NOLOGIN) owns the views. A view reads its tables with its owner's
--   privileges and row-level security, so the base tables get RLS policies for this role
--   only, limiting rows to `bi_team()`: the team of the querying login (inside a view
--   `current_user` is still the login, not the view owner). Policies are security
--   barriers, so a login's own (leaky) WHERE functions never see another team's rows.
-- * The service role that runs migrations owns the tables; RLS is ENABLEd, not FORCEd,
--   so it does not apply to the owner: the service is unaffected.
-- * `bi_logins` maps login roles to teams (`platform::bi::create_login` writes it).
--
-- Roles are cluster-wide and every test database runs this migration, possibly at the
-- same moment: roles are created only when absent, and a concurrent creation is not an
-- error.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'absa_bi') THEN
        CREATE ROLE absa_bi NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- created by a concurrent migration of another database
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'absa_bi_owner') THEN
        CREATE ROLE absa_bi_owner NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

-- The migrating role must be a member of the views' owner to give them to it.
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'absa_bi_owner', 'MEMBER') THEN
        EXECUTE format('GRANT absa_bi_owner TO %I', current_user);
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

-- Which team each BI login belongs to.
CREATE TABLE bi_logins (
    role_name   text PRIMARY KEY,
    team_id     uuid NOT NULL REFERENCES teams(id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bi_logins_team ON bi_logins (team_id);

-- The team of the querying role, NULL if it is not a BI login. SECURITY DEFINER so it
-- can read bi_logins, which BI logins cannot; the role is a parameter defaulting to
-- `current_user` because inside a SECURITY DEFINER function `current_user` is the
-- function's owner. Asking about another role than one the session can become
-- (`session_user` is a member of it) answers NULL, so no login learns another team's id.
CREATE FUNCTION bi_team(login name DEFAULT current_user) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER
AS $$
    SELECT b.team_id
    FROM bi_logins b
    JOIN pg_catalog.pg_roles r ON r.rolname = b.role_name
    WHERE b.role_name = login
      AND pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER')
$$;
-- A SECURITY DEFINER function gets a fixed search path: pg_catalog first, then the
-- schema these tables are in (not necessarily `public`).
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION bi_team(name) SET search_path = pg_catalog, %I, pg_temp', current_schema());
END $$;

-- Sentiment (and any other non-stance label set): one row per prediction.
CREATE VIEW bi_sentiment AS
SELECT c.team_id,
       c.name             AS corpus,
       p.corpus_id,
       d.external_id,
       p.seq,
       d.text,
       p.aspect,
       p.span_start,
       p.span_end,
       p.label,
       p.confidence,
       p.model_version_id,
       m.base_model,
       p.job_id,
       d.metadata,
       d.published_at,
       p.scored_at
FROM predictions p
JOIN documents d      ON d.corpus_id = p.corpus_id AND d.seq = p.seq
JOIN corpora c        ON c.id = p.corpus_id
JOIN model_versions m ON m.id = p.model_version_id
WHERE NOT (m.label_names && ARRAY['favor', 'against']);

-- Stance (label set against/neither/favor): the aspect is the stance's target.
CREATE VIEW bi_stance AS
SELECT c.team_id,
       c.name             AS corpus,
       p.corpus_id,
       d.external_id,
       p.seq,
       d.text,
       p.aspect           AS target,
       p.span_start,
       p.span_end,
       p.label            AS stance,
       p.confidence,
       p.model_version_id,
       m.base_model,
       p.job_id,
       d.metadata,
       d.published_at,
       p.scored_at
FROM predictions p
JOIN documents d      ON d.corpus_id = p.corpus_id AND d.seq = p.seq
JOIN corpora c        ON c.id = p.corpus_id
JOIN model_versions m ON m.id = p.model_version_id
WHERE m.label_names && ARRAY['favor', 'against'];

-- Daily sentiment per aspect. The day is the UTC date of publication, or of scoring for
-- documents without a publication time; aspects are compared lower-cased.
CREATE VIEW bi_daily_aspect_sentiment AS
SELECT team_id,
       corpus,
       corpus_id,
       model_version_id,
       (coalesce(published_at, scored_at) AT TIME ZONE 'UTC')::date AS day,
       lower(aspect)                                               AS aspect,
       count(*)                                                    AS mentions,
       count(*) FILTER (WHERE label = 'positive')                  AS positive,
       count(*) FILTER (WHERE label = 'negative')                  AS negative,
       count(*) FILTER (WHERE label = 'neutral')                   AS neutral,
       avg(confidence)::double precision                           AS mean_confidence
FROM bi_sentiment
GROUP BY team_id, corpus, corpus_id, model_version_id, 5, 6;

-- The owner reads the base tables, through the policies below.
GRANT SELECT ON predictions, documents, corpora, model_versions TO absa_bi_owner;

-- Row-level security for the views' owner only. Not FORCE: the service role owns these
-- tables and bypasses RLS, and no other role has privileges on them. `(SELECT bi_team())`
-- is an init plan: evaluated once per query, not once per row.
ALTER TABLE corpora ENABLE ROW LEVEL SECURITY;
ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE predictions ENABLE ROW LEVEL SECURITY;
ALTER TABLE model_versions ENABLE ROW LEVEL SECURITY;

CREATE POLICY bi_team_rows ON corpora FOR SELECT TO absa_bi_owner
    USING (team_id = (SELECT bi_team()));
CREATE POLICY bi_team_rows ON model_versions FOR SELECT TO absa_bi_owner
    USING (team_id = (SELECT bi_team()));
CREATE POLICY bi_team_rows ON documents FOR SELECT TO absa_bi_owner
    USING (corpus_id IN (SELECT id FROM corpora WHERE team_id = (SELECT bi_team())));
CREATE POLICY bi_team_rows ON predictions FOR SELECT TO absa_bi_owner
    USING (corpus_id IN (SELECT id FROM corpora WHERE team_id = (SELECT bi_team())));

-- Give the views to their owner. ALTER ... OWNER needs CREATE on the schema for the
-- new owner; it is granted for the moment and taken back.
DO $$
BEGIN
    EXECUTE format('GRANT CREATE ON SCHEMA %I TO absa_bi_owner', current_schema());
    ALTER VIEW bi_sentiment OWNER TO absa_bi_owner;
    ALTER VIEW bi_stance OWNER TO absa_bi_owner;
    ALTER VIEW bi_daily_aspect_sentiment OWNER TO absa_bi_owner;
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM absa_bi_owner', current_schema());
END $$;

GRANT SELECT ON bi_sentiment, bi_stance, bi_daily_aspect_sentiment TO absa_bi;
