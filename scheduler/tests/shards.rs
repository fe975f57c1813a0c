//! Scoring jobs as parents of shard jobs, against the real Postgres: the fan-out (seq
//! ranges, inherited fields, one transaction, idempotent), parents settled from their
//! shards, cancellation reaching the shards, and the score_shards view.

mod common;

use absa_jobs::JobStatus;
use absa_jobs::ShardParams;
use absa_store::jobs;
use absa_store::jobs::shards::{fan_out_queued, settle_parents, Settled};
use common::TestDb;
use serde_json::json;
use uuid::Uuid;

/// (shard, seq_from, seq_to, state) from the view, in shard order.
async fn view(db: &TestDb, parent: Uuid) -> Vec<(i32, i64, i64, String)> {
    sqlx::query_as("SELECT shard, seq_from, seq_to, state FROM score_shards WHERE job_id = $1 ORDER BY shard").bind(parent).fetch_all(&db.pool).await.unwrap()
}

async fn shard_ids(db: &TestDb, parent: Uuid) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT shard_job_id FROM score_shards WHERE job_id = $1 ORDER BY shard").bind(parent).fetch_all(&db.pool).await.unwrap()
}

async fn parent_row(db: &TestDb, parent: Uuid) -> (String, f64, Option<String>) {
    sqlx::query_as("SELECT state, progress, last_error FROM jobs WHERE id = $1").bind(parent).fetch_one(&db.pool).await.unwrap()
}

