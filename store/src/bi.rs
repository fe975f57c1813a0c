//! Logins for BI tools: one Postgres login role per team member or tool, which can read
//! the team's rows of the BI views (`bi_sentiment`, `bi_stance`,
//! `bi_daily_aspect_sentiment`, `bi_daily_stance`) and nothing else. See `docs/bi.md` and
//! the migrations `20261127000007_bi_views` and `20261205000012_named_targets` for how
//! the views, roles and row-level security fit.
//!
//! Least privilege: the service role has no CREATEROLE. Logins are made and dropped by
//! `absa_create_bi_login` and `absa_drop_bi_login`, SECURITY DEFINER functions owned by
//! `absa_bi_admin` that a superuser installs once (`scripts/provision-postgres.sql`);
//! they make nothing but `bi_` logins in `absa_bi` and drop nothing else. The password
//! never reaches the server: this process computes its SCRAM-SHA-256 verifier (what
//! Postgres itself stores) and passes that as a bind parameter, so neither a statement
//! log nor the error context of a failed `CREATE ROLE` can show the password. Logins
//! expire (`VALID UNTIL`).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{PlatformError, Result};

/// The group role every BI login belongs to; it may read the BI views only.
pub const BI_GROUP: &str = "absa_bi";

/// Checks a login role name: `bi_` and 1 to 60 lower-case ASCII letters, digits and `_`
/// (Postgres truncates names past 63 bytes; the prefix keeps BI logins apart from every
/// other role, and the drop function drops nothing else).
pub fn validate_role_name(role_name: &str) -> Result<()> {
    let rest = role_name.strip_prefix("bi_").unwrap_or("");
    let valid_chars = rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !(1..=60).contains(&rest.len()) || !valid_chars {
        return Err(PlatformError::InvalidData(format!(
            "BI login {:?}: use bi_ and 1 to 60 lower-case letters, digits and '_'",
            absa_jobs::spec::truncate(role_name, 70)
        )));
    }
    Ok(())
}

/// PBKDF2 iterations of the verifier (Postgres' own default for SCRAM).
const SCRAM_ITERATIONS: u32 = 4096;

/// The SCRAM-SHA-256 verifier of `password` with `salt`, in the form Postgres stores
/// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, RFC 5802/7677).
/// Passwords are printable ASCII, which SASLprep leaves unchanged.
pub fn scram_verifier(password: &str, salt: &[u8]) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let hmac = |key: &[u8], data: &[u8]| -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    };
    // Hi(): PBKDF2 with HMAC-SHA-256, one block.
    let mut u = hmac(password.as_bytes(), &[salt, &1u32.to_be_bytes()].concat());
    let mut salted = u;
    for _ in 1..SCRAM_ITERATIONS {
        u = hmac(password.as_bytes(), &u);
        salted.iter_mut().zip(u).for_each(|(s, x)| *s ^= x);
    }
    let stored_key = Sha256::digest(hmac(&salted, b"Client Key"));
    let server_key = hmac(&salted, b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("SCRAM-SHA-256${SCRAM_ITERATIONS}:{}${}:{}", b64.encode(salt), b64.encode(stored_key), b64.encode(server_key))
}

/// Passwords: 12 to 200 printable ASCII characters.
pub fn validate_password(role_name: &str, password: &str) -> Result<()> {
    if !(12..=200).contains(&password.len()) || !password.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(PlatformError::InvalidData(format!("BI login {role_name:?}: the password must be 12 to 200 printable ASCII characters")));
    }
    Ok(())
}

/// Creates the login role `role_name` with `password` (as its SCRAM verifier), valid
/// until `valid_until` (`None`: no expiry), in [`BI_GROUP`], and records it as a login
/// of `team_id` in `bi_logins`: one transaction, so a failure (invalid name, the role
/// already exists, no such team) leaves nothing.
///
/// The role is made by `absa_create_bi_login`, a SECURITY DEFINER function that
/// `scripts/provision-postgres.sql` installs (owned by `absa_bi_admin`): the service
/// role needs no CREATEROLE. Checking that the requester is an admin of `team_id` is
/// the caller's job.
pub async fn create_login(pool: &PgPool, team_id: Uuid, role_name: &str, password: &str, valid_until: Option<DateTime<Utc>>) -> Result<()> {
    validate_role_name(role_name)?;
    validate_password(role_name, password)?;
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
    let verifier = scram_verifier(password, &salt);
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT absa_create_bi_login($1, $2, coalesce($3, 'infinity'::timestamptz))")
        .bind(role_name)
        .bind(&verifier)
        .bind(valid_until)
        .execute(&mut *tx)
        .await
        .map_err(|e| match db_code(&e).as_deref() {
            Some("42710") => PlatformError::InvalidData(format!("BI login {role_name:?}: a role of that name already exists")),
            Some("42939") => PlatformError::InvalidData(format!("BI login {role_name:?}: the name is reserved")),
            Some("42883") => PlatformError::InvalidData(NOT_PROVISIONED.into()),
            _ => e.into(),
        })?;
    sqlx::query("INSERT INTO bi_logins (role_name, team_id) VALUES ($1, $2)").bind(role_name).bind(team_id).execute(&mut *tx).await.map_err(
        |e| match db_code(&e).as_deref() {
            Some("23503") => PlatformError::InvalidData(format!("team {team_id} not found")),
            _ => e.into(),
        },
    )?;
    tx.commit().await?;
    Ok(())
}

