//! `absa-scorer work`: the scoring worker. It claims a shard (a `score_shard` job: a
//! range of a corpus's document seqs), loads the model version's ONNX directory
//! (fetched once per content, kept open between shards), runs exactly the engine of
//! local mode over the shard's documents, and writes the predictions with `COPY`, the
//! row errors and the shard's completion in one transaction: a shard redelivered after
//! a crash either finds its results committed (and claims nothing) or writes them for
//! the first time. Never twice, never half.

use std::sync::{Arc, Mutex};

use absa_jobs::{ScoreParams, ShardParams};
use absa_onnx::Precision;
use absa_platform::metrics;
use absa_store::artifacts::ArtifactStore;
use absa_store::jobs::{self, ClaimedJob};
use absa_store::predictions::{copy_predictions, PredictionRow};
use absa_store::worker::{self as store_worker, JobHandler, Lease, LeaseHandle, Permanent, WorkerSettings};
use anyhow::Context;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use absa_scorer::engine::{self, EngineOptions, ScoreStats};
use absa_scorer::model::ScoringModel;
use absa_scorer::output::{CollectErrors, CollectSink, ErrorSink, Prediction, PredictionSink};
use absa_scorer::rows::Document;
use absa_scorer::runtime::SessionOptions;
use absa_scorer::targets::{Lexicon, NamedTargets};
use absa_scorer::ScoreError;

struct OpenModel {
    version: Uuid,
    precision: Precision,
    model: ScoringModel,
}

pub struct ScoreWorker {
    pool: PgPool,
    store: ArtifactStore,
    settings: WorkerSettings,
    default_precision: Precision,
    engine: EngineOptions,
    session: SessionOptions,
    name: String,
    shutdown: watch::Receiver<bool>,
    open: Option<OpenModel>,
}

