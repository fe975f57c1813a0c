//! The web dashboard end to end: `absa-api`, the scheduler and the trainer/scorer
//! workers as processes on a throwaway database; a real training job submitted through
//! the API; then headless Chromium (Debian's `chromium`, which scripts/test.sh installs)
//! loads `/dashboard`, signs in with `#key=...` and renders the job. The dumped DOM must
//! hold the job's loss, accuracy and macro-F1 curves (one point per epoch) and the
//! last epoch's confusion matrix with the counts the API reports; the jobs list and the
//! model versions with their aliases; and without a key, only the sign-in form. A
//! screenshot of the job page is kept at `$ABSA_HOME/screenshots/dashboard.png`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use absa_e2e::http::Api;
use absa_e2e::{binary, Process};
use serde_json::{json, Value};
use uuid::Uuid;

fn admin_url() -> String {
    std::env::var("ABSA_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://absa:absa@127.0.0.1:5432/absa".into())
}

fn amqp_url() -> String {
    std::env::var("ABSA_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Headless Chromium: `ABSA_CHROMIUM`, else Debian's `/usr/bin/chromium`. Missing is a
/// failure, not a skip: the dashboard would go untested.
fn chromium() -> PathBuf {
    let path = std::env::var_os("ABSA_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "headless Chromium not found at {}: run scripts/test.sh (its scripts/services.sh installs Debian's chromium package), or set ABSA_CHROMIUM",
        path.display()
    );
    path
}

/// A throwaway database and queue names, the API running on a free port.
struct Service {
    db_name: String,
    vars: Vec<(String, String)>,
    dir: PathBuf,
    base: String,
    api: Api,
    processes: Vec<Process>,
}

impl Service {
    async fn start() -> Self {
        let db_name = format!("absa_dash_{}", Uuid::new_v4().simple());
        let db_url = absa_platform::db::create_database(&admin_url(), &db_name).await.expect("create database");
        let shared = absa_domain::reference::shared_dir().expect("the shared reference folder (set ABSA_SHARED)");
        let dir = std::env::temp_dir().join(&db_name);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let vars: Vec<(String, String)> = vec![
            ("ABSA_DATABASE__URL".into(), db_url),
            ("ABSA_AMQP__URL".into(), amqp_url()),
            ("ABSA_AMQP__PREFIX".into(), db_name.clone()),
            ("ABSA_MODELS_DIR".into(), shared.join("models").display().to_string()),
            ("ABSA_DISPATCH__INTERVAL_SECS".into(), "0.5".into()),
            ("ABSA_HTTP__BIND".into(), format!("127.0.0.1:{port}")),
            ("ABSA_LOG__FILTER".into(), "info".into()),
        ];
        let base = format!("http://127.0.0.1:{port}");
        let mut service = Self { db_name, vars, dir, api: Api::new(base.clone()), base, processes: Vec::new() };
        service.run("absa-api", &["serve"], "api");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "absa-api did not start\n{}", service.processes[0].tail(30));
            std::thread::sleep(Duration::from_millis(100));
        }
        service
    }

    fn run(&mut self, binary_name: &str, args: &[&str], tag: &str) {
        let mut vars = self.vars.clone();
        vars.push(("ABSA_WORKER__WORK_DIR".into(), self.dir.join(tag).join("work").display().to_string()));
        vars.push(("ABSA_WORKER__CACHE_DIR".into(), self.dir.join(tag).join("cache").display().to_string()));
        self.processes.push(Process::start(binary_name, args, &vars, &self.dir.join("logs"), tag));
    }

    /// `absa-api create-key`: the bootstrap path for a team's first admin key.
    fn bootstrap_key(&self, team: &str) -> String {
        let out = Command::new(binary("absa-api")).args(["create-key", "--team", team]).envs(self.vars.iter().cloned()).output().expect("absa-api create-key");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn key(&self, admin: &str, role: &str) -> String {
        let a = self.api.post(admin, "/v1/keys", &json!({ "name": format!("{role}-key"), "role": role }));
        assert_eq!(a.status, 201, "{a:?}");
        a.body["key"].as_str().unwrap().to_owned()
    }

    fn logs(&self) -> String {
        self.processes.iter().map(|p| format!("--- {} ---\n{}", p.name, p.tail(25))).collect::<Vec<_>>().join("\n")
    }

    /// Polls the job through the API until it is final.
    fn wait_job(&self, key: &str, job: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            for p in &self.processes {
                assert!(p.running(), "{} exited\n{}", p.name, p.tail(30));
            }
            let a = self.api.get(Some(key), &format!("/v1/jobs/{job}"));
            assert_eq!(a.status, 200, "{a:?}");
            match a.body["state"].as_str().unwrap() {
                "succeeded" | "failed" | "cancelled" => return a.body,
                s if Instant::now() > deadline => panic!("job {job} still {s} after {within:?}\n{}", self.logs()),
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// Headless Chromium on `fragment` of the dashboard, with `args` (`--dump-dom`,
    /// `--screenshot=...`); its stdout.
    fn browse(&self, fragment: &str, args: &[String]) -> String {
        let profile = self.dir.join("chromium-profile");
        let url = format!("{}/dashboard#{fragment}", self.base);
        let out = Command::new("timeout")
            .arg("120")
            .arg(chromium())
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars", "--virtual-time-budget=10000"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .arg(&url)
            .output()
            .expect("run chromium");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "chromium on {url} exited with {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        stdout
    }

    fn dom(&self, fragment: &str) -> String {
        let dom = self.browse(fragment, &["--dump-dom".into()]);
        assert!(dom.contains("</html>"), "no DOM dumped for #{fragment}: {dom}");
        dom
    }

    async fn stop(mut self) {
        self.processes.clear();
        absa_platform::db::drop_database(&admin_url(), &self.db_name).await.expect("drop database");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn laptops_train() -> Vec<Value> {
    let shared = absa_domain::reference::shared_dir().expect("the shared reference folder (set ABSA_SHARED)");
    let path = shared.join("data/semeval14_laptops/train.jsonl");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

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

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_a_real_training_job() {
    let started = Instant::now();
    chromium(); // before the minutes of training
    let mut svc = Service::start().await;
    svc.run("absa-scheduler", &["run"], "scheduler");
    svc.run("absa-trainer", &["work"], "trainer");
    svc.run("absa-scorer", &["work"], "scorer");
    let admin = svc.bootstrap_key("alpha");
    let mlops = svc.key(&admin, "mlops");
    let api = &svc.api;

    // The dashboard's files need no key and carry a strict CSP.
    for (path, kind) in [("/dashboard", "text/html"), ("/dashboard/app.js", "text/javascript"), ("/dashboard/app.css", "text/css")] {
        let (status, content_type, csp, body) = static_get(&svc.base, path);
        assert_eq!(status, 200, "{path}: {body}");
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"), "{path}: CSP {csp:?}");
    }
    assert_eq!(api.get(None, "/v1/jobs").status, 401, "the data still needs a key");

    // A real training job: 300 laptop reviews, 2 epochs.
    let rows: String = laptops_train()[..300].iter().map(|r| r.to_string() + "\n").collect();
    let a = api.upload(Some(&mlops), "/v1/datasets?name=laptops", rows.as_bytes());
    assert_eq!((a.status, a.body["rows_added"].as_i64()), (201, Some(300)), "{a:?}");
    let dataset = a.body["dataset_id"].as_str().unwrap().to_owned();
    let a = api.post(&mlops, "/v1/jobs/train", &json!({
        "dataset_id": dataset, "base_model": "all-minilm-l6-v2", "promote": {},
        "hyperparameters": { "epochs": 2, "warmup_steps": 0, "learning_rate": 1e-4, "seed": 42 } }));
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
    let dom = svc.dom(&format!("job={job}"));
    assert!(dom.contains("id=\"sign-in\"") && !dom.contains("curve-loss"), "{dom}");

    // The job page: three curves with a point per epoch, the last epoch's confusion matrix.
    let dom = svc.dom(&format!("key={mlops}&job={job}"));
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
    let dom = svc.dom(&format!("key={mlops}"));
    assert!(dom.contains(&format!("data-job-id=\"{job}\" data-state=\"succeeded\"")) && dom.contains("role=\"progressbar\""), "{dom}");
    let dom = svc.dom(&format!("key={mlops}&models"));
    assert!(dom.contains(&format!("data-model-id=\"{version}\"")), "{dom}");
    for alias in ["production", "candidate"] {
        assert!(dom.contains(&format!("data-alias=\"{alias}\"")), "no alias {alias} in\n{dom}");
    }

    // A screenshot of the job page, kept outside the test's temporary folder.
    let shot = svc.dir.join("dashboard.png");
    svc.browse(&format!("key={mlops}&job={job}"), &[format!("--screenshot={}", shot.display()), "--window-size=1280,900".into()]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert_eq!(png_size(&png), (1280, 900));
    assert!((20_000..10_000_000).contains(&png.len()), "a {} byte screenshot", png.len());
    let kept = kept_screenshot();
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::copy(&shot, &kept).unwrap_or_else(|e| panic!("copy to {}: {e}", kept.display()));
    eprintln!("dashboard screenshot: {} ({} bytes); training took {trained:?}, the whole test {:?}", kept.display(), png.len(), started.elapsed());
    svc.stop().await;
}
