//! The HTTP API end to end on the real Postgres and RabbitMQ, driven only through HTTP:
//! `absa-api` as a process where the test reads exact counts from its `/metrics` (1),
//! else the application built in the test process (`Service::start_in_process`: 2, 3,
//! the listings and the registry), beside the scheduler and workers as processes.
//! 1. access, uploads, idempotency, cancellation, retrains: no key (every documented
//!    route answers 401), wrong role (403), another team's ids (404 and no data);
//!    uploads report bad rows by line and keep the good ones; a resubmission with the
//!    same Idempotency-Key returns the first job; cancellation; a cron schedule and a
//!    new-rows trigger each fire a training job; `/metrics`.
//! 2. train → promote → score → export: a trained version becomes `production`; a worse
//!    retrain stays `candidate` (and a manual promotion of it is refused); a scoring job
//!    by alias; CSV and Parquet exports; a BI login created through the API reads its
//!    team's predictions and no base table.
//! 3. named targets: datasets mixing span rows and target-only rows, corpora naming a
//!    target per document, score jobs with stance targets (kept in the parent job).

use std::time::{Duration, Instant};

use absa_domain::records::labelled_row;
use absa_e2e::http::Answer;
use absa_e2e::scrape::{metrics_port, scrape, scrape_with_key, value, Sample};
use absa_e2e::service::{jsonl, laptops, Service};
use serde_json::{json, Value};
use uuid::Uuid;

