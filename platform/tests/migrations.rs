//! The schema applies to an empty database, re-applies as a no-op, and reverts cleanly.

mod common;

use absa_platform::config::{DatabaseSettings, Secret};
use absa_platform::db;

async fn table_names(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations' ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn migrations_apply_reapply_and_revert_on_a_fresh_database() -> anyhow::Result<()> {
    let admin = common::admin_database_url();
    let name = common::unique_name("absa_test_migrations");
    let url = db::create_database(&admin, &name).await?;
    let settings = DatabaseSettings { url: Secret::new(url), ..Default::default() };
    let pool = db::connect(&settings).await?;

    db::migrate(&pool).await?;
    let after_first = table_names(&pool).await;
    assert!(after_first.contains(&"jobs".to_string()), "{after_first:?}");
    assert!(after_first.contains(&"job_events".to_string()));

    db::migrate(&pool).await?; // a second run finds nothing to do
    assert_eq!(table_names(&pool).await, after_first);
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(&pool).await?;
    assert_eq!(applied as usize, db::MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()).count());

    db::MIGRATOR.undo(&pool, 0).await?; // every down migration
    assert!(table_names(&pool).await.is_empty(), "down migrations leave tables behind");
    db::migrate(&pool).await?;
    assert_eq!(table_names(&pool).await, after_first);

    // The CHECK constraints hold the job lifecycle's vocabulary.
    let team = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO teams (id, name) VALUES ($1, 'team')").bind(team).execute(&pool).await?;
    let bad = sqlx::query("INSERT INTO jobs (id, team_id, kind, state) VALUES ($1, $2, 'train', 'sleeping')")
        .bind(uuid::Uuid::new_v4())
        .bind(team)
        .execute(&pool)
        .await;
    assert!(bad.is_err(), "an unknown job state must be rejected");

    pool.close().await;
    db::drop_database(&admin, &name).await?;
    Ok(())
}

#[tokio::test]
async fn an_unreachable_server_is_reported_with_its_address() {
    let settings = DatabaseSettings { url: Secret::new("postgres://absa:hunter2@127.0.0.1:1/absa"), connect_timeout_secs: 2, ..Default::default() };
    let err = db::connect(&settings).await.unwrap_err().to_string();
    assert!(err.contains("cannot reach Postgres at postgres://absa:***@127.0.0.1:1/absa"), "{err}");
    assert!(!err.contains("hunter2"));
}
