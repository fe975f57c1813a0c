//! The training engine: TD-BERT on libtorch, the training loop, ONNX export. It takes
//! typed rows ([`absa_domain::LabelledData`]), writes checkpoints and reports through
//! callbacks; the job queue and Postgres are the worker's (`absa-trainer-worker`), so
//! this crate needs neither sqlx nor lapin.
//!
//! # Layout
//! - [`model`]: the encoder families, pooling and heads, under Hugging Face names.
//! - [`checkpoint`]: Hugging Face checkpoint directories, loaded and written.
//! - [`export`]: the model as ONNX graphs (fp32 and int8) in a directory the scorer runs.
//! - [`training`]: the fine-tuning engine (local mode and worker alike).
//! - [`data_files`]: local mode's data files, read into typed rows.
//! - [`plan`]: the memory estimate per rank, and the sharding a run needs.
//! - [`distributed`]: ranks on c10d (Gloo, NCCL), sharded training, the launcher.
//! - [`autocast`]: bf16 autocast (fp32 master weights) through a small C++ shim.
//! - [`rng`]: dropout from per-thread generators, for threads training one batch.
//! - [`gpus`]: the GPUs' memory and names, as `nvidia-smi` reports them.
//! - [`torch_check`]: a libtorch self-test for `absa-trainer check`.
//! - [`progress`]: the run's observers: terminal progress, rejected rows file, events
//!   on stdout for the worker.

pub mod allocator;
pub mod autocast;
pub mod checkpoint;
pub mod data_files;
pub mod distributed;
mod error;
pub mod export;
pub mod gpus;
pub mod model;
pub mod plan;
pub mod progress;
pub mod rng;
mod simd;
pub mod torch_check;
pub mod training;

pub use error::{ModelError, TrainError};
