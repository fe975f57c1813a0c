//! The web dashboard end to end: `absa-api`, the scheduler and the trainer/scorer
//! workers as processes on a throwaway database; a real training job submitted through
//! the API; then headless Chromium (Debian's `chromium`, which scripts/test.sh installs)
//! loads `/dashboard`, signs in with `#key=...` and renders the job. The dumped DOM must
//! hold the job's loss, accuracy and macro-F1 curves (one point per epoch) and the
//! last epoch's confusion matrix with the counts the API reports; the jobs list and the
//! model versions with their aliases; and without a key, only the sign-in form. A
//! screenshot of the job page is kept at `$ABSA_HOME/screenshots/dashboard.png`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use absa_e2e::browser::{self, browse, chromium};
use absa_e2e::service::{jsonl, laptops, Service};
use serde_json::json;

/// `$ABSA_HOME/screenshots/dashboard.png` (ABSA_HOME defaults to ~/.cache/absa).
fn kept_screenshot() -> PathBuf {
    let home = std::env::var_os("ABSA_HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/absa"));
    home.join("screenshots/dashboard.png")
}

/// A PNG's width and height, from its IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR", "not a PNG");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

fn static_get(base: &str, path: &str) -> (u16, String, String, String) {
    let config = ureq::Agent::config_builder().http_status_as_error(false).build();
    let mut r = ureq::Agent::new_with_config(config).get(format!("{base}{path}")).call().expect("the API answers");
    let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (content_type, csp) = (header("content-type"), header("content-security-policy"));
    (r.status().as_u16(), content_type, csp, r.body_mut().read_to_string().unwrap_or_default())
}

#[ignore = "slow: trains models for minutes (scripts/test.sh runs it after the fast tier)"]
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_a_real_training_job() {
    let started = Instant::now();
    chromium(); // before the minutes of training
    let mut svc = Service::start().await;
    svc.run("absa-scheduler", &["run"], "scheduler");
    svc.run("absa-trainer", &["work"], "trainer");
    svc.run("absa-scorer", &["work"], "scorer");
    let admin = svc.bootstrap_key("alpha");
    let (mlops, _) = svc.key(&admin, "mlops");
    let api = &svc.api;

    // The dashboard's files need no key and carry a strict CSP.
    for (path, kind) in [("/dashboard", "text/html"), ("/dashboard/app.js", "text/javascript"), ("/dashboard/app.css", "text/css")] {
        let (status, content_type, csp, body) = static_get(&svc.api.base, path);
        assert_eq!(status, 200, "{path}: {body}");
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"), "{path}: CSP {csp:?}");
    }
    assert_eq!(api.get(None, "/v1/jobs").status, 401, "the data still needs a key");

    // A real training job: 300 laptop reviews, 2 epochs.
    let rows = jsonl(&laptops("train")[..300]);
    let a = api.upload(Some(&mlops), "/v1/datasets?name=laptops", rows.as_bytes());
    assert_eq!((a.status, a.body["rows_added"].as_i64()), (201, Some(300)), "{a:?}");
    let dataset = a.body["dataset_id"].as_str().unwrap().to_owned();
    let a = api.post(
        &mlops,
        "/v1/jobs/train",
        &json!({
        "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "promote": {},
        "hyperparameters": { "epochs": 2, "warmup_steps": 0, "learning_rate": 1e-4, "seed": 42 } }),
    );
    assert_eq!(a.status, 201, "{a:?}");
    let job = a.body["id"].as_str().unwrap().to_owned();
    let done = svc.wait_job(&mlops, &job, Duration::from_secs(900));
    assert_eq!(done["state"], "succeeded", "{done}\n{}", svc.logs());
    let version = done["model_version_id"].as_str().unwrap().to_owned();
    let trained = started.elapsed();
    let metrics = api.get(Some(&mlops), &format!("/v1/jobs/{job}/metrics")).body;
    let epochs = metrics["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2, "{metrics}");
    let report = &epochs[1]["detail"]["report"];
    let confusion: Vec<Vec<u64>> = serde_json::from_value(report["confusion"].clone()).unwrap_or_else(|e| panic!("no confusion matrix in {report}: {e}"));

    // Without a key: the sign-in form, and no data.
    let dom = browser::dom(&svc.api.base, &svc.dir, &format!("job={job}"));
    assert!(dom.contains("id=\"sign-in\"") && !dom.contains("curve-loss"), "{dom}");

    // The job page: three curves with a point per epoch, the last epoch's confusion matrix.
    let dom = browser::dom(&svc.api.base, &svc.dir, &format!("key={mlops}&job={job}"));
    assert!(dom.contains(&format!("id=\"job\" data-job-id=\"{job}\" data-state=\"succeeded\"")), "{dom}");
    for (chart, series) in [("curve-loss", "train_loss"), ("curve-loss", "validation_loss"), ("curve-accuracy", "accuracy"), ("curve-macro-f1", "macro_f1")] {
        assert!(dom.contains(&format!("<svg id=\"{chart}\"")), "no {chart} in\n{dom}");
        assert!(dom.contains(&format!("<path class=\"series\" data-series=\"{series}\" data-points=\"2\"")), "no 2-point {series} curve in\n{dom}");
        assert_eq!(dom.matches(&format!("class=\"point\" data-series=\"{series}\"")).count(), 2, "{series} points");
    }
    assert!(dom.contains("class=\"legend\""), "charts without a legend");
    assert!(dom.contains("<svg id=\"confusion\"") && dom.contains("data-epoch=\"2\""), "no confusion matrix for epoch 2 in\n{dom}");
    assert_eq!(dom.matches("<rect class=\"cell\"").count(), confusion.len() * confusion.len(), "{dom}");
    for (g, row) in confusion.iter().enumerate() {
        for (p, count) in row.iter().enumerate() {
            let cell = format!("data-gold=\"{g}\" data-predicted=\"{p}\" data-count=\"{count}\"");
            assert!(dom.contains(&cell), "no heat-map cell {cell}");
        }
    }

    // The jobs list and the model versions with their aliases (from the job's `promote`).
    let dom = browser::dom(&svc.api.base, &svc.dir, &format!("key={mlops}"));
    assert!(dom.contains(&format!("data-job-id=\"{job}\" data-state=\"succeeded\"")) && dom.contains("role=\"progressbar\""), "{dom}");
    let dom = browser::dom(&svc.api.base, &svc.dir, &format!("key={mlops}&models"));
    assert!(dom.contains(&format!("data-model-id=\"{version}\"")), "{dom}");
    for alias in ["production", "candidate"] {
        assert!(dom.contains(&format!("data-alias=\"{alias}\"")), "no alias {alias} in\n{dom}");
    }

    // A screenshot of the job page, kept outside the test's temporary folder.
    let shot = svc.dir.join("dashboard.png");
    browse(&svc.api.base, &svc.dir, &format!("key={mlops}&job={job}"), &[format!("--screenshot={}", shot.display()), "--window-size=1280,900".into()]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert_eq!(png_size(&png), (1280, 900));
    assert!((20_000..10_000_000).contains(&png.len()), "a {} byte screenshot", png.len());
    let kept = kept_screenshot();
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::copy(&shot, &kept).unwrap_or_else(|e| panic!("copy to {}: {e}", kept.display()));
    eprintln!("dashboard screenshot: {} ({} bytes); training took {trained:?}, the whole test {:?}", kept.display(), png.len(), started.elapsed());
    svc.stop().await;
}
