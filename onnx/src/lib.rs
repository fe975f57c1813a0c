//! ONNX graphs written from Rust, without Python and without protoc.
//!
//! # Layout
//! - [`proto`]: the subset of `onnx.proto3` messages a model file needs, as prost
//!   structs with the official field numbers.
//! - [`GraphBuilder`]: names values, adds initializers and nodes, and produces a
//!   serialised `ModelProto` with dynamic axes.
//!
//! ONNX Runtime itself is the check that a written graph is valid: the scorer's tests
//! load every graph this crate writes.

mod builder;
pub mod proto;

pub use builder::{Attr, Dim, GraphBuilder, ElemType};
