//! The job lifecycle against the real Postgres: idempotent submission, one claim per
//! job, heartbeats, lost leases, the reaper, attempt limits, cancellation.

use std::time::Duration;

use absa_jobs::{JobKind, JobStatus};
use absa_platform::db::ScratchDb;
use absa_store::jobs::{self, NewJob, Submitted};
use sqlx::PgPool;
use uuid::Uuid;

async fn scratch() -> ScratchDb {
    ScratchDb::new("absa_jobs").await.unwrap()
}

fn new_job(team: Uuid, key: Option<&str>, max_attempts: i32) -> NewJob {
    NewJob { max_attempts, idempotency_key: key.map(str::to_owned), ..NewJob::new(team, JobKind::Train, serde_json::json!({"lr": 5e-5})) }
}

async fn events(pool: &PgPool, id: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM job_events WHERE job_id = $1 ORDER BY id").bind(id).fetch_all(pool).await.unwrap()
}

/// The quoted words of a CHECK constraint's `IN (...)` list on `column` of `jobs`.
async fn allowed(pool: &PgPool, column: &str) -> Vec<String> {
    let definitions: Vec<String> =
        sqlx::query_scalar("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'jobs'::regclass AND contype = 'c'")
            .fetch_all(pool)
            .await
            .unwrap();
    let check =
        definitions.iter().find(|d| d.starts_with(&format!("CHECK (({column} = ANY"))).unwrap_or_else(|| panic!("no CHECK on {column}: {definitions:?}"));
    let mut words: Vec<String> = check.split('\'').skip(1).step_by(2).map(str::to_owned).collect();
    words.sort();
    words
}

#[tokio::test]
async fn the_kind_and_state_enums_are_exactly_what_the_database_allows() {
    let db = scratch().await;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(allowed(&db.pool, "kind").await, sorted(JobKind::ALL.iter().map(|k| k.as_str().to_owned()).collect()));
    assert_eq!(allowed(&db.pool, "state").await, sorted(JobStatus::ALL.iter().map(|s| s.as_str().to_owned()).collect()));
}

#[tokio::test]
async fn a_resubmitted_idempotency_key_returns_the_first_job() {
    let db = scratch().await;
    let team = db.team().await.unwrap();
    let first = jobs::submit(&db.pool, &new_job(team, Some("k1"), 3)).await.unwrap();
    let again = jobs::submit(&db.pool, &new_job(team, Some("k1"), 3)).await.unwrap();
    assert!(matches!(first, Submitted::Created(_)));
    assert_eq!(again, Submitted::Existing(first.id()));
    let other_team = db.team().await.unwrap();
    assert!(matches!(jobs::submit(&db.pool, &new_job(other_team, Some("k1"), 3)).await.unwrap(), Submitted::Created(_)), "keys are per team");
}

#[tokio::test]
async fn a_job_is_claimed_once_and_only_its_holder_can_extend_or_complete_it() {
    let db = scratch().await;
    let id = jobs::submit(&db.pool, &new_job(db.team().await.unwrap(), None, 3)).await.unwrap().id();
    let claimed = jobs::claim(&db.pool, id, "w1", 30.0).await.unwrap().expect("claimable");
    assert_eq!((claimed.attempt, claimed.kind.as_str()), (1, "train"));
    assert!(jobs::claim(&db.pool, id, "w2", 30.0).await.unwrap().is_none(), "a redelivered message claims nothing");
    assert!(jobs::heartbeat(&db.pool, id, "w2", 30.0, 0.5).await.unwrap().is_err());
    assert!(jobs::heartbeat(&db.pool, id, "w1", 30.0, 0.5).await.unwrap().is_ok());
    let mut tx = db.pool.begin().await.unwrap();
    assert!(jobs::complete(&mut *tx, id, "w2").await.unwrap().is_err());
    assert!(jobs::complete(&mut *tx, id, "w1").await.unwrap().is_ok());
    tx.commit().await.unwrap();
    assert_eq!(jobs::status(&db.pool, id).await.unwrap(), Some(JobStatus::Succeeded));
    assert_eq!(events(&db.pool, id).await, vec!["submitted", "claimed"]);
}

