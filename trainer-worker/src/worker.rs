//! `absa-trainer work`: the training worker. It claims a training job, reads the
//! job's dataset as typed rows, runs exactly the engine of local mode, keeps its lease with
//! progress, stores every epoch's metrics and resumable checkpoint in Postgres,
//! resumes a retried job from that checkpoint, and at the end exports ONNX, stores the
//! selected model and registers a model version in the transaction that completes the
//! job.

use std::path::{Path, PathBuf};
use std::time::Instant;

use absa_domain::RowError;
use absa_jobs::TrainParams;
use absa_platform::metrics;
use absa_platform::queue::Topology;
use absa_store::artifacts::ArtifactStore;
use absa_store::jobs::{self, ClaimedJob};
use absa_store::registry;
use absa_store::row_errors;
use absa_store::training_metrics::{self, EpochFigures};
use absa_store::worker::{self as store_worker, JobHandler, Lease, LeaseHandle, Permanent, WorkerSettings};
use absa_store::workers::{self, Offer};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio::runtime::Handle;
use tokio::sync::watch;
use uuid::Uuid;

use absa_trainer::checkpoint::{self, LoadOptions};
use absa_trainer::distributed::launch;
use absa_trainer::export::{self, ExportOptions};
use absa_trainer::progress::RunEvent;
use absa_trainer::training::{self, DeviceChoice, EpochRecord, Observer, Split, StepProgress, TrainConfig, TrainError, TrainSummary};

use crate::dataset::{self, Snapshot};

/// A `max_length` the model's position embeddings cannot hold is refused before any
/// work (RoBERTa-family models reserve two positions for the padding offset).
fn check_max_length(base: &Path, max_length: Option<usize>) -> anyhow::Result<()> {
    let Some(max_length) = max_length else { return Ok(()) };
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(base.join("config.json"))?).context("the base model's config.json")?;
    let Some(positions) = config["max_position_embeddings"].as_u64() else { return Ok(()) };
    let offset = if matches!(config["model_type"].as_str(), Some("xlm-roberta" | "roberta" | "xlm-roberta-xl")) { 2 } else { 0 };
    let usable = positions.saturating_sub(offset);
    if max_length as u64 > usable {
        return Err(Permanent(format!("max_length {max_length}: the base model has {usable} positions")).into());
    }
    Ok(())
}

/// How a claimed job ended on this worker.
enum Outcome {
    Completed {
        model_version_id: Uuid,
    },
    /// Shutting down: given back, to resume elsewhere from the last checkpoint.
    Released,
    /// The job fits its GPUs only if each has at least this much memory, more than
    /// this trainer's: given back with that requirement, for a trainer that has it.
    NeedsBiggerGpus {
        min_gpu_memory_mib: u64,
        why: String,
    },
    /// Cancelled, or expired and taken over: nothing more to write.
    LeaseLost,
}

pub struct TrainWorker {
    pool: PgPool,
    store: ArtifactStore,
    settings: WorkerSettings,
    models_dir: PathBuf,
    name: String,
    shutdown: watch::Receiver<bool>,
    threads: i32,
    /// The GPUs this trainer advertises.
    offer: Offer,
    /// The collectives' timeout of launched ranks.
    collective_timeout_secs: u64,
    /// The settings file this worker was started with: launched ranks load the same
    /// settings (they read the job's rows from Postgres).
    config_file: Option<PathBuf>,
}

impl TrainWorker {
    pub fn new(pool: PgPool, settings: WorkerSettings, models_dir: PathBuf, threads: i32, offer: Offer, shutdown: watch::Receiver<bool>) -> Self {
        let store = ArtifactStore::new(pool.clone(), settings.backend());
        Self {
            pool,
            store,
            settings,
            models_dir,
            name: store_worker::worker_name("trainer"),
            shutdown,
            threads,
            offer,
            collective_timeout_secs: 600,
            config_file: None,
        }
    }

    /// How long a launched rank waits for the others (0 keeps 600 s).
    pub fn with_collective_timeout(mut self, secs: u64) -> Self {
        if secs > 0 {
            self.collective_timeout_secs = secs;
        }
        self
    }

