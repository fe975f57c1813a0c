//! One rank's share of training across processes, FSDP's way: the model is run and
//! sharded in units (the embeddings, each encoder layer, the head), each unit's
//! parameters one flat buffer (see [`crate::distributed::flat`]).
//!
//! - [`Sharding::NoShard`] (DDP): every rank holds the whole model; each unit's
//!   gradient is all-reduced as soon as its backward is done, while the backward of
//!   the units below it runs; every rank takes the same AdamW step.
//! - [`Sharding::ShardGradOp`] (ZeRO-2): each rank keeps 1/N of every unit's
//!   parameters, gradients and AdamW moments; a unit is all-gathered before its
//!   forward and kept until its backward, whose gradient is reduce-scattered; AdamW
//!   steps on the shard.
//! - [`Sharding::FullShard`] (FULL_SHARD, ZeRO-3): as ShardGradOp, but a unit is freed
//!   right after its forward and gathered again for its backward, which recomputes
//!   its forward from the unit's saved input (FSDP with activation checkpointing per
//!   unit): a rank holds one or two units' parameters and the units' inputs at a time.
//!
//! Each batch is split over the ranks, each rank's loss weighted by its share of the
//! rows, and gradients are summed: the step is the whole batch's, whatever the split.
//! The next unit's gather and the last unit's reduction run while this one computes.
//!
//! Sharded, the word embeddings (a quarter to a half of an XLM-R model) are never
//! gathered: each rank keeps whole rows of the table, the batch's token ids are
//! all-gathered, each rank looks up the ids its rows hold and a reduce-scatter hands
//! every rank its own tokens' vectors; backward, the vectors' gradients are gathered
//! and each rank adds those of its rows into its shard (a vocabulary-parallel
//! embedding). A step then moves tokens × hidden values instead of the whole table.

use std::collections::BTreeMap;
use std::path::Path;

use absa_domain::metrics::ClassificationReport;
use absa_domain::LabelSet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{nn, Device, Kind, Tensor};

use super::data::{collate, eval_batches, Example};
use super::optimizer::{decays, update, Hyper};
use super::Evaluation;
use crate::checkpoint::{self, LoadOptions};
use crate::distributed::flat::FlatLayout;
use crate::distributed::group::{DistError, ProcessGroup, Work};
use crate::distributed::tensor_files::{SafetensorsWriter, TensorFiles};
use crate::model::{EncoderConfig, TdBertModel, Unit, UnitInputs};
use crate::ModelError;
use crate::TrainError;

use absa_jobs::Sharding;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// What one rank runs with.
pub struct RankSetup {
    pub group: ProcessGroup,
    /// Not `Auto`: the plan has decided.
    pub sharding: Sharding,
    /// Where this rank computes.
    pub device: Device,
    /// AdamW's moments and the fp32 master shard in CPU memory (a no-op on the CPU).
    pub offload: bool,
    pub weight_decay: f64,
    /// The training loss's label smoothing (0: plain cross-entropy).
    pub label_smoothing: f64,
    /// OS threads of the fused CPU AdamW update.
    pub update_threads: usize,
    /// Units run under bf16 autocast.
    pub bf16: bool,
}

/// A unit's flat state on this rank.
struct UnitState {
    unit: Unit,
    /// Handles on the unit's variables, shared with the model's layers: binding them
    /// to a gathered buffer is what the layers then compute with.
    vars: Vec<Tensor>,
    layout: FlatLayout,
    /// This rank's part of the flat parameters, fp32 master (NoShard: all of them).
    shard: Tensor,
    /// The shard's gradient, summed over the micro-batches of a step.
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// The gathered parameters while the variables are bound to them, and the pool
    /// buffer they sit in (none when bound to the shard itself: NoShard).
    full: Option<Tensor>,
    full_buffer: Option<Tensor>,
    /// A gather in flight: its pool buffer, the part it fills, the work.
    gathering: Option<(Tensor, Tensor, Work)>,
}

/// A reduction in flight: unit, the buffer being reduced (or scattered from) and the
/// part it lands in.
struct Reducing {
    unit: usize,
    work: Work,
    /// The pool buffer holding the flat gradient.
    buffer: Tensor,
    output: Tensor,
}

/// What a batch's word lookup keeps for its backward pass.
struct WordLookup {
    /// Every rank's token ids as rows of this rank's shard (clamped), and which of
    /// them this rank holds.
    index: Tensor,
    held: Tensor,
    /// Tokens per rank, padded to the most any rank has.
    most: i64,
    width: i64,
}

/// What the forward pass keeps for the backward pass of a unit.
enum Saved {
    /// The unit's input, detached (FullShard: its forward is recomputed).
    Input(Tensor),
    /// The unit's input leaf and its output, with their autograd graph.
    Graph { input: Tensor, output: Tensor },
}

/// This rank's model, optimizer state and process group.
pub struct ShardedEngine {
    group: ProcessGroup,
    sharding: Sharding,
    device: Device,
    /// Where shards, gradients and moments live (the CPU when offloaded).
    state_device: Device,
    model: TdBertModel,
    /// One store per unit, owning its variables.
    _stores: Vec<nn::VarStore>,
    units: Vec<UnitState>,
    /// Sharded: the word embeddings, by rows (see the module's notes).
    words: Option<UnitState>,
    labels: LabelSet,
    raw_config: Value,
    /// Tensors kept untouched and written back on save (BERT's pooler), rank 0 only.
    passthrough: Vec<(String, Tensor)>,
    weight_decay: f64,
    label_smoothing: f64,
    update_threads: usize,
    bf16: bool,
    steps_taken: i64,
    reducing: Option<Reducing>,
    empty: Tensor,
    /// Free unit-sized buffers for gathered parameters and flat gradients: allocated
    /// once and reused unit after unit, so the allocator neither churns nor fragments
    /// (50 MB blocks freed between small long-lived tensors leave holes nothing fits).
    buffers: Vec<Tensor>,
    /// Elements of each buffer: the largest unit's padded size.
    buffer_len: i64,
}

fn dist(e: DistError) -> TrainError {
    TrainError::Collective(e.to_string())
}

