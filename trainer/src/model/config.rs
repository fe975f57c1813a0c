//! The encoder's shape and family, read from a Hugging Face `config.json`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::ModelError;

/// Which layer layout the checkpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `BertModel`: post-LayerNorm, absolute positions from 0, linear classifier.
    Bert,
    /// `RobertaModel`/`XLMRobertaModel`: post-LayerNorm, positions start after the
    /// padding index and skip pads, dense+tanh+out_proj classifier.
    Roberta,
    /// `XLMRobertaXLModel` (xlm-roberta-xl, -xxl): pre-LayerNorm layers, no embedding
    /// LayerNorm, a final LayerNorm after the last layer; RoBERTa positions and head.
    RobertaXl,
}

impl Family {
    /// The prefix HF puts before encoder weights in `*ForSequenceClassification`.
    pub fn prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Roberta | Family::RobertaXl => "roberta",
        }
    }

    /// The HF class our checkpoints are written as.
    pub fn sequence_classification_architecture(self, model_type: &str) -> &'static str {
        match (self, model_type) {
            (Family::Bert, _) => "BertForSequenceClassification",
            (Family::Roberta, "roberta") => "RobertaForSequenceClassification",
            (Family::Roberta, _) => "XLMRobertaForSequenceClassification",
            (Family::RobertaXl, _) => "XLMRobertaXLForSequenceClassification",
        }
    }
}

pub const SUPPORTED_MODEL_TYPES: &str = "bert, roberta, xlm-roberta, xlm-roberta-xl";

/// The fields of HF `config.json` the encoder needs, with HF's names.
#[derive(Clone, Debug, Deserialize)]
pub struct EncoderConfig {
    pub model_type: String,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: i64,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: i64,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// Dropout of the classification head; HF falls back to `hidden_dropout_prob`.
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    #[serde(default)]
    pub id2label: BTreeMap<String, String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> i64 {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_init_range() -> f64 {
    0.02
}

impl EncoderConfig {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io(path.display().to_string(), e))?;
        let config: Self = serde_json::from_str(&text).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
        config.family()?;
        if config.hidden_size % config.num_attention_heads != 0 {
            return Err(ModelError::Config(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        Ok(config)
    }

    /// The shapes of Hugging Face's `xlm-roberta-{base,large}` and
    /// `facebook/xlm-roberta-{xl,xxl}` configs (random-weight benchmarks, the device
    /// plan's reference figures), and `tiny` (2 layers of 64) for quick checks.
    pub fn xlm_roberta(size: &str) -> Option<Self> {
        let (model_type, hidden, layers, heads, intermediate, vocab) = match size {
            "tiny" => ("xlm-roberta", 64, 2, 4, 128, 250_002),
            "base" => ("xlm-roberta", 768, 12, 12, 3072, 250_002),
            "large" => ("xlm-roberta", 1024, 24, 16, 4096, 250_002),
            "xl" => ("xlm-roberta-xl", 2560, 36, 32, 10240, 250_880),
            "xxl" => ("xlm-roberta-xl", 4096, 48, 32, 16384, 250_880),
            _ => return None,
        };
        Some(Self {
            model_type: model_type.into(),
            architectures: Vec::new(),
            vocab_size: vocab,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: intermediate,
            hidden_act: default_act(),
            hidden_dropout_prob: default_dropout(),
            attention_probs_dropout_prob: default_dropout(),
            max_position_embeddings: 514,
            type_vocab_size: 1,
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            initializer_range: default_init_range(),
            classifier_dropout: None,
            id2label: BTreeMap::new(),
        })
    }

    pub fn family(&self) -> Result<Family, ModelError> {
        match self.model_type.as_str() {
            "bert" => Ok(Family::Bert),
            "roberta" | "xlm-roberta" => Ok(Family::Roberta),
            "xlm-roberta-xl" => Ok(Family::RobertaXl),
            other => Err(ModelError::UnsupportedArchitecture { model_type: other.into(), architectures: self.architectures.join(", ") }),
        }
    }

    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    pub fn classifier_dropout(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }
}
