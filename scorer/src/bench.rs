//! The throughput benchmark: the engine of `score` over a labelled corpus repeated to
//! N instances, for each graph of a model directory, plus accuracy on a labelled test
//! set. Each figure covers the whole job as the peer's `hf_score.py` times it:
//! tokenization with aspect masks, length-sorted batching, padding, inference and the
//! argmax, after an untimed warm-up; reading the corpus into memory is not timed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use absa_domain::metrics::ClassificationReport;
use absa_domain::readers::{self, ReaderOptions};
use absa_onnx::Precision;
use serde::Serialize;
use serde_json::Value;

use crate::engine::{self, EngineOptions, ScoreStats};
use crate::model::ScoringModel;
use crate::output::{CollectSink, DiscardSink, ErrorLog};
use crate::runtime::SessionOptions;
use crate::ScoreError;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Labelled JSONL files whose instances are repeated in order up to `n`.
    pub corpus: Vec<PathBuf>,
    pub n: usize,
    /// Labelled set for accuracy (`label` field).
    pub test: Option<PathBuf>,
    pub engine: EngineOptions,
    pub session: SessionOptions,
    /// Instances scored untimed first (the peer warms up on 2 batches' worth of rows).
    pub warmup: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Accuracy {
    pub instances: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Predicted label index per test instance, for agreement between graphs.
    #[serde(skip)]
    pub predictions: Vec<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub precision: Precision,
    pub instances: u64,
    pub wall_s: f64,
    pub inst_per_s: f64,
    /// Mean instance length in tokens, and padding overhead of the batches.
    pub tokens_mean: f64,
    pub padding_overhead: f64,
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    pub test: Option<Accuracy>,
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(f64::NAN));
    [it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN)]
}

/// Every good row of labelled JSONL files, as JSON objects.
pub fn read_rows(paths: &[PathBuf]) -> Result<Vec<Value>, ScoreError> {
    let mut rows = Vec::new();
    for path in paths {
        for item in readers::open(path, &ReaderOptions::default())? {
            if let Ok(record) = item? {
                rows.push(Value::Object(record.fields));
            }
        }
    }
    Ok(rows)
}

fn score_values(model: &mut ScoringModel, rows: Vec<Value>, options: &EngineOptions) -> Result<ScoreStats, ScoreError> {
    engine::run(model, engine::records_from_values(rows), None, options, Box::new(DiscardSink), Box::new(ErrorLog::create(None)?), &mut |_| {})
}

/// Accuracy of `model` on a labelled set (rows with a `label` among the model's).
pub fn accuracy(model: &mut ScoringModel, rows: Vec<Value>, options: &EngineOptions) -> Result<Accuracy, ScoreError> {
    let gold: Vec<usize> = rows
        .iter()
        .map(|r| r["label"].as_str().and_then(|l| model.labels.index(l)).ok_or_else(|| ScoreError::Model(format!("test row without a known label: {r}"))))
        .collect::<Result<_, _>>()?;
    let collected = Arc::new(Mutex::new(Vec::new()));
    let sink = CollectSink(Arc::clone(&collected));
    let stats = engine::run(model, engine::records_from_values(rows), None, options, Box::new(sink), Box::new(ErrorLog::create(None)?), &mut |_| {})?;
    let predictions: Vec<usize> = collected.lock().expect("the run is over").iter().map(|p| p.label_index()).collect();
    if predictions.len() != gold.len() {
        return Err(ScoreError::Model(format!(
            "{} of {} test instances scored ({} rejected)",
            predictions.len(),
            gold.len(),
            stats.instances_rejected + stats.rows_rejected
        )));
    }
    let report = ClassificationReport::new(&predictions, &gold, model.labels.names());
    Ok(Accuracy { instances: gold.len(), accuracy: report.accuracy, macro_f1: report.macro_f1, predictions })
}

/// Benchmarks one graph of `dir`.
pub fn run(dir: &Path, precision: Precision, options: &BenchOptions) -> Result<BenchResult, ScoreError> {
    let mut model = ScoringModel::open(dir, precision, &options.session)?;
    let base = read_rows(&options.corpus)?;
    if base.is_empty() {
        return Err(ScoreError::Model("the benchmark corpus has no rows".into()));
    }
    let corpus: Vec<Value> = (0..options.n).map(|i| base[i % base.len()].clone()).collect();
    let warmup: Vec<Value> = corpus.iter().take(options.warmup).cloned().collect();
    score_values(&mut model, warmup, &options.engine)?;

    let load_before = loadavg();
    let start = Instant::now();
    let stats = score_values(&mut model, corpus, &options.engine)?;
    let wall_s = start.elapsed().as_secs_f64();
    let load_after = loadavg();

    let test = match &options.test {
        Some(path) => Some(accuracy(&mut model, read_rows(std::slice::from_ref(path))?, &options.engine)?),
        None => None,
    };
    Ok(BenchResult {
        precision,
        instances: stats.instances_scored,
        wall_s,
        inst_per_s: stats.instances_scored as f64 / wall_s,
        tokens_mean: stats.tokens as f64 / stats.instances_scored.max(1) as f64,
        padding_overhead: stats.padded_tokens as f64 / stats.tokens.max(1) as f64 - 1.0,
        load_before,
        load_after,
        test,
    })
}
