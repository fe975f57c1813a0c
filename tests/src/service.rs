//! A running service for end-to-end tests: a throwaway database and queue names,
//! `absa-api` on a free port (a process, or [`Service::start_in_process`]: the
//! application built in this test process), and whatever other binaries a test
//! starts; keys are bootstrapped with `absa-api create-key` and everything else goes
//! through HTTP.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use absa_platform::config::{AmqpSettings, Secret};
use absa_platform::queue::Topology;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::http::Api;
use crate::{binary, Process};

pub fn admin_url() -> String {
    absa_platform::config::test_database_url()
}

pub fn amqp_url() -> String {
    absa_platform::config::test_amqp_url()
}

/// A throwaway database and queue names, the API running on a free port.
pub struct Service {
    pub db_name: String,
    pub db_url: String,
    pub vars: Vec<(String, String)>,
    pub dir: PathBuf,
    pub api: Api,
    pub processes: Vec<Process>,
    /// The API served from this process, when started so.
    in_process: Option<InProcessApi>,
    /// Cleaned up by [`Service::stop`]: nothing left for `Drop` to do.
    stopped: bool,
}

impl Service {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`Service::start`] with settings added or overridden (`ABSA_*` variables).
    pub async fn start_with(overrides: &[(&str, &str)]) -> Self {
        let mut service = Self::prepare(overrides).await;
        service.start_api("api");
        service
    }

    /// [`Service::start_with`], the API built with `Application::build` and served on
    /// a thread of this test process (its own runtime) instead of spawned: no process
    /// to start, and a panic in a handler shows in the test's output.
    pub async fn start_in_process(overrides: &[(&str, &str)]) -> Self {
        let mut service = Self::prepare(overrides).await;
        let api = InProcessApi::start(&service.vars);
        assert_eq!(Some(api.addr.to_string().as_str()), service.vars.iter().find(|(k, _)| k == "ABSA_HTTP__BIND").map(|(_, v)| v.as_str()));
        service.in_process = Some(api);
        service
    }

    /// The database, the folders and the settings, nothing started yet.
    async fn prepare(overrides: &[(&str, &str)]) -> Self {
        let db_name = format!("absa_api_{}", Uuid::new_v4().simple());
        let db_url = absa_platform::db::create_database(&admin_url(), &db_name).await.expect("create database");
        let shared = absa_domain::reference::shared_dir().expect("the shared reference folder (set ABSA_SHARED)");
        let dir = std::env::temp_dir().join(&db_name);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let vars: Vec<(String, String)> = vec![
            ("ABSA_DATABASE__URL".into(), db_url.clone()),
            ("ABSA_AMQP__URL".into(), amqp_url()),
            ("ABSA_AMQP__PREFIX".into(), db_name.clone()),
            ("ABSA_MODELS_DIR".into(), shared.join("models").display().to_string()),
            ("ABSA_DISPATCH__INTERVAL_SECS".into(), "0.5".into()),
            ("ABSA_HTTP__BIND".into(), format!("127.0.0.1:{port}")),
            ("ABSA_API__MAX_UPLOAD_BYTES".into(), "2000000".into()),
            ("ABSA_LOG__FILTER".into(), "info".into()),
        ];
        let mut vars = vars;
        for (k, v) in overrides {
            vars.retain(|(name, _)| name != k);
            vars.push((k.to_string(), v.to_string()));
        }
        Self { db_name, db_url, vars, dir, api: Api::new(format!("http://127.0.0.1:{port}")), processes: Vec::new(), in_process: None, stopped: false }
    }

    /// Starts `absa-api` (again, after a test killed it) and waits for its port.
    pub fn start_api(&mut self, tag: &str) {
        self.run("absa-api", &["serve"], tag);
        let port = self.api.base.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).expect("the API's port");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "absa-api did not start\n{}", self.take(tag).tail(30));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn run(&mut self, binary_name: &str, args: &[&str], tag: &str) {
        self.run_with(binary_name, args, tag, &[]);
    }

    /// [`Service::run`] with variables for this process alone (its metrics port, say).
    pub fn run_with(&mut self, binary_name: &str, args: &[&str], tag: &str, extra: &[(&str, String)]) {
        let process = self.spawn_with(binary_name, args, tag, extra);
        self.processes.push(process);
    }

    /// Starts `binary_name` with the service's settings and hands it to the caller (a
    /// test that kills it): killed when dropped.
    pub fn spawn(&self, binary_name: &str, args: &[&str], tag: &str) -> Process {
        self.spawn_with(binary_name, args, tag, &[])
    }

    fn spawn_with(&self, binary_name: &str, args: &[&str], tag: &str, extra: &[(&str, String)]) -> Process {
        let mut vars = self.vars.clone();
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        // Each worker its own folders: artifacts come from Postgres, not from a neighbour.
        vars.push(("ABSA_WORKER__WORK_DIR".into(), self.dir.join(tag).join("work").display().to_string()));
        vars.push(("ABSA_WORKER__CACHE_DIR".into(), self.dir.join(tag).join("cache").display().to_string()));
        Process::start(binary_name, args, &vars, &self.dir.join("logs"), tag)
    }

    /// A connection pool on the service's database (migrated by the API at its start).
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&self.db_url).await.expect("connect to the test database")
    }

    /// Takes the process started as `tag` out of the service (to kill or stop it).
    pub fn take(&mut self, tag: &str) -> Process {
        let i = self.processes.iter().position(|p| p.name == tag).unwrap_or_else(|| panic!("no process {tag}"));
        self.processes.remove(i)
    }

    /// `absa-api create-key`: the bootstrap path for a team's first admin key.
    pub fn bootstrap_key(&self, team: &str) -> String {
        let out = Command::new(binary("absa-api")).args(["create-key", "--team", team]).envs(self.vars.iter().cloned()).output().expect("absa-api create-key");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub fn key(&self, admin: &str, role: &str) -> (String, String) {
        let a = self.api.post(admin, "/v1/keys", &json!({ "name": format!("{role}-key"), "role": role }));
        assert_eq!(a.status, 201, "{a:?}");
        (a.body["key"].as_str().unwrap().to_owned(), a.body["id"].as_str().unwrap().to_owned())
    }

    pub fn logs(&self) -> String {
        self.processes.iter().map(|p| format!("--- {} ---\n{}", p.name, p.tail(25))).collect::<Vec<_>>().join("\n")
    }

    /// Polls the job through the API until it is final.
    pub fn wait_job(&self, key: &str, job: &str, within: Duration) -> Value {
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

    /// A model version to score with: a trainer fine-tunes all-MiniLM-L6-v2 for one
    /// epoch on 400 laptops rows, then exits (a scheduler must be running).
    pub fn train_small_model(&mut self, mlops: &str) -> String {
        self.run("absa-trainer", &["work"], "small-model-trainer");
        let a = self.api.upload(Some(mlops), "/v1/datasets?name=small-model", jsonl(&laptops("train")[..400]).as_bytes());
        assert_eq!(a.status, 201, "{a:?}");
        let train = json!({ "dataset_id": a.body["dataset_id"], "base_model": "all-minilm-l6-v2",
                            "hyperparameters": { "epochs": 1, "learning_rate": 1e-4, "warmup_steps": 0 } });
        let a = self.api.post(mlops, "/v1/jobs/train", &train);
        assert_eq!(a.status, 201, "{a:?}");
        let done = self.wait_job(mlops, a.body["id"].as_str().unwrap(), Duration::from_secs(1800));
        assert_eq!(done["state"], "succeeded", "{done}\n{}", self.logs());
        let status = self.take("small-model-trainer").terminate(Duration::from_secs(60));
        assert!(status.is_some_and(|s| s.success()), "the trainer exits on SIGTERM: {status:?}");
        done["model_version_id"].as_str().unwrap().to_owned()
    }

    /// Stops every process and removes the database, the files and the queues; a
    /// database that cannot be dropped fails the test. A test that panics before
    /// calling this is cleaned up by `Drop`, best effort.
    pub async fn stop(mut self) {
        self.processes.clear();
        self.in_process = None;
        self.stopped = true;
        let leftovers = Leftovers::of(&self);
        leftovers.remove().await.unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Service {
    /// A test that failed (or forgot `stop`) still leaves nothing behind: its processes
    /// are killed and its database, files and queues removed.
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.processes.clear();
        self.in_process = None;
        if let Err(e) = absa_platform::db::clean_up_on_own_thread(Leftovers::of(self).remove()) {
            eprintln!("cleaning up after the test: {e} (scripts/clean-test-leftovers.sh removes what is left)");
        }
    }
}

/// `absa-api`'s application served on a thread of the test process, with its own
/// runtime (a test's blocking HTTP calls cannot starve it); stopped when dropped.
struct InProcessApi {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessApi {
    fn start(vars: &[(String, String)]) -> Self {
        let settings: absa_api::settings::Settings = absa_platform::config::load_from_vars(vars).expect("the API's settings");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, addr) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime for the API");
            runtime.block_on(async move {
                let app = match absa_api::Application::build(&settings).await {
                    Ok(app) => app,
                    Err(e) => return drop(bound.send(Err(format!("{e:#}")))),
                };
                let _ = bound.send(Ok(app.local_addr()));
                // Requests in flight get 5 s to finish once the test is done.
                let (asked, told) = tokio::sync::oneshot::channel::<()>();
                let serving = app.run_until_stopped(async move {
                    let _ = stopped.await;
                    let _ = asked.send(());
                });
                tokio::select! {
                    served = serving => if let Err(e) = served { eprintln!("the in-process API stopped: {e:#}") },
                    _ = async { let _ = told.await; tokio::time::sleep(Duration::from_secs(5)).await } => {}
                }
            });
        });
        let addr = addr.recv().expect("the API thread reports its start").unwrap_or_else(|e| panic!("Application::build: {e}"));
        Self { addr, stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for InProcessApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a [`Service`] made outside its processes.
struct Leftovers {
    db_name: String,
    dir: PathBuf,
    amqp_url: String,
    prefix: String,
}

impl Leftovers {
    fn of(service: &Service) -> Self {
        let var = |name: &str| service.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        Self { db_name: service.db_name.clone(), dir: service.dir.clone(), amqp_url: var("ABSA_AMQP__URL"), prefix: var("ABSA_AMQP__PREFIX") }
    }

    async fn remove(self) -> Result<(), String> {
        // (retried while a closed BI login's session lingers)
        absa_platform::db::drop_database(&admin_url(), &self.db_name).await.map_err(|e| format!("drop database {}: {e}", self.db_name))?;
        let _ = std::fs::remove_dir_all(&self.dir);
        delete_queues(&self.amqp_url, &self.prefix).await;
        Ok(())
    }
}

/// Deletes the queues and exchange declared under `prefix`, so test runs leave nothing
/// on the broker (best effort: a test that left the broker down has already said so).
pub async fn delete_queues(amqp_url: &str, prefix: &str) {
    let settings = AmqpSettings { url: Secret::new(amqp_url), prefix: prefix.into() };
    let deleted = async {
        let connection = absa_platform::queue::connect(&settings).await?;
        Topology::new(prefix, 0).delete(&connection.create_channel().await?).await?;
        connection.close(200, "test done".into()).await?;
        Ok::<(), absa_platform::PlatformError>(())
    };
    if let Err(e) = deleted.await {
        eprintln!("could not delete the queues of {prefix}: {e}");
    }
}

pub fn laptops(split: &str) -> Vec<Value> {
    let shared = absa_domain::reference::shared_dir().expect("the shared reference folder (set ABSA_SHARED)");
    let path = shared.join("data/semeval14_laptops").join(format!("{split}.jsonl"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The SemEval-2016 stance rows of a split (`text`, `target`, `label`).
pub fn stance(split: &str) -> Vec<Value> {
    let shared = absa_domain::reference::shared_dir().expect("the shared reference folder (set ABSA_SHARED)");
    let path = shared.join("data/semeval16_stance").join(format!("{split}.jsonl"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `n` corpus documents (ids `doc-0`, `doc-1`, ...): laptops test texts with their
/// given targets, repeated.
pub fn corpus_documents(n: usize) -> Vec<Value> {
    let test = laptops("test");
    (0..n)
        .map(|i| {
            let r = &test[i % test.len()];
            json!({ "id": format!("doc-{i}"), "text": r["text"], "aspect": r["aspect"], "start": r["start"], "end": r["end"] })
        })
        .collect()
}

pub fn jsonl(rows: &[Value]) -> String {
    rows.iter().map(|r| r.to_string() + "\n").collect()
}
