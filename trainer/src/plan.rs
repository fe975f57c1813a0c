//! The device plan: how a model's fine-tuning fits on the devices a run is given. A
//! memory estimate from the model's `config.json` shape, the batch size, the sequence
//! length and the precision (weights, gradients, AdamW states, activations), per rank
//! for each way the ranks can divide the model (see [`crate::distributed::Sharding`]),
//! and the plan: the least sharding that fits, with the optimizer offloaded to CPU
//! memory only when nothing fits without it.
//!
//! The activation figure follows Korthikanti et al. 2022 ("Reducing Activation
//! Recomputation in Large Transformer Models"): per layer `s·b·h·(34 + 5·a·s/h)` bytes
//! with 2-byte activations and 1-byte dropout masks; with element size `e` that is
//! `s·b·h·(16e + 2) + a·s²·b·(2e + 1)`.

use std::path::Path;

use crate::checkpoint::LoadOptions;
use crate::distributed::{RankEnv, Sharding};
use crate::model::{EncoderConfig, Family};
use crate::TrainError;

pub const GIB: f64 = (1u64 << 30) as f64;

/// What a CUDA context, libtorch's allocator slack and the kernels' workspaces take on
/// each GPU beyond the tensors counted here.
pub const PER_GPU_OVERHEAD_BYTES: u64 = 1 << 30;

/// The shape the estimate needs, with HF's names.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelShape {
    pub vocab_size: u64,
    pub hidden_size: u64,
    pub num_hidden_layers: u64,
    pub num_attention_heads: u64,
    pub intermediate_size: u64,
    pub max_position_embeddings: u64,
    pub type_vocab_size: u64,
    pub num_labels: u64,
    pub family: Family,
}

impl ModelShape {
    pub fn from_config(config: &EncoderConfig, num_labels: u64) -> Result<Self, crate::ModelError> {
        let u = |v: i64| v.max(0) as u64;
        Ok(Self {
            vocab_size: u(config.vocab_size),
            hidden_size: u(config.hidden_size),
            num_hidden_layers: u(config.num_hidden_layers),
            num_attention_heads: u(config.num_attention_heads),
            intermediate_size: u(config.intermediate_size),
            max_position_embeddings: u(config.max_position_embeddings),
            type_vocab_size: u(config.type_vocab_size),
            num_labels,
            family: config.family()?,
        })
    }

    /// Parameters of the embeddings (word, position, token type, their LayerNorm).
    pub fn embedding_parameters(&self) -> u64 {
        let h = self.hidden_size;
        let norm = if self.family == Family::RobertaXl { 0 } else { 2 * h };
        (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * h + norm
    }

    /// Parameters of one encoder layer: Q, K, V and output projections, the two
    /// feed-forward matrices, their biases and two LayerNorms.
    pub fn layer_parameters(&self) -> u64 {
        let (h, i) = (self.hidden_size, self.intermediate_size);
        4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h
    }

    /// The classification head: BERT's linear layer, or RoBERTa's dense + out_proj
    /// (xl and xxl also end the encoder with a LayerNorm).
    pub fn head_parameters(&self) -> u64 {
        let (h, n) = (self.hidden_size, self.num_labels);
        match self.family {
            Family::Bert => h * n + n,
            Family::Roberta => h * h + h + h * n + n,
            Family::RobertaXl => 2 * h + h * h + h + h * n + n,
        }
    }

    pub fn parameters(&self) -> u64 {
        self.embedding_parameters() + self.num_hidden_layers * self.layer_parameters() + self.head_parameters()
    }
}

/// How tensors are kept while training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Precision {
    /// Everything fp32.
    #[default]
    #[serde(rename = "fp32")]
    Fp32,
    /// bf16 autocast with fp32 master weights, gradients and optimizer states; the
    /// activations autograd keeps are bf16.
    #[serde(rename = "bf16")]
    Bf16Mixed,
}

impl Precision {
    fn activation_bytes(self) -> u64 {
        match self {
            Precision::Fp32 => 4,
            Precision::Bf16Mixed => 2,
        }
    }
}

