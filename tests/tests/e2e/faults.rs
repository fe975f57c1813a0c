//! Faults under the running service, with the real binaries, Postgres and RabbitMQ:
//! 1. `absa-api` killed (SIGKILL) in the middle of an upload's body, and again just
//!    after a whole corpus was sent (while it is read and inserted): no part of either
//!    upload is visible (the corpus is absent or complete), nothing is left in the
//!    upload folder, and the API serves again after a restart;
//! 2. `absa-scheduler` killed while its fan-out of a scoring job into shards is inside
//!    its transaction (held there by a lock the test takes on `job_events`, seen in
//!    `pg_stat_activity`): the job has no shard, and it completes once a scheduler is
//!    back;
//! 3. PostgreSQL restarted while that scoring job runs: every process keeps running,
//!    the job completes, one prediction per document (by count and by key).
//!
//! One test function, because a Postgres restart would disturb any test running beside
//! it. It needs the shared reference data (ABSA_SHARED) and `scripts/postgres-restart.sh`.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use absa_e2e::service::{corpus_documents, jsonl, laptops, Service};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Sends the head of an upload and `body[..sent]`, leaving the request open.
fn partial_upload(port: u16, key: &str, path: &str, body: &[u8], sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body[..sent]).unwrap();
    s.flush().unwrap();
    s
}

/// Whether process `pid` has a file under `dir` open.
fn spooling(pid: u32, dir: &std::path::Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok()).any(|target| target.starts_with(dir))
}

