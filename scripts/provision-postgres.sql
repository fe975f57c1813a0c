-- What only a Postgres superuser (or the cluster's administrator) sets up for the
-- service, once per cluster and once per database; idempotent. The service's own role
-- then needs no CREATEROLE: BI logins are created and dropped by two SECURITY DEFINER
-- functions owned by `absa_bi_admin`, which check what they are asked to do.
--
--   psql -v service_role=absa -d DATABASE -f scripts/provision-postgres.sql
--
-- Run it in `template1` too, and every database created afterwards (the tests' throwaway
-- databases, say) has the functions. `scripts/services.sh` does both locally.

SET client_min_messages = warning;

-- Roles (cluster-wide).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'absa_bi') THEN
        CREATE ROLE absa_bi NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'absa_bi_owner') THEN
        CREATE ROLE absa_bi_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'absa_bi_admin') THEN
        CREATE ROLE absa_bi_admin NOLOGIN CREATEROLE;
    END IF;
END $$;
-- The service migrates the BI views and gives them to their owner.
GRANT absa_bi_owner TO :"service_role";
-- The login maker may add logins to the BI group.
GRANT absa_bi TO absa_bi_admin WITH ADMIN OPTION;

-- A BI login: a name starting with bi_, a SCRAM-SHA-256 verifier (never a password:
-- the service computes the verifier), an expiry. Nothing else can be asked for.
CREATE OR REPLACE FUNCTION absa_create_bi_login(role_name text, verifier text, valid_until timestamptz)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    IF role_name !~ '^bi_[a-z0-9_]{1,60}$' THEN
        RAISE EXCEPTION 'BI login %: names are bi_ and 1 to 60 lower-case letters, digits or _', role_name USING ERRCODE = '22023';
    END IF;
    IF verifier !~ '^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$' THEN
        RAISE EXCEPTION 'BI login %: a SCRAM-SHA-256 verifier is required', role_name USING ERRCODE = '22023';
    END IF;
    EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L VALID UNTIL %L IN ROLE absa_bi', role_name, verifier, valid_until);
END $$;

-- Drops a BI login, and only that: a bi_ role in the BI group, not a superuser.
CREATE OR REPLACE FUNCTION absa_drop_bi_login(role_name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    IF role_name !~ '^bi_' OR NOT EXISTS (
        SELECT 1 FROM pg_roles r WHERE r.rolname = role_name AND NOT r.rolsuper AND pg_has_role(r.oid, 'absa_bi', 'MEMBER')
    ) THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP ROLE %I', role_name);
    RETURN true;
END $$;

ALTER FUNCTION absa_create_bi_login(text, text, timestamptz) OWNER TO absa_bi_admin;
ALTER FUNCTION absa_drop_bi_login(text) OWNER TO absa_bi_admin;
REVOKE ALL ON FUNCTION absa_create_bi_login(text, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION absa_drop_bi_login(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION absa_create_bi_login(text, text, timestamptz) TO :"service_role";
GRANT EXECUTE ON FUNCTION absa_drop_bi_login(text) TO :"service_role";