fn unit_key(unit: Unit) -> String {
    match unit {
        Unit::Embeddings => "embeddings".into(),
        Unit::Layer(i) => format!("layer.{i}"),
        Unit::Head => "head".into(),
    }
}

/// `sharding.json` beside the shard files of a resumable checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct ShardingRecord {
    sharding: Sharding,
    /// Shard files (1 for NoShard: every rank held the same state).
    shards: usize,
    steps_taken: i64,
    /// Per unit: key, elements (without padding).
    units: Vec<(String, usize)>,
}

const SHARDING_FILE: &str = "sharding.json";
const WORDS_KEY: &str = "words";

/// Whether `dir` is a resumable checkpoint of this engine (not an HF checkpoint).
pub fn is_resumable(dir: &Path) -> bool {
    dir.join(SHARDING_FILE).is_file()
}

fn shard_file(index: usize, shards: usize) -> String {
    format!("shard-{index:05}-of-{shards:05}.safetensors")
}

/// A mutable f32 view of a contiguous CPU tensor.
///
/// SAFETY: the caller keeps `t` alive and unaliased while the slice is used.
unsafe fn f32_slice(t: &mut Tensor) -> &mut [f32] {
    assert!(t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous());
    // SAFETY: the tensor is a contiguous CPU f32 buffer of numel() elements (asserted),
    // kept alive and unaliased by the caller.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel()) }
}