    /// The settings file launched ranks load, as this worker did (`--config`).
    pub fn with_config_file(mut self, file: Option<PathBuf>) -> Self {
        self.config_file = file;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    async fn train_job(&self, job: &ClaimedJob, lease: &Lease) -> anyhow::Result<Outcome> {
        // The check the API and the scheduler made, again: a job may come from elsewhere.
        let params = TrainParams::from_value(&job.parameters).map_err(|e| Permanent(format!("job parameters: {e}")))?;
        let base = self.resolve_base(&params.base_model)?;
        check_max_length(&base, params.hyperparameters.max_length)?;
        let device_plan = match self.device_layout(job, &base, &params).await? {
            Placement::DefaultDevice => None,
            Placement::Plan(plan) => Some(plan),
            Placement::GiveBack(needs) => return Ok(needs),
        };
        let dir = self.settings.work_dir.join(job.id.to_string());
        let run_dir = dir.clone();
        // Postgres is the truth: start from a clean folder and the stored checkpoint.
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(&dir).await.with_context(|| format!("creating {}", dir.display()))?;
        let (rows, snapshot) = dataset::read(&self.pool, job.team_id, params.dataset_id).await?;
        if rows.train.is_empty() {
            return Err(Permanent(format!("dataset {} has no training rows (or is not this team's)", params.dataset_id)).into());
        }

        let mut config =
            TrainConfig { base: base.clone(), out: dir.join("run"), labels: params.labels.clone(), threads: self.threads, ..TrainConfig::default() };
        if let Some(plan) = &device_plan {
            config.recipe.sharding = plan.sharding;
            config.recipe.offload_optimizer = plan.offload_optimizer;
        }
        let ranks = params.ranks();
        if params.gpus == 0 && ranks > 1 {
            config.device = DeviceChoice::Cpu;
        }
        config.collective_timeout_secs = self.collective_timeout_secs;
        // The job's own choices win over the plan's.
        config.recipe = config.recipe.with(&params.hyperparameters);
        let resumed_from = self.restore_checkpoint(job, &config.out).await?;
        config.resume = resumed_from.is_some();

        let observer = JobObserver {
            lease: lease.handle(),
            shutdown: self.shutdown.clone(),
            runtime: Handle::current(),
            pool: self.pool.clone(),
            store: self.store.clone(),
            job_id: job.id,
            team_id: job.team_id,
            stored: resumed_from,
            failure: None,
            rejected: Vec::new(),
            last_step: 0,
            timed_since: None,
        };
        let launched = LaunchedRun { config, dataset: snapshot.clone() };
        let config_file = self.config_file.clone();
        let (summary, observer) = tokio::task::spawn_blocking(move || {
            let mut observer = observer;
            // Several ranks run as processes under the launcher, each reading the
            // snapshot's rows; one trains right here on the rows read above.
            let result = if ranks > 1 {
                run_ranks(&launched, ranks, &run_dir, config_file.as_deref(), &mut observer)
            } else {
                training::train(&launched.config, &rows, &mut observer)
            };
            let config = launched.config;
            (result.map(|s| (s, config)), observer)
        })
        .await
        .context("the training thread panicked")?;
        if let Some(failure) = observer.failure {
            return Err(failure);
        }
        let (summary, config) = match summary {
            Ok(done) => done,
            Err(TrainError::Stopped { .. }) if lease.lost() => return Ok(Outcome::LeaseLost),
            Err(TrainError::Stopped { .. }) => return Ok(Outcome::Released),
            Err(TrainError::Config(reason)) => return Err(Permanent(reason).into()),
            Err(e) => return Err(e.into()),
        };
        if lease.lost() {
            return Ok(Outcome::LeaseLost);
        }
        let outcome = self.finish(job, &params, &config, &summary, &snapshot, &observer.rejected).await?;
        if let (Outcome::Completed { .. }, Some(stored)) = (&outcome, observer.stored) {
            // The version holds the selected model: the resumable checkpoints are spent.
            for id in [stored.last, stored.best.0] {
                if let Err(e) = self.store.delete(id).await {
                    tracing::warn!(job_id = %job.id, artifact_id = %id, error = %e, "could not delete a spent checkpoint");
                }
            }
        }
        Ok(outcome)
    }

    /// A base model is a folder of `models_dir`, by name only (no paths: checked by
    /// `job_spec::check_base_model` before this).
    fn resolve_base(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.models_dir.join(name);
        if !dir.join("config.json").is_file() {
            return Err(Permanent(format!("base model {name:?}: no config.json in the trainer's models folder")).into());
        }
        Ok(dir)
    }

    /// On a retry, fetches the job's last stored checkpoint into `out/checkpoint-last`
    /// and the checkpoint of its best epoch into `out/checkpoint-best` (the same one
    /// when the last epoch was the best). Without both the job starts over.
    async fn restore_checkpoint(&self, job: &ClaimedJob, out: &Path) -> anyhow::Result<Option<StoredCheckpoints>> {
        let Some((last_id, epoch)) = self.stored_checkpoint(job.id, None).await? else {
            return Ok(None);
        };
        let last = out.join("checkpoint-last");
        let cached = self.store.cached_dir(last_id, &self.settings.cache_dir).await?;
        copy_dir(&cached, &last, &|_| true).with_context(|| format!("restoring {}", last.display()))?;
        let state_path = last.join("trainer_state.json");
        let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).with_context(|| state_path.display().to_string())?)
            .with_context(|| state_path.display().to_string())?;
        let best_epoch = state["best_epoch"].as_i64().unwrap_or(0);
        let best = if best_epoch == epoch { Some((last_id, epoch)) } else { self.stored_checkpoint(job.id, Some(best_epoch)).await? };
        let Some((best_id, _)) = best else {
            tracing::warn!(job_id = %job.id, best_epoch, "the best epoch's checkpoint is not stored: starting over");
            std::fs::remove_dir_all(&last).with_context(|| last.display().to_string())?;
            jobs::event(
                &self.pool,
                job.id,
                "restarted",
                json!({ "reason": format!("no stored checkpoint of the best epoch {best_epoch}"), "attempt": job.attempt }),
            )
            .await?;
            return Ok(None);
        };
        let best_dir = out.join("checkpoint-best");
        let cached = self.store.cached_dir(best_id, &self.settings.cache_dir).await?;
        // The selected model only: the optimizer and trainer state belong to the last.
        copy_dir(&cached, &best_dir, &|name| name != "optimizer.safetensors" && name != "trainer_state.json")
            .with_context(|| format!("restoring {}", best_dir.display()))?;
        jobs::event(&self.pool, job.id, "resumed", json!({ "from_epoch": epoch, "best_epoch": best_epoch, "artifact_id": last_id, "attempt": job.attempt }))
            .await?;
        tracing::info!(job_id = %job.id, epoch, best_epoch, "resuming from the stored checkpoint");
        Ok(Some(StoredCheckpoints { last: last_id, best: (best_id, best_epoch as usize) }))
    }

    /// The job's newest complete checkpoint (of `epoch` when given) and its epoch.
    async fn stored_checkpoint(&self, job_id: Uuid, epoch: Option<i64>) -> anyhow::Result<Option<(Uuid, i64)>> {
        Ok(absa_store::jobs::last_checkpoint(&self.pool, job_id, epoch).await?)
    }

    /// Export, store the selected model, register the version and complete the job.
    async fn finish(
        &self,
        job: &ClaimedJob,
        params: &TrainParams,
        config: &TrainConfig,
        summary: &TrainSummary,
        snapshot: &Snapshot,
        rejected: &[(Split, RowError)],
    ) -> anyhow::Result<Outcome> {
        let best = summary.best_checkpoint.clone();
        let onnx_dir = config.out.join("onnx");
        let (b, o, max_length) = (best.clone(), onnx_dir.clone(), config.recipe.max_length);
        // The labels come from the model the export loaded: no second read of config.json.
        let (report, labels) = tokio::task::spawn_blocking(move || -> anyhow::Result<(export::ExportReport, Vec<String>)> {
            let loaded = checkpoint::load(&b, &LoadOptions::default(), tch::Device::Cpu)?;
            let report = export::export_model_dir(&loaded, &b, &o, &ExportOptions { max_length, ..ExportOptions::default() })?;
            Ok((report, loaded.labels.names().to_vec()))
        })
        .await
        .context("the export thread panicked")??;
        jobs::event(&self.pool, job.id, "exported", json!({ "graphs": report.graphs })).await?;
        let checkpoint = self.store.put_dir(job.team_id, "checkpoint", Some(job.id), &best).await?;
        let onnx = self.store.put_dir(job.team_id, "onnx", Some(job.id), &onnx_dir).await?;

        let model_version_id = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        // Without a name, the database files the version under the task's model.
        let registered_model = match &params.model {
            // Labels that differ from the model's would differ on every attempt: no retry.
            Some(name) => Some(registry::ensure_model(&mut tx, job.team_id, name, &labels).await.map_err(|e| Permanent(e.to_string()))?),
            None => None,
        };
        let version = registry::NewVersion {
            id: model_version_id,
            team: job.team_id,
            base_model: &params.base_model,
            dataset: params.dataset_id,
            training_job: job.id,
            labels: &labels,
            metrics: serde_json::to_value(summary)?,
            checkpoint: checkpoint.id,
            onnx: onnx.id,
            lineage: json!({ "training_job_id": job.id, "attempt": job.attempt, "hyperparameters": config_record(config, summary),
                             "dataset": { "id": params.dataset_id, "rows": snapshot.rows, "sha256": snapshot.sha256 } }),
            registered_model,
        };
        registry::register_version(&mut tx, &version).await?;
        // The engine names each row by its dataset line.
        let rejected: Vec<(i64, String)> = rejected.iter().map(|(_, row)| (row.line as i64, row.reason.clone())).collect();
        row_errors::record(&mut tx, row_errors::Found::Training { job: job.id, dataset: params.dataset_id }, &rejected).await?;
        jobs::event(&mut *tx, job.id, "model_registered", json!({ "model_version_id": model_version_id, "best_epoch": summary.best_epoch })).await?;
        if let Some(policy) = &params.promote {
            registry::set_alias(&mut tx, job.team_id, registry::CANDIDATE, model_version_id, json!({ "training_job_id": job.id })).await?;
            let decision = registry::promote_if_better(&mut tx, job.team_id, model_version_id, policy).await?;
            let kind = if decision.promoted { "promoted" } else { "promotion_refused" };
            jobs::event(&mut *tx, job.id, kind, serde_json::to_value(&decision)?).await?;
        }
        if jobs::complete(&mut *tx, job.id, &self.name).await?.is_err() {
            tx.rollback().await?;
            return Ok(Outcome::LeaseLost);
        }
        tx.commit().await?;
        Ok(Outcome::Completed { model_version_id })
    }
}

