//! Checkpoints as Hugging Face directories: `config.json`, `model.safetensors` (or
//! shards with `model.safetensors.index.json`) and `tokenizer.json`.
//!
//! Loading accepts names with or without the `bert.`/`roberta.` prefix, reports missing
//! and unexpected tensors by name, and initialises the head when the checkpoint has
//! none (a fresh fine-tune). Saving writes what transformers loads as
//! `*ForSequenceClassification` with no weight missing: our head is exactly that
//! class's head; only the pooling over aspect tokens (recorded under `absa` in
//! `config.json`) differs from its `[CLS]` use.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use absa_domain::{InputForm, LabelSet};
use serde_json::{json, Value};
use tch::{nn, Device, Tensor};

use crate::model::{EncoderConfig, Pooling, TdBertModel};
use crate::ModelError;

/// What loading found beyond the expected weights.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Head variables the checkpoint lacked, initialised fresh.
    pub initialised: Vec<String>,
    /// Checkpoint tensors the model has no use for (reported, not fatal).
    pub unexpected: Vec<String>,
    /// Tensors kept untouched and written back on save (BERT's pooler, which
    /// `BertForSequenceClassification` expects).
    pub passed_through: Vec<String>,
}

/// A model with its variables, labels and the checkpoint's own configuration.
pub struct LoadedModel {
    pub vs: nn::VarStore,
    pub model: TdBertModel,
    pub labels: LabelSet,
    pub report: LoadReport,
    passthrough: Vec<(String, Tensor)>,
    raw_config: Value,
}

/// Options for [`load`].
#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    /// The labels to train for. `None` takes the checkpoint's own (`id2label`).
    /// When they differ from the checkpoint's, the head starts fresh.
    pub labels: Option<LabelSet>,
    /// `None` takes the checkpoint's recorded pooling, else max.
    pub pooling: Option<Pooling>,
    /// `None` takes the checkpoint's recorded input form, else text.
    pub input: Option<InputForm>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |e| ModelError::Io(path.display().to_string(), e)
}

/// The safetensors files of a checkpoint directory, shards in index order.
pub(crate) fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(io(&index))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| ModelError::Config(format!("{}: {e}", index.display())))?;
        let map = value["weight_map"].as_object().ok_or_else(|| ModelError::Config(format!("{}: no weight_map", index.display())))?;
        let files: std::collections::BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(ModelError::NoWeights(dir.display().to_string()))
}

/// Loads a checkpoint directory onto `device`.
pub fn load(dir: &Path, options: &LoadOptions, device: Device) -> Result<LoadedModel, ModelError> {
    let config_path = dir.join("config.json");
    let config = EncoderConfig::from_file(&config_path)?;
    let raw_config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).map_err(io(&config_path))?).map_err(|e| ModelError::Config(e.to_string()))?;
    let family = config.family()?;
    let prefix = format!("{}.", family.prefix());

    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for file in weight_files(dir)? {
        for (name, tensor) in Tensor::read_safetensors(&file)? {
            // Accept encoder names with or without the family prefix.
            let name = if name.starts_with(&prefix) || name.starts_with("classifier.") { name } else { format!("{prefix}{name}") };
            tensors.insert(name, tensor);
        }
    }

    let has_head = tensors.keys().any(|k| k.starts_with("classifier."));
    let Resolved { labels, load_head, pooling, input } = resolve(dir, &raw_config, has_head, options)?;

    let vs = nn::VarStore::new(device);
    let mut model = TdBertModel::new(&vs.root(), config.clone(), labels.len() as i64, pooling)?;
    model.input = input;
    let mut report = LoadReport::default();
    let mut missing = Vec::new();
    let mut used = HashSet::new();
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut var) in variables {
        let is_head = name.starts_with("classifier.");
        match tensors.get(&name) {
            Some(src) if !is_head || load_head => {
                if src.size() != var.size() {
                    return Err(ModelError::ShapeMismatch { name, found: src.size(), expected: var.size() });
                }
                tch::no_grad(|| var.copy_(&src.to_kind(var.kind())));
                used.insert(name);
            }
            _ if is_head => report.initialised.push(name),
            _ => missing.push(name),
        }
    }
    if !missing.is_empty() {
        return Err(ModelError::MissingWeights { dir: dir.display().to_string(), names: missing.join(", ") });
    }
    if !report.initialised.is_empty() {
        model.head.initialise(config.initializer_range);
    }
    let mut passthrough = Vec::new();
    let mut rest: Vec<(String, Tensor)> = tensors.into_iter().filter(|(k, _)| !used.contains(k)).collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, tensor) in rest {
        if name.starts_with(&format!("{prefix}pooler.")) {
            report.passed_through.push(name.clone());
            passthrough.push((name, tensor.to_device(device)));
        } else if name.ends_with("position_ids") || (name.starts_with("classifier.") && !load_head) {
            // Buffers HF recomputes, and the old head of a checkpoint trained for other labels.
        } else {
            report.unexpected.push(name);
        }
    }
    if !report.unexpected.is_empty() {
        tracing::warn!(names = ?report.unexpected, "checkpoint tensors not used by the model");
    }
    Ok(LoadedModel { vs, model, labels, report, passthrough, raw_config })
}