impl ShardedEngine {
    /// Loads the model in `dir` as this rank's shards: an HF checkpoint (the base, or a
    /// consolidated `checkpoint-best`), or a resumable checkpoint of this engine
    /// (`sharding.json`, shard files, moments included; any number of ranks). Each
    /// rank reads only its shards' element ranges, and builds the model one unit at a
    /// time, freeing each unit's full weights once its shard is taken: no rank ever
    /// holds the whole model. A fresh head is drawn as [`checkpoint::load`] draws it
    /// (the same generator calls in the same order), so a seeded run starts where a
    /// single process would.
    /// Tensors the model does not train but transformers expects (BERT's pooler) are
    /// taken from `base`, the run's base checkpoint.
    pub fn load(dir: &Path, base: &Path, options: &LoadOptions, setup: RankSetup) -> Result<Self, TrainError> {
        let RankSetup { group, sharding, device, offload, weight_decay, label_smoothing, update_threads, bf16 } = setup;
        assert!(sharding != Sharding::Auto, "the plan decides the sharding first");
        let config_path = dir.join("config.json");
        let config = EncoderConfig::from_file(&config_path)?;
        let raw_config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).map_err(|e| ModelError::Io(config_path.display().to_string(), e))?)
            .map_err(|e| ModelError::Config(e.to_string()))?;
        let family = config.family()?;
        let prefix = format!("{}.", family.prefix());
        let resumable = is_resumable(dir);
        let source = if resumable { Source::shards(dir)? } else { Source::hf(dir, &prefix)? };
        if let Source::Shards { record, .. } = &source {
            if record.sharding.sharded() != sharding.sharded() {
                let reason = format!("saved as {:?}, resumed as {sharding:?}: a sharded run resumes sharded, an unsharded one unsharded", record.sharding);
                return Err(TrainError::Resume { dir: dir.display().to_string(), reason });
            }
        }
        let has_head = resumable || source.has_head();
        let resolved = checkpoint::resolve(dir, &raw_config, has_head, options)?;

        let (rank, world) = (group.rank(), group.world());
        let shards = if sharding.sharded() { world } else { 1 };
        let shard_index = if sharding.sharded() { rank } else { 0 };
        let state_device = if offload { Device::Cpu } else { device };
        let layers = config.num_hidden_layers.max(0) as usize;
        let stores: Vec<nn::VarStore> = (0..layers + 2).map(|_| nn::VarStore::new(device)).collect();
        let index_of = |unit: Unit| match unit {
            Unit::Embeddings => 0,
            Unit::Layer(i) => 1 + i,
            Unit::Head => layers + 1,
        };
        let empty = Tensor::empty([0], (Kind::Float, device));
        let word_name = format!("{prefix}embeddings.word_embeddings.weight");
        let mut units: Vec<UnitState> = Vec::new();
        let mut words: Option<UnitState> = None;
        let mut failure: Option<TrainError> = None;
        let mut fresh_head: Option<(Vec<Tensor>, FlatLayout)> = None;
        let model =
            TdBertModel::new_by_unit(config.clone(), resolved.labels.len() as i64, resolved.pooling, &mut |unit| stores[index_of(unit)].root(), &mut |unit| {
                if failure.is_some() {
                    return;
                }
                let mut vars: Vec<(String, Tensor)> = stores[index_of(unit)].variables().into_iter().collect();
                vars.sort_by(|a, b| a.0.cmp(&b.0));
                if unit == Unit::Embeddings && sharding.sharded() {
                    if let Some(at) = vars.iter().position(|(n, _)| *n == word_name) {
                        let (name, table) = vars.remove(at);
                        let row = table.size().get(1).copied().unwrap_or(1) as usize;
                        let layout = FlatLayout::aligned(vec![(name.clone(), table.size(), decays(&name))], shards, row);
                        match source.read_shard(WORDS_KEY, &layout, shard_index) {
                            Ok((shard, moments)) => {
                                let mut state = UnitState::new(unit, vec![table], layout, shard, moments, state_device);
                                state.vars[0].set_data(&empty);
                                words = Some(state);
                            }
                            Err(e) => failure = Some(e),
                        }
                    }
                }
                let layout = FlatLayout::new(vars.iter().map(|(n, t)| (n.clone(), t.size(), decays(n))).collect(), shards);
                let handles: Vec<Tensor> = vars.into_iter().map(|(_, t)| t).collect();
                if unit == Unit::Head && !resumable && !resolved.load_head {
                    // Drawn once the whole model exists, as `checkpoint::load` does.
                    fresh_head = Some((handles, layout));
                    return;
                }
                match source.read_shard(&unit_key(unit), &layout, shard_index) {
                    Ok((shard, moments)) => {
                        let mut state = UnitState::new(unit, handles, layout, shard, moments, state_device);
                        // The unit's freshly drawn full weights go before the next unit is made.
                        state.vars.iter_mut().for_each(|v| v.set_data(&empty));
                        units.push(state);
                    }
                    Err(e) => failure = Some(e),
                }
            })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let mut model = model;
        model.input = resolved.input;
        if let Some((handles, layout)) = fresh_head {
            model.head.initialise(config.initializer_range);
            let shard = shard_of_vars(&handles, &layout, shard_index);
            units.push(UnitState::new(Unit::Head, handles, layout, shard, None, state_device));
        }
        // From the base checkpoint: a resumable checkpoint holds only the trained units.
        let passthrough = if rank == 0 { Source::hf(base, &prefix)?.passthrough(&prefix)? } else { Vec::new() };
        let steps_taken = source.steps_taken();
        let mut engine = Self {
            group,
            sharding,
            device,
            state_device,
            model,
            _stores: stores,
            units,
            words,
            labels: resolved.labels,
            raw_config,
            passthrough,
            weight_decay,
            label_smoothing,
            update_threads,
            bf16,
            steps_taken,
            reducing: None,
            empty,
            buffers: Vec::new(),
            buffer_len: 0,
        };
        engine.buffer_len = engine.units.iter().map(|u| u.layout.padded as i64).max().unwrap_or(0);
        if let Some(words) = &mut engine.words {
            // Never gathered: the model's own table stays empty.
            words.vars[0].set_data(&engine.empty);
        }
        for k in 0..engine.units.len() {
            if sharding.sharded() {
                engine.release(k);
            } else {
                // Every rank holds the whole model: its layers compute on the flat buffer itself.
                let full = engine.units[k].shard.to_device(device);
                engine.bind(k, full, None);
            }
        }
        tracing::info!(
            rank,
            world,
            ?sharding,
            units = engine.units.len(),
            shard_elements = engine.states().map(|u| u.shard.numel()).sum::<usize>(),
            "model sharded"
        );
        Ok(engine)
    }

    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    pub fn world(&self) -> usize {
        self.group.world()
    }

    pub fn sharding(&self) -> Sharding {
        self.sharding
    }

    /// Whether the units run under bf16 autocast.
    pub fn bf16(&self) -> bool {
        self.bf16
    }

    pub fn labels(&self) -> &LabelSet {
        &self.labels
    }

    pub fn steps_taken(&self) -> i64 {
        self.steps_taken
    }

    /// Each part of the state with its name in resumable checkpoints.
    fn keyed_states(&self) -> Vec<(String, &UnitState)> {
        self.units.iter().map(|u| (unit_key(u.unit), u)).chain(self.words.iter().map(|w| (WORDS_KEY.to_string(), w))).collect()
    }

    /// Every part of the model's state: the units, and the word table when apart.
    fn states(&self) -> impl Iterator<Item = &UnitState> {
        self.units.iter().chain(self.words.iter())
    }

    /// The word vectors of this rank's `ids` (batch, seq), from the ranks that hold
    /// their rows; `counts` is every rank's number of tokens. Every rank takes part,
    /// with ids or without.
    fn words_forward(&self, ids: Option<&Tensor>, counts: &[usize]) -> Result<(Option<Tensor>, WordLookup), TrainError> {
        let words = self.words.as_ref().expect("the word table is apart");
        let (rank, world) = (self.rank(), self.world());
        let width = words.layout.vars[0].shape[1];
        let vocab = words.layout.vars[0].shape[0];
        let rows = (words.layout.shard_len() as i64) / width;
        let most = counts.iter().copied().max().unwrap_or(0).max(1) as i64;
        let mine = Tensor::full([most], -1, (Kind::Int64, self.device));
        if let Some(ids) = ids {
            mine.narrow(0, 0, counts[rank] as i64).copy_(&ids.reshape([-1]));
        }
        let mut all = Tensor::empty([most * world as i64], (Kind::Int64, self.device));
        self.group.all_gather(&mut all, &mine).map_err(dist)?.wait().map_err(dist)?;
        let first = rank as i64 * rows;
        let local = &all - first;
        let held = local.ge(0).logical_and(&local.lt((vocab - first).clamp(0, rows)));
        let index = local.clamp(0, rows - 1);
        let table = words.shard.to_device(self.device).view([rows, width]);
        let found = table.index_select(0, &index) * held.unsqueeze(1).to_kind(Kind::Float);
        let mut out = Tensor::empty([most, width], (Kind::Float, self.device));
        self.group.reduce_scatter(&mut out, &found).map_err(dist)?.wait().map_err(dist)?;
        let vectors = ids.map(|ids| out.narrow(0, 0, counts[rank] as i64).view([ids.size()[0], ids.size()[1], width]));
        Ok((vectors, WordLookup { index, held, most, width }))
    }

    /// Backward of [`ShardedEngine::words_forward`]: every rank's word-vector
    /// gradients gathered, this rank's rows' added into its shard's gradient.
    fn words_backward(&mut self, grad: Option<&Tensor>, lookup: &WordLookup, count: usize) -> Result<(), TrainError> {
        let mine = Tensor::zeros([lookup.most, lookup.width], (Kind::Float, self.device));
        if let Some(g) = grad {
            mine.narrow(0, 0, count as i64).copy_(&g.reshape([-1, lookup.width]));
        }
        let mut all = Tensor::empty([lookup.most * self.world() as i64, lookup.width], (Kind::Float, self.device));
        self.group.all_gather(&mut all, &mine).map_err(dist)?.wait().map_err(dist)?;
        let at = lookup.held.nonzero().squeeze_dim(1);
        let words = self.words.as_mut().expect("the word table is apart");
        let device = words.grad.device();
        let rows = lookup.index.index_select(0, &at).to_device(device);
        let vectors = all.index_select(0, &at).to_device(device);
        // Into the shard's gradient in place: no table-sized temporary.
        let _ = words.grad.view([-1, lookup.width]).index_add_(0, &rows, &vectors);
        Ok(())
    }

    /// A unit-sized buffer from the pool.
    fn take_buffer(&mut self) -> Tensor {
        self.buffers.pop().unwrap_or_else(|| Tensor::empty([self.buffer_len], (Kind::Float, self.device)))
    }

    /// Points the unit's variables at views of `full` (its flat parameters), which sit
    /// in `buffer` from the pool when gathered.
    fn bind(&mut self, k: usize, full: Tensor, buffer: Option<Tensor>) {
        let unit = &mut self.units[k];
        for (var, v) in unit.vars.iter_mut().zip(&unit.layout.vars) {
            var.set_data(&full.narrow(0, v.offset as i64, v.numel as i64).view(v.shape.as_slice()));
        }
        unit.full = Some(full);
        unit.full_buffer = buffer;
    }

    /// Frees the unit's gathered parameters (sharded strategies): its buffer goes back
    /// to the pool.
    fn release(&mut self, k: usize) {
        let empty = self.empty.shallow_clone();
        let unit = &mut self.units[k];
        for var in &mut unit.vars {
            var.set_data(&empty);
        }
        unit.full = None;
        if let Some(buffer) = unit.full_buffer.take() {
            self.buffers.push(buffer);
        }
    }

    /// Starts gathering unit `k`'s parameters unless they are bound or on their way.
    fn start_gather(&mut self, k: usize) -> Result<(), TrainError> {
        if self.units[k].full.is_some() || self.units[k].gathering.is_some() {
            return Ok(());
        }
        let buffer = self.take_buffer();
        let unit = &mut self.units[k];
        let mut full = buffer.narrow(0, 0, unit.layout.padded as i64);
        let shard = if self.state_device == self.device { unit.shard.shallow_clone() } else { unit.shard.to_device(self.device) };
        let work = self.group.all_gather(&mut full, &shard).map_err(dist)?;
        unit.gathering = Some((buffer, full, work));
        Ok(())
    }

    /// Unit `k`'s parameters bound, gathering them if needed.
    fn ensure_bound(&mut self, k: usize) -> Result<(), TrainError> {
        self.start_gather(k)?;
        if let Some((buffer, full, work)) = self.units[k].gathering.take() {
            work.wait().map_err(dist)?;
            self.bind(k, full, Some(buffer));
        }
        Ok(())
    }

    /// Waits for the reduction in flight and adds its result to its unit's gradient.
    fn finish_reduce(&mut self) -> Result<(), TrainError> {
        if let Some(r) = self.reducing.take() {
            r.work.wait().map_err(dist)?;
            let grad = &mut self.units[r.unit].grad;
            let part = if r.output.device() == grad.device() { r.output } else { r.output.to_device(grad.device()) };
            *grad += part;
            self.buffers.push(r.buffer);
        }
        Ok(())
    }

    /// Unit `k`'s gradients (in layout order; none: zeros) copied into a pool buffer
    /// as its flat padded gradient.
    fn flat_gradient(&mut self, k: usize, grads: Option<&[Tensor]>) -> (Tensor, Tensor) {
        let buffer = self.take_buffer();
        let layout = &self.units[k].layout;
        let flat = buffer.narrow(0, 0, layout.padded as i64);
        tch::no_grad(|| match grads {
            Some(grads) => {
                for (g, v) in grads.iter().zip(&layout.vars) {
                    let mut part = flat.narrow(0, v.offset as i64, v.numel as i64);
                    if g.defined() {
                        part.copy_(&g.reshape([-1]));
                    } else {
                        let _ = part.zero_();
                    }
                }
                if layout.padded > layout.numel {
                    let _ = flat.narrow(0, layout.numel as i64, (layout.padded - layout.numel) as i64).zero_();
                }
            }
            None => {
                let _ = flat.shallow_clone().zero_();
            }
        });
        (buffer, flat)
    }

    /// Reduces unit `k`'s flat gradient over the ranks (all-reduce, or reduce-scatter
    /// into this rank's shard), after the previous reduction.
    fn start_reduce(&mut self, k: usize, buffer: Tensor, mut flat: Tensor) -> Result<(), TrainError> {
        self.finish_reduce()?;
        let (work, output) = if self.sharding.sharded() {
            let mut part = Tensor::empty([self.units[k].layout.shard_len() as i64], (Kind::Float, self.device));
            let work = self.group.reduce_scatter(&mut part, &flat).map_err(dist)?;
            (work, part)
        } else {
            let work = self.group.all_reduce(&mut flat).map_err(dist)?;
            (work, flat)
        };
        self.reducing = Some(Reducing { unit: k, work, buffer, output });
        Ok(())
    }

    /// Runs unit `k` on `xs` with its dropout drawn from `seed`.
    fn unit_forward(&self, k: usize, xs: &Tensor, inputs: &UnitInputs, train: bool, seed: u64) -> Tensor {
        let unit = self.units[k].unit;
        let forward = || {
            let run = || match unit {
                Unit::Embeddings if self.words.is_some() => self.model.encoder.embed_from_words(xs, &inputs.input_ids, inputs.token_type_ids.as_ref(), train),
                _ => self.model.unit_forward(unit, xs, inputs, train),
            };
            if self.bf16 {
                crate::autocast::with_autocast(self.device, Kind::BFloat16, run).expect("libtorch takes bf16 autocast")
            } else {
                run()
            }
        };
        crate::rng::with_seed(self.device, crate::rng::derive_seed(seed, k as u64), forward)
    }

    /// Forward and backward of this rank's part of `rows`; gradients are summed into
    /// the units' shards over the ranks. Returns the mean loss of all `rows`.
    pub fn backward(&mut self, rows: &[&Example], pad_to: Option<usize>, pad_id: i64, accumulation: usize, train: bool, seed: u64) -> Result<f64, TrainError> {
        let (rank, world) = (self.rank(), self.world());
        let range = super::local::split_rows(rows.len(), world).swap_remove(rank);
        let local = &rows[range];
        let total = rows.len().max(1) as f64;
        let seed = crate::rng::derive_seed(seed, rank as u64);
        let n = self.units.len();
        let full_shard = self.sharding == Sharding::FullShard;
        let batch = (!local.is_empty()).then(|| collate(local, pad_to, pad_id, self.device));
        let inputs = batch.as_ref().map(|b| b.unit_inputs());

        // Forward, unit by unit; the next unit's gather runs meanwhile.
        let mut saved: Vec<Option<Saved>> = Vec::with_capacity(n);
        let mut xs = batch.as_ref().map(|b| b.input_ids.shallow_clone());
        let counts = token_counts(rows, world, pad_to);
        let lookup = match self.words.is_some() {
            true => {
                let (vectors, lookup) = self.words_forward(xs.as_ref(), &counts)?;
                xs = vectors;
                Some(lookup)
            }
            false => None,
        };
        let words_apart = lookup.is_some();
        let mut loss_value = 0.0;
        let mut loss: Option<Tensor> = None;
        for k in 0..n {
            self.ensure_bound(k)?;
            if k + 1 < n {
                self.start_gather(k + 1)?;
            }
            let last = k + 1 == n;
            let kept = if let (Some(x), Some(inputs), Some(b)) = (xs.take(), &inputs, &batch) {
                let input = if k == 0 && !words_apart { x } else { x.detach().set_requires_grad(true) };
                if full_shard && !last {
                    xs = Some(tch::no_grad(|| self.unit_forward(k, &input, inputs, train, seed)));
                    Some(Saved::Input(input.detach()))
                } else {
                    let y = self.unit_forward(k, &input, inputs, train, seed);
                    if last {
                        let l = y.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(&b.labels, None, tch::Reduction::Mean, -100, self.label_smoothing);
                        loss_value = l.double_value(&[]) * local.len() as f64;
                        loss = Some(l * (local.len() as f64 / total) / accumulation as f64);
                    }
                    xs = Some(y.shallow_clone());
                    Some(Saved::Graph { input, output: y })
                }
            } else {
                None
            };
            saved.push(kept);
            if full_shard && !last {
                self.release(k);
            }
        }

        // Backward, unit by unit from the head; each unit's gradient is reduced while
        // the units below it run their backward.
        let mut grad_out: Option<Tensor> = None;
        for k in (0..n).rev() {
            self.ensure_bound(k)?;
            if full_shard && k > 0 {
                self.start_gather(k - 1)?;
            }
            let grads = match (saved[k].take(), &inputs) {
                (Some(s), Some(inputs)) => {
                    let (input, output) = match s {
                        Saved::Graph { input, output } => (input, output),
                        Saved::Input(x) => {
                            let input = if k == 0 && !words_apart { x } else { x.set_requires_grad(true) };
                            let output = self.unit_forward(k, &input, inputs, train, seed);
                            (input, output)
                        }
                    };
                    let target = match (k + 1 == n, &grad_out) {
                        (true, _) => loss.take().expect("the head computed the loss"),
                        (false, Some(g)) => (output.to_kind(Kind::Float) * g).sum(Kind::Float),
                        (false, None) => {
                            unreachable!("a unit below the head gets its output's gradient")
                        }
                    };
                    let mut wrt: Vec<Tensor> = self.units[k].vars.iter().map(Tensor::shallow_clone).collect();
                    let input_grad = k > 0 || words_apart;
                    if input_grad {
                        wrt.push(input.shallow_clone());
                    }
                    let mut grads = Tensor::run_backward(&[target], &wrt, false, false);
                    grad_out = if input_grad { grads.pop().map(|g| g.to_kind(Kind::Float)) } else { None };
                    Some(grads)
                }
                _ => None,
            };
            let (buffer, flat) = self.flat_gradient(k, grads.as_deref());
            drop(grads);
            self.start_reduce(k, buffer, flat)?;
            if self.sharding.sharded() {
                self.release(k);
            }
        }
        self.finish_reduce()?;
        if let Some(lookup) = &lookup {
            // The embeddings' input gradient is the word vectors'.
            self.words_backward(grad_out.as_ref(), lookup, counts[rank])?;
        }
        let sums = self.group.sum(&[loss_value], self.device).map_err(dist)?;
        Ok(sums[0] / total)
    }

    /// Clips the gradients at `max_grad_norm` (global norm over every rank's shard),
    /// takes torch's AdamW step at `lr` on this rank's shards and zeroes the
    /// gradients. Returns the norm before clipping.
    pub fn step(&mut self, lr: f64, max_grad_norm: f64) -> Result<f64, TrainError> {
        self.finish_reduce()?;
        let squares: f64 = tch::no_grad(|| self.states().map(|u| u.grad.norm().double_value(&[]).powi(2)).sum());
        let squares = if self.sharding.sharded() { self.group.sum(&[squares], self.device).map_err(dist)?[0] } else { squares };
        let norm = squares.sqrt();
        let coef = (max_grad_norm / (norm + 1e-6)).min(1.0);
        self.steps_taken += 1;
        let h = Hyper::at(lr, self.steps_taken, BETA1, BETA2, EPS);
        let shard_index = if self.sharding.sharded() { self.rank() } else { 0 };
        let (weight_decay, threads) = (self.weight_decay, self.update_threads);
        tch::no_grad(|| {
            for unit in self.units.iter_mut().chain(self.words.iter_mut()) {
                if coef < 1.0 {
                    let _ = unit.grad.g_mul_scalar_(coef);
                }
                for piece in unit.layout.pieces(shard_index) {
                    let decay = if unit.layout.vars[piece.var].decay { 1.0 - lr * weight_decay } else { 1.0 };
                    let (at, len) = (piece.at as i64, piece.elements.len() as i64);
                    let mut weight = unit.shard.narrow(0, at, len);
                    let grad = unit.grad.narrow(0, at, len);
                    let mut m = unit.exp_avg.narrow(0, at, len);
                    let mut v = unit.exp_avg_sq.narrow(0, at, len);
                    update(&mut weight, &grad, &mut m, &mut v, decay, &h, threads);
                }
                let _ = unit.grad.zero_();
            }
        });
        if !self.sharding.sharded() && self.state_device != self.device {
            for k in 0..self.units.len() {
                let full = self.units[k].shard.to_device(self.device);
                self.bind(k, full, None);
            }
        }
        Ok(norm)
    }

    /// Whether any rank asks to stop (this one when `local`).
    pub fn any_stop(&mut self, local: bool) -> Result<bool, TrainError> {
        Ok(self.group.sum(&[f64::from(u8::from(local))], self.device).map_err(dist)?[0] > 0.0)
    }

    /// Every rank's `values` (the same count on each), in rank order.
    pub fn gather(&mut self, values: &[f64]) -> Result<Vec<Vec<f64>>, TrainError> {
        let mine = Tensor::from_slice(values).to_device(self.device);
        let mut all = Tensor::empty([(values.len() * self.world()) as i64], (Kind::Double, self.device));
        self.group.all_gather(&mut all, &mine).map_err(dist)?.wait().map_err(dist)?;
        let flat = Vec::<f64>::try_from(all.to_device(Device::Cpu)).expect("a 1-D f64 tensor");
        Ok(flat.chunks(values.len().max(1)).map(<[f64]>::to_vec).collect())
    }

    pub fn barrier(&mut self) -> Result<(), TrainError> {
        self.group.barrier(self.device).map_err(dist)
    }

    /// Loss and metrics over `examples`: each batch split over the ranks, the logits
    /// gathered, so every rank computes the same figures.
    pub fn evaluate(&mut self, examples: &[Example], batch_size: usize, pad_id: i64) -> Result<Evaluation, TrainError> {
        let (rank, world) = (self.rank(), self.world());
        let num_labels = self.labels.len() as i64;
        let lengths: Vec<usize> = examples.iter().map(|e| e.input_ids.len()).collect();
        let mut predicted = vec![0usize; examples.len()];
        let mut loss_sum = 0.0;
        for batch_idx in eval_batches(&lengths, batch_size) {
            let ranges = super::local::split_rows(batch_idx.len(), world);
            let widest = ranges.iter().map(|r| r.len()).max().unwrap_or(0) as i64;
            let batch_rows: Vec<&Example> = batch_idx.iter().map(|&i| &examples[i]).collect();
            let counts = token_counts(&batch_rows, world, None);
            let local = &batch_rows[ranges[rank].clone()];
            let logits = self.forward_logits(local, pad_id, &counts)?;
            let mine = Tensor::zeros([widest, num_labels], (Kind::Float, self.device));
            if let Some(l) = &logits {
                mine.narrow(0, 0, l.size()[0]).copy_(l);
            }
            let mut all = Tensor::empty([widest * world as i64, num_labels], (Kind::Float, self.device));
            self.group.all_gather(&mut all, &mine).map_err(dist)?.wait().map_err(dist)?;
            let parts: Vec<Tensor> = ranges.iter().enumerate().map(|(r, range)| all.narrow(0, r as i64 * widest, range.len() as i64)).collect();
            let logits = Tensor::cat(&parts, 0);
            let labels = Tensor::from_slice(&batch_rows.iter().map(|e| e.label).collect::<Vec<i64>>()).to_device(self.device);
            loss_sum += logits.cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Sum, -100, 0.0).double_value(&[]);
            let argmax: Vec<i64> = Vec::try_from(logits.argmax(-1, false).to_device(Device::Cpu)).expect("argmax is int64");
            for (&i, p) in batch_idx.iter().zip(argmax) {
                predicted[i] = p as usize;
            }
        }
        let gold: Vec<usize> = examples.iter().map(|e| e.label as usize).collect();
        let report = ClassificationReport::new(&predicted, &gold, self.labels.names());
        Ok(Evaluation { loss: loss_sum / examples.len().max(1) as f64, accuracy: report.accuracy, macro_f1: report.macro_f1, report })
    }

    /// This rank's rows' logits in eval mode (no gradients), taking part in every
    /// unit's gather also without rows.
    /// `counts`: every rank's number of tokens (see [`token_counts`]).
    fn forward_logits(&mut self, rows: &[&Example], pad_id: i64, counts: &[usize]) -> Result<Option<Tensor>, TrainError> {
        let n = self.units.len();
        let batch = (!rows.is_empty()).then(|| collate(rows, None, pad_id, self.device));
        let inputs = batch.as_ref().map(|b| b.unit_inputs());
        let mut xs = batch.as_ref().map(|b| b.input_ids.shallow_clone());
        if self.words.is_some() {
            xs = self.words_forward(xs.as_ref(), counts)?.0;
        }
        for k in 0..n {
            self.ensure_bound(k)?;
            if k + 1 < n {
                self.start_gather(k + 1)?;
            }
            if let (Some(x), Some(inputs)) = (xs.take(), &inputs) {
                xs = Some(tch::no_grad(|| self.unit_forward(k, &x, inputs, false, 0)));
            }
            if self.sharding.sharded() {
                self.release(k);
            }
        }
        Ok(xs.map(|l| l.to_kind(Kind::Float)))
    }

    /// The model as a Hugging Face checkpoint in `dir` (rank 0 writes; every rank takes
    /// part in the gathers), one unit at a time: `config.json`, `model.safetensors`,
    /// the tokenizer files of `tokenizer_dir`.
    pub fn save_model(&mut self, dir: &Path, tokenizer_dir: &Path) -> Result<(), TrainError> {
        let writer = self.rank() == 0;
        let mut out = None;
        if writer {
            std::fs::create_dir_all(dir).map_err(|e| TrainError::Io(dir.display().to_string(), e))?;
            checkpoint::write_config(&self.raw_config, &self.model, &self.labels, dir)?;
            checkpoint::copy_tokenizer_files(tokenizer_dir, dir)?;
            let mut tensors: Vec<(String, Vec<usize>)> = Vec::new();
            for unit in self.words.iter().chain(self.units.iter()) {
                tensors.extend(unit.layout.vars.iter().map(|v| (v.name.clone(), v.shape.iter().map(|&d| d as usize).collect())));
            }
            tensors.extend(self.passthrough.iter().map(|(n, t)| (n.clone(), t.size().iter().map(|&d| d as usize).collect())));
            let path = dir.join("model.safetensors");
            out = Some(
                SafetensorsWriter::create(&path, tensors, &BTreeMap::from([("format".into(), "pt".into())]))
                    .map_err(|e| TrainError::Io(path.display().to_string(), e))?,
            );
        }
        let io = |e: std::io::Error| TrainError::Io(dir.join("model.safetensors").display().to_string(), e);
        if let Some(words) = &self.words {
            // Shard by shard from the rank that holds it: the table is never whole anywhere.
            let (len, numel, name) = (words.layout.shard_len(), words.layout.numel, words.layout.vars[0].name.clone());
            for r in 0..self.world() {
                let mut part = if r == self.rank() { words.shard.to_device(self.device) } else { Tensor::empty([len as i64], (Kind::Float, self.device)) };
                self.group.broadcast(&mut part, r).map_err(dist)?.wait().map_err(dist)?;
                let valid = numel.saturating_sub(r * len).min(len);
                if let (Some(out), true) = (&mut out, valid > 0) {
                    out.write_part(&name, &part.narrow(0, 0, valid as i64)).map_err(io)?;
                }
            }
        }
        for k in 0..self.units.len() {
            let was_bound = self.units[k].full.is_some();
            self.ensure_bound(k)?;
            if let Some(out) = &mut out {
                let unit = &self.units[k];
                let full = unit.full.as_ref().expect("bound above");
                for v in &unit.layout.vars {
                    out.write(&v.name, &full.narrow(0, v.offset as i64, v.numel as i64)).map_err(io)?;
                }
            }
            if !was_bound && self.sharding.sharded() {
                self.release(k);
            }
        }
        if let Some(mut out) = out {
            for (name, t) in &self.passthrough {
                out.write(name, t).map_err(io)?;
            }
            out.finish().map_err(io)?;
        }
        Ok(())
    }

    /// What a resumed run continues from, in `dir`: each shard's parameters and AdamW
    /// moments in its own file (written by the rank that holds it; NoShard: rank 0),
    /// and from rank 0 `sharding.json` and `config.json`.
    pub fn save_state(&mut self, dir: &Path) -> Result<(), TrainError> {
        let (rank, world) = (self.rank(), self.world());
        let shards = if self.sharding.sharded() { world } else { 1 };
        if rank == 0 {
            checkpoint::write_config(&self.raw_config, &self.model, &self.labels, dir)?;
            let record = ShardingRecord {
                sharding: self.sharding,
                shards,
                steps_taken: self.steps_taken,
                units: self.keyed_states().into_iter().map(|(key, u)| (key, u.layout.numel)).collect(),
            };
            let path = dir.join(SHARDING_FILE);
            std::fs::write(&path, serde_json::to_string_pretty(&record).expect("serialises")).map_err(|e| TrainError::Io(path.display().to_string(), e))?;
        }
        if rank < shards {
            let path = dir.join(shard_file(rank, shards));
            let mut tensors = Vec::new();
            for (key, unit) in self.keyed_states() {
                for kind in ["param", "exp_avg", "exp_avg_sq"] {
                    tensors.push((format!("{key}.{kind}"), vec![unit.shard.numel()]));
                }
            }
            let metadata = BTreeMap::from([("steps_taken".to_string(), self.steps_taken.to_string())]);
            let io = |e: std::io::Error| TrainError::Io(path.display().to_string(), e);
            let mut out = SafetensorsWriter::create(&path, tensors, &metadata).map_err(io)?;
            for (key, unit) in self.keyed_states() {
                out.write(&format!("{key}.param"), &unit.shard).map_err(io)?;
                out.write(&format!("{key}.exp_avg"), &unit.exp_avg).map_err(io)?;
                out.write(&format!("{key}.exp_avg_sq"), &unit.exp_avg_sq).map_err(io)?;
            }
            out.finish().map_err(io)?;
        }
        Ok(())
    }

    /// Replaces the parameters with those saved in `dir` (the selected model, for the
    /// test set): an HF checkpoint, or a resumable checkpoint of this engine (a retried
    /// job's best epoch comes back as one). The optimizer state is left as it is.
    pub fn load_parameters(&mut self, dir: &Path) -> Result<(), TrainError> {
        let prefix = format!("{}.", self.model.family.prefix());
        let source = if is_resumable(dir) { Source::shards(dir)? } else { Source::hf(dir, &prefix)? };
        let shard_index = if self.sharding.sharded() { self.rank() } else { 0 };
        if let Some(words) = &mut self.words {
            words.shard = source.read_shard(WORDS_KEY, &words.layout, shard_index)?.0.to_device(self.state_device);
        }
        for k in 0..self.units.len() {
            let (shard, _) = source.read_shard(&unit_key(self.units[k].unit), &self.units[k].layout, shard_index)?;
            let shard = shard.to_device(self.state_device);
            self.units[k].shard = shard;
            if !self.sharding.sharded() {
                let full = self.units[k].shard.to_device(self.device);
                self.bind(k, full, None);
            }
        }
        Ok(())
    }
}

