//! The fine-tuning engine: the reference recipe (TD-BERT, AdamW, linear warmup and
//! decay, early stopping) with honest model selection on a validation split, per-epoch
//! checkpoints that resume exactly, and a test evaluation of the selected model.
//! The CLI's `train` and the trainer worker both call [`train`] with typed rows
//! ([`LabelledData`]): local mode reads them from files ([`crate::data_files`]), the
//! worker from Postgres.
//!
//! # Layout
//! - [`data`]: encoding rows, length-grouped batches, padding.
//! - [`optimizer`]: AdamW, the schedule, gradient clipping, with saveable state.
//! - [`local`]: training in this process (batch threads on the CPU).
//! - this module: configuration, the loop, evaluation, checkpoints, the summary. A
//!   run started as one rank of several (torchrun's environment, see
//!   [`crate::distributed`]) trains through [`sharded::ShardedEngine`]
//!   instead; the loop, its checkpoints and its figures are the same.

pub mod data;
mod grad_sum;
pub mod local;
pub mod optimizer;
pub mod sharded;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use absa_domain::dataset::rows_sha256;
use absa_domain::metrics::ClassificationReport;
use absa_domain::split::stratified_split;
use absa_domain::{AspectEncoder, InputForm, LabelSet, LabelledRow, RowError};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use self::data::{collate, encode_rows, epoch_batches, eval_batches, Batch, Example, Order};
use self::local::LocalEngine;
use self::optimizer::linear_schedule;
use crate::checkpoint::{LoadOptions, LoadedModel};
use crate::distributed::{self, RankEnv, Sharding};
use crate::model::Pooling;
use crate::plan::Precision;
pub use crate::TrainError;
pub use absa_domain::{LabelledData, Split};
pub use absa_jobs::{Hyperparameters, Padding, PrecisionChoice, Recipe, SelectMetric};
use sharded::ShardedEngine;

/// Everything a fine-tuning run needs but its rows. Defaults are the reference recipe's.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// HF checkpoint directory to start from (`config.json`, weights, `tokenizer.json`).
    pub base: PathBuf,
    pub out: PathBuf,
    /// Label names in output order; by default taken from the training data.
    pub labels: Option<Vec<String>>,
    /// The recipe's settings (hyperparameters), written flat as before.
    #[serde(flatten)]
    pub recipe: Recipe,
    /// Continue from `out/checkpoint-last` when it exists.
    pub resume: bool,
    /// Stop (resumably) once this many epochs are done in total: for tests and for
    /// splitting a long run.
    pub stop_after_epoch: Option<usize>,
    /// libtorch intra-op threads; 0 means one per available CPU (libtorch's own
    /// default counts physical cores, which is 1 on a 2-vCPU machine).
    pub threads: i32,
    /// On the CPU, threads that each train a part of every batch with one libtorch
    /// thread (see [`DataParallel`]); 0 means as many as `threads`. The trajectory
    /// depends on it (each part draws its own dropout masks): a resume with another
    /// count continues, but not bit for bit.
    pub batch_threads: usize,
    /// Where to train: the first GPU when libtorch sees one (a rank: its local GPU),
    /// else the CPU.
    pub device: DeviceChoice,
    /// How long a rank waits for the others in a collective before the run fails.
    pub collective_timeout_secs: u64,
    /// The ranks' communication backend; default: NCCL between GPUs, else Gloo (Gloo
    /// can also join ranks that share a GPU).
    pub backend: Option<distributed::Backend>,
}

/// Which device a run trains on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when libtorch sees a GPU, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl DeviceChoice {
    /// The device of local rank `local_rank` (0 for one process).
    pub fn device(self, local_rank: usize) -> Result<Device, TrainError> {
        let cuda = tch::Cuda::device_count().max(0) as usize;
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto if cuda == 0 => Ok(Device::Cpu),
            _ if cuda == 0 => Err(TrainError::Config("device cuda: libtorch sees no CUDA device (a CPU build sees none)".into())),
            // More local ranks than GPUs share them round robin (a check on one GPU).
            _ => Ok(Device::Cuda(local_rank % cuda)),
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            base: PathBuf::new(),
            out: PathBuf::from("runs/absa"),
            labels: None,
            recipe: Recipe::default(),
            resume: false,
            stop_after_epoch: None,
            threads: 0,
            batch_threads: 0,
            device: DeviceChoice::Auto,
            collective_timeout_secs: 600,
            backend: None,
        }
    }
}

/// Validation or test figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub report: ClassificationReport,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub learning_rate: f64,
    pub train_samples_per_second: f64,
    pub train_seconds: f64,
    pub validation: Evaluation,
}

/// Rows not used, by split.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Rejected {
    pub train: usize,
    pub validation: usize,
    pub test: usize,
}