/// Bytes a fine-tuning step holds, by kind, for the whole batch on one device.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryEstimate {
    pub parameters: u64,
    /// fp32 master weights.
    pub weights: u64,
    /// fp32 gradients.
    pub gradients: u64,
    /// AdamW's two fp32 moments.
    pub optimizer: u64,
    /// What autograd keeps for the backward pass, all layers, the whole batch.
    pub activations: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights + self.gradients + self.optimizer + self.activations
    }
}

/// Activation bytes of one encoder layer for `batch` rows of `seq_len` tokens.
pub fn layer_activation_bytes(shape: &ModelShape, batch: u64, seq_len: u64, precision: Precision) -> u64 {
    let e = precision.activation_bytes();
    let (s, b, h, a) = (seq_len, batch, shape.hidden_size, shape.num_attention_heads);
    s * b * h * (16 * e + 2) + a * s * s * b * (2 * e + 1)
}

/// Activations outside the layers: the embeddings' output and LayerNorm, the pooled
/// vectors and the head.
fn other_activation_bytes(shape: &ModelShape, batch: u64, seq_len: u64, precision: Precision) -> u64 {
    3 * seq_len * batch * shape.hidden_size * precision.activation_bytes()
}

pub fn estimate(shape: &ModelShape, batch: u64, seq_len: u64, precision: Precision) -> MemoryEstimate {
    let p = shape.parameters();
    let activations =
        shape.num_hidden_layers * layer_activation_bytes(shape, batch, seq_len, precision) + other_activation_bytes(shape, batch, seq_len, precision);
    MemoryEstimate { parameters: p, weights: 4 * p, gradients: 4 * p, optimizer: 8 * p, activations }
}

/// The word embeddings' parameters: sharded by vocabulary rows, they are never gathered.
fn word_parameters(shape: &ModelShape) -> u64 {
    shape.vocab_size * shape.hidden_size
}

/// Bytes one rank holds at its peak, by kind.
#[derive(Clone, Debug, PartialEq)]
pub struct RankMemory {
    /// fp32 master weights this rank keeps (all, or its shards).
    pub weights: u64,
    /// Their gradients, plus a unit's gradients and flat buffer while it is reduced.
    pub gradients: u64,
    /// AdamW's two moments on the device (none when offloaded to CPU memory).
    pub optimizer: u64,
    /// Parameters gathered from the other ranks for compute.
    pub gathered: u64,
    /// What autograd keeps (and, FullShard, the units' saved inputs).
    pub activations: u64,
    /// A CUDA context, allocator slack and workspaces; 0 on the CPU.
    pub overhead: u64,
}

impl RankMemory {
    pub fn total(&self) -> u64 {
        self.weights + self.gradients + self.optimizer + self.gathered + self.activations + self.overhead
    }
}

/// What one of `ranks` ranks holds training `shape` on `batch` rows (split over the
/// ranks) of `seq_len` tokens under `sharding` (NoShard with one rank: one process).
#[allow(clippy::too_many_arguments)]
pub fn per_rank(
    shape: &ModelShape,
    batch: u64,
    seq_len: u64,
    precision: Precision,
    ranks: u64,
    sharding: Sharding,
    offload: bool,
    overhead: u64,
) -> RankMemory {
    let ranks = ranks.max(1);
    let rows = batch.div_ceil(ranks);
    let p = shape.parameters();
    let layer = shape.layer_parameters();
    let words = word_parameters(shape);
    // The largest unit gathered and reduced whole: a layer, or the embeddings' other
    // tables, or the head; unsharded, the embeddings with their word table.
    let rest_of_embeddings = shape.embedding_parameters() - words;
    let activations_all =
        shape.num_hidden_layers * layer_activation_bytes(shape, rows, seq_len, precision) + other_activation_bytes(shape, rows, seq_len, precision);
    let (stored, largest_unit) = match sharding {
        Sharding::NoShard | Sharding::Auto => (p, shape.embedding_parameters().max(layer)),
        Sharding::ShardGradOp | Sharding::FullShard => (p.div_ceil(ranks), layer.max(rest_of_embeddings).max(shape.head_parameters())),
    };
    // Gradients on their way: in one process, autograd's fresh gradient of the largest
    // tensor (the word table) before it is added to the accumulated one; across ranks,
    // whole units of fp32 (see the constants).
    let reduce_transient = if ranks == 1 { 4 * words.max(layer) } else { 4 * (REDUCING_UNITS + COLLECTIVE_SLACK_UNITS) * largest_unit };
    let (gathered, activations) = match sharding {
        Sharding::NoShard | Sharding::Auto => (0, activations_all),
        Sharding::ShardGradOp => (4 * (p - words), activations_all),
        Sharding::FullShard => {
            // The unit computing and the next one being gathered; the units' inputs
            // (fp32 hidden states) and one layer's activations while it is recomputed.
            let inputs = (shape.num_hidden_layers + 1) * rows * seq_len * shape.hidden_size * 4;
            (8 * largest_unit, inputs + layer_activation_bytes(shape, rows, seq_len, precision) + other_activation_bytes(shape, rows, seq_len, precision))
        }
    };
    RankMemory {
        weights: 4 * stored,
        gradients: 4 * stored + reduce_transient,
        optimizer: if offload { 0 } else { 8 * stored },
        gathered,
        activations,
        overhead,
    }
}

