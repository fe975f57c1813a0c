//! TD-BERT: an encoder (BERT, RoBERTa/XLM-R, XLM-R XL/XXL), a pooling of the aspect
//! tokens' hidden states, and the family's classification head.
//!
//! Weights live in a [`tch::nn::VarStore`] under Hugging Face names
//! (`roberta.encoder.layer.0.attention.self.query.weight`, `classifier.out_proj.bias`),
//! so checkpoints load and save by name (see [`crate::checkpoint`]).

mod config;
mod encoder;
mod head;
mod step_weights;

pub use config::{EncoderConfig, Family, SUPPORTED_MODEL_TYPES};
pub use encoder::{extended_attention_mask, Encoder, Unit};
pub use head::{ClassificationHead, Pooling};
pub use step_weights::StepWeights;

use absa_domain::InputForm;
use tch::{nn, Tensor};

/// What one forward pass returns.
#[derive(Debug)]
pub struct TdBertOutput {
    /// (batch, seq, hidden): the encoder's last hidden state.
    pub last_hidden_state: Tensor,
    /// (batch, hidden): the pooled aspect representation.
    pub pooled: Tensor,
    /// (batch, num_labels).
    pub logits: Tensor,
}

#[derive(Debug)]
pub struct TdBertModel {
    pub config: EncoderConfig,
    pub family: Family,
    pub encoder: Encoder,
    pub head: ClassificationHead,
    pub pooling: Pooling,
    /// Text alone, or text and target as a sentence pair (recorded with the
    /// checkpoint; the model's arithmetic is the same, its inputs are not).
    pub input: InputForm,
    pub num_labels: i64,
}

impl TdBertModel {
    /// Builds the variables under `root` (a fresh VarStore's root): the encoder under
    /// `bert`/`roberta`, the head under `classifier`.
    pub fn new(root: &nn::Path, config: EncoderConfig, num_labels: i64, pooling: Pooling) -> Result<Self, crate::ModelError> {
        Self::new_by_unit(config, num_labels, pooling, &mut |_| root.clone(), &mut |_| {})
    }