/// The one-line JSON the CLI prints at the end.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub stopped_early: bool,
    /// False when `stop_after_epoch` paused the run before its end.
    pub finished: bool,
    pub validation_accuracy: f64,
    pub validation_macro_f1: f64,
    pub validation_loss: f64,
    /// Stance's F_avg (mean F1 of against and favor) where the labels have both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_f_avg: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub test_macro_f1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_f_avg: Option<f64>,
    /// How the model reads an instance (text alone, or text and target).
    #[serde(default)]
    pub input: InputForm,
    /// The forward passes' arithmetic (`--precision auto` resolved on this machine).
    #[serde(default)]
    pub precision: Precision,
    /// The bf16 instructions libtorch detected on this machine's CPU (`amx_bf16`,
    /// `avx512_bf16`; empty: none, so `auto` trains fp32 on the CPU).
    #[serde(default)]
    pub cpu_bf16: Vec<String>,
    /// The malloc the process ran on (`tcmalloc` or `glibc`, see [`crate::allocator`]).
    #[serde(default)]
    pub malloc: String,
    pub train_samples_per_second: f64,
    /// Threads each CPU batch was split over (1: whole batches); it shapes the run's
    /// trajectory, so lineage records it.
    pub batch_threads: usize,
    /// Ranks that trained the model together (1: one process).
    #[serde(default = "one")]
    pub world_size: usize,
    /// How the ranks divided the model's state; none for one process.
    #[serde(default)]
    pub sharding: Option<Sharding>,
    /// Each rank's resident memory (MiB, rank order) before its model was loaded, and
    /// its peak while the first epoch trained (after loading: the model's state and a
    /// step's transients, not the loading itself or checkpoint writing).
    #[serde(default)]
    pub rank_rss_before_model_mib: Vec<f64>,
    #[serde(default)]
    pub rank_training_peak_rss_mib: Vec<f64>,
    pub wall_seconds: f64,
    pub peak_rss_mib: f64,
    pub rows_rejected: Rejected,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub test_rows: usize,
    pub best_checkpoint: PathBuf,
}

fn one() -> usize {
    1
}

/// Progress of one optimizer step, for progress bars and heartbeats.
#[derive(Clone, Debug)]
pub struct StepProgress {
    pub epoch: usize,
    pub step_in_epoch: usize,
    pub steps_in_epoch: usize,
    pub global_step: i64,
    pub total_steps: i64,
    pub loss: f64,
    pub samples_per_second: f64,
    /// Training rows this step took (its batches since the last step; with several
    /// ranks, all of them together: each rank gets the same rows and takes its part).
    pub step_rows: usize,
}

/// Callbacks from the loop. The worker uses them for heartbeats, progress, rejected
/// rows and cancellation; local mode for its progress bar and `rejected_rows.txt`.
pub trait Observer {
    /// Once, before training: every row the run's files hold that it cannot use, by
    /// split (the line is the row's line in that split's file), in file order.
    fn on_rejected(&mut self, _rows: &[(Split, RowError)]) {}
    fn on_start(&mut self, _total_steps: i64, _start_step: i64) {}
    fn on_step(&mut self, _progress: &StepProgress) {}
    /// After each epoch: `checkpoint` is `checkpoint-last`; `best_epoch` is the epoch
    /// `checkpoint-best` now holds (this one when it improved).
    fn on_epoch(&mut self, _record: &EpochRecord, _checkpoint: &Path, _best_epoch: usize) {}
    /// Checked between steps; true stops the run at the next step boundary.
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// An observer that does nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// What is saved beside the weights in `checkpoint-last`, so a run resumes where it
/// stopped. Data order and dropout masks come from seeds derived from `seed`, the
/// epoch and the batch, so they need no saving.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainerState {
    epochs_done: usize,
    global_step: i64,
    best_epoch: usize,
    best_score: f64,
    epochs_without_improvement: usize,
    history: Vec<EpochRecord>,
    labels: Vec<String>,
    config: TrainConfig,
    /// SHA-256 of the training rows ([`rows_sha256`]): a resumed run must train on the
    /// same rows, wherever they are read from now. Empty in a state saved before rows
    /// were hashed (a file's bytes were, under `train_sha256`): such a run resumes
    /// without the comparison.
    #[serde(default)]
    train_rows_sha256: String,
}

const LAST: &str = "checkpoint-last";
const BEST: &str = "checkpoint-best";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io(path.display().to_string(), e)
}

/// Encoded data for one run.
struct Prepared {
    train: Vec<Example>,
    validation: Vec<Example>,
    test: Vec<Example>,
    rejected: Rejected,
    labels: LabelSet,
    input: InputForm,
    /// Every rejected row, by split, for [`Observer::on_rejected`].
    rejected_rows: Vec<(Split, RowError)>,
}