#[tokio::test]
async fn an_expired_lease_is_reaped_and_the_dead_worker_cannot_write() {
    let db = scratch().await;
    let id = jobs::submit(&db.pool, &new_job(db.team().await.unwrap(), None, 2)).await.unwrap().id();
    jobs::claim(&db.pool, id, "dead", 0.2).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(jobs::reap_expired(&db.pool).await.unwrap(), vec![id]);
    assert!(jobs::heartbeat(&db.pool, id, "dead", 30.0, 0.9).await.unwrap().is_err());
    let wait: f64 =
        sqlx::query_scalar("SELECT extract(epoch FROM not_before - now())::float8 FROM jobs WHERE id = $1").bind(id).fetch_one(&db.pool).await.unwrap();
    assert!(wait > 0.0 && wait <= jobs::BACKOFF_BASE_SECS, "first retry backs off {wait} s");
    let second = jobs::claim(&db.pool, id, "alive", 0.2).await.unwrap().expect("re-queued");
    assert_eq!(second.attempt, 2);
    assert!(jobs::complete(&db.pool, id, "dead").await.unwrap().is_err(), "the first holder lost the job");

    // The second lease expires too: attempts are used up, the job fails with the reason.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(jobs::reap_expired(&db.pool).await.unwrap().is_empty());
    assert_eq!(jobs::status(&db.pool, id).await.unwrap(), Some(JobStatus::Failed));
    let error: Option<String> = sqlx::query_scalar("SELECT last_error FROM jobs WHERE id = $1").bind(id).fetch_one(&db.pool).await.unwrap();
    assert_eq!(error.as_deref(), Some("lease expired"));
    assert_eq!(events(&db.pool, id).await, vec!["submitted", "claimed", "lease_expired", "claimed", "lease_expired"]);
}

#[tokio::test]
async fn a_failed_attempt_is_retried_until_the_limit() {
    let db = scratch().await;
    let id = jobs::submit(&db.pool, &new_job(db.team().await.unwrap(), None, 2)).await.unwrap().id();
    jobs::claim(&db.pool, id, "w", 30.0).await.unwrap().unwrap();
    assert_eq!(jobs::fail(&db.pool, id, "w", "out of memory").await.unwrap(), Some(JobStatus::Queued));
    jobs::claim(&db.pool, id, "w", 30.0).await.unwrap().unwrap();
    assert_eq!(jobs::fail(&db.pool, id, "w", "out of memory again").await.unwrap(), Some(JobStatus::Failed));
}

#[tokio::test]
async fn cancelling_stops_the_holder_and_the_children() {
    let db = scratch().await;
    let team = db.team().await.unwrap();
    let parent = jobs::submit(&db.pool, &new_job(team, None, 3)).await.unwrap().id();
    let child = jobs::submit(&db.pool, &NewJob { parent_id: Some(parent), kind: JobKind::ScoreShard, ..new_job(team, None, 3) }).await.unwrap().id();
    jobs::claim(&db.pool, parent, "w", 30.0).await.unwrap().unwrap();
    assert!(jobs::cancel(&db.pool, parent).await.unwrap());
    assert!(jobs::heartbeat(&db.pool, parent, "w", 30.0, 0.1).await.unwrap().is_err());
    assert_eq!(jobs::status(&db.pool, child).await.unwrap(), Some(JobStatus::Cancelled));
    assert!(!jobs::cancel(&db.pool, parent).await.unwrap(), "a finished job cannot be cancelled again");
}

#[tokio::test]
async fn a_sweeps_children_are_one_training_job_per_trial_with_the_sweeps_tags() {
    let db = scratch().await;
    let team = db.team().await.unwrap();
    let spec = serde_json::json!({ "dataset_id": Uuid::nil(), "base_model": "m", "grid": { "seed": [1, 2, 3] }, "max_concurrency": 2 });
    let tags = serde_json::json!({ "project": "laptops" });
    let sweep = jobs::submit(&db.pool, &NewJob { tags: tags.clone(), ..NewJob::new(team, JobKind::Sweep, spec) }).await.unwrap().id();
    let advanced = absa_store::jobs::sweeps::advance(&db.pool).await.unwrap();
    assert_eq!(advanced.children_started, 2, "max_concurrency bounds the children started");
    let children: Vec<(String, serde_json::Value, serde_json::Value)> =
        sqlx::query_as("SELECT kind, tags, parameters FROM jobs WHERE parent_id = $1 ORDER BY parameters -> 'sweep' -> 'trial'")
            .bind(sweep)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(children.len(), 2);
    for (trial, (kind, child_tags, parameters)) in children.iter().enumerate() {
        assert_eq!(kind, "train");
        assert_eq!(child_tags, &tags);
        let child = absa_jobs::TrainParams::from_value(parameters).unwrap();
        assert_eq!(child.hyperparameters.seed, Some(trial as u64 + 1));
        assert_eq!(child.sweep.unwrap()["trial"], trial);
    }
    assert_eq!(jobs::status(&db.pool, sweep).await.unwrap(), Some(JobStatus::Running));
}