/// Units' worth of fp32 gradients a rank holds at its peak besides its shards:
/// autograd's gradients of the unit being reduced, the flat buffer they are copied
/// into, and the previous unit's buffer still being reduced.
const REDUCING_UNITS: u64 = 3;

/// What the allocator and the collectives hold around those buffers, in units:
/// measured on the CPU with Gloo (XLM-R large, full shard, 2 and 4 ranks: 10 to 13
/// units above the shards in all, with the 2 gathered units and the 3 above).
const COLLECTIVE_SLACK_UNITS: u64 = 5;

/// How a run's devices are used.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// One rank per device.
    pub ranks: u64,
    pub sharding: Sharding,
    /// AdamW's moments and the master shards in CPU memory, the update run there.
    pub offload_optimizer: bool,
    /// The estimate per rank, overhead included.
    pub per_rank_bytes: u64,
}

/// Every arrangement on `ranks` devices, in order of preference: the least sharding
/// first (the least communication and recomputation), offload last.
fn arrangements(shape: &ModelShape, batch: u64, seq_len: u64, precision: Precision, ranks: u64, overhead: u64) -> impl Iterator<Item = Plan> + '_ {
    let options: &[(Sharding, bool)] = if ranks > 1 {
        &[(Sharding::NoShard, false), (Sharding::ShardGradOp, false), (Sharding::FullShard, false), (Sharding::FullShard, true)]
    } else {
        &[(Sharding::NoShard, false), (Sharding::NoShard, true)]
    };
    options.iter().map(move |&(sharding, offload)| Plan {
        ranks,
        sharding,
        offload_optimizer: offload,
        per_rank_bytes: per_rank(shape, batch, seq_len, precision, ranks, sharding, offload, overhead).total(),
    })
}

/// The first arrangement on `gpus` GPUs of `gpu_bytes` that fits.
pub fn plan(shape: &ModelShape, batch: u64, seq_len: u64, precision: Precision, gpus: u64, gpu_bytes: u64) -> Option<Plan> {
    arrangements(shape, batch, seq_len, precision, gpus, PER_GPU_OVERHEAD_BYTES).find(|p| p.per_rank_bytes <= gpu_bytes)
}

/// The least memory per GPU any arrangement on `gpus` GPUs needs: GPUs with less
/// cannot take the job.
pub fn min_gpu_bytes(shape: &ModelShape, batch: u64, seq_len: u64, precision: Precision, gpus: u64) -> Option<u64> {
    arrangements(shape, batch, seq_len, precision, gpus, PER_GPU_OVERHEAD_BYTES).map(|p| p.per_rank_bytes).min()
}

/// The fewest GPUs of `gpu_bytes` that [`plan`] finds a fit on (up to 1,024).
pub fn min_gpus(shape: &ModelShape, batch: u64, seq_len: u64, precision: Precision, gpu_bytes: u64) -> Option<u64> {
    (1..=1024).find(|&g| plan(shape, batch, seq_len, precision, g, gpu_bytes).is_some())
}