/// Encodes `data` for the model. Rows it cannot use (an unknown label, a target the
/// tokenizer cannot place) join the rows refused on the way in; without validation
/// rows a stratified share of train is held out.
fn prepare(config: &TrainConfig, data: &LabelledData, encoder: &AspectEncoder) -> Result<Prepared, TrainError> {
    let labels = match &config.labels {
        Some(names) => LabelSet::new(names.clone()).map_err(TrainError::Config)?,
        None => LabelSet::from_data(data.train.iter().map(|r| r.label.as_str())).map_err(TrainError::Config)?,
    };
    let input = config.recipe.input.unwrap_or_else(|| InputForm::for_spans(data.train.iter().map(|r| r.span.is_some())));
    let mut rejected_rows: Vec<(Split, RowError)> = data.refused.clone();
    let mut encode = |split: Split, rows: &[LabelledRow]| {
        let (examples, errors) = encode_rows(rows, encoder, input, &labels);
        rejected_rows.extend(errors.into_iter().map(|e| (split, e)));
        examples
    };
    let mut train = encode(Split::Train, &data.train);
    let validation = match &data.validation {
        Some(rows) => encode(Split::Validation, rows),
        None => {
            let gold: Vec<usize> = train.iter().map(|e| e.label as usize).collect();
            let (keep, held_out) = stratified_split(&gold, config.recipe.validation_fraction, config.recipe.split_seed);
            let validation = held_out.iter().map(|&i| train[i].clone()).collect();
            train = keep.iter().map(|&i| train[i].clone()).collect();
            validation
        }
    };
    let test = data.test.as_deref().map_or_else(Vec::new, |rows| encode(Split::Test, rows));
    if train.is_empty() || validation.is_empty() {
        return Err(TrainError::Config(format!("need training and validation rows, have {} and {}", train.len(), validation.len())));
    }
    let count = |split: Split| rejected_rows.iter().filter(|(s, _)| *s == split).count();
    let rejected = Rejected { train: count(Split::Train), validation: count(Split::Validation), test: count(Split::Test) };
    for (split, e) in &rejected_rows {
        tracing::warn!(%split, line = e.line, reason = %e.reason, "row rejected");
    }
    Ok(Prepared { train, validation, test, rejected, labels, input, rejected_rows })
}

/// The batch's logits in fp32. With `bf16` the forward pass runs under bf16 autocast
/// (matrix products in bf16, weights, gradients and optimizer states fp32: HF's
/// `bf16=True`; by default on CUDA, see [`PrecisionChoice`]).
pub fn logits(model: &LoadedModel, batch: &Batch, train: bool, bf16: bool) -> Tensor {
    let inputs = batch.unit_inputs();
    let forward = || model.model.logits_of(&inputs, train);
    let device = batch.input_ids.device();
    let logits = if bf16 { crate::autocast::with_autocast(device, Kind::BFloat16, forward).expect("libtorch takes bf16 autocast on CUDA") } else { forward() };
    logits.to_kind(Kind::Float)
}

/// Loss, predictions and metrics over `examples` in eval mode (`bf16`: under bf16 autocast).
pub fn evaluate(model: &LoadedModel, examples: &[Example], batch_size: usize, pad_id: i64, device: Device, bf16: bool) -> Evaluation {
    let lengths: Vec<usize> = examples.iter().map(|e| e.input_ids.len()).collect();
    let mut predicted = vec![0usize; examples.len()];
    let mut loss_sum = 0.0;
    tch::no_grad(|| {
        for batch_idx in eval_batches(&lengths, batch_size) {
            let rows: Vec<&Example> = batch_idx.iter().map(|&i| &examples[i]).collect();
            let batch = collate(&rows, None, pad_id, device);
            let logits = logits(model, &batch, false, bf16);
            let loss = logits.cross_entropy_loss::<Tensor>(&batch.labels, None, tch::Reduction::Sum, -100, 0.0);
            loss_sum += loss.double_value(&[]);
            let argmax: Vec<i64> = Vec::try_from(logits.argmax(-1, false).to_device(Device::Cpu)).expect("argmax is int64");
            for (&i, p) in batch_idx.iter().zip(argmax) {
                predicted[i] = p as usize;
            }
        }
    });
    let gold: Vec<usize> = examples.iter().map(|e| e.label as usize).collect();
    let report = ClassificationReport::new(&predicted, &gold, model.labels.names());
    Evaluation { loss: loss_sum / examples.len().max(1) as f64, accuracy: report.accuracy, macro_f1: report.macro_f1, report }
}

fn score(config: &TrainConfig, e: &Evaluation) -> f64 {
    // Higher is better for every metric: loss is negated.
    ranked(match config.recipe.select_metric {
        SelectMetric::Loss => -e.loss,
        SelectMetric::Accuracy => e.accuracy,
        SelectMetric::MacroF1 => e.macro_f1,
    })
}

/// A diverged epoch's score (NaN) ranks below every real one; finite, so the saved
/// state stays valid JSON.
fn ranked(s: f64) -> f64 {
    if s.is_nan() {
        f64::MIN
    } else {
        s
    }
}

