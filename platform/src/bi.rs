//! Logins for BI tools: one Postgres login role per team member or tool, which can read
//! the team's rows of the BI views (`bi_sentiment`, `bi_stance`,
//! `bi_daily_aspect_sentiment`) and nothing else. See `docs/bi.md` and the migration
//! `20261127000007_bi_views` for how the views, roles and row-level security fit.
//!
//! Role names cannot be bind parameters, so the DDL is built on the server with
//! `format('%I', ...)`/`format('%L', ...)` (quote_ident/quote_literal). The password
//! never reaches the server: this process computes its SCRAM-SHA-256 verifier (what
//! Postgres itself stores) and the role is created with that, so neither a statement
//! log nor the error context of a failed `CREATE ROLE` can show the password. The
//! verifier travels as a bind parameter into a transaction-local setting read back by
//! a `DO` block. Logins expire (`VALID UNTIL`).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{PlatformError, Result};

/// The group role every BI login belongs to; it may read the BI views only.
pub const BI_GROUP: &str = "absa_bi";

/// Checks a login role name: 3 to 63 characters (Postgres truncates longer names),
/// lower-case ASCII letters, digits and `_`, not starting with `pg_` (reserved).
pub fn validate_role_name(role_name: &str) -> Result<()> {
    let valid_chars = role_name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !(3..=63).contains(&role_name.len()) || !valid_chars {
        return Err(PlatformError::InvalidData(format!("BI login {role_name:?}: use 3 to 63 lower-case letters, digits and '_'")));
    }
    if role_name.starts_with("pg_") {
        return Err(PlatformError::InvalidData(format!("BI login {role_name:?}: names starting with pg_ are reserved")));
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
/// until `valid_until` (`None`: no expiry), makes it a member of [`BI_GROUP`] and
/// records it as a login of `team_id` in `bi_logins`: one transaction, so a failure
/// (invalid name, the role already exists, no such team) leaves nothing.
///
/// The caller is the service role (it has CREATEROLE); checking that the requester is
/// an admin of `team_id` is the caller's job.
pub async fn create_login(pool: &PgPool, team_id: Uuid, role_name: &str, password: &str, valid_until: Option<DateTime<Utc>>) -> Result<()> {
    validate_role_name(role_name)?;
    validate_password(role_name, password)?;
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
    let verifier = scram_verifier(password, &salt);
    let until = valid_until.map_or_else(|| "infinity".to_owned(), |t| t.to_rfc3339());
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT set_config('absa.bi_login_role', $1, true), set_config('absa.bi_login_verifier', $2, true), set_config('absa.bi_login_until', $3, true)",
    )
    .bind(role_name)
    .bind(&verifier)
    .bind(&until)
    .execute(&mut *tx)
    .await?;
    // `query`, not `raw_sql`: raw_sql's future is not `Send` for every lifetime, which
    // a spawned task (an HTTP handler) needs. Not kept as a prepared statement: rarely run.
    sqlx::query(
        "DO $$ BEGIN
             EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L VALID UNTIL %L IN ROLE absa_bi',
                            current_setting('absa.bi_login_role'), current_setting('absa.bi_login_verifier'),
                            current_setting('absa.bi_login_until'));
         END $$",
    )
    .persistent(false)
    .execute(&mut *tx)
    .await
    .map_err(|e| match db_code(&e).as_deref() {
        Some("42710") => PlatformError::InvalidData(format!("BI login {role_name:?}: a role of that name already exists")),
        Some("42939") => PlatformError::InvalidData(format!("BI login {role_name:?}: the name is reserved")),
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

/// A team's BI logins and when each expires (`None`: never).
pub async fn list_logins(pool: &PgPool, team_id: Uuid) -> Result<Vec<(String, Option<DateTime<Utc>>)>> {
    Ok(sqlx::query_as(
        "SELECT b.role_name, r.rolvaliduntil FROM bi_logins b JOIN pg_roles r ON r.rolname = b.role_name WHERE b.team_id = $1 ORDER BY b.role_name",
    )
    .bind(team_id)
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
    let ddl: String = sqlx::query_scalar("SELECT format('DROP ROLE IF EXISTS %I', $1::text)").bind(role_name).fetch_one(&mut *tx).await?;
    sqlx::query(&ddl).persistent(false).execute(&mut *tx).await?;
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
        for ok in ["bi_alice", "abc", "team7_tableau", &"a".repeat(63)] {
            assert!(validate_role_name(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "", "Bi_alice", "bi-alice", "bi alice", "bi\"x", "pg_reader", "bié", &"a".repeat(64)] {
            assert!(validate_role_name(bad).is_err(), "{bad}");
        }
    }
}
