-- Undoes 20261127000007_bi_views.up.sql in this database.
--
-- Kept on purpose: the cluster-wide roles `absa_bi` and `absa_bi_owner`, and the
-- migrating role's membership in `absa_bi_owner`. Other databases of the same cluster
-- (every test creates its own, and their migrations ran this same file) may still hold
-- views, grants and policies that depend on them; dropping them here would fail there
-- or break them.
--
-- Dropped: the BI logins of this database (each login role belongs to exactly one
-- database's bi_logins, and holds nothing but its membership in absa_bi). A login that
-- cannot be dropped (it was given something elsewhere by hand) is reported and left.

DROP VIEW IF EXISTS bi_daily_aspect_sentiment;
DROP VIEW IF EXISTS bi_stance;
DROP VIEW IF EXISTS bi_sentiment;

DROP POLICY IF EXISTS bi_team_rows ON predictions;
DROP POLICY IF EXISTS bi_team_rows ON documents;
DROP POLICY IF EXISTS bi_team_rows ON model_versions;
DROP POLICY IF EXISTS bi_team_rows ON corpora;

ALTER TABLE predictions DISABLE ROW LEVEL SECURITY;
ALTER TABLE documents DISABLE ROW LEVEL SECURITY;
ALTER TABLE model_versions DISABLE ROW LEVEL SECURITY;
ALTER TABLE corpora DISABLE ROW LEVEL SECURITY;

REVOKE SELECT ON predictions, documents, corpora, model_versions FROM absa_bi_owner;

DO $$
DECLARE
    login text;
BEGIN
    FOR login IN SELECT role_name FROM bi_logins b JOIN pg_roles r ON r.rolname = b.role_name LOOP
        BEGIN
            EXECUTE format('DROP ROLE %I', login);
        EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
            RAISE WARNING 'BI login % not dropped: %', login, SQLERRM;
        END;
    END LOOP;
END $$;

DROP FUNCTION IF EXISTS bi_team(name);
DROP TABLE IF EXISTS bi_logins;