/// Whether an epoch scoring `s` becomes the selected one: the first epoch always does
/// (there must be a selected model), a later one only by beating the best so far.
fn improves(s: f64, best_score: f64, best_epoch: usize) -> bool {
    best_epoch == 0 || s > best_score
}

/// Writes `dir` by building it beside and renaming over, so a crash never leaves a
/// half-written checkpoint under the final name. With several ranks each writes its
/// own files into the folder rank 0 made, and rank 0 renames it once all are done.
fn replace_dir(trainee: &mut Trainee, dir: &Path, write: impl FnOnce(&mut Trainee, &Path) -> Result<(), TrainError>) -> Result<(), TrainError> {
    let tmp = dir.with_extension("tmp");
    let old = dir.with_extension("old");
    if trainee.writes() {
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    trainee.barrier()?;
    write(trainee, &tmp)?;
    trainee.barrier()?;
    if trainee.writes() {
        let _ = std::fs::remove_dir_all(&old);
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(io_err(dir))?;
        }
        std::fs::rename(&tmp, dir).map_err(io_err(dir))?;
        let _ = std::fs::remove_dir_all(&old);
    }
    trainee.barrier()
}

fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(epoch as u64 + 1)
}

/// The model being trained: in this process, or as one rank of several.
enum Trainee {
    Local { engine: Box<LocalEngine>, device: Device },
    Rank(Box<ShardedEngine>),
}

impl Trainee {
    fn backward(&mut self, rows: &[&Example], pad_to: Option<usize>, pad_id: i64, accumulation: usize, train: bool, seed: u64) -> Result<f64, TrainError> {
        match self {
            Trainee::Local { engine, .. } => Ok(engine.backward(rows, pad_to, pad_id, accumulation, train, seed)),
            Trainee::Rank(engine) => engine.backward(rows, pad_to, pad_id, accumulation, train, seed),
        }
    }

    fn step(&mut self, lr: f64, max_grad_norm: f64) -> Result<f64, TrainError> {
        match self {
            Trainee::Local { engine, .. } => Ok(engine.step(lr, max_grad_norm)),
            Trainee::Rank(engine) => engine.step(lr, max_grad_norm),
        }
    }

    fn evaluate(&mut self, examples: &[Example], batch_size: usize, pad_id: i64) -> Result<Evaluation, TrainError> {
        match self {
            Trainee::Local { engine, device } => Ok(evaluate(engine.model(), examples, batch_size, pad_id, *device, engine.bf16())),
            Trainee::Rank(engine) => engine.evaluate(examples, batch_size, pad_id),
        }
    }

    /// The arithmetic of the forward passes.
    fn precision(&self) -> Precision {
        let bf16 = match self {
            Trainee::Local { engine, .. } => engine.bf16(),
            Trainee::Rank(engine) => engine.bf16(),
        };
        if bf16 {
            Precision::Bf16Mixed
        } else {
            Precision::Fp32
        }
    }

    /// Whether any rank asks to stop (this one when `local`).
    fn any_stop(&mut self, local: bool) -> Result<bool, TrainError> {
        match self {
            Trainee::Local { .. } => Ok(local),
            Trainee::Rank(engine) => engine.any_stop(local),
        }
    }

    /// This process writes the run's own files (metrics, state, summary): rank 0.
    fn writes(&self) -> bool {
        match self {
            Trainee::Local { .. } => true,
            Trainee::Rank(engine) => engine.rank() == 0,
        }
    }

    fn barrier(&mut self) -> Result<(), TrainError> {
        match self {
            Trainee::Local { .. } => Ok(()),
            Trainee::Rank(engine) => engine.barrier(),
        }
    }

    /// The model as an HF checkpoint in `dir`.
    fn save_model(&mut self, dir: &Path, base: &Path) -> Result<(), TrainError> {
        match self {
            Trainee::Local { engine, .. } => Ok(engine.model().save(dir, Some(base))?),
            Trainee::Rank(engine) => engine.save_model(dir, base),
        }
    }

    /// What a resumed run continues from (model and optimizer state) in `dir`.
    fn save_state(&mut self, dir: &Path, base: &Path) -> Result<(), TrainError> {
        match self {
            Trainee::Local { engine, .. } => {
                engine.model().save(dir, Some(base))?;
                Ok(crate::checkpoint::write_safetensors(&engine.optimizer().state_tensors(), &dir.join("optimizer.safetensors"))?)
            }
            Trainee::Rank(engine) => engine.save_state(dir),
        }
    }

    /// The model in the HF checkpoint `dir` (the selected one) evaluated on `examples`.
    fn evaluate_checkpoint(&mut self, dir: &Path, examples: &[Example], batch_size: usize, pad_id: i64) -> Result<Evaluation, TrainError> {
        match self {
            Trainee::Local { engine, device } => {
                let selected = crate::checkpoint::load(dir, &LoadOptions::default(), *device)?;
                Ok(evaluate(&selected, examples, batch_size, pad_id, *device, engine.bf16()))
            }
            Trainee::Rank(engine) => {
                engine.load_parameters(dir)?;
                engine.evaluate(examples, batch_size, pad_id)
            }
        }
    }
}

