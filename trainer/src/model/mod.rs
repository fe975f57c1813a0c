//! TD-BERT: an encoder (BERT, RoBERTa/XLM-R, XLM-R XL/XXL), a pooling of the aspect
//! tokens' hidden states, and the family's classification head.
//!
//! Weights live in a [`tch::nn::VarStore`] under Hugging Face names
//! (`roberta.encoder.layer.0.attention.self.query.weight`, `classifier.out_proj.bias`),
//! so checkpoints load and save by name (see [`crate::checkpoint`]).

mod config;
mod encoder;
mod head;

pub use config::{EncoderConfig, Family, SUPPORTED_MODEL_TYPES};
pub use encoder::{Encoder, Placement};
pub use head::{ClassificationHead, Pooling};

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
    pub num_labels: i64,
}

impl TdBertModel {
    /// Builds the variables under `root` (a fresh VarStore's root): the encoder under
    /// `bert`/`roberta`, the head under `classifier`.
    pub fn new(root: &nn::Path, config: EncoderConfig, num_labels: i64, pooling: Pooling) -> Result<Self, crate::ModelError> {
        let family = config.family()?;
        let encoder = Encoder::new(root / family.prefix(), &config, family);
        let head = ClassificationHead::new(root / "classifier", &config, family, num_labels);
        Ok(Self { config, family, encoder, head, pooling, num_labels })
    }

    /// Layer stages: see [`crate::parallel::place_stages`].
    pub fn set_stage_devices(&mut self, input: tch::Device, layers: Vec<tch::Device>, output: tch::Device) {
        self.encoder.set_placement(Placement { input, layers, output });
    }

    /// `input_ids`, `attention_mask`, `aspect_mask`: (batch, seq) int64.
    pub fn forward_t(&self, input_ids: &Tensor, attention_mask: &Tensor, aspect_mask: &Tensor, train: bool) -> TdBertOutput {
        let last_hidden_state = self.encoder.forward_t(input_ids, attention_mask, train);
        // A staged encoder ends on its last device: the pooling and head run there.
        let aspect_mask = crate::parallel::on(aspect_mask, last_hidden_state.device());
        let pooled = self.pooling.pool(&last_hidden_state, &aspect_mask);
        let logits = self.head.forward_t(&pooled, train);
        TdBertOutput { last_hidden_state, pooled, logits }
    }

    /// The logits of [`TdBertModel::forward_t`], computing the last layer at the aspect
    /// tokens only: the pooling reads nothing else, so the rest of that layer (most of
    /// a layer's work for short aspects) is skipped. Same arithmetic at those rows.
    pub fn logits_t(&self, input_ids: &Tensor, attention_mask: &Tensor, aspect_mask: &Tensor, train: bool) -> Tensor {
        let (positions, valid) = aspect_positions(aspect_mask);
        let hidden = self.encoder.forward_at(input_ids, attention_mask, Some(&positions), train);
        let pooled = self.pooling.pool(&hidden, &crate::parallel::on(&valid, hidden.device()));
        self.head.forward_t(&pooled, train)
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
