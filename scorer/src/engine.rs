//! The scoring engine: a stream of rows in, a stream of predictions out, in input
//! order, with memory bounded by a few chunks and one sorting window however long the
//! stream is. Local mode and the scorer worker both run exactly this.
//!
//! Three stages overlap on their own threads, joined by bounded channels:
//! 1. producer: reads records, finds each row's targets and tokenizes a chunk of rows
//!    in parallel (a rayon pool) — bad rows and bad targets become row errors here;
//! 2. inference (the calling thread): collects instances into a window, sorts the
//!    window by length, runs batches padded to their longest row through ONNX Runtime,
//!    and puts the predictions back in input order;
//! 3. writer: writes predictions and rejected rows.
//!
//! While the model runs a window, the producer tokenizes the next rows, so
//! tokenization costs no wall time as long as it is faster than inference.

use std::sync::Arc;

use absa_domain::readers::{RawRecord, ReadError, RowResult};
use absa_domain::{EncodeError, InputForm, RowError};
use crossbeam_channel::{bounded, Receiver, Sender};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::batch::{length_sorted_batches, Instance, PaddedBatch};
use crate::model::ScoringModel;
use crate::output::{ErrorSink, Prediction, PredictionSink};
use crate::rows::{Document, FieldNames, ScoreRow};
use crate::targets::{Lexicon, NamedTargets};
use crate::ScoreError;

/// How the engine batches and overlaps its work.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Instances per model call (the peer's recipe uses 64).
    pub batch_size: usize,
    /// Instances sorted together by length before batching: larger windows waste
    /// less on padding and hold more in memory (a window is a few KiB per instance).
    pub sort_window: usize,
    /// Rows tokenized per parallel step.
    pub chunk_rows: usize,
    /// Threads that tokenize.
    pub tokenize_threads: usize,
    /// The job's stance targets: one prediction per document and target for rows that
    /// give no target of their own.
    pub named_targets: Option<Arc<NamedTargets>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            batch_size: 64,
            sort_window: 8192,
            chunk_rows: 512,
            tokenize_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            named_targets: None,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScoreStats {
    /// Rows read, rejected ones included.
    pub rows_read: u64,
    /// Rows that could not be read or had no usable targets field.
    pub rows_rejected: u64,
    /// Rows the lexicon found no target in (not errors).
    pub rows_without_targets: u64,
    pub instances_scored: u64,
    /// Targets of otherwise good rows that could not be encoded (an aspect covering no
    /// token, for instance).
    pub instances_rejected: u64,
    /// Instances whose text exceeded the max length and was windowed around the aspect.
    pub instances_windowed: u64,
    pub batches: u64,
    /// Tokens the model processed, padding included.
    pub padded_tokens: u64,
    /// Tokens of the instances themselves.
    pub tokens: u64,
}

/// What the producer hands to inference for a chunk of rows.
#[derive(Default)]
struct Chunk {
    instances: Vec<Instance>,
    errors: Vec<RowError>,
    rows: u64,
    rows_rejected: u64,
    rows_without_targets: u64,
    instances_rejected: u64,
}

enum ToWriter {
    Predictions(Vec<Prediction>),
    Errors(Vec<RowError>),
}

/// Scores `records` and writes predictions to `sink` and the rows it cannot score to
/// `errors`; `progress` sees the running totals after every batch.
pub fn run<I>(
    model: &mut ScoringModel,
    records: I,
    lexicon: Option<Arc<Lexicon>>,
    options: &EngineOptions,
    sink: Box<dyn PredictionSink>,
    errors: Box<dyn ErrorSink>,
    progress: &mut dyn FnMut(&ScoreStats),
) -> Result<ScoreStats, ScoreError>
where
    I: Iterator<Item = Result<DocumentResult, ReadError>> + Send,
{
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.tokenize_threads.max(1))
        .thread_name(|i| format!("tokenize-{i}"))
        .build()
        .map_err(|e| ScoreError::Model(format!("tokenizer threads: {e}")))?;
    let encoder = model.encoder.clone();
    let form = model.input;
    let (chunk_tx, chunk_rx) = bounded::<Result<Chunk, ReadError>>(4);
    let (out_tx, out_rx) = bounded::<ToWriter>(4);

    std::thread::scope(|scope| {
        let producer = scope.spawn(|| produce(records, (&encoder, form), lexicon.as_deref(), options, &pool, chunk_tx));
        let writer = scope.spawn(|| write(out_rx, sink, errors));
        let inferred = infer(model, options, chunk_rx, &out_tx, progress);
        // Closing our end stops the writer; a failed inference drops the chunk
        // receiver, which stops the producer at its next send.
        drop(out_tx);
        let written = writer.join().expect("the writer thread does not panic");
        producer.join().expect("the producer thread does not panic");
        // A writer failure is the cause when both failed (inference then only saw
        // the writer gone).
        written?;
        inferred
    })
}

