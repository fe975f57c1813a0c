//! The ABSA domain, shared by the trainer and the scorer.
//!
//! # Layout
//! - [`span`]: [`AspectSpan`], an aspect's character span checked against its text
//!   (offsets in Unicode code points, as Python counts them).
//! - [`labels`]: [`LabelSet`], the ordered class names a model predicts.
//! - [`records`]: labelled rows as read, and the JSONL reader that reports bad rows
//!   by line while keeping the good ones.
//! - [`dataset`]: [`LabelledData`], a run's typed rows by [`Split`] with the rows
//!   refused on the way in, and the rows' hash.
//! - [`metrics`]: accuracy, macro-F1, per-class figures, confusion matrix.
//! - [`split`]: the stratified, seeded validation split.
//! - [`readers`]: streaming JSONL, CSV and Parquet readers yielding raw records by
//!   line, with bad rows as row errors and reading going on.
//! - [`reference`]: where the shared reference data and models are.
//! - [`encoding`]: tokenization with `tokenizer.json` and the aspect mask; windows long
//!   texts around the aspect instead of failing; the text-target sentence pair for
//!   targets the text need not name.

pub mod dataset;
pub mod encoding;
pub mod labels;
pub mod metrics;
pub mod readers;
pub mod records;
pub mod reference;
pub mod span;
pub mod split;

pub use dataset::{LabelledData, Split};
pub use encoding::{AspectEncoder, EncodeError, EncodedInstance, InputForm};
pub use labels::LabelSet;
pub use records::{LabelledRow, RowError};
pub use span::{AspectSpan, SpanError};
