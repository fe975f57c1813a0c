//! ONNX Runtime, loaded at run time from the library `ORT_DYLIB_PATH` names.
//!
//! `ort` panics at its first use when it cannot find the library, so every entry point
//! goes through [`environment`], which checks the path first and reports what is wrong.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use thiserror::Error;

pub const DYLIB_VARIABLE: &str = "ORT_DYLIB_PATH";

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime not found: {DYLIB_VARIABLE} is not set (scripts/native.sh installs the library and prints the line to export)")]
    PathUnset,
    #[error("ONNX Runtime not found: {DYLIB_VARIABLE} points to {0}, which does not exist (run scripts/native.sh)")]
    PathMissing(PathBuf),
    #[error("ONNX Runtime at {path} could not be loaded: {reason}")]
    LoadFailed { path: PathBuf, reason: String },
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),
}

impl From<ort::Error<ort::session::builder::SessionBuilder>> for RuntimeError {
    fn from(e: ort::Error<ort::session::builder::SessionBuilder>) -> Self {
        Self::Ort(e.into())
    }
}

static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);

/// The process's ONNX Runtime environment, created on first use.
pub fn environment() -> Result<Environment, RuntimeError> {
    let mut slot = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = slot.as_ref() {
        return Ok(env.clone());
    }
    let path = PathBuf::from(std::env::var_os(DYLIB_VARIABLE).ok_or(RuntimeError::PathUnset)?);
    if !path.is_file() {
        return Err(RuntimeError::PathMissing(path));
    }
    let builder = ort::init_from(&path).map_err(|e| RuntimeError::LoadFailed { path: path.clone(), reason: e.to_string() })?;
    let env = builder.with_name("absa-scorer").build()?;
    *slot = Some(env.clone());
    Ok(env)
}

/// How a session runs.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Threads inside one operator (the matrix products); operators run one after
    /// another, as the peer's ONNX Runtime setup does.
    pub intra_threads: usize,
    /// Where to write the graph as ONNX Runtime optimised it (to see its fusions).
    pub optimized_model_path: Option<PathBuf>,
    /// Where to write ONNX Runtime's per-operator profile (JSON trace).
    pub profile_path: Option<PathBuf>,
}

impl SessionOptions {
    pub fn with_threads(intra_threads: usize) -> Self {
        Self { intra_threads, optimized_model_path: None, profile_path: None }
    }

    fn builder(&self) -> Result<ort::session::builder::SessionBuilder, RuntimeError> {
        let env = environment()?;
        let mut builder = Session::builder(&env)?
            .with_optimization_level(GraphOptimizationLevel::All)?
            .with_intra_threads(self.intra_threads.max(1))?
            .with_inter_threads(1)?;
        if let Some(path) = &self.optimized_model_path {
            builder = builder.with_optimized_model_path(path)?;
        }
        if let Some(path) = &self.profile_path {
            builder = builder.with_profiling(path)?;
        }
        Ok(builder)
    }
}

/// Opens a session on a serialised ONNX model with full graph optimisation,
/// `intra_threads` threads inside operators and sequential execution between them.
pub fn session_from_bytes(model: &[u8], intra_threads: usize) -> Result<Session, RuntimeError> {
    Ok(SessionOptions::with_threads(intra_threads).builder()?.commit_from_memory(model)?)
}

/// Opens a session on a model file; external weight files next to it are found by
/// ONNX Runtime relative to the model's folder.
pub fn session_from_file(path: &Path, options: &SessionOptions) -> Result<Session, RuntimeError> {
    Ok(options.builder()?.commit_from_file(path)?)
}

/// The version string of the loaded library, for `check` output.
pub fn version() -> Result<String, RuntimeError> {
    environment()?;
    Ok(ort::info().to_string())
}
