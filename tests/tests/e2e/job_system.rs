//! The job system end to end, with the real binaries as processes on the real
//! Postgres and RabbitMQ, and real training and scoring:
//! 1. a training job (all-MiniLM-L6-v2, laptops train, one epoch) completes with its
//!    metrics, checkpoint, ONNX export and model version in Postgres;
//! 2. a trainer killed (SIGKILL) in the middle of its second epoch, and the next one
//!    killed while it exports after the last epoch: the job completes on a third
//!    trainer, which resumed from the stored checkpoints (last and best) with nothing
//!    left to train;
//! 3. a scoring job over a corpus, with a scorer killed in the middle of a shard: the
//!    job completes, every document has exactly one prediction (no duplicates, no gaps,
//!    by count and by key), and the predictions agree with the held-back labels;
//! 4. the RabbitMQ node restarted (`rabbitmq-restart.sh --full`) during a scoring job:
//!    the job completes, exactly once again;
//! 5. SIGTERM: a trainer gives its job back and exits; a scorer exits cleanly;
//! 6. a job trained as 2 CPU ranks (fully sharded on c10d) with one rank SIGKILLed in
//!    its second epoch: the attempt fails at once, the retry resumes from the sharded
//!    checkpoint and ends with the same metrics as an uninterrupted run.
//!
//! One test function, because the phases share the trained model and because a broker
//! restart would disturb any test running beside it. It needs the shared reference
//! data (ABSA_SHARED) and `scripts/rabbitmq-restart.sh`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use absa_e2e::service::Service;
use absa_e2e::Process;
use absa_store::jobs::{self, NewJob};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const LEASE_SECS: &str = "6";
/// The trainers' collective timeout: a rank that dies fails its job's attempt well within it.
const COLLECTIVE_TIMEOUT_SECS: u64 = 60;

/// The process id of rank `rank` of a launched training job (its run file names the job).
fn rank_process(job: Uuid, rank: usize) -> Option<i32> {
    let job = job.to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let has = |hay: &[u8], needle: &str| hay.split(|&b| b == 0).any(|part| String::from_utf8_lossy(part).contains(needle));
        if has(&cmdline, "train-from") && has(&cmdline, &job) && environ.split(|&b| b == 0).any(|v| v == format!("RANK={rank}").as_bytes()) {
            return Some(pid);
        }
    }
    None
}

struct Labelled {
    text: String,
    aspect: String,
    start: i32,
    end: i32,
    label: String,
}

fn read_jsonl(path: &Path) -> Vec<Labelled> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("laptops rows are JSON");
            Labelled {
                text: v["text"].as_str().unwrap().into(),
                aspect: v["aspect"].as_str().unwrap().into(),
                start: v["start"].as_i64().unwrap() as i32,
                end: v["end"].as_i64().unwrap() as i32,
                label: v["label"].as_str().unwrap().into(),
            }
        })
        .collect()
}

/// The shared test service (a throwaway database and queue names, the API) with a pool
/// on its database, where this test submits jobs and reads results directly.
struct Env {
    service: Service,
    pool: PgPool,
    team: Uuid,
}

impl Env {
    fn start(&self, binary: &str, args: &[&str], tag: &str) -> Process {
        self.service.spawn(binary, args, tag)
    }

    async fn submit(&self, kind: &str, parameters: Value) -> Uuid {
        let job = NewJob::new(self.team, kind.parse().expect("a job kind"), parameters);
        jobs::submit(&self.pool, &job).await.expect("submit").id()
    }

    async fn state(&self, job: Uuid) -> (String, Option<String>, f64) {
        sqlx::query_as("SELECT state, last_error, progress FROM jobs WHERE id = $1").bind(job).fetch_one(&self.pool).await.expect("job row")
    }