/// Why BI logins cannot be made in a database the superuser's part was not run in.
const NOT_PROVISIONED: &str = "BI logins are not set up in this database: a superuser must run scripts/provision-postgres.sql in it (docs/deploying.md)";

/// A team's BI logins and when each expires (`None`: never), by role name: at most
/// `limit`, those after `after`.
pub async fn list_logins(pool: &PgPool, team_id: Uuid, after: Option<&str>, limit: i64) -> Result<Vec<(String, Option<DateTime<Utc>>)>> {
    Ok(sqlx::query_as(
        "SELECT b.role_name, r.rolvaliduntil FROM bi_logins b JOIN pg_roles r ON r.rolname = b.role_name
         WHERE b.team_id = $1 AND ($2::text IS NULL OR b.role_name > $2) ORDER BY b.role_name LIMIT $3",
    )
    .bind(team_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Drops the BI login `role_name` of `team_id` and its `bi_logins` row, in one
/// transaction. Only roles recorded as that team's logins are dropped: returns
/// `Ok(false)` (and drops nothing) when `role_name` is not one. Sessions of the login
/// already open are not closed, but their queries of the views fail from then on
/// (Postgres: "invalid role OID" for `current_user`).
pub async fn drop_login(pool: &PgPool, team_id: Uuid, role_name: &str) -> Result<bool> {
    validate_role_name(role_name)?;
    let mut tx = pool.begin().await?;
    let deleted =
        sqlx::query("DELETE FROM bi_logins WHERE role_name = $1 AND team_id = $2").bind(role_name).bind(team_id).execute(&mut *tx).await?.rows_affected();
    if deleted == 0 {
        return Ok(false);
    }
    // absa_drop_bi_login drops BI logins only (a bi_ member of absa_bi).
    sqlx::query("SELECT absa_drop_bi_login($1)").bind(role_name).execute(&mut *tx).await.map_err(|e| match db_code(&e).as_deref() {
        Some("42883") => PlatformError::InvalidData(NOT_PROVISIONED.into()),
        _ => e.into(),
    })?;
    tx.commit().await?;
    Ok(true)
}

/// The SQLSTATE of a database error, if `e` is one.
fn db_code(e: &sqlx::Error) -> Option<String> {
    e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifier_is_what_postgres_computes() {
        // RFC 7677's example credentials (password "pencil", this salt, 4096 rounds); the
        // keys were computed independently with Python's hashlib.pbkdf2_hmac and hmac.
        // That Postgres accepts the verifier is shown by the API test, whose BI login
        // connects with its password.
        use base64::Engine;
        let salt = base64::engine::general_purpose::STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = scram_verifier("pencil", &salt);
        assert_eq!(
            verifier,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
        assert!(!verifier.contains("pencil"));
    }

    #[test]
    fn passwords_are_printable_ascii_of_12_to_200() {
        assert!(validate_password("bi_x", "correct-horse-battery").is_ok());
        for bad in ["short", "tab\tin it here!", "accentué-mot-de-passe", &"x".repeat(201)] {
            assert!(validate_password("bi_x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn role_names_are_checked() {
        for ok in ["bi_alice", "bi_7", "bi_team7_tableau", &format!("bi_{}", "a".repeat(60))] {
            assert!(validate_role_name(ok).is_ok(), "{ok}");
        }
        for bad in ["bi_", "", "alice", "Bi_alice", "bi_Alice", "bi-alice", "bi_a lice", "bi_\"x", "pg_reader", "bi_é", &format!("bi_{}", "a".repeat(61))] {
            assert!(validate_role_name(bad).is_err(), "{bad}");
        }
    }
}
