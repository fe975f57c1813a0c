//! The trainer: TD-BERT on libtorch, the training loop, ONNX export, and the worker.
//!
//! # Layout
//! - [`model`]: the encoder families, pooling and heads, under Hugging Face names.
//! - [`checkpoint`]: Hugging Face checkpoint directories, loaded and written.
//! - [`export`]: the model as ONNX graphs (fp32 and int8) in a directory the scorer runs.
//! - [`training`]: the fine-tuning engine (local mode and worker alike).
//! - [`plan`]: the memory estimate per rank, and the sharding a run needs.
//! - [`distributed`]: ranks on c10d (Gloo, NCCL), sharded training, the launcher.
//! - [`autocast`]: bf16 autocast (fp32 master weights) through a small C++ shim.
//! - [`rng`]: dropout from per-thread generators, for threads training one batch.
//! - [`gpus`]: the GPUs a trainer offers (count, memory) and their names.
//! - [`worker`]: `absa-trainer work`, the engine behind the job queue.
//! - [`settings`]: the trainer's typed configuration.
//! - [`torch_check`]: a libtorch self-test for `absa-trainer check`.

pub mod allocator;
pub mod autocast;
pub mod checkpoint;
pub mod distributed;
mod error;
pub mod export;
pub mod gpus;
pub mod model;
pub mod plan;
pub mod progress;
pub mod rng;
pub mod settings;
mod simd;
pub mod torch_check;
pub mod training;
pub mod worker;

pub use error::{ModelError, TrainError};
