//! The scorer: runs exported TD-BERT models through ONNX Runtime over corpora.
//!
//! # Layout
//! - [`runtime`]: loads the ONNX Runtime library named by `ORT_DYLIB_PATH` once per
//!   process, with a clear error when it is missing, and opens sessions.
//! - [`settings`]: the scorer's typed configuration.

pub mod runtime;
pub mod settings;

pub use runtime::RuntimeError;
