//! ONNX Runtime, loaded at run time from the library `ORT_DYLIB_PATH` names.
//!
//! `ort` panics at its first use when it cannot find the library, so every entry point
//! goes through [`environment`], which checks the path first and reports what is wrong.

use std::path::PathBuf;
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

/// Opens a session on a serialised ONNX model with full graph optimisation,
/// `intra_threads` threads inside operators and sequential execution between them.
pub fn session_from_bytes(model: &[u8], intra_threads: usize) -> Result<Session, RuntimeError> {
    let env = environment()?;
    let session = Session::builder(&env)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(intra_threads)?
        .with_inter_threads(1)?
        .commit_from_memory(model)?;
    Ok(session)
}

/// The version string of the loaded library, for `check` output.
pub fn version() -> Result<String, RuntimeError> {
    environment()?;
    Ok(ort::info().to_string())
}