/// How a checkpoint is loaded: the labels trained for, whether its head is kept (it
/// exists and was trained for those labels), and the pooling.
pub(crate) struct Resolved {
    pub labels: LabelSet,
    pub load_head: bool,
    pub pooling: Pooling,
    pub input: InputForm,
}

pub(crate) fn resolve(dir: &Path, raw_config: &Value, has_head: bool, options: &LoadOptions) -> Result<Resolved, ModelError> {
    let checkpoint_labels = labels_of(raw_config);
    let labels = match (&options.labels, &checkpoint_labels) {
        (Some(wanted), _) => wanted.clone(),
        (None, Some(found)) if has_head => found.clone(),
        (None, _) => return Err(ModelError::Labels(format!("{} has no trained head: give the labels to train for", dir.display()))),
    };
    let load_head = has_head && checkpoint_labels.as_ref() == Some(&labels);
    let recorded = |key: &str| raw_config["absa"][key].as_str().map(|v| json!(v));
    let pooling = options.pooling.or_else(|| recorded("pooling").and_then(|p| serde_json::from_value(p).ok())).unwrap_or_default();
    let input = options.input.or_else(|| recorded("input").and_then(|p| serde_json::from_value(p).ok())).unwrap_or_default();
    Ok(Resolved { labels, load_head, pooling, input })
}

fn labels_of(config: &Value) -> Option<LabelSet> {
    let map = config["id2label"].as_object()?;
    let mut pairs: Vec<(usize, String)> = map.iter().filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_owned()))).collect();
    pairs.sort();
    if pairs.iter().enumerate().any(|(i, (k, _))| i != *k) {
        return None;
    }
    LabelSet::new(pairs.into_iter().map(|(_, v)| v).collect()).ok()
}

impl LoadedModel {
    /// Writes the model as an HF directory: `config.json` (architecture set to the
    /// family's `*ForSequenceClassification`, our labels, pooling under `absa`),
    /// `model.safetensors` (fp32), and the tokenizer files found in `tokenizer_dir`
    /// (`tokenizer.json` plus what transformers' `AutoTokenizer` reads).
    pub fn save(&self, dir: &Path, tokenizer_dir: Option<&Path>) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_config(&self.raw_config, &self.model, &self.labels, dir)?;
        let mut tensors: BTreeMap<String, Tensor> = self.vs.variables().into_iter().collect();
        for (name, t) in &self.passthrough {
            tensors.insert(name.clone(), t.shallow_clone());
        }
        write_safetensors(&tensors, &dir.join("model.safetensors"))?;
        if let Some(from) = tokenizer_dir {
            copy_tokenizer_files(from, dir)?;
        }
        Ok(())
    }
}

/// `config.json` for `model` trained for `labels`: the checkpoint's own configuration
/// with the architecture set to the family's `*ForSequenceClassification`, the labels,
/// and the pooling and input form under `absa`.
pub(crate) fn write_config(raw_config: &Value, model: &TdBertModel, labels: &LabelSet, dir: &Path) -> Result<(), ModelError> {
    let mut config = raw_config.clone();
    let names = labels.names();
    config["architectures"] = json!([model.family.sequence_classification_architecture(&model.config.model_type)]);
    config["id2label"] = Value::Object(names.iter().enumerate().map(|(i, n)| (i.to_string(), json!(n))).collect());
    config["label2id"] = Value::Object(names.iter().enumerate().map(|(i, n)| (n.clone(), json!(i))).collect());
    config["num_labels"] = json!(names.len());
    config["absa"] = json!({ "method": "td-bert", "pooling": model.pooling, "input": model.input });
    let text = serde_json::to_string_pretty(&config).expect("JSON values serialise");
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, text).map_err(io(&config_path))
}

/// The files a tokenizer consists of, in HF layout.
pub const TOKENIZER_FILES: [&str; 6] =
    ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "sentencepiece.bpe.model", "added_tokens.json"];

/// Copies whichever [`TOKENIZER_FILES`] exist in `from` to `to`; `tokenizer.json` must exist.
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<(), ModelError> {
    if from == to {
        return Ok(());
    }
    let main = from.join("tokenizer.json");
    if !main.is_file() {
        return Err(ModelError::Io(main.display().to_string(), std::io::Error::new(std::io::ErrorKind::NotFound, "no tokenizer.json")));
    }
    for name in TOKENIZER_FILES {
        let src = from.join(name);
        if src.is_file() {
            let dst = to.join(name);
            std::fs::copy(&src, &dst).map_err(io(&dst))?;
        }
    }
    Ok(())
}

/// fp32 safetensors with the `format: pt` metadata transformers checks for, written
/// one tensor at a time (no second copy of the model in memory).
pub fn write_safetensors(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<(), ModelError> {
    use crate::distributed::tensor_files::SafetensorsWriter;
    let order = tensors.iter().map(|(name, t)| (name.clone(), t.size().iter().map(|&d| d as usize).collect())).collect();
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let io = |e: std::io::Error| ModelError::Io(path.display().to_string(), e);
    let mut out = SafetensorsWriter::create(path, order, &metadata).map_err(io)?;
    for (name, t) in tensors {
        out.write(name, t).map_err(io)?;
    }
    out.finish().map_err(io)
}