/// A model's tokenizer rules and how it reads an instance.
type Encoding<'a> = (&'a absa_domain::AspectEncoder, InputForm);

fn produce<I>(
    records: I,
    encoder: Encoding<'_>,
    lexicon: Option<&Lexicon>,
    options: &EngineOptions,
    pool: &rayon::ThreadPool,
    tx: Sender<Result<Chunk, ReadError>>,
) where
    I: Iterator<Item = Result<DocumentResult, ReadError>>,
{
    let mut seq = 0u64;
    let mut records = records.fuse();
    loop {
        let mut pending: Vec<DocumentResult> = Vec::with_capacity(options.chunk_rows);
        let (mut failure, mut exhausted) = (None, false);
        while pending.len() < options.chunk_rows {
            match records.next() {
                Some(Ok(row)) => pending.push(row),
                Some(Err(e)) => {
                    failure = Some(e);
                    break;
                }
                None => {
                    exhausted = true;
                    break;
                }
            }
        }
        if !pending.is_empty() {
            let chunk = pool.install(|| tokenize(pending, encoder, lexicon, options, &mut seq));
            if tx.send(Ok(chunk)).is_err() {
                return; // inference stopped
            }
        }
        if let Some(e) = failure {
            let _ = tx.send(Err(e));
            return;
        }
        if exhausted {
            return;
        }
    }
}

/// Parses and encodes a chunk of rows in parallel; instance numbers follow row order.
fn tokenize(rows: Vec<DocumentResult>, (encoder, form): Encoding<'_>, lexicon: Option<&Lexicon>, options: &EngineOptions, seq: &mut u64) -> Chunk {
    type Encoded = Result<(ScoreRow, Vec<Result<absa_domain::EncodedInstance, EncodeError>>), RowError>;
    let named = options.named_targets.as_deref();
    let encoded: Vec<Encoded> = rows
        .into_par_iter()
        .map(|row| {
            let row = ScoreRow::new(row?, lexicon, named)?;
            let encodings = row.targets.iter().map(|t| encoder.encode_as(form, &row.text, &t.aspect, t.span)).collect();
            Ok((row, encodings))
        })
        .collect();
    let mut chunk = Chunk { rows: encoded.len() as u64, ..Default::default() };
    for item in encoded {
        let (row, encodings) = match item {
            Ok(x) => x,
            Err(e) => {
                chunk.rows_rejected += 1;
                chunk.errors.push(e);
                continue;
            }
        };
        if row.targets.is_empty() {
            chunk.rows_without_targets += 1;
        }
        let id = Arc::new(row.id);
        for (target, encoding) in row.targets.iter().zip(encodings) {
            match encoding {
                Ok(enc) => {
                    let paired = enc.token_type_ids.iter().any(|&t| t != 0);
                    chunk.instances.push(Instance {
                        seq: *seq,
                        line: row.line,
                        id: Arc::clone(&id),
                        aspect: target.aspect.clone(),
                        start: target.span.map(|s| s.start()),
                        end: target.span.map(|s| s.end()),
                        input_ids: enc.input_ids,
                        aspect_mask: enc.aspect_mask,
                        token_type_ids: if paired { enc.token_type_ids } else { Vec::new() },
                        windowed: enc.windowed,
                    });
                    *seq += 1;
                }
                Err(e) => {
                    chunk.instances_rejected += 1;
                    let at = target.span.map(|s| format!(" at {}..{}", s.start(), s.end())).unwrap_or_default();
                    chunk.errors.push(RowError { line: row.line, reason: format!("target {:?}{at}: {e}", target.aspect) });
                }
            }
        }
    }
    chunk
}