    /// Waits for `job` to finish; panics with the processes' logs if it fails or times out.
    async fn wait_done(&self, job: Uuid, within: Duration, processes: &[&Process]) {
        let deadline = Instant::now() + within;
        loop {
            assert_running(processes);
            let (state, error, _) = self.state(job).await;
            match state.as_str() {
                "succeeded" => return,
                "failed" | "cancelled" => {
                    panic!("job {job} {state}: {error:?}\n{}", logs(processes))
                }
                _ if Instant::now() > deadline => panic!("job {job} still {state} after {within:?}\n{}", logs(processes)),
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }

    async fn events(&self, job: Uuid) -> Vec<(String, Value)> {
        sqlx::query_as("SELECT kind, detail FROM job_events WHERE job_id = $1 ORDER BY id").bind(job).fetch_all(&self.pool).await.expect("events")
    }

    async fn wait_for<F: Fn() -> Fut, Fut: std::future::Future<Output = bool>>(&self, what: &str, within: Duration, processes: &[&Process], check: F) {
        let deadline = Instant::now() + within;
        while !check().await {
            assert_running(processes);
            assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", logs(processes));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A worker or scheduler that exited on its own is a failure to report now, not after
/// the timeout.
fn assert_running(processes: &[&Process]) {
    for p in processes {
        assert!(p.running(), "{} exited\n{}", p.name, p.tail(30));
    }
}

fn logs(processes: &[&Process]) -> String {
    processes.iter().map(|p| format!("--- {} ---\n{}", p.name, p.tail(30))).collect::<Vec<_>>().join("\n")
}

async fn setup() -> Env {
    let collective_timeout = COLLECTIVE_TIMEOUT_SECS.to_string();
    let service = Service::start_with(&[
        ("ABSA_WORKER__LEASE_SECS", LEASE_SECS),
        ("ABSA_DISPATCH__SHARD_SIZE", "5000"),
        ("ABSA_TORCH__COLLECTIVE_TIMEOUT_SECS", &collective_timeout),
    ])
    .await;
    let pool = service.pool().await;
    let team = Uuid::new_v4();
    sqlx::query("INSERT INTO teams (id, name) VALUES ($1, 'e2e')").bind(team).execute(&pool).await.unwrap();
    Env { service, pool, team }
}

async fn add_dataset(env: &Env, name: &str, rows: &[Labelled]) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO datasets (id, team_id, name) VALUES ($1, $2, $3)").bind(id).bind(env.team).bind(name).execute(&env.pool).await.unwrap();
    let lines: Vec<i32> = (1..=rows.len() as i32).collect();
    sqlx::query(
        "INSERT INTO dataset_rows (dataset_id, line, text, aspect, span_start, span_end, label)
         SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::text[], $5::int[], $6::int[], $7::text[])",
    )
    .bind(id)
    .bind(&lines)
    .bind(rows.iter().map(|r| r.text.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.aspect.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.start).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.end).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.label.clone()).collect::<Vec<_>>())
    .execute(&env.pool)
    .await
    .unwrap();
    id
}

/// A corpus of `copies` copies of the rows (texts and target spans, no labels);
/// document seq `k` is row `k % rows.len()`.
async fn add_corpus(env: &Env, name: &str, rows: &[Labelled], copies: usize) -> (Uuid, i64) {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO corpora (id, team_id, name) VALUES ($1, $2, $3)").bind(id).bind(env.team).bind(name).execute(&env.pool).await.unwrap();
    let n = rows.len() * copies;
    let pick = |k: usize| &rows[k % rows.len()];
    sqlx::query(
        "INSERT INTO documents (corpus_id, seq, external_id, text, aspect, span_start, span_end)
         SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[])",
    )
    .bind(id)
    .bind((0..n as i64).collect::<Vec<_>>())
    .bind((0..n).map(|k| format!("review-{k}")).collect::<Vec<_>>())
    .bind((0..n).map(|k| pick(k).text.clone()).collect::<Vec<_>>())
    .bind((0..n).map(|k| pick(k).aspect.clone()).collect::<Vec<_>>())
    .bind((0..n).map(|k| pick(k).start).collect::<Vec<_>>())
    .bind((0..n).map(|k| pick(k).end).collect::<Vec<_>>())
    .execute(&env.pool)
    .await
    .unwrap();
    (id, n as i64)
}

/// Exactly one prediction per document: by count, and by key (seqs 0..n, target 0).
async fn assert_exactly_once(env: &Env, job: Uuid, documents: i64) {
    let (count, distinct, min, max, max_target): (i64, i64, Option<i64>, Option<i64>, Option<i32>) =
        sqlx::query_as("SELECT count(*), count(DISTINCT seq), min(seq), max(seq), max(target_index) FROM predictions WHERE job_id = $1")
            .bind(job)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(count, documents, "one prediction per document");
    assert_eq!(distinct, documents, "no document twice");
    assert_eq!((min, max, max_target), (Some(0), Some(documents - 1), Some(0)), "no gaps");
}

