//! Every process serves Prometheus metrics, and they move by what a job implies.
//!
//! The scheduler, a trainer and a scorer each serve `/metrics`, `/healthz` and
//! `/readyz` on their own `ABSA_METRICS__BIND` port (the API on its own port, behind a
//! key). One training job (320 training rows, batch 16: 20 steps, one epoch) and one
//! scoring job (250 documents in shards of 100: 3 shards) run end to end; then every
//! process is scraped and its counters checked against those numbers (the job events
//! each process counted included), and every metric
//! the Grafana dashboard (`helm/absa/dashboards/absa.json`) queries must be one that
//! some process serves.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use absa_e2e::scrape::{free_port, scrape, scrape_with_key, value, wait_ok, Sample};
use absa_e2e::service::{corpus_documents, jsonl, laptops, Service};
use serde_json::json;

/// The memory request (MiB) of `role` in the chart's values profile `profile`
/// (`helm/absa/profiles/<profile>.yaml`), or in its defaults (`default`, or where the
/// profile keeps them).
fn memory_request_mib(role: &str, profile: &str) -> f64 {
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/absa");
    let read = |file: &str| -> serde_norway::Value { serde_norway::from_str(&std::fs::read_to_string(chart.join(file)).expect(file)).expect(file) };
    let request = |values: &serde_norway::Value| values[role]["resources"]["requests"]["memory"].as_str().map(str::to_owned);
    let from_profile = (profile != "default").then(|| request(&read(&format!("profiles/{profile}.yaml")))).flatten();
    let quantity = from_profile.or_else(|| request(&read("values.yaml"))).unwrap_or_else(|| panic!("no memory request for {role}"));
    let (number, unit) = quantity.split_at(quantity.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(quantity.len()));
    let number: f64 = number.parse().unwrap_or_else(|_| panic!("memory request {quantity}"));
    number
        * match unit {
            "Mi" => 1.0,
            "Gi" => 1024.0,
            other => panic!("memory request {quantity}: unit {other} (write Mi or Gi)"),
        }
}

