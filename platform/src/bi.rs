//! Logins for BI tools: one Postgres login role per team member or tool, which can read
//! the team's rows of the BI views (`bi_sentiment`, `bi_stance`,
//! `bi_daily_aspect_sentiment`) and nothing else. See `docs/bi.md` and the migration
//! `20261127000007_bi_views` for how the views, roles and row-level security fit.
//!
//! Role names cannot be bind parameters, so the DDL is built on the server with
//! `format('%I', ...)`/`format('%L', ...)` (quote_ident/quote_literal). The password
//! travels as a bind parameter into a transaction-local setting and is read back by a
//! `DO` block, so it never appears in statement text: not in this process's statement
//! logs, nor in the server's `log_statement = 'ddl'` log (which would print a top-level
//! `CREATE ROLE ... PASSWORD '...'` verbatim).

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
        return Err(PlatformError::InvalidData(format!(
            "BI login {role_name:?}: use 3 to 63 lower-case letters, digits and '_'"
        )));
    }
    if role_name.starts_with("pg_") {
        return Err(PlatformError::InvalidData(format!("BI login {role_name:?}: names starting with pg_ are reserved")));
    }
    Ok(())
}

/// Creates the login role `role_name` with `password`, makes it a member of
/// [`BI_GROUP`] and records it as a login of `team_id` in `bi_logins`: one transaction,
/// so a failure (invalid name, the role already exists, no such team) leaves nothing.
///
/// The caller is the service role (it has CREATEROLE); checking that the requester is
/// an admin of `team_id` is the caller's job.
pub async fn create_login(pool: &PgPool, team_id: Uuid, role_name: &str, password: &str) -> Result<()> {
    validate_role_name(role_name)?;
    if password.is_empty() || password.contains('\0') {
        return Err(PlatformError::InvalidData(format!(
            "BI login {role_name:?}: the password must be non-empty and contain no NUL character"
        )));
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('absa.bi_login_role', $1, true), set_config('absa.bi_login_password', $2, true)")
        .bind(role_name)
        .bind(password)
        .execute(&mut *tx)
        .await?;
    // `query`, not `raw_sql`: raw_sql's future is not `Send` for every lifetime, which
    // a spawned task (an HTTP handler) needs. Not kept as a prepared statement: rarely run.
    sqlx::query(
        "DO $$ BEGIN
             EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE absa_bi',
                            current_setting('absa.bi_login_role'), current_setting('absa.bi_login_password'));
             PERFORM set_config('absa.bi_login_password', '', true);
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
    sqlx::query("INSERT INTO bi_logins (role_name, team_id) VALUES ($1, $2)")
        .bind(role_name)
        .bind(team_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| match db_code(&e).as_deref() {
            Some("23503") => PlatformError::InvalidData(format!("team {team_id} not found")),
            _ => e.into(),
        })?;
    tx.commit().await?;
    Ok(())
}

/// Drops the BI login `role_name` of `team_id` and its `bi_logins` row, in one
/// transaction. Only roles recorded as that team's logins are dropped: returns
/// `Ok(false)` (and drops nothing) when `role_name` is not one. Sessions of the login
/// already open are not closed, but their queries of the views fail from then on
/// (Postgres: "invalid role OID" for `current_user`).
pub async fn drop_login(pool: &PgPool, team_id: Uuid, role_name: &str) -> Result<bool> {
    validate_role_name(role_name)?;
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query("DELETE FROM bi_logins WHERE role_name = $1 AND team_id = $2")
        .bind(role_name)
        .bind(team_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Ok(false);
    }
    let ddl: String = sqlx::query_scalar("SELECT format('DROP ROLE IF EXISTS %I', $1::text)")
        .bind(role_name)
        .fetch_one(&mut *tx)
        .await?;
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
    use super::validate_role_name;

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