/// Starts the run's model from `start_dir`: in this process, or as this rank of a
/// group (joining it), sharded as the config says or the plan decides.
fn start(
    config: &TrainConfig,
    ranks: Option<&RankEnv>,
    start_dir: &Path,
    options: &LoadOptions,
    threads: i32,
    resume_step: Option<(&Path, i64)>,
) -> Result<Trainee, TrainError> {
    let Some(env) = ranks else {
        let device = config.device.device(0)?;
        let model = crate::checkpoint::load(start_dir, options, device)?;
        let mut engine = LocalEngine::new(model, config.recipe.weight_decay, config.recipe.offload_optimizer)
            .with_bf16(crate::autocast::bf16_on(config.recipe.precision, device))
            .with_label_smoothing(config.recipe.label_smoothing_factor)
            .with_batch_threads(config.batch_threads)
            .with_optimizer_threads(threads as usize);
        if let Some((dir, step)) = resume_step {
            let tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(dir.join("optimizer.safetensors"))?.into_iter().collect();
            engine.load_optimizer_state(&tensors, step).map_err(|reason| TrainError::Resume { dir: dir.display().to_string(), reason })?;
        }
        return Ok(Trainee::Local { engine: Box::new(engine), device });
    };
    let device = config.device.device(env.local_rank)?;
    let sharding = match config.recipe.sharding {
        Sharding::Auto => crate::plan::choose_sharding(&config.base, options, config.recipe.batch_size, config.recipe.max_length, env, device)?,
        chosen => chosen,
    };
    let backend = config.backend.unwrap_or_else(|| distributed::Backend::for_device(device));
    tracing::info!(rank = env.rank, world = env.world, local_rank = env.local_rank, ?device, ?backend, ?sharding, master = %format!("{}:{}", env.master_addr, env.master_port), "joining the group");
    let timeout = std::time::Duration::from_secs(config.collective_timeout_secs.max(1));
    let group = distributed::ProcessGroup::join(backend, &env.master_addr, env.master_port, env.rank, env.world, timeout, device)
        .map_err(|e| TrainError::Collective(e.to_string()))?;
    let setup = sharded::RankSetup {
        bf16: crate::autocast::bf16_on(config.recipe.precision, device),
        group,
        sharding,
        device,
        offload: config.recipe.offload_optimizer,
        weight_decay: config.recipe.weight_decay,
        label_smoothing: config.recipe.label_smoothing_factor,
        update_threads: threads as usize,
    };
    let engine = ShardedEngine::load(start_dir, &config.base, options, setup)?;
    if let Some((dir, step)) = resume_step {
        if engine.steps_taken() != step {
            return Err(TrainError::Resume {
                dir: dir.display().to_string(),
                reason: format!("the shards were saved at step {}, the trainer state at step {step}", engine.steps_taken()),
            });
        }
    }
    Ok(Trainee::Rank(Box::new(engine)))
}