/// Metric family names a dashboard expression uses.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/absa/dashboards/absa.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("dashboard JSON");
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(i) = rest.find("absa_") {
                let name: String = rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[i + name.len()..];
                names.insert(name);
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn every_process_serves_metrics_that_move_by_what_a_job_implies() {
    let mut svc = Service::start().await;
    let (scheduler, trainer, scorer) = (free_port(), free_port(), free_port());
    let bind = |port: u16| [("ABSA_METRICS__BIND", format!("127.0.0.1:{port}"))];
    svc.run_with("absa-scheduler", &["run"], "scheduler", &bind(scheduler));
    svc.run_with("absa-trainer", &["work"], "trainer", &bind(trainer));
    svc.run_with("absa-scorer", &["work"], "scorer", &bind(scorer));
    let url = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");
    for port in [scheduler, trainer, scorer] {
        wait_ok(&url(port, "/healthz"), &svc);
        // Workers are ready once they consume their queues; the scheduler once it runs.
        wait_ok(&url(port, "/readyz"), &svc);
    }
    let admin = svc.bootstrap_key("metrics");
    let (mlops, _) = svc.key(&admin, "mlops");
    let prefix = svc.db_name.clone();

    // Training: 320 training rows and 48 validation rows, batch 16: 20 steps, 1 epoch.
    let rows = laptops("train");
    let a = svc.api.upload(Some(&mlops), "/v1/datasets?name=metrics&split=train", jsonl(&rows[..320]).as_bytes());
    assert_eq!(a.status, 201, "{a:?}");
    let dataset = a.body["dataset_id"].clone();
    let a = svc.api.upload(Some(&mlops), "/v1/datasets?name=metrics&split=validation", jsonl(&rows[320..368]).as_bytes());
    assert_eq!(a.status, 201, "{a:?}");
    let train = json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2",
                        "hyperparameters": { "epochs": 1, "batch_size": 16, "learning_rate": 1e-4, "warmup_steps": 0 } });
    let a = svc.api.post(&mlops, "/v1/jobs/train", &train);
    assert_eq!(a.status, 201, "{a:?}");
    let done = svc.wait_job(&mlops, a.body["id"].as_str().unwrap(), Duration::from_secs(1800));
    assert_eq!(done["state"], "succeeded", "{done}\n{}", svc.logs());
    let version = done["model_version_id"].clone();

    // Scoring: 250 documents (one aspect each) in shards of 100: 3 shards, 250 predictions.
    let a = svc.api.upload(Some(&mlops), "/v1/corpora?name=metrics&format=jsonl", jsonl(&corpus_documents(250)).as_bytes());
    assert_eq!(a.status, 201, "{a:?}");
    let a = svc.api.post(&mlops, "/v1/jobs/score", &json!({ "corpus_id": a.body["corpus_id"], "model_version_id": version, "shard_size": 100 }));
    assert_eq!(a.status, 201, "{a:?}");
    let done = svc.wait_job(&mlops, a.body["id"].as_str().unwrap(), Duration::from_secs(600));
    assert_eq!(done["state"], "succeeded", "{done}\n{}", svc.logs());

    // The trainer: one claimed message, one job succeeded, its queue wait and run time,
    // 20 steps timed, one epoch.
    let (t, t_declared) = scrape(&url(trainer, "/metrics"));
    assert_eq!(value(&t, "absa_build_info", &[("role", "trainer"), ("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert_eq!(value(&t, "absa_worker_messages_total", &[("queue", &format!("{prefix}.train")), ("outcome", "claimed")]), 1.0);
    assert_eq!(value(&t, "absa_worker_jobs_finished_total", &[("kind", "train"), ("outcome", "succeeded")]), 1.0);
    assert_eq!(value(&t, "absa_worker_jobs_finished_total", &[("kind", "train"), ("outcome", "failed")]), 0.0);
    assert_eq!(value(&t, "absa_job_queue_wait_seconds_count", &[("kind", "train")]), 1.0);
    assert_eq!(value(&t, "absa_job_run_seconds_count", &[("queue", &format!("{prefix}.train"))]), 1.0);
    assert_eq!(value(&t, "absa_trainer_steps_total", &[]), 20.0);
    assert_eq!(value(&t, "absa_trainer_step_duration_seconds_count", &[]), 20.0);
    assert!(value(&t, "absa_trainer_step_duration_seconds_sum", &[]) > 0.0);
    assert_eq!(value(&t, "absa_trainer_samples_total", &[]), 320.0);
    assert_eq!(value(&t, "absa_trainer_epochs_total", &[]), 1.0);
    for kind in ["checkpoint_saved", "exported", "model_registered"] {
        assert_eq!(value(&t, "absa_job_events_total", &[("kind", kind)]), 1.0, "{kind}");
    }

    // The scorer: 3 shards succeeded, 250 documents, 250 predictions, no rejected row.
    let (s, s_declared) = scrape(&url(scorer, "/metrics"));
    assert_eq!(value(&s, "absa_build_info", &[("role", "scorer")]), 1.0);
    assert_eq!(value(&s, "absa_worker_messages_total", &[("queue", &format!("{prefix}.score")), ("outcome", "claimed")]), 3.0);
    assert_eq!(value(&s, "absa_worker_jobs_finished_total", &[("kind", "score_shard"), ("outcome", "succeeded")]), 3.0);
    assert_eq!(value(&s, "absa_job_queue_wait_seconds_count", &[("kind", "score_shard")]), 3.0);
    assert_eq!(value(&s, "absa_scorer_documents_total", &[]), 250.0);
    assert_eq!(value(&s, "absa_scorer_predictions_total", &[]), 250.0);
    assert_eq!(value(&s, "absa_scorer_rows_rejected_total", &[]), 0.0);
    // At least one model call per shard, at most one per document.
    let batches = value(&s, "absa_scorer_batch_duration_seconds_count", &[]);
    assert!((3.0..=250.0).contains(&batches), "{batches} batches");
    assert_eq!(value(&s, "absa_job_events_total", &[("kind", "scored")]), 3.0);

    // The scheduler: what it dispatched, that it leads, jobs by state, the queues and
    // live workers (sampled every 5 s by the leader: poll until a sample taken after the
    // jobs shows both workers live, every queue empty and the shards succeeded).
    let depth = |sch: &[Sample], queue: &str| -> Vec<f64> {
        sch.iter().filter(|(n, l, _)| n == "absa_queue_depth_messages" && l["queue"] == format!("{prefix}.{queue}")).map(|s| s.2).collect()
    };
    let queues = ["train", "score", "train.dead", "score.dead"];
    let deadline = Instant::now() + Duration::from_secs(30);
    let (sch, sch_declared) = loop {
        let (sch, declared) = scrape(&url(scheduler, "/metrics"));
        let workers_live = value(&sch, "absa_live_workers", &[("role", "scorer")]) == 1.0 && value(&sch, "absa_live_workers", &[("role", "trainer")]) == 1.0;
        let shards_done = value(&sch, "absa_jobs", &[("kind", "score_shard"), ("state", "succeeded")]) == 3.0;
        if workers_live && shards_done && queues.iter().all(|q| depth(&sch, q) == [0.0]) {
            break (sch, declared);
        }
        assert!(Instant::now() < deadline, "no sample with 1 trainer, 1 scorer and empty queues: {sch:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(value(&sch, "absa_build_info", &[("role", "scheduler")]), 1.0);
    assert_eq!(value(&sch, "absa_scheduler_jobs_dispatched_total", &[("kind", "train")]), 1.0);
    assert_eq!(value(&sch, "absa_scheduler_jobs_dispatched_total", &[("kind", "score_shard")]), 3.0);
    assert_eq!(value(&sch, "absa_scheduler_leader", &[]), 1.0);
    for (kind, state, n) in
        [("train", "succeeded", 1.0), ("train", "queued", 0.0), ("train", "running", 0.0), ("score", "succeeded", 1.0), ("score_shard", "failed", 0.0)]
    {
        assert_eq!(value(&sch, "absa_jobs", &[("kind", kind), ("state", state)]), n, "{kind} {state}");
    }
    assert!(sch_declared.contains("absa_predictions_rows"));
    // The shards' submissions, the fan-out and the parent's completion.
    for (kind, n) in [("submitted", 3.0), ("fanned_out", 1.0), ("completed", 1.0)] {
        assert_eq!(value(&sch, "absa_job_events_total", &[("kind", kind)]), n, "{kind}");
    }

    // The API (behind a key): its build, the latency of each request by route, what
    // was submitted and uploaded (320 + 48 training rows, 250 documents).
    let (api, api_declared) = scrape_with_key(&format!("{}/metrics", svc.api.base), &admin);
    assert_eq!(value(&api, "absa_build_info", &[("role", "api")]), 1.0);
    let submit = [("route", "/v1/jobs/train"), ("method", "POST"), ("status", "201")];
    assert_eq!(value(&api, "absa_api_request_duration_seconds_count", &submit), 1.0);
    assert_eq!(value(&api, "absa_api_request_duration_seconds_bucket", &[submit[0], submit[1], submit[2], ("le", "+Inf")]), 1.0);
    assert_eq!(value(&api, "absa_api_jobs_submitted_total", &[("kind", "train")]), 1.0);
    assert_eq!(value(&api, "absa_api_jobs_submitted_total", &[("kind", "score")]), 1.0);
    assert_eq!(value(&api, "absa_job_events_total", &[("kind", "submitted")]), 2.0);
    assert_eq!(value(&api, "absa_api_upload_rows_total", &[]), 618.0);

    // Each process's peak memory against the chart's memory request for its role: in
    // the laptop profile (models of MiniLM's size on CPU) for every role, and in the
    // defaults for the API and the scheduler, whose memory does not grow with the model.
    // The requests are sized from these figures: a process that outgrows its request
    // fails here first.
    for (role, profiles) in [("api", &["laptop", "default"][..]), ("scheduler", &["laptop", "default"]), ("trainer", &["laptop"]), ("scorer", &["laptop"])] {
        let pid = svc.processes.iter().find(|p| p.name == role).unwrap_or_else(|| panic!("no {role}")).pid();
        let peak = absa_e2e::peak_rss_mib(pid);
        for profile in profiles {
            let request = memory_request_mib(role, profile);
            eprintln!("{role}: peak RSS {peak:.0} MiB; {profile} request {request:.0} MiB");
            assert!(peak <= request, "{role}'s peak RSS {peak:.0} MiB is over the {profile} memory request of {request:.0} MiB");
        }
    }

    // Every metric the Grafana dashboard queries is served by some process.
    let served: BTreeSet<&String> = [&t_declared, &s_declared, &sch_declared, &api_declared].into_iter().flatten().collect();
    let wanted = dashboard_metrics();
    assert!(wanted.len() >= 15, "{wanted:?}");
    let missing: Vec<&String> = wanted.iter().filter(|m| !served.contains(m)).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics no process serves: {missing:?}");

    svc.stop().await;
}