/// Claims and finishes a shard as a worker would.
async fn run_shard(db: &TestDb, id: Uuid, outcome: Result<(), &str>) {
    let worker = format!("w-{id}");
    jobs::claim(&db.pool, id, &worker, 30.0).await.unwrap().expect("claimable");
    match outcome {
        Ok(()) => {
            let mut tx = db.pool.begin().await.unwrap();
            jobs::complete(&mut *tx, id, &worker).await.unwrap().unwrap();
            tx.commit().await.unwrap();
        }
        Err(e) => {
            jobs::fail(&db.pool, id, &worker, e).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_score_job_fans_out_into_seq_ranges_that_inherit_the_parent() {
    let db = TestDb::new("absa_shards").await;
    // Seqs 10..=34 with a gap: ranges step from the smallest to the largest seq.
    let (corpus, model) = db.corpus((10..=20).chain(25..=34)).await;
    let params = json!({ "corpus_id": corpus, "model_version_id": model, "shard_size": 10, "precision": "int8" });
    let mut job = db.job("score", 7, params.clone());
    job.max_attempts = 5;
    let parent = jobs::submit(&db.pool, &job).await.unwrap().id();

    assert_eq!(fan_out_queued(&db.pool, 5000, 100).await.unwrap(), 1);
    assert_eq!(fan_out_queued(&db.pool, 5000, 100).await.unwrap(), 0, "a parent fans out once");
    assert_eq!(view(&db, parent).await, vec![(0, 10, 20, "queued".into()), (1, 20, 30, "queued".into()), (2, 30, 35, "queued".into())]);
    assert_eq!(parent_row(&db, parent).await.0, "running");
    assert_eq!(db.events(parent).await, vec!["submitted", "fanned_out"]);
    let lease: (Option<String>, i32) = sqlx::query_as("SELECT lease_owner, attempts FROM jobs WHERE id = $1").bind(parent).fetch_one(&db.pool).await.unwrap();
    assert_eq!(lease, (None, 0), "a parent holds no lease, so the reaper leaves it alone");

    let children: Vec<(String, i32, i32, Uuid, serde_json::Value, String)> = sqlx::query_as(
        "SELECT kind, priority, max_attempts, team_id, parameters, idempotency_key FROM jobs WHERE parent_id = $1 ORDER BY parameters->>'shard'",
    )
    .bind(parent)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (n, (kind, priority, max_attempts, team, parameters, key)) in children.into_iter().enumerate() {
        assert_eq!((kind.as_str(), priority, max_attempts, team), ("score_shard", 7, 5, db.team));
        let mut expected = params.clone();
        let (from, to) = [(10, 20), (20, 30), (30, 35)][n];
        expected.as_object_mut().unwrap().extend([("shard".into(), json!(n)), ("seq_from".into(), json!(from)), ("seq_to".into(), json!(to))]);
        assert_eq!(parameters, expected);
        // What the scheduler wrote in SQL is what the scorer reads.
        let typed = ShardParams::from_value(&parameters).unwrap();
        assert_eq!((typed.shard, typed.seq_from, typed.seq_to, typed.job.precision), (n as i32, from, to, Some(absa_jobs::score::Precision::Int8)));
        assert_eq!(key, format!("shard:{parent}:{n}"));
    }
}

#[tokio::test]
async fn the_lexicon_and_the_targets_stay_in_the_parent_and_a_huge_corpus_gets_at_most_max_shards() {
    let db = TestDb::new("absa_shards").await;
    // Seqs 0 and 1,000,000: with shard_size 1 that would be 1,000,001 shards.
    let (corpus, model) = db.corpus([0, 1_000_000]).await;
    let lexicon: Vec<String> = (0..1000).map(|i| format!("term {i} {}", "x".repeat(90))).collect();
    let targets: Vec<serde_json::Value> = (0..100).map(|i| json!({ "name": format!("target {i}"), "aliases": vec!["a".repeat(100); 50] })).collect();
    let parameters = json!({ "corpus_id": corpus, "model_version_id": model, "shard_size": 1, "lexicon": lexicon, "targets": targets });
    let parent = db.submit("score", 0, parameters).await;
    assert_eq!(fan_out_queued(&db.pool, 5000, 100).await.unwrap(), 1);
    let (shards, with_lexicon, size): (i64, i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE parameters ? 'lexicon' OR parameters ? 'targets'),
                max((parameters->>'seq_to')::bigint - (parameters->>'seq_from')::bigint) FROM jobs WHERE parent_id = $1",
    )
    .bind(parent)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // 1,000,001 seqs in at most 10,000 shards: shards of 101 seqs, 9,901 of them.
    assert_eq!((shards, with_lexicon, size), (9901, 0, Some(101)), "shards, shards carrying the lexicon or the targets, shard size");
    assert!(shards <= absa_jobs::spec::score::MAX_SHARDS);
    let kept: i32 =
        sqlx::query_scalar("SELECT jsonb_array_length(parameters->'lexicon') FROM jobs WHERE id = $1").bind(parent).fetch_one(&db.pool).await.unwrap();
    assert_eq!(kept, 1000, "the parent keeps it, once");
    let kept: i32 =
        sqlx::query_scalar("SELECT jsonb_array_length(parameters->'targets') FROM jobs WHERE id = $1").bind(parent).fetch_one(&db.pool).await.unwrap();
    assert_eq!(kept, 100, "the parent keeps the targets, once");
}

#[tokio::test]
async fn the_default_shard_size_applies_and_an_empty_corpus_succeeds_with_no_shards() {
    let db = TestDb::new("absa_shards").await;
    let (corpus, model) = db.corpus(0..7).await;
    let parent = db.submit("score", 0, json!({ "corpus_id": corpus, "model_version_id": model })).await;
    let (empty, _) = db.corpus([]).await;
    let nothing = db.submit("score", 0, json!({ "corpus_id": empty, "model_version_id": model })).await;
    assert_eq!(fan_out_queued(&db.pool, 3, 100).await.unwrap(), 2);
    assert_eq!(view(&db, parent).await.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(), vec![(0, 3), (3, 6), (6, 7)]);
    assert!(view(&db, nothing).await.is_empty());
    assert_eq!(parent_row(&db, nothing).await, ("succeeded".into(), 1.0, None));
    assert_eq!(db.events(nothing).await, vec!["submitted", "fanned_out", "completed"]);
}

#[tokio::test]
async fn bad_parameters_fail_the_parent_with_a_reason() {
    let db = TestDb::new("absa_shards").await;
    let (corpus, model) = db.corpus(0..3).await;
    let cases = [
        (json!({ "model_version_id": model }), "parameters: missing field `corpus_id`".to_string()),
        (json!({ "corpus_id": corpus, "model_version_id": "x" }), "parameters: model_version_id must be a uuid, not \"x\"".to_string()),
        (json!({ "corpus_id": corpus, "model_version_id": model, "shards": 2 }), "parameters: unknown field `shards`".to_string()),
        (json!({ "corpus_id": corpus, "model_version_id": model, "shard_size": 0 }), "shard_size must be a positive integer, not 0".to_string()),
        (json!({ "corpus_id": Uuid::nil(), "model_version_id": model }), format!("corpus {} not found", Uuid::nil())),
    ];
    let mut ids = Vec::new();
    for (params, _) in &cases {
        ids.push(db.submit("score", 0, params.clone()).await);
    }
    assert_eq!(fan_out_queued(&db.pool, 10, 100).await.unwrap(), cases.len());
    for (id, (_, reason)) in ids.into_iter().zip(cases) {
        let (state, _, error) = parent_row(&db, id).await;
        assert_eq!(state, "failed");
        assert!(error.as_deref().unwrap().contains(&reason), "{error:?} should say {reason}");
    }
}

#[tokio::test]
async fn a_repeated_fan_out_inserts_no_second_set_of_shards() {
    let db = TestDb::new("absa_shards").await;
    let (corpus, model) = db.corpus(0..10).await;
    let parent = db.submit("score", 0, json!({ "corpus_id": corpus, "model_version_id": model, "shard_size": 4 })).await;
    assert_eq!(fan_out_queued(&db.pool, 10, 100).await.unwrap(), 1);
    // As if a fan-out ran again (a parent put back to queued by hand, say).
    sqlx::query("UPDATE jobs SET state = 'queued' WHERE id = $1").bind(parent).execute(&db.pool).await.unwrap();
    assert_eq!(fan_out_queued(&db.pool, 10, 100).await.unwrap(), 1);
    assert_eq!(view(&db, parent).await.len(), 3, "idempotency keys keep one set");
}

#[tokio::test]
async fn a_parent_succeeds_when_all_its_shards_do_with_progress_on_the_way() {
    let db = TestDb::new("absa_shards").await;
    let (corpus, model) = db.corpus(0..8).await;
    let parent = db.submit("score", 0, json!({ "corpus_id": corpus, "model_version_id": model, "shard_size": 2 })).await;
    fan_out_queued(&db.pool, 10, 100).await.unwrap();
    let shards = shard_ids(&db, parent).await;
    assert_eq!(shards.len(), 4);
    run_shard(&db, shards[0], Ok(())).await;
    // A failed attempt with attempts left goes back to queued: not a failed shard.
    run_shard(&db, shards[1], Err("worker crashed")).await;
    assert_eq!(settle_parents(&db.pool).await.unwrap(), Settled::default());
    assert_eq!(parent_row(&db, parent).await, ("running".into(), 0.25, None));
    run_shard(&db, shards[2], Ok(())).await;
    run_shard(&db, shards[3], Ok(())).await;
    sqlx::query("UPDATE jobs SET not_before = NULL WHERE id = $1").bind(shards[1]).execute(&db.pool).await.unwrap();
    run_shard(&db, shards[1], Ok(())).await;
    assert_eq!(settle_parents(&db.pool).await.unwrap(), Settled { succeeded: 1, failed: 0 });
    assert_eq!(parent_row(&db, parent).await, ("succeeded".into(), 1.0, None));
    assert_eq!(db.events(parent).await, vec!["submitted", "fanned_out", "completed"]);
    assert_eq!(settle_parents(&db.pool).await.unwrap(), Settled::default(), "settled once");
}

#[tokio::test]
async fn a_failed_shard_fails_the_parent_and_cancels_the_other_shards() {
    let db = TestDb::new("absa_shards").await;
    let (corpus, model) = db.corpus(0..8).await;
    let mut job = db.job("score", 0, json!({ "corpus_id": corpus, "model_version_id": model, "shard_size": 2 }));
    job.max_attempts = 1;
    let parent = jobs::submit(&db.pool, &job).await.unwrap().id();
    fan_out_queued(&db.pool, 10, 100).await.unwrap();
    let shards = shard_ids(&db, parent).await;
    run_shard(&db, shards[0], Ok(())).await;
    run_shard(&db, shards[2], Err("model file is corrupt")).await;
    jobs::claim(&db.pool, shards[3], "busy-worker", 30.0).await.unwrap().unwrap();

    assert_eq!(settle_parents(&db.pool).await.unwrap(), Settled { succeeded: 0, failed: 1 });
    assert_eq!(parent_row(&db, parent).await, ("failed".into(), 0.25, Some("shard 2: model file is corrupt".into())));
    let states: Vec<String> = view(&db, parent).await.into_iter().map(|s| s.3).collect();
    assert_eq!(states, vec!["succeeded", "cancelled", "failed", "cancelled"]);
    // The busy worker learns at its next heartbeat.
    assert!(jobs::heartbeat(&db.pool, shards[3], "busy-worker", 30.0, 0.5).await.unwrap().is_err());
}

#[tokio::test]
async fn cancelling_a_score_job_cancels_its_shards() {
    let db = TestDb::new("absa_shards").await;
    let (corpus, model) = db.corpus(0..6).await;
    let parent = db.submit("score", 0, json!({ "corpus_id": corpus, "model_version_id": model, "shard_size": 2 })).await;
    fan_out_queued(&db.pool, 10, 100).await.unwrap();
    let shards = shard_ids(&db, parent).await;
    run_shard(&db, shards[0], Ok(())).await;
    jobs::claim(&db.pool, shards[1], "busy-worker", 30.0).await.unwrap().unwrap();

    assert!(jobs::cancel(&db.pool, parent).await.unwrap());
    assert_eq!(jobs::status(&db.pool, parent).await.unwrap(), Some(JobStatus::Cancelled));
    let states: Vec<String> = view(&db, parent).await.into_iter().map(|s| s.3).collect();
    assert_eq!(states, vec!["succeeded", "cancelled", "cancelled"], "finished shards keep their state");
    assert!(jobs::heartbeat(&db.pool, shards[1], "busy-worker", 30.0, 0.5).await.unwrap().is_err());
    assert!(jobs::claim(&db.pool, shards[2], "late-worker", 30.0).await.unwrap().is_none(), "a queued message for a cancelled shard claims nothing");
    assert_eq!(settle_parents(&db.pool).await.unwrap(), Settled::default(), "a cancelled parent is left alone");
}
