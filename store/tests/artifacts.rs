//! Artifacts round-trip through both backends on the real Postgres, are cached by
//! hash, and a damaged one is refused.

use absa_platform::db::ScratchDb;
use absa_store::artifacts::{ArtifactStore, Backend, CHUNK_BYTES};
use uuid::Uuid;

/// A store on a database of its own (dropped with the `ScratchDb`), and a team.
async fn store(backend: Backend) -> (ArtifactStore, ScratchDb, Uuid) {
    let db = ScratchDb::new("absa_artifacts").await.unwrap();
    let team = db.team().await.unwrap();
    (ArtifactStore::new(db.pool.clone(), backend), db, team)
}

fn content() -> Vec<u8> {
    // Two and a half chunks, so chunk boundaries are exercised.
    (0..CHUNK_BYTES * 5 / 2).map(|i| (i * 31 % 251) as u8).collect()
}

async fn round_trip(backend: Backend) {
    let (store, _db, team) = store(backend).await;
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
    let (store, db, team) = store(Backend::Postgres).await;
    let artifact = store.put(team, "onnx", None, &content()[..]).await.unwrap();
    sqlx::query("UPDATE artifact_chunks SET data = '\\x00' WHERE artifact_id = $1 AND idx = 1").bind(artifact.id).execute(&db.pool).await.unwrap();
    let err = store.read_into(artifact.id, &mut Vec::new()).await.unwrap_err().to_string();
    assert!(err.contains("does not match its record"), "{err}");

    sqlx::query("UPDATE artifacts SET complete = false WHERE id = $1").bind(artifact.id).execute(&db.pool).await.unwrap();
    assert!(store.get(artifact.id).await.unwrap().is_none());
}