/// GPUs a job may not outgrow: one that does not fit on its GPUs at this size fails
/// with the estimate instead of waiting for GPUs nobody sells.
const LARGEST_GPU_BYTES: u64 = 80 << 30;

/// Where a claimed training job runs.
enum Placement {
    /// No GPUs asked for: the engine's default device.
    DefaultDevice,
    /// The device plan on this trainer's GPUs.
    Plan(absa_trainer::plan::Plan),
    /// It fits on that many GPUs, but larger ones than this trainer's: hand it back.
    GiveBack(Outcome),
}

impl TrainWorker {
    /// Where a job trains (see [`Placement`]). Too few GPUs at any size fails the job
    /// with the estimate.
    async fn device_layout(&self, job: &ClaimedJob, base: &Path, params: &TrainParams) -> anyhow::Result<Placement> {
        use absa_trainer::plan::{self, Precision};
        if params.gpus == 0 {
            return Ok(Placement::DefaultDevice);
        }
        let mut config = TrainConfig::default();
        config.recipe = config.recipe.with(&params.hyperparameters);
        let encoder = absa_trainer::model::EncoderConfig::from_file(&base.join("config.json")).map_err(|e| Permanent(e.to_string()))?;
        let labels = params.labels.as_ref().map_or(3, |l| l.len() as u64);
        let shape = plan::ModelShape::from_config(&encoder, labels).map_err(|e| Permanent(e.to_string()))?;
        let (batch, length, gpus) = (config.recipe.batch_size as u64, config.recipe.max_length as u64, params.gpus as u64);
        let estimate = || {
            let fewest = plan::min_gpus(&shape, batch, length, Precision::Bf16Mixed, LARGEST_GPU_BYTES).map_or("more than 1,024".into(), |g| g.to_string());
            format!(
                "Estimate at batch {batch}, length {length}, bf16: {}; fits on {fewest} GPU(s) of 80 GiB",
                plan::describe(&plan::estimate(&shape, batch, length, Precision::Bf16Mixed))
            )
        };
        if params.gpus > self.offer.gpus {
            // The scheduler routes by GPU count: only a trainer consuming queues beyond
            // its GPUs gets here.
            return Err(Permanent(format!("the job asks for {} GPU(s); this trainer offers {}. {}", params.gpus, self.offer.gpus, estimate())).into());
        }
        let needed = plan::min_gpu_bytes(&shape, batch, length, Precision::Bf16Mixed, gpus).unwrap_or(u64::MAX);
        if needed > LARGEST_GPU_BYTES {
            return Err(Permanent(format!("too few GPUs: the model does not fit on {} GPU(s) of 80 GiB. {}", params.gpus, estimate())).into());
        }
        let Some(device_plan) = plan::plan(&shape, batch, length, Precision::Bf16Mixed, gpus, self.offer.gpu_memory_mib << 20) else {
            let min_gpu_memory_mib = needed.div_ceil(1 << 20);
            let why = format!(
                "needs {} GPU(s) of at least {:.1} GiB; this trainer's have {:.1} GiB",
                params.gpus,
                needed as f64 / plan::GIB,
                self.offer.gpu_memory_mib as f64 / 1024.0
            );
            return Ok(Placement::GiveBack(Outcome::NeedsBiggerGpus { min_gpu_memory_mib, why }));
        };
        jobs::event(
            &self.pool,
            job.id,
            "device_plan",
            json!({
                "gpus": params.gpus, "ranks": device_plan.ranks, "sharding": device_plan.sharding,
                "offload_optimizer": device_plan.offload_optimizer, "per_rank_gib": device_plan.per_rank_bytes as f64 / plan::GIB,
                "gpu_memory_gib": self.offer.gpu_memory_mib as f64 / 1024.0,
            }),
        )
        .await?;
        Ok(Placement::Plan(device_plan))
    }
}