impl UnitState {
    fn new(unit: Unit, vars: Vec<Tensor>, layout: FlatLayout, shard: Tensor, moments: Option<(Tensor, Tensor)>, device: Device) -> Self {
        let shard = shard.to_device(device);
        let (exp_avg, exp_avg_sq) = match moments {
            Some((m, v)) => (m.to_device(device), v.to_device(device)),
            None => (shard.zeros_like(), shard.zeros_like()),
        };
        Self { unit, vars, grad: shard.zeros_like(), layout, shard, exp_avg, exp_avg_sq, full: None, full_buffer: None, gathering: None }
    }
}

/// Tokens each of `world` ranks gets of `rows` (its rows times their padded width).
fn token_counts(rows: &[&Example], world: usize, pad_to: Option<usize>) -> Vec<usize> {
    super::local::split_rows(rows.len(), world)
        .into_iter()
        .map(|range| {
            let part = &rows[range];
            part.len() * pad_to.unwrap_or_else(|| part.iter().map(|e| e.input_ids.len()).max().unwrap_or(0))
        })
        .collect()
}

/// Shard `index` of live variables (a freshly drawn head), on the CPU.
fn shard_of_vars(vars: &[Tensor], layout: &FlatLayout, index: usize) -> Tensor {
    let shard = Tensor::zeros([layout.shard_len() as i64], (Kind::Float, Device::Cpu));
    tch::no_grad(|| {
        for p in layout.pieces(index) {
            let src = vars[p.var].detach().to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1]);
            shard.narrow(0, p.at as i64, p.elements.len() as i64).copy_(&src.narrow(0, p.elements.start as i64, p.elements.len() as i64));
        }
    });
    shard
}

