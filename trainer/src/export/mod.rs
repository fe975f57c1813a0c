//! ONNX export of a TD-BERT model, from the VarStore, without Python.
//!
//! [`export_model_dir`] writes a directory the scorer runs with no checkpoint:
//! `model.onnx` (fp32), optionally `model.int8.onnx` (dynamic int8), the tokenizer
//! files and `absa_model.json` (labels, max length, pad id; see
//! [`absa_onnx::manifest`]). Graphs use opset 17 with dynamic `batch` and `sequence`
//! axes: inputs `input_ids`, `attention_mask`, `aspect_mask` (int64, 0/1 masks),
//! outputs `logits` and `probabilities` (`batch` x labels). Models past protobuf's
//! 2 GiB limit keep their weights in `model.onnx.data` beside the graph.
//!
//! - [`graph`]: the forward pass as ONNX nodes (embeddings, layers, pooling, head).
//! - [`quantize`]: per-channel int8 weights and the dynamically quantized MatMul.

mod graph;
mod quantize;

use std::path::{Path, PathBuf};
use std::time::Instant;

use absa_domain::encoding::DEFAULT_MAX_LENGTH;
use absa_onnx::manifest::{self, GraphFile, ModelManifest, Precision};
use thiserror::Error;

use crate::checkpoint::{copy_tokenizer_files, LoadedModel};
use crate::model::Family;

pub use graph::build_graph;

/// Above this many bytes of weights a graph keeps them in a side file: protobuf
/// messages stop at 2 GiB (XLM-R large in fp32 is 2.2 GB).
pub const EXTERNAL_DATA_THRESHOLD: u64 = 1536 << 20;

pub const FP32_FILE: &str = "model.onnx";
pub const INT8_FILE: &str = "model.int8.onnx";

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("weight {0} is missing from the model's variables")]
    MissingWeight(String),
    #[error("max length {max_length} exceeds what the position embeddings allow ({limit})")]
    MaxLength { max_length: usize, limit: usize },
    #[error(transparent)]
    Model(#[from] crate::ModelError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Which operators a graph is written with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GraphStyle {
    /// Standard ONNX opset 17 only. The default: on the 2-core AVX2 CPU this project
    /// measures on, ONNX Runtime 1.31 runs it faster than the fused style (its own
    /// fusions, BiasGelu and the int8 MatMuls, still apply).
    #[default]
    Portable,
    /// Attention as `com.microsoft.MultiHeadAttention`, residual add + LayerNorm as
    /// `SkipLayerNormalization`, bias + exact GELU as `BiasGelu` (ONNX Runtime contrib
    /// operators): the fusions ONNX Runtime makes itself only for fixed sequence
    /// lengths, written directly so they hold with a dynamic `sequence` axis. Measured
    /// ~16% slower (fp32 kernel time) on that CPU: the contrib CPU kernels for
    /// SkipLayerNormalization and MultiHeadAttention take longer than the ops they
    /// replace. For execution providers whose fused kernels pay (GPUs).
    OrtFused,
}

/// What to write.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Longest input the scorer feeds, special tokens included (the recipe's 100).
    pub max_length: usize,
    /// Also write the int8 graph.
    pub int8: bool,
    pub style: GraphStyle,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self { max_length: DEFAULT_MAX_LENGTH, int8: true, style: GraphStyle::default() }
    }
}

/// One written graph.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WrittenGraph {
    pub precision: Precision,
    pub path: PathBuf,
    /// Model file plus external data, in bytes.
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportReport {
    pub dir: PathBuf,
    pub graphs: Vec<WrittenGraph>,
}

/// The longest input the position embeddings allow: RoBERTa numbers positions from
/// `pad_token_id + 1`, BERT from 0.
pub fn max_length_limit(loaded: &LoadedModel) -> usize {
    let config = &loaded.model.config;
    let offset = match loaded.model.family {
        Family::Bert => 0,
        Family::Roberta | Family::RobertaXl => config.pad_token_id + 1,
    };
    (config.max_position_embeddings - offset).max(0) as usize
}

/// Writes `out_dir` (created if needed): the graphs, the tokenizer files from
/// `tokenizer_dir` and `absa_model.json`.
pub fn export_model_dir(loaded: &LoadedModel, tokenizer_dir: &Path, out_dir: &Path, options: &ExportOptions) -> Result<ExportReport, ExportError> {
    let limit = max_length_limit(loaded);
    if options.max_length > limit {
        return Err(ExportError::MaxLength { max_length: options.max_length, limit });
    }
    std::fs::create_dir_all(out_dir).map_err(|e| ExportError::Io(out_dir.display().to_string(), e))?;
    copy_tokenizer_files(tokenizer_dir, out_dir)?;

    let weight_bytes: u64 = loaded.vs.variables().values().map(|t| t.numel() as u64 * 4).sum();
    let mut precisions = vec![Precision::Fp32];
    if options.int8 {
        precisions.push(Precision::Int8);
    }
    let mut graphs = Vec::new();
    let mut files = Vec::new();
    for precision in precisions {
        let file = match precision {
            Precision::Fp32 => FP32_FILE,
            Precision::Int8 => INT8_FILE,
        };
        let path = out_dir.join(file);
        // int8 weights are a quarter of fp32's; the embeddings stay fp32.
        let external = weight_bytes > EXTERNAL_DATA_THRESHOLD;
        let data_file = format!("{file}.data");
        let start = Instant::now();
        let mut bytes = graph::write_graph(loaded, precision, options.style, &path, external.then(|| out_dir.join(&data_file)).as_deref())?;
        if external {
            bytes += std::fs::metadata(out_dir.join(&data_file)).map_err(|e| ExportError::Io(data_file.clone(), e))?.len();
        }
        graphs.push(WrittenGraph { precision, path, bytes, seconds: start.elapsed().as_secs_f64() });
        files.push(GraphFile { precision, file: file.into(), external_data: external.then_some(data_file) });
    }

    let manifest = ModelManifest {
        format: manifest::FORMAT.into(),
        labels: loaded.labels.names().to_vec(),
        max_length: options.max_length,
        model_type: loaded.model.config.model_type.clone(),
        pooling: serde_json::to_value(loaded.model.pooling).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
        input: serde_json::to_value(loaded.model.input).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
        pad_token_id: loaded.model.config.pad_token_id,
        tokenizer: "tokenizer.json".into(),
        opset: absa_onnx::OPSET,
        graphs: files,
    };
    manifest.write(out_dir)?;
    Ok(ExportReport { dir: out_dir.to_path_buf(), graphs })
}