/// Runs (or resumes) a fine-tuning run on `rows` and returns its summary. Writes
/// `out/checkpoint-best` (the selected model, an HF directory), `out/checkpoint-last`
/// (weights plus optimizer and trainer state), `out/metrics.jsonl` (one line per
/// epoch) and `out/summary.json`; the rows it cannot use, with those `rows` refused
/// on the way in, go to [`Observer::on_rejected`].
///
/// Started with torchrun's environment (see [`crate::distributed::launch`]), the
/// process is one rank of a group: every rank runs this same loop on its part of
/// each batch, rank 0 alone writes the run's files and calls `observer`'s progress
/// callbacks, and a stop asked of any rank stops all of them at the same step. Every
/// rank must be given the same rows.
pub fn train(config: &TrainConfig, rows: &LabelledData, observer: &mut dyn Observer) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    if config.recipe.batch_size == 0 || config.recipe.gradient_accumulation_steps == 0 || config.recipe.epochs == 0 {
        return Err(TrainError::Config("batch size, gradient accumulation steps and epochs must be positive".into()));
    }
    let ranks = RankEnv::from_env().map_err(TrainError::Config)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Ranks on one host share its cores, as torchrun's OMP_NUM_THREADS does.
    let threads = if config.threads > 0 { config.threads } else { (cores / ranks.as_ref().map_or(1, |r| r.local_world)).max(1) as i32 };
    tch::set_num_threads(threads);
    keep_freed_memory();
    // Batch threads as this run uses them (saved in its state; a resume compares). A
    // rank trains its own part of each batch on its own.
    let mut resolved = config.clone();
    let on_cpu = config.device.device(ranks.as_ref().map_or(0, |r| r.local_rank))? == Device::Cpu;
    resolved.batch_threads = match (ranks.is_none() && on_cpu, config.batch_threads) {
        (false, _) => 1,
        (true, 0) => threads as usize,
        (true, n) => n,
    };
    let config = &resolved;
    let tokenizer_path = config.base.join("tokenizer.json");
    let encoder = AspectEncoder::from_file(&tokenizer_path, config.recipe.max_length)
        .map_err(|e| TrainError::Config(e.to_string()))?
        .pooling_cls(config.recipe.pooling == Pooling::Cls);
    let data = prepare(config, rows, &encoder)?;
    let writer = ranks.as_ref().is_none_or(|r| r.rank == 0);
    if writer {
        std::fs::create_dir_all(&config.out).map_err(io_err(&config.out))?;
        observer.on_rejected(&data.rejected_rows);
    }

    let last_dir = config.out.join(LAST);
    let best_dir = config.out.join(BEST);
    let train_rows_sha256 = rows_sha256(&rows.train);
    let resume_state =
        if config.resume && last_dir.join("trainer_state.json").is_file() { Some(read_state(&last_dir, config, &train_rows_sha256)?) } else { None };
    if resume_state.is_some() && !best_dir.join("config.json").is_file() {
        // Without the selected model a resumed run could not end as an uninterrupted one.
        return Err(TrainError::Resume { dir: best_dir.display().to_string(), reason: "checkpoint-best is missing".into() });
    }
    let start_dir = if resume_state.is_some() { &last_dir } else { &config.base };

    tch::manual_seed(config.recipe.seed as i64); // the fresh head's initialisation
    let options = LoadOptions { labels: Some(data.labels.clone()), pooling: Some(config.recipe.pooling), input: Some(data.input) };
    let resume_step = resume_state.as_ref().map(|s| (last_dir.as_path(), s.global_step));
    let rss_before_model = absa_memory::rss_mib();
    let mut trainee = start(config, ranks.as_ref(), start_dir, &options, threads, resume_step)?;
    release_free_memory();
    let mut training_peak_rss: Option<f64> = None;

    let pad_id = encoder.pad_id();
    let fixed = config.recipe.padding == Padding::Fixed;
    let order = if fixed { Order::Shuffled } else { Order::LengthGrouped };
    let lengths: Vec<usize> = data.train.iter().map(|e| e.input_ids.len()).collect();
    let batches_per_epoch = data.train.len().div_ceil(config.recipe.batch_size);
    let steps_per_epoch = batches_per_epoch.div_ceil(config.recipe.gradient_accumulation_steps) as i64;
    let total_steps = steps_per_epoch * config.recipe.epochs as i64;

    let mut state = match resume_state {
        Some(state) => {
            tracing::info!(epochs_done = state.epochs_done, step = state.global_step, "resuming");
            state
        }
        None => TrainerState {
            epochs_done: 0,
            global_step: 0,
            best_epoch: 0,
            best_score: f64::NEG_INFINITY,
            epochs_without_improvement: 0,
            history: Vec::new(),
            labels: data.labels.names().to_vec(),
            config: config.clone(),
            train_rows_sha256,
        },
    };
    if writer {
        observer.on_start(total_steps, state.global_step);
    }

    let mut stopped_early = false;
    let mut interrupted = false;
    let mut train_seconds_total = 0.0;
    let mut train_samples_total = 0usize;
    while state.epochs_done < config.recipe.epochs {
        if state.epochs_without_improvement >= config.recipe.early_stopping_patience {
            stopped_early = true;
            break;
        }
        if config.stop_after_epoch.is_some_and(|k| state.epochs_done >= k) {
            interrupted = true;
            break;
        }
        let epoch = state.epochs_done + 1;
        let seed = epoch_seed(config.recipe.seed, epoch);
        tch::manual_seed(seed as i64); // dropout masks on CUDA
        let batches = epoch_batches(&lengths, config.recipe.batch_size, order, seed);
        // With batch threads each part runs on one core, and so does the optimizer step
        // between them (it is memory-bound): idle intra-op threads would only spin.
        tch::set_num_threads(if config.batch_threads > 1 { 1 } else { threads });
        if training_peak_rss.is_none() {
            absa_memory::reset_peak_rss();
        }
        let epoch_start = Instant::now();
        let (mut loss_sum, mut loss_rows, mut lr) = (0.0, 0usize, 0.0);
        let (mut step_in_epoch, mut step_rows) = (0, 0);
        for (i, batch_idx) in batches.iter().enumerate() {
            let rows: Vec<&Example> = batch_idx.iter().map(|&j| &data.train[j]).collect();
            let dropout_seed = crate::rng::derive_seed(seed, i as u64);
            let batch_loss =
                trainee.backward(&rows, fixed.then_some(config.recipe.max_length), pad_id, config.recipe.gradient_accumulation_steps, true, dropout_seed)?;
            loss_sum += batch_loss * rows.len() as f64;
            loss_rows += rows.len();
            step_rows += rows.len();
            let boundary = (i + 1) % config.recipe.gradient_accumulation_steps == 0 || i + 1 == batches.len();
            if boundary {
                lr = config.recipe.learning_rate * linear_schedule(state.global_step, config.recipe.warmup_steps, total_steps);
                trainee.step(lr, config.recipe.max_grad_norm)?;
                state.global_step += 1;
                step_in_epoch += 1;
                if writer {
                    observer.on_step(&StepProgress {
                        epoch,
                        step_in_epoch,
                        steps_in_epoch: steps_per_epoch as usize,
                        global_step: state.global_step,
                        total_steps,
                        loss: batch_loss,
                        samples_per_second: loss_rows as f64 / epoch_start.elapsed().as_secs_f64(),
                        step_rows,
                    });
                }
                step_rows = 0;
                let stop = observer.should_stop();
                if trainee.any_stop(stop)? {
                    return Err(TrainError::Stopped { epoch });
                }
            }
        }
        let train_seconds = epoch_start.elapsed().as_secs_f64();
        training_peak_rss.get_or_insert_with(absa_memory::peak_rss_mib);
        train_seconds_total += train_seconds;
        train_samples_total += loss_rows;
        tch::set_num_threads(threads);
        let validation = trainee.evaluate(&data.validation, config.recipe.batch_size, pad_id)?;
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / loss_rows.max(1) as f64,
            learning_rate: lr,
            train_samples_per_second: loss_rows as f64 / train_seconds,
            train_seconds,
            validation,
        };
        tracing::info!(
            epoch,
            train_loss = record.train_loss,
            val_loss = record.validation.loss,
            val_acc = record.validation.accuracy,
            val_f1 = record.validation.macro_f1,
            samples_per_s = record.train_samples_per_second,
            "epoch done"
        );
        let s = score(config, &record.validation);
        let improved = improves(s, state.best_score, state.best_epoch);
        if improved {
            state.best_score = s;
            state.best_epoch = epoch;
            state.epochs_without_improvement = 0;
            replace_dir(&mut trainee, &best_dir, |t, dir| t.save_model(dir, &config.base))?;
        } else {
            state.epochs_without_improvement += 1;
        }
        state.epochs_done = epoch;
        state.history.push(record.clone());
        replace_dir(&mut trainee, &last_dir, |t, dir| {
            t.save_state(dir, &config.base)?;
            if !t.writes() {
                return Ok(());
            }
            let text = serde_json::to_string_pretty(&state).expect("state serialises");
            std::fs::write(dir.join("trainer_state.json"), text).map_err(io_err(dir))
        })?;
        if writer {
            append_metrics(&config.out, &record)?;
            observer.on_epoch(&record, &last_dir, state.best_epoch);
        }
    }

    if let Trainee::Rank(engine) = &mut trainee {
        if sharded::is_resumable(&best_dir) {
            // A retried job's best epoch came back as that epoch's resumable checkpoint:
            // the registry and the export want the model as an HF checkpoint.
            engine.load_parameters(&best_dir)?;
            replace_dir(&mut trainee, &best_dir, |t, dir| t.save_model(dir, &config.base))?;
        }
    }
    let best = state.history.iter().find(|r| r.epoch == state.best_epoch).cloned().expect("at least one epoch ran");
    let (mut test_accuracy, mut test_macro_f1, mut test_f_avg) = (None, None, None);
    if !interrupted && !data.test.is_empty() {
        let test = trainee.evaluate_checkpoint(&best_dir, &data.test, config.recipe.batch_size, pad_id)?;
        tracing::info!(accuracy = test.accuracy, macro_f1 = test.macro_f1, "test set, selected model");
        if writer {
            let path = config.out.join("test_metrics.json");
            std::fs::write(&path, serde_json::to_string_pretty(&test).expect("serialises")).map_err(io_err(&path))?;
        }
        test_accuracy = Some(test.accuracy);
        test_macro_f1 = Some(test.macro_f1);
        test_f_avg = test.report.f_avg;
    }
    let memory = [rss_before_model, training_peak_rss.unwrap_or(0.0)];
    let (world_size, sharding, memory) = match &mut trainee {
        Trainee::Local { .. } => (1, None, vec![memory.to_vec()]),
        Trainee::Rank(engine) => (engine.world(), Some(engine.sharding()), engine.gather(&memory)?),
    };
    let summary = TrainSummary {
        epochs_run: state.epochs_done,
        best_epoch: state.best_epoch,
        stopped_early,
        finished: !interrupted,
        validation_accuracy: best.validation.accuracy,
        validation_macro_f1: best.validation.macro_f1,
        validation_loss: best.validation.loss,
        validation_f_avg: best.validation.report.f_avg,
        test_accuracy,
        test_macro_f1,
        test_f_avg,
        input: data.input,
        precision: trainee.precision(),
        cpu_bf16: crate::autocast::CpuBf16::detect().names(),
        malloc: crate::allocator::in_use().to_owned(),
        train_samples_per_second: if train_seconds_total > 0.0 { train_samples_total as f64 / train_seconds_total } else { 0.0 },
        batch_threads: config.batch_threads,
        world_size,
        sharding,
        rank_rss_before_model_mib: memory.iter().map(|m| m[0]).collect(),
        rank_training_peak_rss_mib: memory.iter().map(|m| m[1]).collect(),
        wall_seconds: started.elapsed().as_secs_f64(),
        peak_rss_mib: absa_memory::peak_rss_mib(),
        rows_rejected: data.rejected,
        train_rows: data.train.len(),
        validation_rows: data.validation.len(),
        test_rows: data.test.len(),
        best_checkpoint: best_dir,
    };
    if writer {
        let path = config.out.join("summary.json");
        std::fs::write(&path, serde_json::to_string_pretty(&summary).expect("serialises")).map_err(io_err(&path))?;
    }
    Ok(summary)
}

