//! The scoring engine: runs exported TD-BERT models through ONNX Runtime over corpora.
//! It takes rows and hands predictions and rejected rows to sinks; the job queue and
//! Postgres are the worker's (`absa-scorer-worker`), so this crate needs neither sqlx
//! nor lapin.
//!
//! # Layout
//! - [`runtime`]: loads the ONNX Runtime library named by `ORT_DYLIB_PATH` once per
//!   process, with a clear error when it is missing, and opens sessions.
//! - [`model`]: an exported model directory opened for scoring (manifest, tokenizer,
//!   labels, session).
//! - [`targets`]: every occurrence of an aspect string, and lexicon matching
//!   (case-insensitive, word boundaries, multi-word terms).
//! - [`rows`]: a corpus record turned into a text and its targets, or a row error.
//! - [`batch`]: encoded instances, length-sorted batches, padding.
//! - [`engine`]: the streaming pipeline (tokenize in parallel, infer, write) that local
//!   mode and the worker share.
//! - [`output`]: predictions as JSON Lines or Parquet, rejected rows as JSON Lines.
//! - [`bench`]: the throughput benchmark over a repeated labelled corpus.

pub mod batch;
pub mod bench;
pub mod engine;
mod error;
pub mod model;
pub mod output;
pub mod rows;
pub mod runtime;
pub mod targets;

pub use error::ScoreError;
pub use runtime::RuntimeError;