/// Where a rank's shards come from.
enum Source {
    /// A Hugging Face checkpoint: tensors by (prefixed) name.
    Hf { files: TensorFiles, names: BTreeMap<String, String>, dir: String },
    /// A resumable checkpoint of this engine: flat shards per unit, one file each.
    Shards { files: Vec<TensorFiles>, record: ShardingRecord, dir: String },
}

impl Source {
    fn hf(dir: &Path, prefix: &str) -> Result<Self, TrainError> {
        let paths = checkpoint::weight_files(dir)?;
        let files = TensorFiles::open(&paths).map_err(|e| TrainError::Io(dir.display().to_string(), e))?;
        // Model name -> name in the files: encoder names with or without the family prefix.
        let names = files
            .names()
            .map(|n| (if n.starts_with(prefix) || n.starts_with("classifier.") { n.clone() } else { format!("{prefix}{n}") }, n.clone()))
            .collect();
        Ok(Source::Hf { files, names, dir: dir.display().to_string() })
    }

    fn shards(dir: &Path) -> Result<Self, TrainError> {
        let resume = |reason: String| TrainError::Resume { dir: dir.display().to_string(), reason };
        let text = std::fs::read_to_string(dir.join(SHARDING_FILE)).map_err(|e| resume(e.to_string()))?;
        let record: ShardingRecord = serde_json::from_str(&text).map_err(|e| resume(e.to_string()))?;
        let files = (0..record.shards)
            .map(|i| TensorFiles::open(&[dir.join(shard_file(i, record.shards))]).map_err(|e| resume(e.to_string())))
            .collect::<Result<_, _>>()?;
        Ok(Source::Shards { files, record, dir: dir.display().to_string() })
    }