/// Returns the memory freed while loading (a whole checkpoint read, or each unit's
/// initial weights before its shard was taken) to the kernel: the heap keeps freed
/// blocks otherwise (see [`keep_freed_memory`]), and that would count against the run.
fn release_free_memory() {
    extern "C" {
        fn absa_release_free_memory();
    }
    // SAFETY: malloc_trim, callable at any time.
    unsafe { absa_release_free_memory() }
}

/// Lets glibc keep freed blocks up to 1 GiB for reuse (see `csrc/memory.cpp`): the
/// gradients and activations of every step are the same sizes as the last step's. On
/// MiniLM this took a dynamic-padding epoch from 45 to 49 samples/s.
fn keep_freed_memory() {
    extern "C" {
        fn absa_keep_freed_memory(mmap_threshold: i32, trim_threshold: i32) -> i32;
    }
    // SAFETY: two mallopt calls; glibc takes them at any time.
    if unsafe { absa_keep_freed_memory(1 << 30, i32::MAX) } != 0 {
        tracing::debug!("mallopt refused the thresholds; freed memory goes back to the kernel");
    }
}

fn append_metrics(out: &Path, record: &EpochRecord) -> Result<(), TrainError> {
    use std::io::Write;
    let path = out.join("metrics.jsonl");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
    writeln!(f, "{}", serde_json::to_string(record).expect("serialises")).map_err(io_err(&path))
}

