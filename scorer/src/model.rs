//! An exported model directory opened for scoring: the manifest, the tokenizer with
//! the aspect-mask rules, the label names, and an ONNX Runtime session on one graph.

use std::path::{Path, PathBuf};

use absa_domain::{AspectEncoder, InputForm, LabelSet};
use absa_onnx::manifest::{ModelManifest, INPUT_NAMES, PROBABILITIES, TOKEN_TYPE_IDS};
use absa_onnx::Precision;
use ndarray::{Array2, Ix2};
use ort::session::Session;
use ort::value::TensorRef;

use crate::batch::PaddedBatch;
use crate::runtime::{self, SessionOptions};
use crate::ScoreError;

pub struct ScoringModel {
    pub dir: PathBuf,
    pub manifest: ModelManifest,
    pub labels: LabelSet,
    pub encoder: AspectEncoder,
    /// Text alone, or text and target as a sentence pair.
    pub input: InputForm,
    pub precision: Precision,
    session: Session,
}

impl ScoringModel {
    /// Opens `dir`'s graph of the given precision.
    pub fn open(dir: &Path, precision: Precision, options: &SessionOptions) -> Result<Self, ScoreError> {
        let manifest = ModelManifest::read(dir)?;
        let labels = LabelSet::new(manifest.labels.clone()).map_err(|e| ScoreError::Model(format!("{}: {e}", dir.display())))?;
        let input: InputForm = manifest.input.parse().map_err(|e| ScoreError::Model(format!("{}: {e}", dir.display())))?;
        let encoder = AspectEncoder::from_file(&dir.join(&manifest.tokenizer), manifest.max_length)?.pooling_cls(manifest.pooling == "cls");
        let graph = manifest.graph(dir, precision)?;
        let session = runtime::session_from_file(&dir.join(&graph.file), options)?;
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        let expected = manifest.input_names();
        if inputs != expected {
            return Err(ScoreError::Model(format!("{}: graph inputs {inputs:?}, expected {expected:?}", graph.file)));
        }
        Ok(Self { dir: dir.to_path_buf(), manifest, labels, encoder, input, precision, session })
    }

    /// The id batches are padded with.
    pub fn pad_id(&self) -> i64 {
        self.manifest.pad_token_id
    }

    /// Class probabilities, (batch, labels).
    pub fn predict(&mut self, batch: &PaddedBatch) -> Result<Array2<f32>, ScoreError> {
        let outputs = match self.input {
            InputForm::Text => self.session.run(ort::inputs![
                INPUT_NAMES[0] => TensorRef::from_array_view(&batch.input_ids)?,
                INPUT_NAMES[1] => TensorRef::from_array_view(&batch.attention_mask)?,
                INPUT_NAMES[2] => TensorRef::from_array_view(&batch.aspect_mask)?,
            ])?,
            InputForm::TextTargetPair => self.session.run(ort::inputs![
                INPUT_NAMES[0] => TensorRef::from_array_view(&batch.input_ids)?,
                INPUT_NAMES[1] => TensorRef::from_array_view(&batch.attention_mask)?,
                INPUT_NAMES[2] => TensorRef::from_array_view(&batch.aspect_mask)?,
                TOKEN_TYPE_IDS => TensorRef::from_array_view(&batch.token_type_ids)?,
            ])?,
        };
        let probs = outputs[PROBABILITIES].try_extract_array::<f32>()?;
        let probs = probs.into_dimensionality::<Ix2>().map_err(|e| ScoreError::Model(format!("probabilities: {e}")))?;
        if probs.ncols() != self.labels.len() || probs.nrows() != batch.input_ids.nrows() {
            return Err(ScoreError::Model(format!(
                "probabilities of shape {:?} for {} rows and {} labels",
                probs.shape(),
                batch.input_ids.nrows(),
                self.labels.len()
            )));
        }
        Ok(probs.to_owned())
    }
}
