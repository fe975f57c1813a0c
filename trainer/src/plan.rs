//! The device plan: whether and how a model's fine-tuning fits on the GPUs a job is
//! given. A memory estimate from the model's `config.json` shape, the batch size, the
//! sequence length and the precision (weights, gradients, AdamW states, activations),
//! and a plan combining data-parallel replicas, layer sharding (consecutive encoder
//! layers per GPU) and offload of the optimizer states to CPU memory.
//!
//! The activation figure follows Korthikanti et al. 2022 ("Reducing Activation
//! Recomputation in Large Transformer Models"): per layer `s·b·h·(34 + 5·a·s/h)` bytes
//! with 2-byte activations and 1-byte dropout masks; with element size `e` that is
//! `s·b·h·(16e + 2) + a·s²·b·(2e + 1)`.

use crate::model::{EncoderConfig, Family};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Everything fp32 (the CPU path).
    Fp32,
    /// bf16 autocast with fp32 master weights, gradients and optimizer states; the
    /// activations autograd keeps are bf16.
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
    let activations = shape.num_hidden_layers * layer_activation_bytes(shape, batch, seq_len, precision) + other_activation_bytes(shape, batch, seq_len, precision);
    MemoryEstimate { parameters: p, weights: 4 * p, gradients: 4 * p, optimizer: 8 * p, activations }
}

/// How a job's GPUs are used.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Data-parallel copies of the model, each on `stages` GPUs with `batch / replicas` rows.
    pub replicas: u64,
    /// GPUs one copy is sharded across, consecutive encoder layers on each.
    pub stages: u64,
    /// Encoder layers on each stage (the first stage also holds the embeddings, the
    /// last the head).
    pub layers_per_stage: Vec<u64>,
    /// AdamW's moments live in CPU memory, the update runs there.
    pub offload_optimizer: bool,
    /// The estimate for the busiest GPU, overhead included.
    pub per_gpu_bytes: u64,
}

/// The smallest arrangement that fits: data parallel over all GPUs if a whole model
/// fits on one, else the fewest layer stages, and CPU offload of the optimizer states
/// only when nothing fits without it.
pub fn plan(shape: &ModelShape, batch: u64, seq_len: u64, precision: Precision, gpus: u64, gpu_bytes: u64) -> Option<Plan> {
    arrangements(shape, batch, seq_len, precision, gpus).find(|p| p.per_gpu_bytes <= gpu_bytes)
}

/// The least memory per GPU any arrangement on `gpus` GPUs needs: GPUs with less
/// cannot take the job.
pub fn min_gpu_bytes(shape: &ModelShape, batch: u64, seq_len: u64, precision: Precision, gpus: u64) -> Option<u64> {
    arrangements(shape, batch, seq_len, precision, gpus).map(|p| p.per_gpu_bytes).min()
}

/// Every arrangement on `gpus` GPUs, in order of preference.
fn arrangements(shape: &ModelShape, batch: u64, seq_len: u64, precision: Precision, gpus: u64) -> impl Iterator<Item = Plan> + '_ {
    [false, true].into_iter().flat_map(move |offload_optimizer| {
        (1..=gpus).filter(move |s| gpus.is_multiple_of(*s) && *s <= shape.num_hidden_layers.max(1)).map(move |stages| {
            let replicas = gpus / stages;
            let rows = batch.div_ceil(replicas);
            let layers_per_stage = split_layers(shape.num_hidden_layers, stages);
            let per_gpu_bytes = busiest_stage_bytes(shape, rows, seq_len, precision, &layers_per_stage, offload_optimizer);
            Plan { replicas, stages, layers_per_stage, offload_optimizer, per_gpu_bytes }
        })
    })
}

/// The fewest GPUs of `gpu_bytes` that [`plan`] finds a fit on (up to 1,024).
pub fn min_gpus(shape: &ModelShape, batch: u64, seq_len: u64, precision: Precision, gpu_bytes: u64) -> Option<u64> {
    (1..=1024).find(|&g| plan(shape, batch, seq_len, precision, g, gpu_bytes).is_some())
}

/// Layers split as evenly as possible, the extra ones on the later stages (the first
/// stage also holds the embeddings).
fn split_layers(layers: u64, stages: u64) -> Vec<u64> {
    (0..stages).map(|i| layers / stages + u64::from(i >= stages - layers % stages)).collect()
}

fn busiest_stage_bytes(shape: &ModelShape, rows: u64, seq_len: u64, precision: Precision, layers_per_stage: &[u64], offload_optimizer: bool) -> u64 {
    // Weights and gradients always on the GPU; AdamW's moments there too unless offloaded.
    let per_parameter = if offload_optimizer { 8 } else { 16 };
    let last = layers_per_stage.len() - 1;
    layers_per_stage
        .iter()
        .enumerate()
        .map(|(i, &layers)| {
            let mut params = layers * shape.layer_parameters();
            if i == 0 {
                params += shape.embedding_parameters();
            }
            if i == last {
                params += shape.head_parameters();
            }
            let activations = layers * layer_activation_bytes(shape, rows, seq_len, precision) + other_activation_bytes(shape, rows, seq_len, precision);
            per_parameter * params + activations + PER_GPU_OVERHEAD_BYTES
        })
        .max()
        .unwrap_or(0)
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

    #[test]
    fn layers_split_evenly_with_the_extra_ones_late() {
        assert_eq!(split_layers(12, 1), vec![12]);
        assert_eq!(split_layers(36, 2), vec![18, 18]);
        assert_eq!(split_layers(10, 4), vec![2, 2, 3, 3]);
        assert_eq!(split_layers(48, 4).iter().sum::<u64>(), 48);
    }
}
