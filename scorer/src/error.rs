use thiserror::Error;

/// What can stop a scoring run (bad rows never do: they are reported and skipped).
#[derive(Debug, Error)]
pub enum ScoreError {
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Manifest(#[from] absa_onnx::ManifestError),
    #[error(transparent)]
    Tokenizer(#[from] absa_domain::EncodeError),
    #[error(transparent)]
    Read(#[from] absa_domain::readers::ReadError),
    #[error(transparent)]
    Lexicon(#[from] crate::targets::LexiconError),
    #[error("model: {0}")]
    Model(String),
    #[error("output: {0}")]
    Output(String),
}

impl From<ort::Error> for ScoreError {
    fn from(e: ort::Error) -> Self {
        Self::Runtime(e.into())
    }
}
