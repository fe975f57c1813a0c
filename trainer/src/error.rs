use thiserror::Error;

/// What can go wrong building, loading or saving a model.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("bad config.json: {0}")]
    Config(String),
    #[error("unsupported architecture: model_type {model_type:?} (architectures: [{architectures}]); supported model types: {supported}", supported = crate::model::SUPPORTED_MODEL_TYPES)]
    UnsupportedArchitecture { model_type: String, architectures: String },
    #[error("no weights in {0}: expected model.safetensors or model.safetensors.index.json")]
    NoWeights(String),
    #[error("checkpoint {dir} lacks encoder weights: {names}")]
    MissingWeights { dir: String, names: String },
    #[error("tensor {name}: checkpoint shape {found:?}, model expects {expected:?}")]
    ShapeMismatch { name: String, found: Vec<i64>, expected: Vec<i64> },
    #[error("checkpoint labels: {0}")]
    Labels(String),
    #[error("safetensors: {0}")]
    Safetensors(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// What can go wrong in a fine-tuning run (either engine, the launcher, the plan).
#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{path}: {reason}")]
    Data { path: String, reason: String },
    #[error("{0}")]
    Config(String),
    #[error("cannot resume from {dir}: {reason}")]
    Resume { dir: String, reason: String },
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The observer asked to stop (shutdown, cancellation); `checkpoint-last` holds
    /// the last finished epoch.
    #[error("stopped on request during epoch {epoch}")]
    Stopped { epoch: usize },
    /// A collective between the ranks failed: another rank died or hung.
    #[error("{0}")]
    Collective(String),
}