/// POSTs `parts` after `headers` over a plain socket, ignoring write errors (the server
/// may answer and stop reading early), and returns the answer's text.
fn raw_post(base: &str, path: &str, headers: &str, parts: &[&[u8]]) -> String {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let _ = write!(stream, "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{headers}\r\n\r\n");
    for part in parts {
        if stream.write_all(part).is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Scrapes `port`'s `/metrics` until `ready` holds (the scheduler samples its gauges
/// every few seconds); the samples.
fn scrape_until(port: u16, what: &str, ready: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (samples, _) = scrape(&format!("http://127.0.0.1:{port}/metrics"));
        if ready(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "no sample with {what}: {samples:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn error_lines(a: &Answer) -> Vec<i64> {
    a.body["errors"].as_array().unwrap().iter().map(|e| e["line"].as_i64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn access_uploads_idempotency_cancellation_and_retrains() {
    // A 2-second cron must be allowed here to see one fire; teams come from `platform`.
    let mut svc = Service::start_with(&[("ABSA_API__MIN_SCHEDULE_INTERVAL_SECS", "1"), ("ABSA_API__PLATFORM_TEAM", "platform")]).await;
    let api = &svc.api;
    let alpha = svc.bootstrap_key("alpha");
    let beta = svc.bootstrap_key("beta");
    let (analyst, _) = svc.key(&alpha, "analyst");
    let (mlops, mlops_id) = svc.key(&alpha, "mlops");
    assert_eq!(api.get(Some(&analyst), "/v1/me").body["role"], "analyst");

    // No key, a malformed key, a made-up key: 401 on every documented /v1 route.
    let doc = api.get(None, "/openapi.json").body;
    let mut checked = 0;
    for (path, methods) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let concrete = path.replace("{id}", &Uuid::new_v4().to_string()).replace("{name}", "production");
        for method in methods.as_object().unwrap().keys() {
            for key in [None, Some("not-a-key"), Some("absa_0000")] {
                let a = api.send(&method.to_uppercase(), key, &concrete, Some(&json!({})), &[]);
                assert_eq!(a.status, 401, "{method} {path} with {key:?}: {a:?}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 3 * 30, "only {checked} route checks");

    // Uploads: every bad row reported by line, every good row kept.
    let train = laptops("train");
    let mut body = jsonl(&train[..40]);
    body += "{\"text\": \"abc\", \"aspect\": \"zz\", \"start\": 0, \"end\": 2, \"label\": \"positive\"}\n"; // 41: aspect is not the span
    body += "not json\n"; // 42
    body += "{\"text\": \"abc\", \"aspect\": \"ab\", \"start\": 0, \"end\": 2}\n"; // 43: no label
    body += "{\"text\": \"a\\u0000b\", \"aspect\": \"a\", \"start\": 0, \"end\": 1, \"label\": \"positive\"}\n"; // 44: NUL
    body += "{\"text\": \"abc\", \"aspect\": \"bc\", \"start\": 2, \"end\": 1, \"label\": \"negative\"}\n"; // 45: reversed span
    let a = api.upload(Some(&analyst), "/v1/datasets?name=laptops", body.as_bytes());
    assert_eq!(a.status, 403, "analysts do not upload datasets: {a:?}");
    let a = api.upload(Some(&mlops), "/v1/datasets?name=laptops", body.as_bytes());
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!((a.body["rows_added"].as_i64(), a.body["error_count"].as_i64()), (Some(40), Some(5)), "{a:?}");
    assert_eq!(error_lines(&a), vec![41, 42, 43, 44, 45]);
    let dataset = a.body["dataset_id"].as_str().unwrap().to_owned();
    let stored = api.get(Some(&analyst), &format!("/v1/datasets/{dataset}/errors"));
    assert_eq!(stored.body["errors"].as_array().unwrap().len(), 5);
    assert_eq!(api.get(Some(&analyst), &format!("/v1/datasets/{dataset}")).body["rows"]["train"], 40);
    // Over the cap (2,000,000 bytes here): refused at once when Content-Length says so,
    // and mid-stream when a chunked body passes it. Raw HTTP, so the client keeps
    // reading the answer after the server stops reading the body.
    let declared = format!("Content-Length: 2100000\r\nAuthorization: Bearer {mlops}");
    assert!(raw_post(&api.base, "/v1/datasets?name=big", &declared, &[&[b'x'; 1000]]).starts_with("HTTP/1.1 413"));
    let chunk = format!("{:x}\r\n{}\r\n", 100_000, "x".repeat(100_000));
    let chunks: Vec<&[u8]> = (0..21).map(|_| chunk.as_bytes()).chain([&b"0\r\n\r\n"[..]]).collect();
    let chunked = format!("Transfer-Encoding: chunked\r\nAuthorization: Bearer {mlops}");
    assert!(raw_post(&api.base, "/v1/datasets?name=big", &chunked, &chunks).starts_with("HTTP/1.1 413"));
    assert_eq!(api.upload(Some(&mlops), "/v1/datasets?name=empty", b"").status, 400);
    let a = api.upload(Some(&mlops), "/v1/datasets?name=broken&format=parquet", b"PAR1 not really");
    assert_eq!(a.status, 400, "{a:?}");
    assert!(api.get(Some(&mlops), "/v1/datasets").body["datasets"].as_array().unwrap().iter().all(|d| d["name"] == "laptops"), "failed uploads leave nothing");

    let csv = "id,text,aspect,start,end,source\nr1,Great battery life,battery life,6,18,web\nr2,\"Screen, too dim\",Screen,0,6,app\nr1,duplicate id,,,,web\nr3,,,,,web\nr4,no target here,,,,web\n";
    let a = api.upload(Some(&analyst), "/v1/corpora?name=reviews&format=csv", csv.as_bytes());
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!((a.body["documents_added"].as_i64(), a.body["error_count"].as_i64()), (Some(3), Some(2)), "{a:?}");
    assert_eq!(error_lines(&a), vec![4, 5]);
    let corpus = a.body["corpus_id"].as_str().unwrap().to_owned();

    // Roles.
    let train_request = json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "hyperparameters": { "epochs": 1 } });
    for (key, method, path, body) in [
        (&analyst, "POST", "/v1/jobs/train", train_request.clone()),
        (&analyst, "PUT", "/v1/aliases/production", json!({ "model_version_id": Uuid::new_v4() })),
        (&analyst, "POST", "/v1/schedules", json!({})),
        (&analyst, "POST", "/v1/keys", json!({ "name": "x", "role": "admin" })),
        (&mlops, "POST", "/v1/keys", json!({ "name": "x", "role": "admin" })),
        (&mlops, "POST", "/v1/teams", json!({ "name": "gamma" })),
        (&mlops, "GET", "/v1/keys", json!({})),
        (&mlops, "POST", "/v1/bi-logins", json!({ "role_name": "x", "password": "y" })),
    ] {
        let a = api.send(method, Some(key), path, Some(&body), &[]);
        assert_eq!(a.status, 403, "{method} {path}: {a:?}");
    }
    let a = api.send("POST", Some(&mlops), "/v1/jobs/train", Some(&json!({ "dataset_id": dataset, "base_model": "x", "hyperparameters": { "lr": 1 } })), &[]);
    assert_eq!(a.status, 422, "unknown hyperparameter: {a:?}");

    // Idempotency and cancellation.
    let first = api.send("POST", Some(&mlops), "/v1/jobs/train", Some(&train_request), &[("Idempotency-Key", "nightly-1")]);
    assert_eq!(first.status, 201, "{first:?}");
    let again = api.send("POST", Some(&mlops), "/v1/jobs/train", Some(&train_request), &[("Idempotency-Key", "nightly-1")]);
    assert_eq!((again.status, &again.body["id"]), (200, &first.body["id"]));
    let job = first.body["id"].as_str().unwrap().to_owned();
    let listed = api.get(Some(&analyst), "/v1/jobs?kind=train").body;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(api.send("POST", Some(&analyst), &format!("/v1/jobs/{job}/cancel"), None, &[]).status, 403, "training is mlops' to cancel");
    let a = api.send("POST", Some(&mlops), &format!("/v1/jobs/{job}/cancel"), None, &[]);
    assert_eq!((a.status, a.body["state"].as_str()), (200, Some("cancelled")), "{a:?}");
    assert_eq!(api.send("POST", Some(&mlops), &format!("/v1/jobs/{job}/cancel"), None, &[]).status, 409);
    let score = api.post(&analyst, "/v1/jobs/score", &json!({ "corpus_id": corpus, "alias": "production" }));
    assert_eq!(score.status, 404, "no production alias yet: {score:?}");

    // Teams are created by platform admins only; another team: 404 for every id of
    // alpha's, and never its data.
    let a = api.post(&alpha, "/v1/teams", &json!({ "name": "gamma" }));
    assert_eq!(a.status, 403, "a team's admin cannot create teams: {a:?}");
    let platform = svc.bootstrap_key("platform");
    let gamma = api.post(&platform, "/v1/teams", &json!({ "name": "gamma" }));
    assert_eq!(gamma.status, 201, "{gamma:?}");
    let again = api.post(&platform, "/v1/teams", &json!({ "name": "alpha" }));
    assert_eq!((again.status, again.body["error"].as_str()), (409, Some("that team name is taken")), "{again:?}");
    for path in [
        format!("/v1/datasets/{dataset}"),
        format!("/v1/datasets/{dataset}/errors"),
        format!("/v1/corpora/{corpus}"),
        format!("/v1/corpora/{corpus}/errors"),
        format!("/v1/jobs/{job}"),
        format!("/v1/jobs/{job}/events"),
        format!("/v1/jobs/{job}/metrics"),
        format!("/v1/jobs/{job}/errors"),
        format!("/v1/jobs/{job}/predictions"),
    ] {
        let a = api.get(Some(&beta), &path);
        assert_eq!(a.status, 404, "{path}: {a:?}");
        // The shape of an unknown id's answer: the problem (RFC 9457) and this request's
        // id, nothing else.
        assert_eq!(a.body.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["detail", "error", "request_id", "status", "title", "type"], "{path}: {a:?}");
    }
    for (method, path, body) in [
        ("POST", format!("/v1/jobs/{job}/cancel"), None),
        ("POST", "/v1/jobs/score".to_string(), Some(json!({ "corpus_id": corpus, "model_version_id": Uuid::new_v4() }))),
        ("POST", "/v1/jobs/train".to_string(), Some(json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2" }))),
        ("DELETE", format!("/v1/keys/{mlops_id}"), None),
    ] {
        let a = api.send(method, Some(&beta), &path, body.as_ref(), &[]);
        assert_eq!(a.status, 404, "{method} {path}: {a:?}");
    }
    for list in ["/v1/datasets", "/v1/corpora", "/v1/jobs", "/v1/models", "/v1/aliases", "/v1/schedules"] {
        let a = api.get(Some(&beta), list);
        assert_eq!(a.status, 200);
        let items = a.body.as_object().unwrap().values().find_map(Value::as_array).unwrap_or_else(|| panic!("{list}: no list in {a:?}")).len();
        assert_eq!(items, 0, "{list} shows another team's rows: {a:?}");
    }

    // Retrains: a cron schedule fires; a new-rows trigger fires after an upload.
    let (scheduler_port, bind) = metrics_port();
    svc.run_with("absa-scheduler", &["run"], "scheduler", &bind);
    let api = &svc.api;
    let a = api.post(&mlops, "/v1/schedules", &json!({ "name": "bad", "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "cron": "61 * * * *" }));
    assert_eq!(a.status, 422, "{a:?}");
    let cron =
        api.post(&mlops, "/v1/schedules", &json!({ "name": "every-2s", "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "cron": "*/2 * * * * *" }));
    assert_eq!(cron.status, 201, "{cron:?}");
    let on_rows = api.post(
        &mlops,
        "/v1/schedules",
        &json!({ "name": "on-rows", "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "on_new_rows": true, "promote": { "metric": "accuracy" } }),
    );
    assert_eq!(on_rows.status, 201, "{on_rows:?}");
    let fired_job = |schedule: &Value| -> Option<String> {
        let a = api.get(Some(&mlops), &format!("/v1/schedules/{}", schedule["id"].as_str().unwrap()));
        a.body["last_job_id"].as_str().map(str::to_owned)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let cron_job = loop {
        if let Some(j) = fired_job(&cron.body) {
            break j;
        }
        assert!(Instant::now() < deadline, "the cron schedule never fired\n{}", svc.logs());
        std::thread::sleep(Duration::from_millis(300));
    };
    let j = api.get(Some(&mlops), &format!("/v1/jobs/{cron_job}")).body;
    assert_eq!(j["parameters"]["retrain"]["reason"], "cron", "{j}");
    assert_eq!(j["parameters"]["promote"], json!({ "alias": "production", "metric": "macro_f1" }));
    assert!(j["events"].as_array().unwrap().iter().any(|e| e["kind"] == "retrain_fired"), "{j}");
    assert_eq!(fired_job(&on_rows.body), None, "no new rows yet");
    let a = api.upload(Some(&mlops), "/v1/datasets?name=laptops", jsonl(&train[40..50]).as_bytes());
    assert_eq!((a.status, a.body["rows_total"].as_i64()), (201, Some(50)), "{a:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows_job = loop {
        if let Some(j) = fired_job(&on_rows.body) {
            break j;
        }
        assert!(Instant::now() < deadline, "the new-rows trigger never fired\n{}", svc.logs());
        std::thread::sleep(Duration::from_millis(300));
    };
    let j = api.get(Some(&mlops), &format!("/v1/jobs/{rows_job}")).body;
    assert_eq!(j["parameters"]["retrain"]["reason"], "new_rows", "{j}");
    assert_eq!(j["parameters"]["promote"]["metric"], "accuracy");
    for s in [&cron.body, &on_rows.body] {
        assert_eq!(api.send("DELETE", Some(&mlops), &format!("/v1/schedules/{}", s["id"].as_str().unwrap()), None, &[]).status, 204);
    }
    for j in api.get(Some(&mlops), "/v1/jobs?kind=train").body["jobs"].as_array().unwrap() {
        api.send("POST", Some(&mlops), &format!("/v1/jobs/{}/cancel", j["id"].as_str().unwrap()), None, &[]);
    }

    // Revoked keys stop working; metrics need a key.
    assert_eq!(api.send("DELETE", Some(&alpha), &format!("/v1/keys/{mlops_id}"), None, &[]).status, 204);
    assert_eq!(api.get(Some(&mlops), "/v1/me").status, 401);
    assert_eq!(api.get(Some(&mlops), "/metrics").status, 401, "a revoked key");
    assert_eq!(api.get(None, "/metrics").status, 401, "no key");
    // The API's own counters; the scheduler's count of the retrains it fired is the
    // number of `retrain_fired` events in the jobs' logs.
    let (metrics, _) = scrape_with_key(&format!("{}/metrics", api.base), &analyst);
    let route = [("route", "/v1/datasets"), ("method", "POST"), ("status", "201")];
    assert!(value(&metrics, "absa_api_request_duration_seconds_count", &route) >= 1.0, "{metrics:?}");
    let pool = sqlx::PgPool::connect(&svc.db_url).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM dataset_rows) + (SELECT count(*) FROM documents)").fetch_one(&pool).await.unwrap();
    assert_eq!(value(&metrics, "absa_api_upload_rows_total", &[]), stored as f64, "every stored row counted once: {metrics:?}");
    let fired: i64 = sqlx::query_scalar("SELECT count(*) FROM job_events WHERE kind = 'retrain_fired'").fetch_one(&pool).await.unwrap();
    assert!(fired >= 2, "{fired}");
    scrape_until(scheduler_port, &format!("{fired} retrains fired"), |s| value(s, "absa_job_events_total", &[("kind", "retrain_fired")]) == fired as f64);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn train_promote_score_and_export() {
    let mut svc = Service::start_in_process(&[]).await;
    let ((scheduler_port, scheduler_bind), (trainer_port, trainer_bind), (scorer_port, scorer_bind)) = (metrics_port(), metrics_port(), metrics_port());
    svc.run_with("absa-scheduler", &["run"], "scheduler", &scheduler_bind);
    svc.run_with("absa-trainer", &["work"], "trainer", &trainer_bind);
    svc.run_with("absa-scorer", &["work"], "scorer", &scorer_bind);
    let admin = svc.bootstrap_key("alpha");
    let (analyst, _) = svc.key(&admin, "analyst");
    let (mlops, _) = svc.key(&admin, "mlops");
    let api = &svc.api;

    let a = api.upload(Some(&mlops), "/v1/datasets?name=laptops", jsonl(&laptops("train")[..600]).as_bytes());
    assert_eq!((a.status, a.body["rows_added"].as_i64()), (201, Some(600)), "{a:?}");
    let dataset = a.body["dataset_id"].as_str().unwrap().to_owned();

    // The trainer records the base models of its models folder when it starts: MiniLM,
    // not the tokenizer-only folder beside it. 22,713,728 weights, as the safetensors
    // header counts them (checked with Python's json and struct modules).
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let b = api.get(Some(&analyst), "/v1/base-models").body;
        if b["base_models"].as_array().is_some_and(|a| !a.is_empty()) {
            break b;
        }
        assert!(Instant::now() < deadline, "no base model recorded: {b}\n{}", svc.logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    let models = listed["base_models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{listed}");
    assert_eq!(
        (models[0]["name"].as_str(), models[0]["model_type"].as_str(), models[0]["parameters"].as_i64()),
        (Some("all-minilm-l6-v2"), Some("bert"), Some(22_713_728))
    );
    // A job naming a model no trainer has is refused at submission, naming the field.
    let a = api.post(&mlops, "/v1/jobs/train", &json!({ "dataset_id": dataset, "base_model": "xlm-roberta-large" }));
    assert_eq!((a.status, a.body["field"].as_str()), (422, Some("base_model")), "{a:?}");
    assert!(a.body["detail"].as_str().unwrap().contains("no trainer has it (they have: all-minilm-l6-v2"), "{a:?}");

    let train = |lr: f64, epochs: u32| {
        let a = api.post(
            &mlops,
            "/v1/jobs/train",
            &json!({
            "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "promote": {},
            "hyperparameters": { "learning_rate": lr, "epochs": epochs, "warmup_steps": 0, "seed": 42 } }),
        );
        assert_eq!(a.status, 201, "{a:?}");
        let job = a.body["id"].as_str().unwrap().to_owned();
        let done = svc.wait_job(&mlops, &job, Duration::from_secs(600));
        assert_eq!(done["state"], "succeeded", "{done}\n{}", svc.logs());
        (job, done["model_version_id"].as_str().unwrap().to_owned(), done)
    };

    // The first version has nothing to beat: production and candidate.
    let (job1, v1, done1) = train(1e-4, 2);
    assert!(done1["events"].as_array().unwrap().iter().any(|e| e["kind"] == "promoted"), "{done1}");
    let epochs = api.get(Some(&analyst), &format!("/v1/jobs/{job1}/metrics")).body;
    assert_eq!(epochs["epochs"].as_array().unwrap().len(), 2, "{epochs}");
    assert!(epochs["epochs"][0]["detail"].is_object());
    let aliases = |key: &str| -> Vec<(String, String)> {
        api.get(Some(key), "/v1/aliases").body["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["name"].as_str().unwrap().to_owned(), a["model_version_id"].as_str().unwrap().to_owned()))
            .collect()
    };
    assert_eq!(aliases(&analyst), vec![("candidate".into(), v1.clone()), ("production".into(), v1.clone())]);

    // A retrain that barely moves the weights is worse: it stays candidate.
    let (job2, v2, done2) = train(1e-9, 1);
    let compare = api.get(Some(&analyst), &format!("/v1/models/compare?ids={v1},{v2}")).body;
    let f1 = |v: &str| compare["metrics"]["validation_macro_f1"][v].as_f64().unwrap();
    assert!(f1(&v2) < f1(&v1), "the near-zero learning rate should be worse: {compare}");
    assert!(done2["events"].as_array().unwrap().iter().any(|e| e["kind"] == "promotion_refused"), "{done2}");
    assert_eq!(aliases(&analyst), vec![("candidate".into(), v2.clone()), ("production".into(), v1.clone())]);
    assert_eq!(api.send("POST", Some(&analyst), &format!("/v1/models/{v2}/promote"), Some(&json!({})), &[]).status, 403);
    let refused = api.send("POST", Some(&mlops), &format!("/v1/models/{v2}/promote"), Some(&json!({ "alias": "production" })), &[]);
    assert_eq!((refused.status, refused.body["promoted"].as_bool()), (409, Some(false)), "{refused:?}");
    assert_eq!(refused.body["current"].as_f64(), Some(f1(&v1)));
    let model = api.get(Some(&analyst), &format!("/v1/models/{v1}")).body;
    assert_eq!(model["aliases"], json!(["production"]), "{model}");
    // Filed under the task's registered model; its lineage names the dataset snapshot:
    // the 600 rows as the trainer read them (train and the validation split it made).
    assert_eq!(model["model"], "sentiment", "{model}");
    let snapshot = &model["lineage"]["dataset"];
    assert_eq!((snapshot["id"].as_str(), snapshot["rows"].as_i64()), (Some(dataset.as_str()), Some(600)), "{model}");
    // The hash of the rows as typed (line, text, target, span, label): the uploaded
    // records, each under its upload line, are exactly what the trainer trained on.
    let columns = absa_domain::records::Columns::default();
    let uploaded: Vec<_> = laptops("train")[..600].iter().enumerate().map(|(i, r)| labelled_row(i + 1, r.as_object().unwrap(), &columns).unwrap()).collect();
    let expected = absa_domain::LabelledData { train: uploaded, ..Default::default() }.sha256();
    assert_eq!(snapshot["sha256"].as_str(), Some(expected.as_str()), "{model}");
    // Versions page newest first and filter by base model and dataset.
    let page = api.get(Some(&analyst), "/v1/models?limit=1").body;
    assert_eq!((page["models"][0]["id"].as_str(), page["has_more"].as_bool()), (Some(v2.as_str()), Some(true)), "{page}");
    let after = page["next_after"].as_str().unwrap();
    let page = api.get(Some(&analyst), &format!("/v1/models?limit=1&after={after}")).body;
    assert_eq!((page["models"][0]["id"].as_str(), page["has_more"].as_bool()), (Some(v1.as_str()), Some(false)), "{page}");
    let count = |query: &str| api.get(Some(&analyst), &format!("/v1/models?{query}")).body["models"].as_array().map(Vec::len);
    assert_eq!(count(&format!("base_model=all-minilm-l6-v2&dataset_id={dataset}")), Some(2));
    assert_eq!((count("base_model=xlm-roberta-base"), count(&format!("dataset_id={}", Uuid::new_v4()))), (Some(0), Some(0)));
    assert_eq!(model["lineage"]["training_job_id"], job1.as_str());
    let _ = job2;

    // Score the test texts (labels held back) with the production version.
    let test = laptops("test");
    let docs: Vec<Value> = test[..200]
        .iter()
        .enumerate()
        .map(|(i, r)| json!({ "id": format!("t{i}"), "text": r["text"], "aspect": r["aspect"], "start": r["start"], "end": r["end"] }))
        .collect();
    let a = api.upload(Some(&analyst), "/v1/corpora?name=laptops-test", jsonl(&docs).as_bytes());
    assert_eq!((a.status, a.body["documents_added"].as_i64()), (201, Some(200)), "{a:?}");
    let corpus = a.body["corpus_id"].as_str().unwrap().to_owned();
    let request = json!({ "corpus_id": corpus, "alias": "production", "shard_size": 100 });
    let a = api.send("POST", Some(&analyst), "/v1/jobs/score", Some(&request), &[("Idempotency-Key", "score-1")]);
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.body["parameters"]["model_version_id"], v1.as_str());
    let job = a.body["id"].as_str().unwrap().to_owned();
    let done = svc.wait_job(&analyst, &job, Duration::from_secs(300));
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!((done["shards"]["total"].as_i64(), done["shards"]["succeeded"].as_i64(), done["predictions"].as_i64()), (Some(2), Some(2), Some(200)), "{done}");

    let (status, bytes) = api.get_bytes(&analyst, &format!("/v1/jobs/{job}/predictions?format=csv"));
    assert_eq!(status, 200);
    let text = String::from_utf8(bytes).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    assert_eq!(header[..9], ["external_id", "seq", "target_index", "aspect", "span_start", "span_end", "label", "confidence", "model_version_id"]);
    // Then a probability per class of the version, in its label order.
    let version_labels = api.get(Some(&analyst), &format!("/v1/models/{v1}")).body["label_names"].clone();
    let classes: Vec<String> =
        version_labels.as_array().unwrap_or_else(|| panic!("{version_labels}")).iter().map(|l| format!("prob_{}", l.as_str().unwrap())).collect();
    assert_eq!(header[9..], classes.iter().map(String::as_str).collect::<Vec<_>>());
    let rows: Vec<Vec<String>> = csv_rows(&text);
    for r in &rows {
        let p: Vec<f64> = r[9..].iter().map(|v| v.parse().unwrap()).collect();
        let best = (0..p.len()).max_by(|&i, &j| p[i].total_cmp(&p[j])).unwrap();
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{r:?}");
        assert_eq!(
            (classes[best].as_str(), p[best]),
            (format!("prob_{}", r[6]).as_str(), r[7].parse::<f64>().unwrap()),
            "the label is the likeliest class: {r:?}"
        );
    }
    assert_eq!(rows.len(), 200);
    let correct = rows.iter().filter(|r| test[r[0][1..].parse::<usize>().unwrap()]["label"] == r[6].as_str()).count();
    let accuracy = correct as f64 / 200.0;
    eprintln!("held-back accuracy of the production version on 200 test rows: {accuracy:.3}");
    // Better than always answering the commonest label of these rows (an always-positive
    // model would score that share), and more than one label predicted.
    let mut counts = std::collections::HashMap::new();
    for r in &test[..200] {
        *counts.entry(r["label"].as_str().unwrap().to_owned()).or_insert(0usize) += 1;
    }
    let majority = *counts.values().max().unwrap() as f64 / 200.0;
    let predicted: std::collections::HashSet<&str> = rows.iter().map(|r| r[6].as_str()).collect();
    assert!(accuracy > majority && predicted.len() > 1, "accuracy {accuracy} vs the commonest label's share {majority}; predicted {predicted:?}");
    let (status, parquet) = api.get_bytes(&analyst, &format!("/v1/jobs/{job}/predictions?format=parquet"));
    assert_eq!(status, 200);
    assert!(parquet.starts_with(b"PAR1") && parquet.ends_with(b"PAR1") && parquet.len() > 1000, "{} bytes", parquet.len());

    // The job system's figures, each from the process that owns it: jobs by state
    // from the scheduler's leader, epochs and promotion decisions from the trainer,
    // shards and predictions from the scorer.
    let jobs = [("score_shard", "succeeded", 2.0), ("score", "succeeded", 1.0), ("train", "succeeded", 2.0), ("train", "running", 0.0)];
    scrape_until(scheduler_port, "the jobs' final states", |s| {
        jobs.iter().all(|(kind, state, n)| value(s, "absa_jobs", &[("kind", kind), ("state", state)]) == *n)
    });
    let (trainer, _) = scrape(&format!("http://127.0.0.1:{trainer_port}/metrics"));
    assert_eq!(value(&trainer, "absa_trainer_epochs_total", &[]), 3.0, "2 + 1 epochs");
    assert_eq!(value(&trainer, "absa_job_events_total", &[("kind", "promoted")]), 1.0);
    assert_eq!(value(&trainer, "absa_job_events_total", &[("kind", "promotion_refused")]), 1.0);
    assert!(value(&trainer, "absa_trainer_samples_total", &[]) > 0.0);
    let (scorer, _) = scrape(&format!("http://127.0.0.1:{scorer_port}/metrics"));
    assert_eq!(value(&scorer, "absa_worker_jobs_finished_total", &[("kind", "score_shard"), ("outcome", "succeeded")]), 2.0);
    assert_eq!(value(&scorer, "absa_scorer_predictions_total", &[]), 200.0);
    assert_eq!(value(&scorer, "absa_job_events_total", &[("kind", "scored")]), 2.0);

    // A BI login made through the API reads the team's predictions and no base table.
    let role = format!("bi_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let a = api.post(&admin, "/v1/bi-logins", &json!({ "role_name": role, "password": "correct-horse-battery", "valid_days": 400 }));
    assert_eq!(a.status, 422, "at most a year: {a:?}");
    let a = api.post(&admin, "/v1/bi-logins", &json!({ "role_name": role, "password": "correct-horse-battery", "valid_days": 7 }));
    assert_eq!(a.status, 201, "{a:?}");
    let listed = api.get(Some(&admin), "/v1/bi-logins").body;
    assert_eq!(listed["bi_logins"][0]["role_name"], role.as_str(), "{listed}");
    let after = api.get(Some(&admin), &format!("/v1/bi-logins?limit=1&after={role}")).body;
    assert_eq!((listed["has_more"].as_bool(), after["bi_logins"].as_array().map(Vec::len)), (Some(false), Some(0)), "by name, after the cursor: {after}");
    assert_eq!(listed["bi_logins"][0]["valid_until"].as_str().map(|t| &t[..10]), a.body["valid_until"].as_str().map(|t| &t[..10]), "{listed} {a:?}");
    let bi_url = svc.db_url.replacen("absa:absa@", &format!("{role}:correct-horse-battery@"), 1);
    let bi = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&bi_url).await.expect("BI login connects");
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM bi_sentiment").fetch_one(&bi).await.unwrap();
    assert_eq!(seen, 200);
    let denied = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM predictions").fetch_one(&bi).await.unwrap_err();
    assert!(denied.to_string().contains("permission denied"), "{denied}");
    bi.close().await;
    assert_eq!(api.send("DELETE", Some(&analyst), &format!("/v1/bi-logins/{role}"), None, &[]).status, 403);
    assert_eq!(api.send("DELETE", Some(&admin), &format!("/v1/bi-logins/{role}"), None, &[]).status, 204);
    assert_eq!(api.send("DELETE", Some(&admin), &format!("/v1/bi-logins/{role}"), None, &[]).status, 404);
    let gone = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&bi_url).await;
    assert!(gone.is_err(), "a dropped login cannot connect");

    // A job asking for GPUs waits while no live trainer offers that many (this one has
    // none), and says why in its events; more than one machine's worth is refused.
    let a = api.post(&mlops, "/v1/jobs/train", &json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "gpus": 2 }));
    assert_eq!(a.status, 201, "{a:?}");
    let id = a.body["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let job = api.get(Some(&mlops), &format!("/v1/jobs/{id}")).body;
        let events = job["events"].as_array().cloned().unwrap_or_default();
        if let Some(e) = events.iter().find(|e| e["kind"] == "waiting_for_gpus") {
            assert_eq!(job["state"], "queued", "{job}");
            break e.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no waiting_for_gpus event: {job}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(waiting["detail"]["message"].as_str().unwrap_or_default().contains("no live trainer offers 2 GPU(s)"), "{waiting}");
    assert_eq!(api.send("POST", Some(&mlops), &format!("/v1/jobs/{id}/cancel"), None, &[]).status, 200);
    let too_many = api.post(&mlops, "/v1/jobs/train", &json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "gpus": 9 }));
    assert_eq!(too_many.status, 422, "{too_many:?}");
    svc.stop().await;
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    // The exported fields hold no commas or quotes except in aspects; split carefully.
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(std::mem::take(&mut field)),
                _ => field.push(c),
            }
        }
        fields.push(field);
        rows.push(fields);
    }
    rows
}

/// Named targets: a dataset mixing span rows and target-only rows (stance toward
/// something the text never mentions) keeps both, target-only rows with no span; bad
/// rows of either kind are reported by line; a corpus row's `target` is stored; a score
/// job's `targets` are checked and kept in the parent job's parameters only.
#[tokio::test(flavor = "multi_thread")]
async fn named_targets_in_datasets_corpora_and_score_jobs() {
    let svc = Service::start_in_process(&[]).await;
    let api = &svc.api;
    let admin = svc.bootstrap_key("alpha");
    let (analyst, _) = svc.key(&admin, "analyst");
    let (mlops, _) = svc.key(&admin, "mlops");
    let pool = sqlx::PgPool::connect(&svc.db_url).await.expect("connect");

    let rows = [
        json!({"text": "We must protect the unborn.", "target": "legalization of abortion", "label": "against"}), // 1
        json!({"text": "Merz said no to the plan.", "target": "CDU", "aspect": "Merz", "start": 0, "end": 4, "label": "neither"}), // 2
        json!({"text": "My body, my choice!", "target": "legalization of abortion", "label": "favor"}),           // 3
        json!({"text": "The Greens want a speed limit.", "aspect": "Greens", "start": 4, "end": 10, "label": "favor"}), // 4
        json!({"text": "No target at all.", "label": "favor"}),                                                   // 5: neither a target nor a span
        json!({"text": "Half a span.", "target": "x", "start": 0, "label": "favor"}),                             // 6: start without end
        json!({"text": "Tax cuts now.", "target": "  ", "label": "favor"}),                                       // 7: a blank target is none
        json!({"text": "Bad\u{0}target", "target": "a\u{0}b", "label": "against"}),                               // 8: NUL
    ];
    let a = api.upload(Some(&mlops), "/v1/datasets?name=stance&labels=against,neither,favor", jsonl(&rows).as_bytes());
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!((a.body["rows_added"].as_i64(), a.body["error_count"].as_i64()), (Some(4), Some(4)), "{a:?}");
    assert_eq!(error_lines(&a), vec![5, 6, 7, 8]);
    let reasons: Vec<&str> = a.body["errors"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert!(reasons[0].starts_with("no target") && reasons[1].contains("\"start\" without \"end\""), "{reasons:?}");
    type StoredRow = (i32, String, Option<i32>, Option<i32>, String);
    let stored: Vec<StoredRow> =
        sqlx::query_as("SELECT line, aspect, span_start, span_end, label FROM dataset_rows ORDER BY line").fetch_all(&pool).await.unwrap();
    assert_eq!(
        stored,
        vec![
            (1, "legalization of abortion".into(), None, None, "against".into()),
            (2, "CDU".into(), Some(0), Some(4), "neither".into()),
            (3, "legalization of abortion".into(), None, None, "favor".into()),
            (4, "Greens".into(), Some(4), Some(10), "favor".into()),
        ]
    );
    // F_avg (stance's mean F1 of against and favor) is a promotion and sweep metric
    // only for datasets whose labels have both: refused before anything trains.
    let stance_dataset = a.body["dataset_id"].as_str().unwrap().to_owned();
    let a = api.upload(Some(&mlops), "/v1/datasets?name=reviews", jsonl(&laptops("train")[..5]).as_bytes());
    let sentiment_dataset = a.body["dataset_id"].as_str().unwrap().to_owned();
    let train = |dataset: &str| json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "promote": { "metric": "f_avg" } });
    assert_eq!(api.post(&mlops, "/v1/jobs/train", &train(&stance_dataset)).status, 201);
    let a = api.post(&mlops, "/v1/jobs/train", &train(&sentiment_dataset));
    assert!(a.status == 422 && a.body.to_string().contains("promote: metric f_avg"), "{a:?}");
    let sweep = json!({ "dataset_id": sentiment_dataset, "base_model": "all-minilm-l6-v2", "grid": { "seed": [1, 2] }, "metric": "f_avg" });
    let a = api.post(&mlops, "/v1/jobs/sweep", &sweep);
    assert!(a.status == 422 && a.body.to_string().contains("metric: metric f_avg"), "{a:?}");

    // CSV: empty cells are absent fields, so both kinds mix there too.
    let csv = "text,aspect,start,end,target,label\nGood fan,fan,5,8,,positive\nWe should ban guns,,,,gun control,favor\n";
    let a = api.upload(Some(&mlops), "/v1/datasets?name=stance&format=csv&split=test", csv.as_bytes());
    assert_eq!((a.status, a.body["rows_added"].as_i64(), a.body["error_count"].as_i64()), (201, Some(2), Some(0)), "{a:?}");

    let csv = "id,text,aspect,start,end,target\nd1,Merz said no,Merz,0,4,CDU\nd2,We must protect the unborn,,,,legalization of abortion\nd3,plain text,,,,\nd4,bad target,,,,\"a\u{0}b\"\n";
    let a = api.upload(Some(&analyst), "/v1/corpora?name=news&format=csv", csv.as_bytes());
    assert_eq!((a.status, a.body["documents_added"].as_i64()), (201, Some(3)), "{a:?}");
    assert_eq!(error_lines(&a), vec![5]);
    let corpus = a.body["corpus_id"].as_str().unwrap().to_owned();
    type Document = (String, Option<String>, Option<String>, Option<i32>, serde_json::Value);
    let documents: Vec<Document> =
        sqlx::query_as("SELECT external_id, target, aspect, span_start, metadata FROM documents ORDER BY seq").fetch_all(&pool).await.unwrap();
    assert_eq!(
        documents,
        vec![
            ("d1".into(), Some("CDU".into()), Some("Merz".into()), Some(0), json!({})),
            ("d2".into(), Some("legalization of abortion".into()), None, None, json!({})),
            ("d3".into(), None, None, None, json!({})),
        ]
    );

    // Score jobs with stance targets (a version of this team, made here: nothing trains).
    let team: Uuid = sqlx::query_scalar("SELECT id FROM teams WHERE name = 'alpha'").fetch_one(&pool).await.unwrap();
    let version = Uuid::new_v4();
    sqlx::query("INSERT INTO model_versions (id, team_id, base_model, label_names) VALUES ($1, $2, 'stance', '{against,neither,favor}')")
        .bind(version)
        .bind(team)
        .execute(&pool)
        .await
        .unwrap();
    let targets = json!([{"name": "CDU", "aliases": ["Union", "Christdemokraten"]}, {"name": "legalization of abortion"}]);
    let a = api.post(&analyst, "/v1/jobs/score", &json!({ "corpus_id": corpus, "model_version_id": version, "targets": targets }));
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(
        a.body["parameters"]["targets"],
        json!([{"name": "CDU", "aliases": ["Union", "Christdemokraten"]}, {"name": "legalization of abortion", "aliases": []}])
    );
    let score = |targets: Value| api.post(&analyst, "/v1/jobs/score", &json!({ "corpus_id": corpus, "model_version_id": version, "targets": targets }));
    for (targets, status, reason) in [
        (json!([]), 422, "targets: 1 to 100 targets, not 0"),
        (json!([{"name": "CDU"}, {"name": "cdu"}]), 422, "the same name as targets[0]"),
        (json!([{"name": " "}]), 422, "not blank"),
        (json!([{"name": "CDU", "aliases": vec!["u"; 51]}]), 422, "at most 50"),
        (json!([{"name": "CDU", "alias": ["Union"]}]), 400, "unknown field"),
    ] {
        let a = score(targets.clone());
        assert_eq!(a.status, status, "{targets}: {a:?}");
        assert!(a.body.to_string().contains(reason), "{targets}: {a:?}");
    }
    pool.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_and_job_events_page_by_cursor_with_filters() {
    let svc = Service::start_in_process(&[]).await;
    let admin = svc.bootstrap_key("paging");
    let (mlops, _) = svc.key(&admin, "mlops");
    let api = &svc.api;
    let a = api.upload(Some(&mlops), "/v1/datasets?name=paging", jsonl(&laptops("train")[..10]).as_bytes());
    assert_eq!(a.status, 201, "{a:?}");
    let dataset = a.body["dataset_id"].clone();
    // Five jobs and no scheduler: they stay queued.
    // The odd ones tagged by their owner.
    let mut submitted = Vec::new();
    for i in 0..5 {
        let tags = if i % 2 == 0 { json!({ "owner": "ana", "trial": i.to_string() }) } else { json!({}) };
        let a = api.post(&mlops, "/v1/jobs/train", &json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "tags": tags }));
        assert_eq!((a.status, &a.body["tags"]), (201, &tags), "{a:?}");
        submitted.push(a.body["id"].as_str().unwrap().to_owned());
    }
    let ids = |page: &Value| -> Vec<String> { page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect() };
    let anas = api.get(Some(&mlops), "/v1/jobs?tag=owner:ana").body;
    assert_eq!(ids(&anas), [submitted[4].clone(), submitted[2].clone(), submitted[0].clone()], "{anas}");
    assert_eq!(anas["jobs"][0]["tags"], json!({ "owner": "ana", "trial": "4" }));
    assert_eq!(ids(&api.get(Some(&mlops), "/v1/jobs?tag=trial:2").body), [submitted[2].clone()]);
    assert!(ids(&api.get(Some(&mlops), "/v1/jobs?tag=owner:bo").body).is_empty());
    let a = api.get(Some(&mlops), "/v1/jobs?state=sleeping");
    assert_eq!(a.status, 400, "a state the API does not have: {a:?}");
    assert!(a.body["detail"].as_str().is_some_and(|d| d.contains("sleeping")), "{a:?}");
    let a = api.get(Some(&mlops), "/v1/jobs?tag=owner");
    assert_eq!((a.status, a.body["field"].as_str()), (422, Some("tag")), "{a:?}");
    let a = api.post(&mlops, "/v1/jobs/train", &json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "tags": { "n": 1 } }));
    assert_eq!((a.status, a.body["field"].as_str()), (422, Some("tags.n")), "{a:?}");
    let all = api.get(Some(&mlops), "/v1/jobs").body;
    assert_eq!((all["has_more"].as_bool(), all["next_after"].is_null()), (Some(false), true), "{all}");
    let newest_first: Vec<String> = submitted.iter().rev().cloned().collect();
    assert_eq!(ids(&all), newest_first);
    // Pages of 2: 2 + 2 + 1, the same jobs in the same order, each page pointing at the next.
    let (mut paged, mut after, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let path = match &after {
            Some(a) => format!("/v1/jobs?limit=2&after={a}"),
            None => "/v1/jobs?limit=2".to_owned(),
        };
        let page = api.get(Some(&mlops), &path).body;
        pages += 1;
        paged.extend(ids(&page));
        match page["next_after"].as_str() {
            Some(next) => {
                assert_eq!(page["has_more"], true);
                after = Some(next.to_owned());
            }
            None => break,
        }
    }
    assert_eq!((pages, paged), (3, newest_first.clone()));
    // Time filters: the third job's creation splits the five.
    let third = api.get(Some(&mlops), &format!("/v1/jobs/{}", submitted[2])).body;
    let at = third["created_at"].as_str().unwrap().replace('+', "%2B");
    assert_eq!(ids(&api.get(Some(&mlops), &format!("/v1/jobs?created_after={at}")).body), newest_first[..3]);
    assert_eq!(ids(&api.get(Some(&mlops), &format!("/v1/jobs?created_before={at}")).body), newest_first[3..]);
    // Bad paging is a problem naming the field; an unknown parameter a 400.
    for (path, status, field) in [
        ("/v1/jobs?limit=0", 422, Some("limit")),
        ("/v1/jobs?limit=1001", 422, Some("limit")),
        ("/v1/jobs?after=nonsense", 422, Some("after")),
        ("/v1/jobs?colour=red", 400, None),
    ] {
        let a = api.get(Some(&mlops), path);
        assert_eq!((a.status, a.body["field"].as_str()), (status, field), "{path}: {a:?}");
    }

    // A job's events page the same way, oldest first: submitted, then cancelled.
    let job = &submitted[0];
    assert_eq!(api.send("POST", Some(&mlops), &format!("/v1/jobs/{job}/cancel"), None, &[]).status, 200);
    let first = api.get(Some(&mlops), &format!("/v1/jobs/{job}/events?limit=1")).body;
    assert_eq!((first["events"][0]["kind"].as_str(), first["has_more"].as_bool()), (Some("submitted"), Some(true)), "{first}");
    let next = first["next_after"].as_i64().unwrap();
    let second = api.get(Some(&mlops), &format!("/v1/jobs/{job}/events?limit=1&after={next}")).body;
    assert_eq!((second["events"][0]["kind"].as_str(), second["has_more"].as_bool()), (Some("cancelled"), Some(false)), "{second}");
    assert_eq!(api.get(Some(&mlops), &format!("/v1/jobs/{job}/events?limit=0")).status, 422);

    // Datasets and corpora page the same way, newest first, and filter by name.
    for name in ["paging-b", "paging-c"] {
        let a = api.upload(Some(&mlops), &format!("/v1/datasets?name={name}"), jsonl(&laptops("train")[..3]).as_bytes());
        assert_eq!(a.status, 201, "{a:?}");
        let a = api.upload(Some(&mlops), &format!("/v1/corpora?name={name}"), jsonl(&laptops("test")[..3]).as_bytes());
        assert_eq!(a.status, 201, "{a:?}");
    }
    // Every page of `list` (its items under `field`) at `limit` a page: the names, and the page count.
    let walk = |list: &str, field: &str, limit: usize| -> (Vec<String>, usize) {
        let (mut names, mut after, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            let cursor = after.as_ref().map(|a| format!("&after={a}")).unwrap_or_default();
            let page = api.get(Some(&mlops), &format!("{list}?limit={limit}{cursor}")).body;
            pages += 1;
            let items = page[field].as_array().unwrap_or_else(|| panic!("{list}: {page}"));
            assert!(items.len() <= limit, "{page}");
            names.extend(items.iter().map(|i| i["name"].as_str().unwrap().to_owned()));
            match page["next_after"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return (names, pages),
            }
        }
    };
    assert_eq!(walk("/v1/datasets", "datasets", 2), (vec!["paging-c".into(), "paging-b".into(), "paging".into()], 2));
    assert_eq!(walk("/v1/corpora", "corpora", 1), (vec!["paging-c".into(), "paging-b".into()], 2));
    let named = api.get(Some(&mlops), "/v1/datasets?name=paging-b").body;
    assert_eq!((named["datasets"].as_array().unwrap().len(), named["datasets"][0]["rows"].as_i64()), (1, Some(3)), "{named}");
    for path in ["/v1/datasets?limit=0", "/v1/corpora?after=nonsense", "/v1/models?limit=1001"] {
        assert_eq!(api.get(Some(&mlops), path).status, 422, "{path}");
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn registered_models_own_their_versions_and_aliases() {
    let svc = Service::start_in_process(&[]).await;
    let admin = svc.bootstrap_key("registry");
    let (mlops, _) = svc.key(&admin, "mlops");
    let (analyst, _) = svc.key(&admin, "analyst");
    let api = &svc.api;
    let pool = sqlx::PgPool::connect(&svc.db_url).await.expect("connect");
    let team: Uuid = sqlx::query_scalar("SELECT id FROM teams WHERE name = 'registry'").fetch_one(&pool).await.unwrap();
    // Versions made here (nothing trains): two sentiment, one stance, filed by their task.
    let version = |labels: &'static str, f1: f64, model: Option<Uuid>| {
        let pool = pool.clone();
        async move {
            let id = Uuid::new_v4();
            sqlx::query(
                "INSERT INTO model_versions (id, team_id, base_model, label_names, metrics, registered_model_id) VALUES ($1, $2, 'm', $3::text[], $4, $5)",
            )
            .bind(id)
            .bind(team)
            .bind(labels)
            .bind(json!({ "validation_macro_f1": f1 }))
            .bind(model)
            .execute(&pool)
            .await
            .unwrap();
            id.to_string()
        }
    };
    let sentiment_1 = version("{negative,neutral,positive}", 0.7, None).await;
    let sentiment_2 = version("{negative,neutral,positive}", 0.6, None).await;
    let stance = version("{against,neither,favor}", 0.5, None).await;

    // A model made through the API, with a description and tags; its task and labels stay.
    let spec =
        json!({ "task": "sentiment", "label_names": ["negative", "neutral", "positive"], "description": "laptops, v2 recipe", "tags": { "owner": "mlops" } });
    let a = api.send("PUT", Some(&analyst), "/v1/registered-models/laptops-v2", Some(&spec), &[]);
    assert_eq!(a.status, 403, "{a:?}");
    let a = api.send("PUT", Some(&mlops), "/v1/registered-models/laptops-v2", Some(&spec), &[]);
    assert_eq!((a.status, a.body["task"].as_str(), a.body["versions"].as_i64()), (201, Some("sentiment"), Some(0)), "{a:?}");
    let a = api.send("PUT", Some(&mlops), "/v1/registered-models/laptops-v2", Some(&json!({ "tags": { "owner": "team-b" } })), &[]);
    assert_eq!((a.status, a.body["tags"]["owner"].as_str(), a.body["description"].as_str()), (200, Some("team-b"), Some("laptops, v2 recipe")), "{a:?}");
    for (name, body, field) in [
        ("laptops-v2", json!({ "task": "stance" }), "task"),
        ("new-model", json!({ "description": "no task" }), "task"),
        ("Bad Name", json!({ "task": "stance", "label_names": ["a", "b"] }), "name"),
        ("tagged", json!({ "task": "stance", "label_names": ["against", "favor"], "tags": { "n": 1 } }), "tags.n"),
    ] {
        let a = api.send("PUT", Some(&mlops), &format!("/v1/registered-models/{}", name.replace(' ', "%20")), Some(&body), &[]);
        assert_eq!((a.status, a.body["field"].as_str()), (422, Some(field)), "{name} {body}: {a:?}");
    }
    let listed = api.get(Some(&analyst), "/v1/registered-models").body;
    let mut models: Vec<(&str, &str, i64)> = listed["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["task"].as_str().unwrap(), m["versions"].as_i64().unwrap()))
        .collect();
    models.sort();
    assert_eq!(models, [("laptops-v2", "sentiment", 0), ("sentiment", "sentiment", 2), ("stance", "stance", 1)], "{listed}");
    assert_eq!(api.get(Some(&analyst), &format!("/v1/models/{stance}")).body["model"], "stance");
    assert_eq!(api.get(Some(&analyst), "/v1/models?model=sentiment").body["models"].as_array().map(Vec::len), Some(2));

    // Each model has its own production: the stance version's 0.5 is not compared with
    // the sentiment version's 0.7.
    let promote = |version: &str, body: Value| api.send("POST", Some(&mlops), &format!("/v1/models/{version}/promote"), Some(&body), &[]);
    let a = promote(&sentiment_1, json!({}));
    assert_eq!((a.status, a.body["model"].as_str(), a.body["promoted"].as_bool()), (200, Some("sentiment"), Some(true)), "{a:?}");
    let a = promote(&stance, json!({}));
    assert_eq!((a.status, a.body["model"].as_str(), a.body["current_id"].is_null()), (200, Some("stance"), true), "{a:?}");
    let a = promote(&sentiment_2, json!({}));
    assert_eq!((a.status, a.body["promoted"].as_bool(), a.body["current_id"].as_str()), (409, Some(false), Some(sentiment_1.as_str())), "{a:?}");
    // Across models: refused, naming the field.
    let a = promote(&stance, json!({ "model": "sentiment" }));
    assert_eq!((a.status, a.body["field"].as_str()), (422, Some("model")), "{a:?}");
    assert!(a.body["detail"].as_str().unwrap().contains("belongs to the model \"stance\", not \"sentiment\""), "{a:?}");
    let aliases: Vec<(String, String, String)> = api.get(Some(&analyst), "/v1/aliases").body["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["model"].as_str().unwrap().into(), a["name"].as_str().unwrap().into(), a["model_version_id"].as_str().unwrap().into()))
        .collect();
    assert_eq!(aliases, [("sentiment".into(), "production".into(), sentiment_1.clone()), ("stance".into(), "production".into(), stance.clone())]);
    // A page of one alias at a time: the cursor is the last one's model and name.
    let first = api.get(Some(&analyst), "/v1/aliases?limit=1").body;
    assert_eq!(
        (first["aliases"][0]["model"].as_str(), first["has_more"].as_bool(), first["next_after"].as_str()),
        (Some("sentiment"), Some(true), Some("sentiment/production")),
        "{first}"
    );
    let second = api.get(Some(&analyst), "/v1/aliases?limit=1&after=sentiment/production").body;
    assert_eq!((second["aliases"][0]["model"].as_str(), second["has_more"].as_bool()), (Some("stance"), Some(false)), "{second}");
    let a = api.get(Some(&analyst), "/v1/aliases?after=no-slash");
    assert_eq!((a.status, a.body["field"].as_str()), (422, Some("after")), "{a:?}");

    // Scoring by alias: two models have `production`, so the model is named.
    let a = api.upload(Some(&analyst), "/v1/corpora?name=docs", jsonl(&laptops("test")[..3]).as_bytes());
    let corpus = a.body["corpus_id"].as_str().unwrap().to_owned();
    let a = api.post(&analyst, "/v1/jobs/score", &json!({ "corpus_id": corpus, "alias": "production" }));
    assert_eq!((a.status, a.body["field"].as_str()), (422, Some("model")), "{a:?}");
    let a = api.post(&analyst, "/v1/jobs/score", &json!({ "corpus_id": corpus, "alias": "production", "model": "stance" }));
    assert_eq!((a.status, a.body["parameters"]["model_version_id"].as_str()), (201, Some(stance.as_str())), "{a:?}");
    let a = api.post(&analyst, "/v1/jobs/score", &json!({ "corpus_id": corpus, "alias": "production", "model": "laptops-v2" }));
    assert_eq!(a.status, 404, "laptops-v2 has no production: {a:?}");

    // A training job naming a model with other labels is refused at submission.
    let a = api.upload(Some(&mlops), "/v1/datasets?name=laptops", jsonl(&laptops("train")[..30]).as_bytes());
    let dataset = a.body["dataset_id"].as_str().unwrap().to_owned();
    let a = api.post(&mlops, "/v1/jobs/train", &json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "model": "stance" }));
    assert_eq!((a.status, a.body["field"].as_str()), (422, Some("model")), "{a:?}");
    let a = api.post(&mlops, "/v1/jobs/train", &json!({ "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "model": "laptops-v2" }));
    assert_eq!((a.status, a.body["parameters"]["model"].as_str()), (201, Some("laptops-v2")), "{a:?}");
    pool.close().await;
    svc.stop().await;
}