async fn corpus_counts(pool: &PgPool, name: &str) -> (i64, i64) {
    sqlx::query_as("SELECT count(DISTINCT c.id), count(d.seq) FROM corpora c LEFT JOIN documents d ON d.corpus_id = c.id WHERE c.name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[ignore = "slow: trains models for minutes (scripts/test.sh runs it after the fast tier)"]
#[tokio::test(flavor = "multi_thread")]
async fn the_service_survives_kills_and_a_postgres_restart() {
    let upload_dir = std::env::temp_dir().join(format!("absa_uploads_{}", Uuid::new_v4().simple()));
    let mut svc = Service::start_with(&[("ABSA_API__UPLOAD_DIR", upload_dir.to_str().unwrap()), ("ABSA_API__MAX_UPLOAD_BYTES", "100000000")]).await;
    let port: u16 = svc.api.base.rsplit(':').next().unwrap().parse().unwrap();
    let pool = PgPool::connect(&svc.db_url).await.unwrap();
    let admin = svc.bootstrap_key("faults");
    let (mlops, _) = svc.key(&admin, "mlops");
    let uploads_left = || std::fs::read_dir(&upload_dir).unwrap().count();

    // 1. The API killed mid-body, then just after a whole 100,000-document corpus.
    let documents = 157 * laptops("test").len(); // 100,166
    let big = jsonl(&corpus_documents(documents)).into_bytes();
    let documents = documents as i64;
    let _open = partial_upload(port, &mlops, "/v1/corpora?name=half&format=jsonl", &big, big.len() / 2);
    // The spool file has no name: the API holds it open as "<upload dir>/#N (deleted)".
    let pid = svc.processes.iter().find(|p| p.name == "api").unwrap().pid();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !spooling(pid, &upload_dir) {
        assert!(Instant::now() < deadline, "the API is not spooling the upload");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    svc.take("api").kill9();
    assert_eq!(corpus_counts(&pool, "half").await, (0, 0), "a half-sent upload is invisible");
    assert_eq!(uploads_left(), 0, "the spooled half is gone with the process");
    svc.start_api("api-2");
    let _open = partial_upload(port, &mlops, "/v1/corpora?name=whole&format=jsonl", &big, big.len());
    std::thread::sleep(Duration::from_millis(700));
    svc.take("api-2").kill9();
    let caught = corpus_counts(&pool, "whole").await;
    eprintln!("api killed after a whole upload: (corpora, documents) = {caught:?}");
    assert!(caught == (0, 0) || caught == (1, documents), "all or nothing: {caught:?}");
    assert_eq!(uploads_left(), 0);
    svc.start_api("api-3");
    let a = svc.api.upload(Some(&mlops), "/v1/corpora?name=again&format=jsonl", &big);
    assert_eq!((a.status, a.body["documents_added"].as_i64()), (201, Some(documents)), "{:?}", a.body.get("error"));
    assert_eq!(uploads_left(), 0);

    // A model to score with: one epoch on a slice.
    svc.run("absa-scheduler", &["run"], "scheduler");
    let version = svc.train_small_model(&mlops);

    // 2. The scheduler killed inside the fan-out's transaction: the test holds a lock on
    //    job_events (submit before taking it: a submission writes an event too), so the
    //    fan-out statement waits there, visible in pg_stat_activity; then SIGKILL.
    let a = svc.api.upload(Some(&mlops), "/v1/corpora?name=score-me&format=jsonl", jsonl(&corpus_documents(8 * laptops("test").len())).as_bytes());
    assert_eq!(a.status, 201, "{a:?}");
    let corpus_docs = a.body["documents_added"].as_i64().unwrap();
    svc.run("absa-scorer", &["work"], "scorer");
    svc.take("scheduler").kill9();
    let a = svc.api.post(&mlops, "/v1/jobs/score", &json!({ "corpus_id": a.body["corpus_id"], "model_version_id": version, "shard_size": 100 }));
    assert_eq!(a.status, 201, "{a:?}");
    let job = a.body["id"].as_str().unwrap().to_owned();
    let job_id: Uuid = job.parse().unwrap();
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE job_events IN SHARE ROW EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    svc.run("absa-scheduler", &["run"], "scheduler-2");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO jobs%score_shard%'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the fan-out never reached its insert\n{}", svc.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    svc.take("scheduler-2").kill9();
    blocker.commit().await.unwrap();
    // The killed scheduler's backend finishes the statement, finds its client gone and
    // rolls the transaction back.
    let deadline = Instant::now() + Duration::from_secs(30);
    let shards = (corpus_docs + 99) / 100;
    loop {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%INSERT INTO jobs%score_shard%' AND state <> 'idle' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if busy == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the killed scheduler's fan-out is still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (state, children): (String, i64) = sqlx::query_as("SELECT state, (SELECT count(*) FROM jobs c WHERE c.parent_id = j.id) FROM jobs j WHERE id = $1")
        .bind(job_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    eprintln!("scheduler killed inside the fan-out: parent {state}, {children} of {shards} shards");
    assert_eq!((state.as_str(), children), ("queued", 0), "a fan-out killed before its commit leaves no shard");
    svc.run("absa-scheduler", &["run"], "scheduler-3");

    // 3. Postgres restarted while the shards are scored.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let scored: i64 = sqlx::query_scalar("SELECT count(*) FROM predictions WHERE job_id = $1").bind(job_id).fetch_one(&pool).await.unwrap();
        if scored > 0 {
            eprintln!("restarting Postgres with {scored} of {corpus_docs} documents scored");
            break;
        }
        assert!(Instant::now() < deadline, "no predictions\n{}", svc.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres-restart.sh");
    let out = std::process::Command::new("bash").arg(&script).args(["--down", "2"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done = svc.wait_job(&mlops, &job, Duration::from_secs(600));
    assert_eq!(done["state"], "succeeded", "{done}\n{}", svc.logs());
    let (count, distinct, min, max): (i64, i64, Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT count(*), count(DISTINCT (seq, target_index)), min(seq), max(seq) FROM predictions WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((count, distinct), (corpus_docs, corpus_docs), "one prediction per document");
    let first_seq: i64 =
        sqlx::query_scalar("SELECT min(d.seq) FROM documents d JOIN corpora c ON c.id = d.corpus_id WHERE c.name = 'score-me'").fetch_one(&pool).await.unwrap();
    assert_eq!((min, max), (Some(first_seq), Some(first_seq + corpus_docs - 1)), "no gaps");
    // The API answers after the restart, with its pool reconnected.
    assert_eq!(svc.api.get(None, "/readyz").status, 200);
    let incomplete: i64 = sqlx::query_scalar("SELECT count(*) FROM artifacts WHERE NOT complete").fetch_one(&pool).await.unwrap();
    assert_eq!(incomplete, 0, "no half-written artifact is left");
    eprintln!("events: {}", done["events"]);

    pool.close().await;
    let _ = std::fs::remove_dir_all(&upload_dir);
    svc.stop().await;
}