impl ScoreWorker {
    pub fn new(
        pool: PgPool,
        settings: WorkerSettings,
        default_precision: Precision,
        engine: EngineOptions,
        session: SessionOptions,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let store = ArtifactStore::new(pool.clone(), settings.backend());
        Self { pool, store, settings, default_precision, engine, session, name: store_worker::worker_name("scorer"), shutdown, open: None }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model version's ONNX directory, opened (or the one already open).
    async fn model(&mut self, team_id: Uuid, version: Uuid, precision: Precision) -> anyhow::Result<ScoringModel> {
        if let Some(open) = self.open.take() {
            if open.version == version && open.precision == precision {
                return Ok(open.model);
            }
        }
        // Scoped by team: a job can only use its own team's models.
        let onnx_id = absa_store::registry::onnx_of(&self.pool, team_id, version).await?;
        let onnx_id = onnx_id.ok_or_else(|| Permanent(format!("model version {version} not found (or has no ONNX export)")))?;
        let dir = self.store.cached_dir(onnx_id, &self.settings.cache_dir).await?;
        let session = self.session.clone();
        let model = tokio::task::spawn_blocking(move || ScoringModel::open(&dir, precision, &session)).await.context("model loading panicked")??;
        tracing::info!(%version, %precision, "model opened");
        Ok(model)
    }

    /// Scores one shard; `Ok(false)` when the lease was lost before the results committed.
    async fn score_shard(&mut self, job: &ClaimedJob, lease: &Lease) -> anyhow::Result<bool> {
        let params = ShardParams::from_value(&job.parameters).map_err(Permanent)?;
        let parent = jobs::parent(&self.pool, job.id).await?;
        // Predictions belong to the corpus run (the parent), not to the shard.
        let run_id = parent.as_ref().map_or(job.id, |(id, _)| *id);
        let precision = params.job.precision.unwrap_or(self.default_precision);
        let model = self.model(job.team_id, params.job.model_version_id, precision).await?;
        // The lexicon and the stance targets are stored once, in the parent score job.
        let parent = parent.map(|(_, parameters)| ScoreParams::from_value(&parameters)).transpose().map_err(|e| Permanent(format!("the parent job's {e}")))?;
        let (parent_lexicon, targets) = parent.map_or((None, None), |p| (p.lexicon, p.targets));
        let lexicon = match params.job.lexicon.as_ref().or(parent_lexicon.as_ref()) {
            Some(terms) if !terms.is_empty() => Some(Arc::new(Lexicon::new(terms.iter().map(String::as_str)).map_err(|e| Permanent(format!("lexicon: {e}")))?)),
            _ => None,
        };
        let mut options = self.engine.clone();
        options.named_targets = match targets {
            Some(list) if !list.is_empty() => {
                let pairs = list.into_iter().map(|t| (t.name, t.aliases));
                Some(Arc::new(NamedTargets::new(pairs).map_err(|e| Permanent(format!("targets: {e}")))?))
            }
            _ => None,
        };
        let documents = read_documents(&self.pool, job.team_id, &params).await?;
        let total = documents.len().max(1) as f64;

        // A shard is bounded by its size: its predictions and rejected rows stay in memory.
        let (collected, rejected) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let sink = Box::new(CollectSink(collected.clone()));
        let errors = Box::new(CollectErrors(rejected.clone()));
        let handle = lease.handle();
        let (model, stats) = tokio::task::spawn_blocking(move || {
            let mut model = model;
            let stats = score_documents(&mut model, documents, lexicon, &options, sink, errors, &handle, total);
            (model, stats)
        })
        .await
        .context("the scoring thread panicked")?;
        let labels = model.labels.names().to_vec();
        self.open = Some(OpenModel { version: params.job.model_version_id, precision, model });
        let stats = stats?;
        let row_errors = std::mem::take(&mut *rejected.lock().expect("no panics while holding the lock"));
        if lease.lost() {
            return Ok(false);
        }

        let predictions = std::mem::take(&mut *collected.lock().expect("no panics while holding the lock"));
        let rows = prediction_rows(predictions, &labels, run_id, &params);
        let mut tx = self.pool.begin().await?;
        let written = copy_predictions(&mut tx, &rows).await?;
        let errors: Vec<(i64, String)> = row_errors.iter().map(|e| (e.line as i64, e.reason.clone())).collect();
        absa_store::row_errors::record(&mut tx, absa_store::row_errors::Found::Scoring { job: run_id, corpus: params.job.corpus_id }, &errors).await?;
        let detail = json!({ "shard": params.shard, "predictions": written, "rows_read": stats.rows_read, "rows_rejected": stats.rows_rejected,
                             "instances_rejected": stats.instances_rejected, "worker": self.name });
        jobs::event(&mut *tx, job.id, "scored", detail).await?;
        if jobs::complete(&mut *tx, job.id, &self.name).await?.is_err() {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        let m = &*metrics::SCORER;
        m.documents.inc_by(stats.rows_read);
        m.predictions.inc_by(written as u64);
        m.rows_rejected.inc_by(row_errors.len() as u64);
        tracing::info!(job_id = %job.id, shard = params.shard, predictions = written, "shard scored");
        Ok(true)
    }
}

impl JobHandler for ScoreWorker {
    type Claim = ClaimedJob;

    async fn claim(&mut self, id: Uuid) -> absa_platform::Result<Option<ClaimedJob>> {
        jobs::claim(&self.pool, id, &self.name, self.settings.lease_secs).await
    }

    /// Shards are short: on shutdown the current one is finished, then the loop exits.
    async fn run(&mut self, job: ClaimedJob) {
        let lease = Lease::keep(self.pool.clone(), job.id, self.name.clone(), self.settings.lease_secs);
        let outcome = if job.kind == "score_shard" {
            self.score_shard(&job, &lease).await
        } else {
            Err(Permanent(format!("a {} job on the scoring queue", job.kind)).into())
        };
        drop(lease);
        let settled = match outcome {
            Ok(true) => {
                store_worker::count_finished(&job.kind, "succeeded");
                Ok(())
            }
            Ok(false) => {
                tracing::warn!(job_id = %job.id, "lease lost: the shard was cancelled or taken over; nothing written");
                store_worker::count_finished(&job.kind, "lost");
                Ok(())
            }
            Err(e) => {
                store_worker::count_finished(&job.kind, "failed");
                store_worker::record_failure(&self.pool, job.id, &self.name, &e).await
            }
        };
        if let Err(e) = settled {
            tracing::error!(job_id = %job.id, error = %e, "could not record the shard's outcome");
        }
    }
}

/// The shard's documents, typed as the engine takes them: `line` is the document's seq.
async fn read_documents(pool: &PgPool, team_id: Uuid, params: &ShardParams) -> anyhow::Result<Vec<Document>> {
    let stored = absa_store::corpora::documents(pool, team_id, params.job.corpus_id, params.seq_from..params.seq_to).await?;
    Ok(stored
        .into_iter()
        .map(|d| Document {
            line: d.seq as usize,
            id: Value::from(d.external_id),
            text: d.text,
            aspect: d.aspect,
            span: d.span_start.zip(d.span_end).map(|(s, e)| (s as usize, e as usize)),
            target: d.target,
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn score_documents(
    model: &mut ScoringModel,
    documents: Vec<Document>,
    lexicon: Option<Arc<Lexicon>>,
    options: &EngineOptions,
    sink: Box<dyn PredictionSink>,
    errors: Box<dyn ErrorSink>,
    lease: &LeaseHandle,
    total: f64,
) -> Result<ScoreStats, ScoreError> {
    let records = documents.into_iter().map(|r| Ok(Ok(r)));
    // The engine reports after every batch: the time between two reports that each
    // add one batch is that batch's model call.
    let (mut batches, mut since) = (0u64, std::time::Instant::now());
    engine::run(model, records, lexicon, options, sink, errors, &mut |stats: &ScoreStats| {
        if stats.batches == batches + 1 {
            metrics::SCORER.batch_seconds.observe(since.elapsed().as_secs_f64());
        }
        (batches, since) = (stats.batches, std::time::Instant::now());
        // Writing takes the last part of a shard.
        lease.set_progress(0.9 * stats.rows_read as f64 / total);
    })
}

/// Predictions come in input order, a document's targets in text order: the n-th
/// prediction of a seq is its target `n`.
fn prediction_rows(predictions: Vec<Prediction>, labels: &[String], run_id: Uuid, params: &ShardParams) -> Vec<PredictionRow> {
    let mut rows = Vec::with_capacity(predictions.len());
    let (mut last_seq, mut index) = (-1i64, 0i32);
    for p in predictions {
        let seq = p.line as i64;
        index = if seq == last_seq { index + 1 } else { 0 };
        last_seq = seq;
        let label = labels[p.label_index()].clone();
        rows.push(PredictionRow {
            job_id: run_id,
            corpus_id: params.job.corpus_id,
            seq,
            target_index: index,
            model_version_id: params.job.model_version_id,
            aspect: p.aspect.clone(),
            span_start: p.start.map(|s| s as i32),
            span_end: p.end.map(|e| e as i32),
            label,
            confidence: p.confidence(),
            probabilities: p.probabilities,
        });
    }
    rows
}

/// Runs the worker until SIGTERM.
pub async fn run(amqp: &absa_platform::config::AmqpSettings, queue: &str, mut worker: ScoreWorker) -> anyhow::Result<()> {
    let shutdown = worker.shutdown.clone();
    tracing::info!(worker = worker.name(), queue, "scoring worker started");
    // Seen by the scheduler's live-worker gauge (a scorer offers no GPU).
    let (pool, name, queues) = (worker.pool.clone(), worker.name.clone(), [queue.to_owned()]);
    let consumed = store_worker::consume(amqp, &queues, &mut worker, shutdown);
    absa_store::workers::while_advertised(pool, name, "scorer", Default::default(), consumed).await?;
    Ok(())
}