fn infer(
    model: &mut ScoringModel,
    options: &EngineOptions,
    rx: Receiver<Result<Chunk, ReadError>>,
    out: &Sender<ToWriter>,
    progress: &mut dyn FnMut(&ScoreStats),
) -> Result<ScoreStats, ScoreError> {
    let mut stats = ScoreStats::default();
    let mut window: Vec<Instance> = Vec::with_capacity(options.sort_window);
    let writer_gone = || ScoreError::Output("the output writer stopped".into());
    for chunk in rx.iter() {
        let chunk = chunk?;
        stats.rows_read += chunk.rows;
        stats.rows_rejected += chunk.rows_rejected;
        stats.rows_without_targets += chunk.rows_without_targets;
        stats.instances_rejected += chunk.instances_rejected;
        if !chunk.errors.is_empty() {
            out.send(ToWriter::Errors(chunk.errors)).map_err(|_| writer_gone())?;
        }
        window.extend(chunk.instances);
        if window.len() >= options.sort_window {
            let predictions = score_window(model, &mut window, options.batch_size, &mut stats, progress)?;
            out.send(ToWriter::Predictions(predictions)).map_err(|_| writer_gone())?;
        }
        progress(&stats);
    }
    if !window.is_empty() {
        let predictions = score_window(model, &mut window, options.batch_size, &mut stats, progress)?;
        out.send(ToWriter::Predictions(predictions)).map_err(|_| writer_gone())?;
    }
    progress(&stats);
    Ok(stats)
}

/// Runs a window in length-sorted batches; returns its predictions in input order
/// and empties the window.
fn score_window(
    model: &mut ScoringModel,
    window: &mut Vec<Instance>,
    batch_size: usize,
    stats: &mut ScoreStats,
    progress: &mut dyn FnMut(&ScoreStats),
) -> Result<Vec<Prediction>, ScoreError> {
    let mut probabilities: Vec<Vec<f32>> = vec![Vec::new(); window.len()];
    for batch in length_sorted_batches(window, batch_size) {
        let padded = PaddedBatch::new(batch.iter().map(|&i| &window[i]), model.pad_id());
        let probs = model.predict(&padded)?;
        for (row, &i) in probs.outer_iter().zip(&batch) {
            probabilities[i] = row.to_vec();
        }
        stats.batches += 1;
        stats.padded_tokens += padded.tokens() as u64;
        stats.tokens += batch.iter().map(|&i| window[i].input_ids.len() as u64).sum::<u64>();
        stats.instances_scored += batch.len() as u64;
        stats.instances_windowed += batch.iter().filter(|&&i| window[i].windowed).count() as u64;
        progress(stats);
    }
    Ok(window
        .drain(..)
        .zip(probabilities)
        .map(|(inst, probabilities)| Prediction { line: inst.line, id: inst.id, aspect: inst.aspect, start: inst.start, end: inst.end, probabilities })
        .collect())
}

fn write(rx: Receiver<ToWriter>, mut sink: Box<dyn PredictionSink>, mut errors: Box<dyn ErrorSink>) -> Result<(), ScoreError> {
    for msg in rx.iter() {
        match msg {
            ToWriter::Predictions(predictions) => {
                for p in &predictions {
                    sink.write(p)?;
                }
            }
            ToWriter::Errors(list) => {
                for e in &list {
                    errors.write(e)?;
                }
            }
        }
    }
    sink.finish()?;
    errors.finish()
}

/// A row as the engine takes it: a document, or why its record could not be one.
pub type DocumentResult = Result<Document, RowError>;

/// A reader's records as documents, their fields named by `names` (local mode: files).
pub fn documents<I>(records: I, names: FieldNames) -> impl Iterator<Item = Result<DocumentResult, ReadError>> + Send
where
    I: Iterator<Item = Result<RowResult, ReadError>> + Send,
{
    records.map(move |read| read.map(|row| row.and_then(|record| Document::from_record(record, &names))))
}

/// Documents from in-memory rows (benchmarks, tests): each value is a JSON object with
/// the default field names.
pub fn records_from_values(values: Vec<Value>) -> impl Iterator<Item = Result<DocumentResult, ReadError>> + Send {
    let records = values.into_iter().enumerate().map(|(i, v)| {
        Ok(match v {
            Value::Object(fields) => Ok(RawRecord { line: i + 1, fields }),
            other => Err(RowError { line: i + 1, reason: format!("not a JSON object: {other}") }),
        })
    });
    documents(records, FieldNames::default())
}
