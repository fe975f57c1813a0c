//! The model directory the exporter writes and the scorer reads. Its
//! [`MANIFEST_FILE`] names the graphs, the tokenizer and the label names, so a
//! directory is all a scorer needs, with no Python and no checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const MANIFEST_FILE: &str = "absa_model.json";
/// Bumped when a reader of older directories would misread a newer one.
pub const FORMAT: &str = "absa-td-bert-onnx/1";
pub const INPUT_NAMES: [&str; 3] = ["input_ids", "attention_mask", "aspect_mask"];
/// The fourth input of a sentence-pair graph: the segment ids.
pub const TOKEN_TYPE_IDS: &str = "token_type_ids";
/// [`ModelManifest::input`] of a model reading text and target as a sentence pair.
pub const PAIR_INPUT: &str = "text_target_pair";
pub const LOGITS: &str = "logits";
pub const PROBABILITIES: &str = "probabilities";

/// Which graph of a directory to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    /// Weights int8 per output channel, activations quantized per batch (uint8).
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        })
    }
}

/// One graph file of the directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphFile {
    pub precision: Precision,
    /// File name inside the directory.
    pub file: String,
    /// The side file holding its weights, for models past protobuf's 2 GiB limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_data: Option<String>,
}

/// `absa_model.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelManifest {
    pub format: String,
    /// Class names in logit order.
    pub labels: Vec<String>,
    /// Longest input in tokens, special tokens included; longer texts are windowed.
    pub max_length: usize,
    /// HF `model_type` of the encoder (`bert`, `xlm-roberta`, ...).
    pub model_type: String,
    /// `max` or `mean` over the aspect's tokens, or `cls` (the first token alone).
    pub pooling: String,
    /// `text` (the target is a span of the text) or [`PAIR_INPUT`] (text and target
    /// as the encoder's sentence pair; the graph then also takes [`TOKEN_TYPE_IDS`]).
    #[serde(default = "text_input")]
    pub input: String,
    /// The id batches are padded with (RoBERTa positions depend on it).
    pub pad_token_id: i64,
    /// The tokenizer file inside the directory.
    pub tokenizer: String,
    pub opset: i64,
    pub graphs: Vec<GraphFile>,
}

fn text_input() -> String {
    "text".into()
}

#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a model manifest: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{dir} has no {precision} graph (it has: {available})")]
    NoGraph { dir: PathBuf, precision: Precision, available: String },
}

impl ModelManifest {
    /// Reads and checks `dir/absa_model.json`: the format, the labels and that every
    /// named file exists.
    pub fn read(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io { path: path.clone(), source })?;
        let invalid = |reason: String| ManifestError::Invalid { path: path.clone(), reason };
        let manifest: Self = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if manifest.format != FORMAT {
            return Err(invalid(format!("format {:?}, this build reads {FORMAT:?}", manifest.format)));
        }
        if manifest.labels.len() < 2 {
            return Err(invalid(format!("needs at least two labels, has {:?}", manifest.labels)));
        }
        let files = std::iter::once(manifest.tokenizer.as_str())
            .chain(manifest.graphs.iter().flat_map(|g| std::iter::once(g.file.as_str()).chain(g.external_data.as_deref())));
        for file in files {
            let p = dir.join(file);
            if !p.is_file() {
                return Err(invalid(format!("names {file}, which is missing")));
            }
        }
        Ok(manifest)
    }

    pub fn write(&self, dir: &Path) -> Result<(), ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(self).expect("a manifest serialises");
        std::fs::write(&path, text + "\n").map_err(|source| ManifestError::Io { path, source })
    }

    /// The graph inputs, in order: [`INPUT_NAMES`], then the segment ids for pair input.
    pub fn input_names(&self) -> Vec<&'static str> {
        let pair = (self.input == PAIR_INPUT).then_some(TOKEN_TYPE_IDS);
        INPUT_NAMES.into_iter().chain(pair).collect()
    }

    /// The graph of the given precision.
    pub fn graph(&self, dir: &Path, precision: Precision) -> Result<&GraphFile, ManifestError> {
        self.graphs.iter().find(|g| g.precision == precision).ok_or_else(|| ManifestError::NoGraph {
            dir: dir.to_path_buf(),
            precision,
            available: self.graphs.iter().map(|g| g.precision.to_string()).collect::<Vec<_>>().join(", "),
        })
    }
}