/// The hyperparameters in a model version's lineage; `batch_threads`, the ranks and
/// their sharding as the run used them.
fn config_record(c: &TrainConfig, summary: &TrainSummary) -> serde_json::Value {
    let mut record = serde_json::to_value(&c.recipe).unwrap_or_default();
    if let Some(record) = record.as_object_mut() {
        record.extend([
            ("sharding".to_owned(), json!(summary.sharding)),
            ("batch_threads".to_owned(), json!(summary.batch_threads)),
            ("ranks".to_owned(), json!(summary.world_size)),
            ("precision_used".to_owned(), json!(summary.precision)),
            ("cpu_bf16".to_owned(), json!(summary.cpu_bf16)),
        ]);
    }
    record
}

impl JobHandler for TrainWorker {
    type Claim = ClaimedJob;

    async fn claim(&mut self, id: Uuid) -> absa_platform::Result<Option<ClaimedJob>> {
        jobs::claim(&self.pool, id, &self.name, self.settings.lease_secs).await
    }

    async fn run(&mut self, job: ClaimedJob) {
        tracing::info!(job_id = %job.id, attempt = job.attempt, "training job claimed");
        let lease = Lease::keep(self.pool.clone(), job.id, self.name.clone(), self.settings.lease_secs);
        let outcome =
            if job.kind == "train" { self.train_job(&job, &lease).await } else { Err(Permanent(format!("a {} job on the training queue", job.kind)).into()) };
        drop(lease);
        let finished = match &outcome {
            Ok(Outcome::Completed { .. }) => "succeeded",
            Ok(Outcome::Released | Outcome::NeedsBiggerGpus { .. }) => "released",
            Ok(Outcome::LeaseLost) => "lost",
            Err(_) => "failed",
        };
        store_worker::count_finished(&job.kind, finished);
        let settled = match outcome {
            Ok(Outcome::Completed { model_version_id }) => {
                tracing::info!(job_id = %job.id, %model_version_id, "training job succeeded");
                Ok(())
            }
            Ok(Outcome::Released) => absa_store::jobs::release(&self.pool, job.id, &self.name, "worker shutting down").await.map(drop),
            Ok(Outcome::NeedsBiggerGpus { min_gpu_memory_mib, why }) => {
                tracing::info!(job_id = %job.id, min_gpu_memory_mib, "given back: {why}");
                match jobs::require_gpu_memory(&self.pool, job.id, min_gpu_memory_mib).await {
                    Ok(()) => absa_store::jobs::release(&self.pool, job.id, &self.name, &why).await.map(drop),
                    Err(e) => Err(e),
                }
            }
            Ok(Outcome::LeaseLost) => {
                tracing::warn!(job_id = %job.id, "lease lost: the job was cancelled or taken over");
                Ok(())
            }
            Err(e) => store_worker::record_failure(&self.pool, job.id, &self.name, &e).await,
        };
        if let Err(e) = settled {
            // The lease expires on its own and the reaper re-queues the job.
            tracing::error!(job_id = %job.id, error = %e, "could not record the job's outcome");
        }
        let _ = tokio::fs::remove_dir_all(self.settings.work_dir.join(job.id.to_string())).await;
    }
}