/// Whether a run with recipe `b` continues one saved with `a`. Every setting must match
/// but those a resumed run may change: how the ranks hold the model and the arithmetic
/// (a retried job may land on other hardware) and how long it waits for a better epoch.
/// A setting added to the recipe is compared unless listed here.
fn same_trajectory(a: &Recipe, b: &Recipe) -> bool {
    let free =
        |r: &Recipe| Recipe { sharding: Sharding::Auto, offload_optimizer: false, precision: PrecisionChoice::Auto, early_stopping_patience: 0, ..r.clone() };
    free(a) == free(b)
}

fn read_state(dir: &Path, config: &TrainConfig, train_rows_sha256: &str) -> Result<TrainerState, TrainError> {
    let path = dir.join("trainer_state.json");
    let resume_err = |reason: String| TrainError::Resume { dir: dir.display().to_string(), reason };
    let text = std::fs::read_to_string(&path).map_err(|e| resume_err(e.to_string()))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| resume_err(e.to_string()))?;
    // The run must be the same run: these settings change the trajectory.
    let (a, b) = (&state.config, config);
    if state.train_rows_sha256.is_empty() {
        tracing::warn!(dir = %dir.display(), "the saved run predates row hashes: resuming without comparing its training rows");
    }
    let same = same_trajectory(&a.recipe, &b.recipe) && (state.train_rows_sha256.is_empty() || state.train_rows_sha256 == train_rows_sha256);
    if !same {
        return Err(resume_err("the saved run used other data or hyperparameters (see its trainer_state.json)".into()));
    }
    if a.batch_threads != b.batch_threads {
        // Allowed (a retried job may land on a trainer with other cores), but the rest
        // of the run draws other dropout masks than an uninterrupted one would.
        tracing::warn!(
            saved = a.batch_threads,
            now = b.batch_threads,
            "resuming with other batch threads: the run continues, but not bit for bit as it would have"
        );
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diverged_first_epoch_is_selected_until_a_real_one_beats_it() {
        let diverged = ranked(-f64::NAN);
        assert_eq!(diverged, f64::MIN);
        assert!(serde_json::to_string(&diverged).unwrap().parse::<f64>().is_ok(), "the score saves as a JSON number");
        assert!(improves(diverged, f64::NEG_INFINITY, 0), "the first epoch is selected even when it diverged");
        assert!(improves(ranked(-1e6), diverged, 1), "any finite loss beats a NaN one");
        assert!(!improves(diverged, ranked(-1e6), 1), "a NaN epoch never beats a real one");
        assert!(!improves(ranked(-0.5), ranked(-0.5), 1), "a tie is no improvement (as HF's early stopping)");
    }
}