#[ignore = "slow: trains models for minutes (scripts/test.sh runs it after the fast tier)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_crashes_and_a_broker_restart_and_write_results_exactly_once() {
    let env = setup().await;
    let shared = absa_domain::reference::shared_dir().unwrap();
    let laptops = shared.join("data/semeval14_laptops");
    let train = read_jsonl(&laptops.join("train.jsonl"));
    let test = read_jsonl(&laptops.join("test.jsonl"));
    let restart_script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/rabbitmq-restart.sh");

    let scheduler = env.start("absa-scheduler", &["run"], "scheduler");

    // 1. One epoch of MiniLM on laptops train.
    let mut trainer = env.start("absa-trainer", &["work"], "trainer-1");
    let full = add_dataset(&env, "laptops", &train).await;
    let started = Instant::now();
    let job = env
        .submit(
            "train",
            json!({ "dataset_id": full, "base_model": "all-minilm-l6-v2",
                                 "hyperparameters": { "epochs": 1, "learning_rate": 5e-5 } }),
        )
        .await;
    env.wait_done(job, Duration::from_secs(900), &[&scheduler, &trainer]).await;
    eprintln!("training job (1 epoch, {} rows): {:.0} s", train.len(), started.elapsed().as_secs_f64());
    let (epochs, accuracy): (i64, f64) =
        sqlx::query_as("SELECT count(*), max(accuracy) FROM training_metrics WHERE job_id = $1").bind(job).fetch_one(&env.pool).await.unwrap();
    assert_eq!(epochs, 1);
    assert!(accuracy > 0.6, "validation accuracy after one epoch: {accuracy}");
    let (version, metrics, onnx_complete, checkpoint_complete): (Uuid, Value, bool, bool) = sqlx::query_as(
        "SELECT v.id, v.metrics, o.complete, c.complete FROM model_versions v
         JOIN artifacts o ON o.id = v.onnx_id JOIN artifacts c ON c.id = v.checkpoint_id WHERE v.training_job_id = $1",
    )
    .bind(job)
    .fetch_one(&env.pool)
    .await
    .expect("a model version with its artifacts");
    assert!(onnx_complete && checkpoint_complete);
    assert_eq!(metrics["epochs_run"], 1);
    assert!(metrics["validation_accuracy"].as_f64().unwrap() > 0.6, "{metrics}");

    // 2. Two epochs on a slice; the trainer dies in the middle of the second.
    let slice = add_dataset(&env, "laptops-slice", &train[..320]).await;
    let job = env
        .submit(
            "train",
            json!({ "dataset_id": slice, "base_model": "all-minilm-l6-v2",
                                 "hyperparameters": { "epochs": 2, "learning_rate": 5e-5, "warmup_steps": 10 } }),
        )
        .await;
    env.wait_for("the epoch-1 checkpoint", Duration::from_secs(300), &[&scheduler, &trainer], || async {
        env.events(job).await.iter().any(|(kind, _)| kind == "checkpoint_saved")
    })
    .await;
    // In epoch 2 now: progress moves past the first half.
    env.wait_for("progress into epoch 2", Duration::from_secs(120), &[&trainer], || async { env.state(job).await.2 > 0.5 }).await;
    assert_eq!(env.state(job).await.0, "running");
    trainer.kill9();
    let mut trainer2 = env.start("absa-trainer", &["work"], "trainer-2");
    // Killed again once its last epoch is stored, while it exports: the third trainer
    // has nothing left to train and must find the selected model among the stored ones.
    env.wait_for("the epoch-2 checkpoint", Duration::from_secs(600), &[&scheduler, &trainer2], || async {
        env.events(job).await.iter().any(|(kind, d)| kind == "checkpoint_saved" && d["epoch"] == 2)
    })
    .await;
    assert_eq!(env.state(job).await.0, "running", "killed before registering the model");
    trainer2.kill9();
    let trainer3 = env.start("absa-trainer", &["work"], "trainer-3");
    env.wait_done(job, Duration::from_secs(600), &[&scheduler, &trainer3]).await;
    let events = env.events(job).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "lease_expired").count(), 2, "{kinds:?}");
    let resumed: Vec<&Value> = events.iter().filter(|(k, _)| k == "resumed").map(|(_, d)| d).collect();
    assert_eq!(resumed.len(), 2, "{kinds:?}");
    assert_eq!((resumed[0]["from_epoch"].clone(), resumed[0]["attempt"].clone()), (json!(1), json!(2)), "{resumed:?}");
    assert_eq!((resumed[1]["from_epoch"].clone(), resumed[1]["attempt"].clone()), (json!(2), json!(3)), "{resumed:?}");
    let epochs: Vec<i32> =
        sqlx::query_scalar("SELECT epoch FROM training_metrics WHERE job_id = $1 ORDER BY epoch").bind(job).fetch_all(&env.pool).await.unwrap();
    assert_eq!(epochs, vec![1, 2]);
    // The version's selected model is the best epoch's; the resumable checkpoints are
    // deleted just after the job completes.
    let best_epoch: Value =
        sqlx::query_scalar("SELECT metrics->'best_epoch' FROM model_versions WHERE training_job_id = $1").bind(job).fetch_one(&env.pool).await.unwrap();
    assert_eq!(best_epoch, resumed[1]["best_epoch"], "{resumed:?}");
    env.wait_for("the spent checkpoints' deletion", Duration::from_secs(30), &[&trainer3], || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM artifacts WHERE job_id = $1 AND kind = 'checkpoint'").bind(job).fetch_one(&env.pool).await.unwrap();
        n == 1
    })
    .await;
    trainer2 = trainer3;

    // 3. Scoring 20 copies of laptops test in 4 shards; a scorer dies mid-shard. A shard
    // must outlast a heartbeat (a third of the lease: 2 s) for its progress to show:
    // 800-document shards took 1.2 s on a 2-core EPYC, 3,200 take about 5 s.
    let (corpus, documents) = add_corpus(&env, "laptops-test", &test, 20).await;
    let mut scorer = env.start("absa-scorer", &["work"], "scorer-1");
    let score = env.submit("score", json!({ "corpus_id": corpus, "model_version_id": version, "shard_size": 3200 })).await;
    let killed_shard: Uuid = {
        let mut found = None;
        let deadline = Instant::now() + Duration::from_secs(300);
        while found.is_none() {
            assert!(Instant::now() < deadline, "no shard started\n{}", logs(&[&scheduler, &scorer]));
            found = sqlx::query_scalar("SELECT id FROM jobs WHERE parent_id = $1 AND state = 'running' AND progress > 0 LIMIT 1")
                .bind(score)
                .fetch_optional(&env.pool)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found.unwrap()
    };
    scorer.kill9();
    let (state, _, _) = env.state(killed_shard).await;
    assert_eq!(state, "running", "the shard was killed mid-work");
    let scorer2 = env.start("absa-scorer", &["work"], "scorer-2");
    env.wait_done(score, Duration::from_secs(600), &[&scheduler, &scorer2]).await;
    assert_exactly_once(&env, score, documents).await;
    let shard_events: Vec<String> = sqlx::query_scalar("SELECT kind FROM job_events WHERE job_id = $1").bind(killed_shard).fetch_all(&env.pool).await.unwrap();
    assert!(shard_events.iter().any(|k| k == "lease_expired"), "{shard_events:?}");
    let shards: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE parent_id = $1 AND state = 'succeeded'").bind(score).fetch_one(&env.pool).await.unwrap();
    assert_eq!(shards, 4);
    // Agreement with the held-back labels of the first copy.
    let labels: Vec<(i64, String)> = sqlx::query_as("SELECT seq, label FROM predictions WHERE job_id = $1 AND seq < $2 ORDER BY seq")
        .bind(score)
        .bind(test.len() as i64)
        .fetch_all(&env.pool)
        .await
        .unwrap();
    let correct = labels.iter().filter(|(seq, label)| test[*seq as usize].label == *label).count();
    let accuracy = correct as f64 / test.len() as f64;
    eprintln!("scored test accuracy (model of phase 1): {accuracy:.4}");
    assert!(accuracy > 0.6, "{accuracy}");

    // 4. RabbitMQ restarts while a scoring job runs.
    let score = env.submit("score", json!({ "corpus_id": corpus, "model_version_id": version, "shard_size": 1600 })).await;
    env.wait_for("a first shard done", Duration::from_secs(300), &[&scheduler, &scorer2], || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE parent_id = $1 AND state = 'succeeded'").bind(score).fetch_one(&env.pool).await.unwrap()
            > 0
    })
    .await;
    // The whole node, not only its application: the Erlang VM goes, with every
    // connection and channel, and comes back from its durable state (~4.5 s here).
    let restarted = std::process::Command::new("bash").arg(&restart_script).arg("--full").status().expect("restart script");
    assert!(restarted.success(), "RabbitMQ restart failed");
    env.wait_done(score, Duration::from_secs(600), &[&scheduler, &scorer2]).await;
    assert_exactly_once(&env, score, documents).await;

    // 5. SIGTERM: a trainer holding a job gives it back and exits; the scorer exits.
    let job = env.submit("train", json!({ "dataset_id": slice, "base_model": "all-minilm-l6-v2", "hyperparameters": { "epochs": 1 } })).await;
    env.wait_for("the trainer to start", Duration::from_secs(120), &[&scheduler, &trainer2], || async { env.state(job).await.2 > 0.0 }).await;
    let status = trainer2.terminate(Duration::from_secs(60)).unwrap_or_else(|| panic!("trainer ignored SIGTERM\n{}", trainer2.tail(20)));
    assert!(status.success(), "{status:?}\n{}", trainer2.tail(20));
    let (state, _, _) = env.state(job).await;
    assert!(state == "queued" || state == "dispatched", "released job is {state}");
    assert!(env.events(job).await.iter().any(|(k, _)| k == "released"));
    let mut scorer2 = scorer2;
    let status = scorer2.terminate(Duration::from_secs(30)).expect("scorer exits on SIGTERM");
    assert!(status.success());
    jobs::cancel(&env.pool, job).await.unwrap();

    // 6. A job trained as 2 CPU ranks, fully sharded: one rank killed (SIGKILL) in its
    // second epoch fails the attempt at once; the retry resumes from the first epoch's
    // sharded checkpoint and ends with the metrics of an uninterrupted run.
    let trainer = env.start("absa-trainer", &["work"], "trainer-ranks");
    let ranked = json!({ "dataset_id": slice, "base_model": "all-minilm-l6-v2", "ranks": 2,
                         "hyperparameters": { "epochs": 2, "learning_rate": 5e-5, "warmup_steps": 10, "sharding": "full_shard" } });
    let straight = env.submit("train", ranked.clone()).await;
    env.wait_done(straight, Duration::from_secs(900), &[&scheduler, &trainer]).await;
    let killed = env.submit("train", ranked).await;
    env.wait_for("the epoch-1 checkpoint", Duration::from_secs(600), &[&scheduler, &trainer], || async {
        env.events(killed).await.iter().any(|(kind, _)| kind == "checkpoint_saved")
    })
    .await;
    env.wait_for("progress into epoch 2", Duration::from_secs(300), &[&trainer], || async { env.state(killed).await.2 > 0.55 }).await;
    let rank = rank_process(killed, 1).unwrap_or_else(|| panic!("no rank 1 of job {killed}\n{}", trainer.tail(30)));
    let kill_time = Instant::now();
    // SAFETY: a process of this test's own trainer.
    unsafe { libc::kill(rank, libc::SIGKILL) };
    env.wait_for("the attempt's failure", Duration::from_secs(COLLECTIVE_TIMEOUT_SECS), &[&trainer], || async {
        env.events(killed).await.iter().any(|(kind, _)| kind == "attempt_failed")
    })
    .await;
    let failed_after = kill_time.elapsed();
    env.wait_done(killed, Duration::from_secs(900), &[&scheduler, &trainer]).await;
    let resumed: Vec<Value> = env.events(killed).await.into_iter().filter(|(k, _)| k == "resumed").map(|(_, d)| d).collect();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!((resumed[0]["from_epoch"].clone(), resumed[0]["attempt"].clone()), (json!(1), json!(2)), "{resumed:?}");
    let pool = env.pool.clone();
    let curve = |job: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (i32, f64, f64, f64, f64)>(
                "SELECT epoch, train_loss, validation_loss, accuracy, macro_f1 FROM training_metrics WHERE job_id = $1 ORDER BY epoch",
            )
            .bind(job)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let (a, b) = (curve(straight).await, curve(killed).await);
    eprintln!(
        "2 ranks, full shard: rank 1 killed in epoch 2, the attempt failed {:.1} s later; uninterrupted {a:?}, resumed {b:?}",
        failed_after.as_secs_f64()
    );
    assert_eq!(a, b, "the resumed run's metrics are the uninterrupted run's");
    let summaries: Vec<Value> = sqlx::query_scalar("SELECT metrics FROM model_versions WHERE training_job_id = ANY($1) ORDER BY created_at")
        .bind(vec![straight, killed])
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(summaries.len(), 2);
    assert_eq!((summaries[0]["world_size"].clone(), summaries[0]["sharding"].clone()), (json!(2), json!("full_shard")));
    assert_eq!(summaries[0]["test_accuracy"], summaries[1]["test_accuracy"]);
    drop(trainer);

    drop(scheduler);
    env.pool.close().await;
    env.service.stop().await;
}