    fn has_head(&self) -> bool {
        match self {
            Source::Hf { names, .. } => names.keys().any(|k| k.starts_with("classifier.")),
            Source::Shards { .. } => true,
        }
    }

    fn steps_taken(&self) -> i64 {
        match self {
            Source::Hf { .. } => 0,
            Source::Shards { record, .. } => record.steps_taken,
        }
    }

    /// Shard `index` of the part named `key` (a unit's, or the word table's) under
    /// `layout` (parameters, and the moments when resuming), read range by range.
    fn read_shard(&self, key: &str, layout: &FlatLayout, index: usize) -> Result<(Tensor, Option<(Tensor, Tensor)>), TrainError> {
        match self {
            Source::Hf { files, names, dir } => {
                let mut shard = Tensor::zeros([layout.shard_len() as i64], (Kind::Float, Device::Cpu));
                for v in &layout.vars {
                    let shape: Vec<usize> = v.shape.iter().map(|&d| d as usize).collect();
                    match names.get(&v.name).and_then(|n| files.shape(n)) {
                        Some(found) if found == shape.as_slice() => {}
                        Some(found) => {
                            return Err(ModelError::ShapeMismatch {
                                name: v.name.clone(),
                                found: found.iter().map(|&d| d as i64).collect(),
                                expected: v.shape.clone(),
                            }
                            .into())
                        }
                        None => return Err(ModelError::MissingWeights { dir: dir.clone(), names: v.name.clone() }.into()),
                    }
                }
                // SAFETY: a fresh contiguous CPU f32 tensor, used only here.
                let data = unsafe { f32_slice(&mut shard) };
                for p in layout.pieces(index) {
                    let v = &layout.vars[p.var];
                    let out = &mut data[p.at..p.at + p.elements.len()];
                    files.read_f32(&names[&v.name], p.elements.start, out).map_err(|e| TrainError::Io(dir.clone(), e))?;
                }
                Ok((shard, None))
            }
            Source::Shards { files, record, dir } => {
                let resume = |reason: String| TrainError::Resume { dir: dir.clone(), reason };
                let saved = record.units.iter().find(|(k, _)| *k == key).map(|(_, n)| *n);
                if saved != Some(layout.numel) {
                    return Err(resume(format!("unit {key} has {saved:?} elements saved, the model {}", layout.numel)));
                }
                // The flat elements are the same whatever the number of shards: this
                // shard's range is read from whichever saved shards hold it.
                let range = layout.shard_range(index);
                let read = |kind: &str| -> Result<Tensor, TrainError> {
                    let mut t = Tensor::zeros([range.len() as i64], (Kind::Float, Device::Cpu));
                    // SAFETY: as above.
                    let data = unsafe { f32_slice(&mut t) };
                    let name = format!("{key}.{kind}");
                    let saved_len = files[0].shape(&name).map(|s| s[0]).ok_or_else(|| resume(format!("no {name}")))?;
                    let end = range.end.min(layout.numel);
                    let mut at = range.start;
                    while at < end {
                        let (file, within) = (at / saved_len, at % saved_len);
                        let take = (saved_len - within).min(end - at);
                        let files = files.get(file).ok_or_else(|| resume(format!("{name}: element {at} is past the saved shards")))?;
                        files.read_f32(&name, within, &mut data[at - range.start..at - range.start + take]).map_err(|e| resume(e.to_string()))?;
                        at += take;
                    }
                    Ok(t)
                };
                let param = read("param")?;
                let moments = (read("exp_avg")?, read("exp_avg_sq")?);
                Ok((param, Some(moments)))
            }
        }
    }

    /// BERT's pooler and the like: tensors the model does not use but transformers
    /// expects back (read whole: they are small).
    fn passthrough(&self, prefix: &str) -> Result<Vec<(String, Tensor)>, TrainError> {
        let Source::Hf { files, names, dir } = self else { unreachable!("passthrough tensors come from an HF checkpoint") };
        let mut out = Vec::new();
        for (name, file_name) in names.iter().filter(|(n, _)| n.starts_with(&format!("{prefix}pooler."))) {
            let shape = files.shape(file_name).expect("listed").to_vec();
            let mut t = Tensor::zeros(shape.iter().map(|&d| d as i64).collect::<Vec<_>>(), (Kind::Float, Device::Cpu));
            // SAFETY: as above.
            files.read_f32(file_name, 0, unsafe { f32_slice(&mut t) }).map_err(|e| TrainError::Io(dir.clone(), e))?;
            out.push((name.clone(), t));
        }
        Ok(out)
    }
}
