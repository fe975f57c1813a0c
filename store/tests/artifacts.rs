//! Artifacts round-trip through both backends on the real Postgres, are cached by
//! hash, and a damaged one is refused.

use absa_platform::config::{test_database_url, DatabaseSettings, Secret};
use absa_platform::db;
use absa_store::artifacts::{ArtifactStore, Backend, CHUNK_BYTES};
use uuid::Uuid;

async fn store(backend: Backend) -> (ArtifactStore, sqlx::PgPool, String, Uuid) {
    let name = format!("absa_test_artifacts_{}", uuid::Uuid::new_v4().simple());
    let url = db::create_database(&test_database_url(), &name).await.unwrap();
    let pool = db::connect(&DatabaseSettings { url: Secret::new(url), ..Default::default() }).await.unwrap();
    db::migrate(&pool).await.unwrap();
    let team = Uuid::new_v4();
    sqlx::query("INSERT INTO teams (id, name) VALUES ($1, 't')").bind(team).execute(&pool).await.unwrap();
    (ArtifactStore::new(pool.clone(), backend), pool, name, team)
}

fn content() -> Vec<u8> {
    // Two and a half chunks, so chunk boundaries are exercised.
    (0..CHUNK_BYTES * 5 / 2).map(|i| (i * 31 % 251) as u8).collect()
}

async fn round_trip(backend: Backend) {
    let (store, pool, name, team) = store(backend).await;
    let data = content();
    let artifact = store.put(team, "checkpoint", None, &data[..]).await.unwrap();
    assert_eq!(artifact.size_bytes as usize, data.len());
    let mut back = Vec::new();
    store.read_into(artifact.id, &mut back).await.unwrap();
    assert!(back == data, "content differs after the round trip");

    let cache = std::env::temp_dir().join(format!("absa-cache-{}", Uuid::new_v4()));
    let path = store.cached_file(artifact.id, &cache).await.unwrap();
    assert_eq!(path.file_name().unwrap().to_str().unwrap(), artifact.sha256);
    assert!(std::fs::read(&path).unwrap() == data);
    assert_eq!(store.cached_file(artifact.id, &cache).await.unwrap(), path, "second use hits the cache");
    std::fs::remove_dir_all(cache).unwrap();
    pool.close().await;
    db::drop_database(&test_database_url(), &name).await.unwrap();
}

#[tokio::test]
async fn postgres_backend_round_trips_chunked_content() {
    round_trip(Backend::Postgres).await;
}

#[tokio::test]
async fn filesystem_backend_round_trips_content() {
    round_trip(Backend::Filesystem(std::env::temp_dir().join(format!("absa-artifacts-{}", Uuid::new_v4())))).await;
}

#[tokio::test]
async fn a_damaged_artifact_is_refused_and_an_unfinished_one_is_invisible() {
    let (store, pool, name, team) = store(Backend::Postgres).await;
    let artifact = store.put(team, "onnx", None, &content()[..]).await.unwrap();
    sqlx::query("UPDATE artifact_chunks SET data = '\\x00' WHERE artifact_id = $1 AND idx = 1").bind(artifact.id).execute(&pool).await.unwrap();
    let err = store.read_into(artifact.id, &mut Vec::new()).await.unwrap_err().to_string();
    assert!(err.contains("does not match its record"), "{err}");

    sqlx::query("UPDATE artifacts SET complete = false WHERE id = $1").bind(artifact.id).execute(&pool).await.unwrap();
    assert!(store.get(artifact.id).await.unwrap().is_none());
    pool.close().await;
    db::drop_database(&test_database_url(), &name).await.unwrap();
}
