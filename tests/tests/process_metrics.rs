//! Every process serves Prometheus metrics, and they move by what a job implies.
//!
//! The scheduler, a trainer and a scorer each serve `/metrics`, `/healthz` and
//! `/readyz` on their own `ABSA_METRICS__BIND` port (the API on its own port, behind a
//! key). One training job (320 training rows, batch 16: 20 steps, one epoch) and one
//! scoring job (250 documents in shards of 100: 3 shards) run end to end; then every
//! process is scraped and its counters checked against those numbers, and every metric
//! the Grafana dashboard (`helm/absa/dashboards/absa.json`) queries must be one that
//! some process serves.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use absa_e2e::service::{corpus_documents, jsonl, laptops, Service};
use serde_json::json;

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus/OpenMetrics text format (comments skipped; label values may
/// hold braces and commas, as route templates do).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, mut rest) = match series.find('{') {
            Some(i) => (&series[..i], &series[i + 1..]),
            None => (series, ""),
        };
        let mut labels = BTreeMap::new();
        while let Some(eq) = rest.find("=\"") {
            let key = rest[..eq].trim_start_matches(',').to_owned();
            let mut chars = rest[eq + 2..].char_indices();
            let mut val = String::new();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break eq + 2 + i,
                    Some((_, '\\')) => val.extend(chars.next().map(|(_, c)| c)),
                    Some((_, c)) => val.push(c),
                    None => panic!("unterminated label in {line}"),
                }
            };
            labels.insert(key, val);
            rest = &rest[end + 1..];
        }
        out.push((name.to_owned(), labels, value));
    }
    out
}

/// The value of the sample `name` whose labels include `labels`; 0 when there is none
/// (a counter never incremented has no sample).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> =
        samples.iter().filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))).map(|s| s.2).collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {} samples", found.len());
    found.first().copied().unwrap_or(0.0)
}

fn get(url: &str) -> (u16, String) {
    let agent = ureq::Agent::new_with_config(ureq::Agent::config_builder().http_status_as_error(false).build());
    match agent.get(url).call() {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
        // Not listening yet.
        Err(e) => (0, e.to_string()),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `url` answers 200.
fn wait_ok(url: &str, svc: &Service) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while get(url).0 != 200 {
        assert!(Instant::now() < deadline, "{url} never answered 200\n{}", svc.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn scrape(url: &str) -> (Vec<Sample>, BTreeSet<String>) {
    let (status, text) = get(url);
    assert_eq!(status, 200, "{url}: {text}");
    assert!(text.trim_end().ends_with("# EOF"), "{url}: OpenMetrics text ends with # EOF");
    (parse(&text), declared(&text))
}

/// The sample names every `# TYPE` line declares: a family is served even before its
/// first sample (a gauge over no rows, a counter never incremented).
fn declared(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line: {line}"));
        let suffixes: &[&str] = match kind {
            // OpenMetrics names a counter's family without the `_total` of its samples.
            "counter" if !name.ends_with("_total") => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
        names.insert(name.to_owned());
    }
    names
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
    assert_eq!(value(&t, "absa_trainer_epochs_total", &[]), 1.0);

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

    // The scheduler: what it dispatched, that it leads, the queues and live workers
    // (sampled every 5 s by the leader: poll until a sample taken after the jobs shows
    // both workers live and every queue empty).
    let depth = |sch: &[Sample], queue: &str| -> Vec<f64> {
        sch.iter().filter(|(n, l, _)| n == "absa_queue_depth_messages" && l["queue"] == format!("{prefix}.{queue}")).map(|s| s.2).collect()
    };
    let queues = ["train", "score", "train.dead", "score.dead"];
    let deadline = Instant::now() + Duration::from_secs(30);
    let (sch, sch_declared) = loop {
        let (sch, declared) = scrape(&url(scheduler, "/metrics"));
        let workers_live = value(&sch, "absa_live_workers", &[("role", "scorer")]) == 1.0 && value(&sch, "absa_live_workers", &[("role", "trainer")]) == 1.0;
        if workers_live && queues.iter().all(|q| depth(&sch, q) == [0.0]) {
            break (sch, declared);
        }
        assert!(Instant::now() < deadline, "no sample with 1 trainer, 1 scorer and empty queues: {sch:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(value(&sch, "absa_build_info", &[("role", "scheduler")]), 1.0);
    assert_eq!(value(&sch, "absa_scheduler_jobs_dispatched_total", &[("kind", "train")]), 1.0);
    assert_eq!(value(&sch, "absa_scheduler_jobs_dispatched_total", &[("kind", "score_shard")]), 3.0);
    assert_eq!(value(&sch, "absa_scheduler_leader", &[]), 1.0);

    // The API (behind a key): its build and the latency of each request by route.
    let api = {
        let (status, text) = {
            let mut r = ureq::get(format!("{}/metrics", svc.api.base)).header("Authorization", format!("Bearer {admin}")).call().expect("API /metrics");
            (r.status().as_u16(), r.body_mut().read_to_string().expect("body"))
        };
        assert_eq!(status, 200);
        (parse(&text), declared(&text))
    };
    let (api, api_declared) = api;
    assert_eq!(value(&api, "absa_build_info", &[("role", "api")]), 1.0);
    let submit = [("route", "/v1/jobs/train"), ("method", "POST"), ("status", "201")];
    assert_eq!(value(&api, "absa_api_request_duration_seconds_count", &submit), 1.0);
    assert_eq!(value(&api, "absa_api_request_duration_seconds_bucket", &[submit[0], submit[1], submit[2], ("le", "+Inf")]), 1.0);

    // Every metric the Grafana dashboard queries is served by some process.
    let served: BTreeSet<&String> = [&t_declared, &s_declared, &sch_declared, &api_declared].into_iter().flatten().collect();
    let wanted = dashboard_metrics();
    assert!(wanted.len() >= 15, "{wanted:?}");
    let missing: Vec<&String> = wanted.iter().filter(|m| !served.contains(m)).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics no process serves: {missing:?}");

    svc.stop().await;
}