/// What a launched rank trains: the run's configuration and the rows of the job's
/// dataset it reads from Postgres (`absa-trainer train-from run.json`).
#[derive(Debug, Serialize, Deserialize)]
pub struct LaunchedRun {
    pub config: TrainConfig,
    pub dataset: Snapshot,
}

/// Trains `run` as `ranks` processes under `absa-trainer launch` (this binary, with
/// this worker's settings file),
/// rank 0 reporting its progress as [`RunEvent`] lines that drive `observer` exactly
/// as the engine in this process would: heartbeats, each epoch's metrics and
/// checkpoint stored before the ranks go on. A stop the observer asks for becomes
/// SIGTERM to the launcher (the ranks stop together at the next step); a rank that
/// fails fails the attempt, and a retry resumes from the last stored checkpoint.
fn run_ranks(run: &LaunchedRun, ranks: u32, dir: &Path, config_file: Option<&Path>, observer: &mut JobObserver) -> Result<TrainSummary, TrainError> {
    use std::io::{BufRead, Write};
    let io = |what: &str| {
        let what = what.to_owned();
        move |e: std::io::Error| TrainError::Io(what.clone(), e)
    };
    let run_file = dir.join("run.json");
    std::fs::write(&run_file, serde_json::to_vec_pretty(run).expect("runs serialise")).map_err(io("run.json"))?;
    let config = &run.config;
    let program = std::env::current_exe().map_err(io("the trainer binary"))?;
    let port = launch::free_port().map_err(io("a port for the ranks' store"))?;
    let mut command = std::process::Command::new(&program);
    if let Some(file) = config_file {
        command.env("ABSA_CONFIG", file);
    }
    let mut child = command
        .args(["launch", "--nproc-per-node", &ranks.to_string(), "--master-port", &port.to_string(), "--"])
        .arg("train-from")
        .arg(&run_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(io(&program.display().to_string()))?;
    tracing::info!(ranks, port, pid = child.id(), "ranks launched");
    let mut answers = child.stdin.take().expect("piped");
    let events = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut stopping = false;
    for line in events.lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<RunEvent>(&line) {
            Ok(RunEvent::Rejected { rows }) => observer.on_rejected(&rows),
            Ok(RunEvent::Start { total_steps, start_step }) => observer.on_start(total_steps, start_step),
            Ok(RunEvent::Step { epoch, global_step, total_steps, loss, samples_per_second, step_rows }) => {
                observer.on_step(&StepProgress { epoch, step_in_epoch: 0, steps_in_epoch: 0, global_step, total_steps, loss, samples_per_second, step_rows })
            }
            Ok(RunEvent::Epoch { record, checkpoint, best_epoch }) => {
                observer.on_epoch(&record, &checkpoint, best_epoch);
                // The ranks wait for this before the next epoch replaces the checkpoint.
                let _ = writeln!(answers, "ok").and_then(|()| answers.flush());
            }
            Err(_) => {} // the summary line, or rank 0's other output
        }
        if !stopping && observer.should_stop() {
            stopping = true;
            // SAFETY: signals the launcher we started and have not reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
    }
    drop(answers);
    let status = child.wait().map_err(io("the launcher"))?;
    match status.code() {
        Some(0) => {
            let path = config.out.join("summary.json");
            let text = std::fs::read_to_string(&path).map_err(io(&path.display().to_string()))?;
            serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
        }
        Some(launch::STOPPED_EXIT_CODE) => Err(TrainError::Stopped { epoch: 0 }),
        code => {
            let reasons = launch::rank_errors(&config.out, ranks as usize);
            let why = if reasons.is_empty() { "a rank died or lost the others (its log is the trainer's)".to_string() } else { reasons.join("; ") };
            let message = format!("the job's {ranks} ranks failed (launcher exit code {}): {why}", code.map_or_else(|| format!("{status}"), |c| c.to_string()));
            // Bad data, model or settings: every rank would fail the same way again.
            Err(if code == Some(launch::PERMANENT_EXIT_CODE) { TrainError::Config(message) } else { TrainError::Collective(message) })
        }
    }
}

/// The artifacts a retried job resumes from: the last epoch's checkpoint and the best
/// epoch's (with its epoch), the same artifact when the last epoch was the best.
#[derive(Clone, Copy, Debug)]
struct StoredCheckpoints {
    last: Uuid,
    best: (Uuid, usize),
}

/// The engine's callbacks in a job: progress into the lease, each epoch's metrics
/// and checkpoint into Postgres, and a stop when the lease is lost or on shutdown.
struct JobObserver {
    lease: LeaseHandle,
    shutdown: watch::Receiver<bool>,
    runtime: Handle,
    pool: PgPool,
    store: ArtifactStore,
    job_id: Uuid,
    team_id: Uuid,
    /// The stored checkpoints a retry resumes from; older ones are deleted.
    stored: Option<StoredCheckpoints>,
    /// Storing an epoch failed: the run stops and the attempt fails with this.
    failure: Option<anyhow::Error>,
    /// The rows the engine could not use, recorded as the job's row errors at the end.
    rejected: Vec<(Split, RowError)>,
    /// The last step counted in `absa_trainer_steps_total`, and when the steps since
    /// began (none right after an epoch's evaluation, which is no step's time).
    last_step: i64,
    timed_since: Option<Instant>,
}

impl JobObserver {
    async fn store_epoch(&mut self, record: &EpochRecord, checkpoint: &Path, best_epoch: usize) -> anyhow::Result<()> {
        let v = &record.validation;
        let detail = json!({
            "report": v.report, "learning_rate": record.learning_rate,
            "train_samples_per_second": record.train_samples_per_second, "train_seconds": record.train_seconds,
        });
        let figures = EpochFigures {
            epoch: record.epoch as i32,
            train_loss: record.train_loss,
            validation_loss: v.loss,
            accuracy: v.accuracy,
            macro_f1: v.macro_f1,
            detail,
        };
        training_metrics::record(&self.pool, self.job_id, &figures).await?;
        let artifact = self.store.put_dir(self.team_id, "checkpoint", Some(self.job_id), checkpoint).await?;
        let is_best = best_epoch == record.epoch;
        jobs::event(&self.pool, self.job_id, "checkpoint_saved", json!({ "epoch": record.epoch, "artifact_id": artifact.id, "best": is_best })).await?;
        let best = match &self.stored {
            Some(stored) if !is_best => stored.best,
            // The first epoch is the best so far (unless its score is NaN: then this
            // checkpoint is the only one there is).
            _ => (artifact.id, record.epoch),
        };
        let now = StoredCheckpoints { last: artifact.id, best };
        if let Some(before) = self.stored.replace(now) {
            for old in [before.last, before.best.0] {
                if old != now.last && old != now.best.0 {
                    self.store.delete(old).await?;
                }
            }
        }
        Ok(())
    }
}

impl Observer for JobObserver {
    fn on_rejected(&mut self, rows: &[(Split, RowError)]) {
        self.rejected = rows.to_vec();
    }

    fn on_start(&mut self, _total_steps: i64, start_step: i64) {
        (self.last_step, self.timed_since) = (start_step, Some(Instant::now()));
    }

    fn on_step(&mut self, p: &StepProgress) {
        let now = Instant::now();
        let steps = p.global_step - self.last_step;
        if steps > 0 {
            let m = &*metrics::TRAINER;
            m.steps.inc_by(steps as u64);
            m.samples.inc_by(p.step_rows as u64);
            if let Some(since) = self.timed_since {
                let per_step = now.duration_since(since).as_secs_f64() / steps as f64;
                for _ in 0..steps {
                    m.step_seconds.observe(per_step);
                }
            }
        }
        (self.last_step, self.timed_since) = (p.global_step, Some(now));
        // Export and registration take the last few percent.
        self.lease.set_progress(0.95 * p.global_step as f64 / p.total_steps.max(1) as f64);
    }

    fn on_epoch(&mut self, record: &EpochRecord, checkpoint: &Path, best_epoch: usize) {
        metrics::TRAINER.epochs.inc();
        // Evaluation and storing are not a step.
        self.timed_since = None;
        let runtime = self.runtime.clone();
        if let Err(e) = runtime.block_on(self.store_epoch(record, checkpoint, best_epoch)) {
            self.failure = Some(e.context(format!("storing epoch {}", record.epoch)));
        }
    }

    fn should_stop(&mut self) -> bool {
        self.failure.is_some() || self.lease.lost() || *self.shutdown.borrow()
    }
}

/// Copies `from` into `to`, the top-level entries whose names `keep` accepts.
fn copy_dir(from: &Path, to: &Path, keep: &dyn Fn(&str) -> bool) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if !keep(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target, &|_| true)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Runs the worker until SIGTERM: advertises its GPUs and consumes the training
/// queues they allow (`train`, and those of jobs asking for up to that many GPUs).
pub async fn run(amqp: &absa_platform::config::AmqpSettings, topology: &Topology, mut worker: TrainWorker) -> anyhow::Result<()> {
    let shutdown = worker.shutdown.clone();
    let queues = topology.train_queues_for(worker.offer.gpus);
    tracing::info!(worker = worker.name(), ?queues, gpus = worker.offer.gpus, gpu_memory_mib = worker.offer.gpu_memory_mib, "training worker started");
    let (pool, name, offer) = (worker.pool.clone(), worker.name.clone(), worker.offer);
    // What this trainer can fine-tune, for the API's list and its submission check.
    let models = absa_store::base_models::scan(&worker.models_dir);
    tracing::info!(models = ?models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), dir = %worker.models_dir.display(), "base models");
    absa_store::base_models::record(&pool, &name, &models).await?;
    workers::while_advertised(pool, name, "trainer", offer, store_worker::consume(amqp, &queues, &mut worker, shutdown)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launched_runs_rejected_rows_cross_the_event_pipe_typed() {
        let rows = vec![(Split::Validation, RowError { line: 4, reason: "span 0..30 lies outside".into() })];
        let mut out = Vec::new();
        absa_trainer::progress::EventPipe::new(&mut out, std::io::empty()).on_rejected(&rows);
        match serde_json::from_slice::<RunEvent>(&out).unwrap() {
            RunEvent::Rejected { rows: back } => assert_eq!(back, rows),
            other => panic!("{other:?}"),
        }
    }
}