/// The sharding for a rank of `env` training the checkpoint in `base`: the first
/// arrangement of [`plan`] that fits the rank's device (a GPU's memory; on the CPU,
/// the memory available now shared by this host's ranks).
pub fn choose_sharding(base: &Path, options: &LoadOptions, batch: usize, seq_len: usize, env: &RankEnv, device: tch::Device) -> Result<Sharding, TrainError> {
    let config = EncoderConfig::from_file(&base.join("config.json"))?;
    let labels = options.labels.as_ref().map_or(3, |l| l.len() as u64);
    let shape = ModelShape::from_config(&config, labels)?;
    let (precision, device_bytes, overhead) = if device.is_cuda() {
        let mib = crate::gpus::memory_mib().into_iter().min().unwrap_or(0);
        (Precision::Bf16Mixed, mib << 20, PER_GPU_OVERHEAD_BYTES)
    } else {
        (Precision::Fp32, absa_memory::available_memory_bytes().unwrap_or(u64::MAX) / env.local_world.max(1) as u64, 0)
    };
    let chosen = arrangements(&shape, batch as u64, seq_len as u64, precision, env.world as u64, overhead)
        .find(|p| !p.offload_optimizer && p.per_rank_bytes <= device_bytes)
        .map_or(Sharding::FullShard, |p| p.sharding);
    tracing::info!(?chosen, device_gib = device_bytes as f64 / GIB, "sharding chosen by the device plan");
    Ok(chosen)
}

/// One line for errors and logs: `10.70 B parameters: weights 39.9 GiB, ...`.
pub fn describe(e: &MemoryEstimate) -> String {
    let g = |b: u64| b as f64 / GIB;
    format!(
        "{:.2} B parameters: weights {:.1} GiB, gradients {:.1} GiB, AdamW states {:.1} GiB, activations {:.1} GiB, total {:.1} GiB",
        e.parameters as f64 / 1e9,
        g(e.weights),
        g(e.gradients),
        g(e.optimizer),
        g(e.activations),
        g(e.total())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> ModelShape {
        ModelShape::from_config(&EncoderConfig::xlm_roberta("large").unwrap(), 3).unwrap()
    }

    #[test]
    fn sharding_divides_the_state_by_the_ranks() {
        let s = shape();
        let one = per_rank(&s, 16, 100, Precision::Fp32, 1, Sharding::NoShard, false, 0);
        let four = per_rank(&s, 16, 100, Precision::Fp32, 4, Sharding::FullShard, false, 0);
        let p = s.parameters();
        assert_eq!(one.weights + one.optimizer, 12 * p);
        assert_eq!(four.weights + four.optimizer, 12 * p.div_ceil(4));
        assert!(four.total() < one.total() / 2, "{four:?} vs {one:?}");
        let offloaded = per_rank(&s, 16, 100, Precision::Fp32, 4, Sharding::FullShard, true, 0);
        assert_eq!(offloaded.optimizer, 0);
    }

    #[test]
    fn the_plan_prefers_the_least_sharding_that_fits() {
        let s = shape();
        let gib = |g: u64| g << 30;
        assert_eq!(plan(&s, 16, 100, Precision::Bf16Mixed, 2, gib(80)).unwrap().sharding, Sharding::NoShard);
        let needs = |sharding| per_rank(&s, 16, 100, Precision::Bf16Mixed, 4, sharding, false, PER_GPU_OVERHEAD_BYTES).total();
        let (whole, grad_op, full) = (needs(Sharding::NoShard), needs(Sharding::ShardGradOp), needs(Sharding::FullShard));
        assert!(full < grad_op && grad_op < whole, "{full} < {grad_op} < {whole}");
        assert_eq!(plan(&s, 16, 100, Precision::Bf16Mixed, 4, grad_op).unwrap().sharding, Sharding::ShardGradOp);
        let tight = plan(&s, 16, 100, Precision::Bf16Mixed, 4, full).unwrap();
        assert_eq!((tight.sharding, tight.offload_optimizer), (Sharding::FullShard, false));
        assert!(plan(&s, 16, 100, Precision::Bf16Mixed, 4, full - 1).unwrap().offload_optimizer);
        assert_eq!(plan(&s, 16, 100, Precision::Bf16Mixed, 1, gib(4)), None);
    }
}
