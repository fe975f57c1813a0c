//! The TD-BERT head: pool the aspect tokens' hidden states, then the family's
//! classification head.

use tch::nn;
use tch::Tensor;

use super::config::{EncoderConfig, Family};
use super::step_weights::linear;

pub use absa_jobs::Pooling;

/// `hidden` (batch, seq, hidden), `aspect_mask` (batch, seq) 0/1 -> (batch, hidden).
/// Max-pooling fills non-aspect positions with -10000, as the reference recipe does.
pub fn pool(pooling: Pooling, hidden: &Tensor, aspect_mask: &Tensor) -> Tensor {
    match pooling {
        Pooling::Max | Pooling::Cls => hidden.masked_fill(&aspect_mask.eq(0).unsqueeze(-1), -10000.0).amax(1, false),
        Pooling::Mean => {
            let m = aspect_mask.to_kind(hidden.kind()).unsqueeze(-1);
            (hidden * &m).sum_dim_intlist(1, false, hidden.kind()) / m.sum_dim_intlist(1, false, hidden.kind())
        }
    }
}

/// `BertForSequenceClassification`'s head (dropout, `classifier`) or
/// `RobertaClassificationHead` (dropout, `classifier.dense`, tanh, dropout,
/// `classifier.out_proj`).
#[derive(Debug)]
pub enum ClassificationHead {
    Bert { classifier: nn::Linear, dropout: f64 },
    Roberta { dense: nn::Linear, out_proj: nn::Linear, dropout: f64 },
}

impl ClassificationHead {
    /// `p` is the `classifier` path.
    pub fn new(p: nn::Path, config: &EncoderConfig, family: Family, num_labels: i64) -> Self {
        let h = config.hidden_size;
        let dropout = config.classifier_dropout();
        match family {
            Family::Bert => Self::Bert { classifier: nn::linear(p, h, num_labels, Default::default()), dropout },
            Family::Roberta | Family::RobertaXl => Self::Roberta {
                dense: nn::linear(&p / "dense", h, h, Default::default()),
                out_proj: nn::linear(&p / "out_proj", h, num_labels, Default::default()),
                dropout,
            },
        }
    }

    /// (batch, hidden) -> logits (batch, num_labels).
    pub fn forward_t(&self, pooled: &Tensor, train: bool) -> Tensor {
        match self {
            Self::Bert { classifier, dropout } => linear(classifier, &crate::rng::dropout(pooled, *dropout, train)),
            Self::Roberta { dense, out_proj, dropout } => {
                let xs = linear(dense, &crate::rng::dropout(pooled, *dropout, train)).tanh();
                linear(out_proj, &crate::rng::dropout(&xs, *dropout, train))
            }
        }
    }

    /// The head's Linear layers.
    pub fn linears(&self) -> Vec<&nn::Linear> {
        match self {
            Self::Bert { classifier, .. } => vec![classifier],
            Self::Roberta { dense, out_proj, .. } => vec![dense, out_proj],
        }
    }

    /// HF `_init_weights` for a fresh head: weights ~ N(0, initializer_range), biases 0.
    pub fn initialise(&mut self, initializer_range: f64) {
        let init = |l: &mut nn::Linear| {
            tch::no_grad(|| {
                let _ = l.ws.normal_(0.0, initializer_range);
                if let Some(b) = &mut l.bs {
                    let _ = b.zero_();
                }
            })
        };
        match self {
            Self::Bert { classifier, .. } => init(classifier),
            Self::Roberta { dense, out_proj, .. } => {
                init(dense);
                init(out_proj);
            }
        }
    }
}
