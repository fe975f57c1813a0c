//! Postgres: the pool, the embedded migrations, and per-test databases.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::config::{redact_url, DatabaseSettings, Secret};
use crate::{PlatformError, Result};

/// The schema, compiled into every binary so no separate tool is needed to migrate.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens a pool and proves the server answers, or says which address did not.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool> {
    let url = settings.url.expose();
    let unreachable = |source| PlatformError::PostgresUnreachable { url: redact_url(url), source };
    let options: PgConnectOptions = url.parse().map_err(unreachable)?;
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(settings.connect_timeout_secs))
        .connect_with(options.log_statements(tracing::log::LevelFilter::Trace))
        .await
        .map_err(unreachable)?;
    Ok(pool)
}

/// Applies every pending migration; already-applied ones are skipped.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Creates database `name` on the server of `admin_url` (which names any existing
/// database) and returns the URL of the new one. Tests use it for a fresh schema each.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String> {
    let mut conn = admin_connection(admin_url).await?;
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#)).execute(&mut conn).await?;
    Ok(replace_database(admin_url, name))
}

/// Drops database `name`, closing whatever connections are left on it. A session of
/// another role (a BI login a test just closed) can outlive its pool's close by a
/// moment, and `WITH (FORCE)` may not end another role's backend (42501, or the
/// database still "being accessed"): the drop is retried for up to 10 s.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    let mut tries = 0;
    loop {
        let dropped = async {
            let mut conn = admin_connection(admin_url).await?;
            sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#)).execute(&mut conn).await?;
            Ok(())
        };
        match dropped.await {
            Err(e) if tries < 50 => {
                tracing::warn!(database = name, error = %e, "drop database (retrying)");
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            done => return done,
        }
    }
}

/// A database of its own for one test: created on the test server
/// ([`crate::config::test_database_url`]) and migrated at start, dropped with the value,
/// also when the test panics.
pub struct ScratchDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

impl ScratchDb {
    /// A migrated database named `{prefix}_{random}`.
    pub async fn new(prefix: &str) -> Result<Self> {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let url = create_database(&crate::config::test_database_url(), &name).await?;
        let pool = connect(&DatabaseSettings { url: Secret::new(url.clone()), ..Default::default() }).await?;
        let db = Self { pool, url, name };
        migrate(&db.pool).await?;
        Ok(db)
    }

    /// A new team (`teams` row) to own what the test writes.
    pub async fn team(&self) -> Result<uuid::Uuid> {
        let id = uuid::Uuid::new_v4();
        sqlx::query("INSERT INTO teams (id, name) VALUES ($1, $2)").bind(id).bind(id.to_string()).execute(&self.pool).await?;
        Ok(id)
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let dropped = clean_up_on_own_thread(async move { drop_database(&crate::config::test_database_url(), &name).await.map_err(|e| e.to_string()) });
        if let Err(e) = dropped {
            eprintln!("database {} was left behind: {e} (scripts/clean-test-leftovers.sh removes it)", self.name);
        }
    }
}

/// Runs `cleanup` to its end on a thread with a runtime of its own, for the `Drop` of
/// a test's resources: a drop inside the test's runtime cannot wait on that runtime.
/// The error is `cleanup`'s, or why it could not run to its end.
pub fn clean_up_on_own_thread<F>(cleanup: F) -> std::result::Result<(), String>
where
    F: std::future::Future<Output = std::result::Result<(), String>> + Send + 'static,
{
    let joined = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(cleanup)
    })
    .join();
    joined.unwrap_or_else(|_| Err("the cleanup panicked".into()))
}

async fn admin_connection(admin_url: &str) -> Result<PgConnection> {
    PgConnection::connect(admin_url).await.map_err(|source| PlatformError::PostgresUnreachable { url: redact_url(admin_url), source })
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > base.find("://").map_or(0, |j| j + 2) => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        assert_eq!(replace_database("postgres://a:b@h:5432/absa", "t1"), "postgres://a:b@h:5432/t1");
        assert_eq!(replace_database("postgres://h/absa?sslmode=disable", "t1"), "postgres://h/t1?sslmode=disable");
        assert_eq!(replace_database("postgres://h:5432", "t1"), "postgres://h:5432/t1");
    }
}
