//! ONNX graphs written from Rust, without Python and without protoc.
//!
//! # Layout
//! - [`proto`]: the subset of `onnx.proto3` messages a model file needs, as prost
//!   structs with the official field numbers.
//! - [`GraphBuilder`]: names values, adds initializers (inline or as external data)
//!   and nodes, and produces a serialised `ModelProto` with dynamic axes.
//! - [`manifest`]: `absa_model.json`, which ties a model directory's graphs,
//!   tokenizer and label names together for the scorer.
//!
//! ONNX Runtime itself is the check that a written graph is valid: the trainer's
//! export tests and the scorer's tests load every graph this crate writes.

mod builder;
pub mod manifest;
pub mod proto;

pub use builder::{Attr, Dim, ElemType, GraphBuilder, MICROSOFT_DOMAIN, OPSET};
pub use manifest::{GraphFile, ManifestError, ModelManifest, Precision};
