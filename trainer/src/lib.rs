//! The trainer: TD-BERT on libtorch, the training loop, ONNX export, and the worker.
//!
//! # Layout
//! - [`settings`]: the trainer's typed configuration.
//! - [`torch_check`]: a libtorch self-test for `absa-trainer check`.

pub mod settings;
pub mod torch_check;