    /// Builds the model one [`Unit`] at a time, each under `root_of(unit)` (a store's
    /// root; HF names below it), calling `built(unit)` once its variables exist. The
    /// units are made in the order [`TdBertModel::new`] makes them, so a seeded
    /// generator draws the same initial values either way.
    pub fn new_by_unit<'a>(
        config: EncoderConfig,
        num_labels: i64,
        pooling: Pooling,
        root_of: &mut dyn FnMut(Unit) -> nn::Path<'a>,
        built: &mut dyn FnMut(Unit),
    ) -> Result<Self, crate::ModelError> {
        let family = config.family()?;
        let prefix = family.prefix();
        // The head's unit also holds XL's final LayerNorm, made by the encoder: report
        // the head built only once both exist.
        let encoder = Encoder::new_by_unit(&config, family, &mut |unit| root_of(unit) / prefix, &mut |unit| {
            if unit != Unit::Head {
                built(unit)
            }
        });
        let head = ClassificationHead::new(root_of(Unit::Head) / "classifier", &config, family, num_labels);
        built(Unit::Head);
        Ok(Self { config, family, encoder, head, pooling, input: InputForm::Text, num_labels })
    }

    /// Every Linear layer of the encoder and the head.
    pub fn linears(&self) -> Vec<&nn::Linear> {
        let mut all = self.encoder.linears();
        all.extend(self.head.linears());
        all
    }

    /// The units in forward order: embeddings, each layer, head.
    pub fn units(&self) -> Vec<Unit> {
        let layers = (0..self.encoder.num_layers()).map(Unit::Layer);
        std::iter::once(Unit::Embeddings).chain(layers).chain(std::iter::once(Unit::Head)).collect()
    }

    /// `input_ids`, `attention_mask`, `aspect_mask`: (batch, seq) int64.
    pub fn forward_t(&self, input_ids: &Tensor, attention_mask: &Tensor, aspect_mask: &Tensor, train: bool) -> TdBertOutput {
        let last_hidden_state = self.encoder.forward_t(input_ids, attention_mask, train);
        let pooled = head::pool(self.pooling, &last_hidden_state, aspect_mask);
        let logits = self.head.forward_t(&pooled, train);
        TdBertOutput { last_hidden_state, pooled, logits }
    }

    /// The logits of [`TdBertModel::forward_t`], computing the last layer at the aspect
    /// tokens only: the pooling reads nothing else, so the rest of that layer (most of
    /// a layer's work for short aspects) is skipped. Same arithmetic at those rows.
    pub fn logits_t(&self, input_ids: &Tensor, attention_mask: &Tensor, aspect_mask: &Tensor, train: bool) -> Tensor {
        self.logits_of(&UnitInputs::new(input_ids, attention_mask, aspect_mask), train)
    }

    /// [`TdBertModel::logits_t`] over prepared inputs (segment ids included).
    pub fn logits_of(&self, inputs: &UnitInputs, train: bool) -> Tensor {
        let mut xs = inputs.input_ids.shallow_clone();
        for unit in self.units() {
            xs = self.unit_forward(unit, &xs, inputs, train);
        }
        xs
    }

    /// One unit of [`TdBertModel::logits_t`]: the embeddings take the input ids, a
    /// layer the previous unit's hidden states, the head the last layer's (at the
    /// aspect positions) and returns the logits.
    pub fn unit_forward(&self, unit: Unit, xs: &Tensor, inputs: &UnitInputs, train: bool) -> Tensor {
        match unit {
            Unit::Embeddings => self.encoder.embed(xs, inputs.token_type_ids.as_ref(), train),
            Unit::Layer(i) => {
                let mask_bias = inputs.mask_bias(xs.kind());
                self.encoder.layer(i, xs, &mask_bias, Some(&inputs.positions), train)
            }
            Unit::Head => {
                let hidden = self.encoder.finish(xs);
                let pooled = head::pool(self.pooling, &hidden, &inputs.valid);
                self.head.forward_t(&pooled, train)
            }
        }
    }
}

/// What every unit of a batch's forward pass reads besides the previous unit's output.
pub struct UnitInputs {
    /// (batch, seq) int64.
    pub input_ids: Tensor,
    /// (batch, seq) 0/1.
    pub attention_mask: Tensor,
    /// (batch, seq) segment ids; none means all 0 (one segment).
    pub token_type_ids: Option<Tensor>,
    /// The aspect tokens' positions and which are real: see [`aspect_positions`].
    pub positions: Tensor,
    pub valid: Tensor,
}

impl UnitInputs {
    pub fn new(input_ids: &Tensor, attention_mask: &Tensor, aspect_mask: &Tensor) -> Self {
        let (positions, valid) = aspect_positions(aspect_mask);
        Self { input_ids: input_ids.shallow_clone(), attention_mask: attention_mask.shallow_clone(), token_type_ids: None, positions, valid }
    }

    /// With the segment ids of a sentence pair.
    pub fn with_token_types(mut self, token_type_ids: Option<&Tensor>) -> Self {
        self.token_type_ids = token_type_ids.map(Tensor::shallow_clone);
        self
    }

    /// The additive attention mask for hidden states of `kind`.
    fn mask_bias(&self, kind: tch::Kind) -> Tensor {
        extended_attention_mask(&self.attention_mask, kind)
    }
}

/// `aspect_mask` (batch, seq) 0/1 -> the aspect tokens' positions (batch, k), k the
/// most aspect tokens in a row (at least 1), and which of them are real (batch, k) 0/1:
/// a row with fewer aspect tokens repeats a position that its mask then ignores.
pub fn aspect_positions(aspect_mask: &Tensor) -> (Tensor, Tensor) {
    let k = aspect_mask.sum_dim_intlist(1, false, tch::Kind::Int64).max().int64_value(&[]).max(1);
    // A stable descending sort puts each row's aspect positions first, in order.
    let positions = aspect_mask.argsort_stable(true, 1, true).narrow(1, 0, k);
    let valid = aspect_mask.gather(1, &positions, false);
    (positions, valid)
}
