//! The transformer encoder, bottom-up: embeddings, self-attention, layers, encoder.
//! Module and weight names mirror Hugging Face's (modeling_bert.py,
//! modeling_roberta.py, modeling_xlm_roberta_xl.py, transformers v5) so checkpoints
//! load by name.

use std::borrow::Borrow;

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::config::{EncoderConfig, Family};
use super::step_weights;
use crate::rng::dropout;

fn layer_norm(p: nn::Path, config: &EncoderConfig) -> nn::LayerNorm {
    nn::layer_norm(p, vec![config.hidden_size], nn::LayerNormConfig { eps: config.layer_norm_eps, ..Default::default() })
}

fn linear(p: nn::Path, input: i64, output: i64) -> nn::Linear {
    nn::linear(p, input, output, Default::default())
}

/// HF `ACT2FN` for the activations these families use.
fn activation(name: &str, xs: &Tensor) -> Tensor {
    match name {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => xs.gelu("tanh"),
        "relu" => xs.relu(),
        "silu" | "swish" => xs.silu(),
        _ => xs.gelu("none"), // "gelu": the exact, erf-based GELU
    }
}

/// Word, position and token-type embeddings (`BertEmbeddings`, `RobertaEmbeddings`,
/// `XLMRobertaXLEmbeddings`; the last has no LayerNorm).
#[derive(Debug)]
struct Embeddings {
    word_embeddings: nn::Embedding,
    position_embeddings: nn::Embedding,
    token_type_embeddings: nn::Embedding,
    layer_norm: Option<nn::LayerNorm>,
    family: Family,
    padding_idx: i64,
    dropout: f64,
}

impl Embeddings {
    fn new(p: nn::Path, config: &EncoderConfig, family: Family) -> Self {
        let emb = |name: &str, n: i64| nn::embedding(&p / name, n, config.hidden_size, Default::default());
        Self {
            word_embeddings: emb("word_embeddings", config.vocab_size),
            position_embeddings: emb("position_embeddings", config.max_position_embeddings),
            token_type_embeddings: emb("token_type_embeddings", config.type_vocab_size),
            layer_norm: (family != Family::RobertaXl).then(|| layer_norm(&p / "LayerNorm", config)),
            family,
            padding_idx: config.pad_token_id,
            dropout: config.hidden_dropout_prob,
        }
    }

    /// RoBERTa numbers real tokens from `padding_idx + 1` and gives pads `padding_idx`
    /// (`create_position_ids_from_input_ids`); BERT counts from 0.
    fn position_ids(&self, input_ids: &Tensor) -> Tensor {
        match self.family {
            Family::Bert => {
                let t = input_ids.size()[1];
                Tensor::arange(t, (Kind::Int64, input_ids.device())).unsqueeze(0)
            }
            Family::Roberta | Family::RobertaXl => {
                let mask = input_ids.ne(self.padding_idx).to_kind(Kind::Int64);
                mask.cumsum(1, Kind::Int64) * &mask + self.padding_idx
            }
        }
    }

    /// `input_ids` (batch, seq) -> (batch, seq, hidden). Token types are all 0 unless
    /// a sentence pair's `token_type_ids` are given (the recipe passes none).
    fn forward_t(&self, input_ids: &Tensor, token_type_ids: Option<&Tensor>, train: bool) -> Tensor {
        let words = Tensor::embedding(&self.word_embeddings.ws, input_ids, -1, false, step_weights::sparse_word_grads());
        self.forward_words(&words, input_ids, token_type_ids, train)
    }

    /// [`Embeddings::forward_t`] with the word embeddings of `input_ids` already
    /// looked up (`words`, (batch, seq, hidden)): a word table sharded by rows is
    /// looked up across ranks.
    fn forward_words(&self, words: &Tensor, input_ids: &Tensor, token_type_ids: Option<&Tensor>, train: bool) -> Tensor {
        let positions = self.position_embeddings.forward(&self.position_ids(input_ids));
        let token_type = match token_type_ids {
            Some(types) => self.token_type_embeddings.forward(types),
            None => self.token_type_embeddings.ws.get(0),
        };
        let xs = words + positions + token_type;
        let xs = match &self.layer_norm {
            Some(ln) => ln.forward(&xs),
            None => xs,
        };
        dropout(&xs, self.dropout, train)
    }
}

/// `BertSelfAttention`: query, key and value projections and scaled dot-product attention.
#[derive(Debug)]
struct SelfAttention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    num_heads: i64,
    head_dim: i64,
    dropout: f64,
}

impl SelfAttention {
    fn new(p: nn::Path, config: &EncoderConfig) -> Self {
        let h = config.hidden_size;
        Self {
            query: linear(&p / "query", h, h),
            key: linear(&p / "key", h, h),
            value: linear(&p / "value", h, h),
            num_heads: config.num_attention_heads,
            head_dim: config.head_dim(),
            dropout: config.attention_probs_dropout_prob,
        }
    }

    /// `queries_from` (batch, q, hidden) attends over `xs` (batch, seq, hidden);
    /// `mask_bias` (batch, 1, 1, seq) additive. `q` is `seq` except in the last layer
    /// of [`Encoder::forward_at`], which computes only the positions it returns.
    fn forward_t(&self, queries_from: &Tensor, xs: &Tensor, mask_bias: &Tensor, train: bool) -> Tensor {
        let (b, t, h) = xs.size3().expect("hidden states are 3-D");
        let q_len = queries_from.size()[1];
        let heads = |x: Tensor, len: i64| x.view([b, len, self.num_heads, self.head_dim]).transpose(1, 2);
        let q = heads(step_weights::linear(&self.query, queries_from), q_len);
        let k = heads(step_weights::linear(&self.key, xs), t);
        let v = heads(step_weights::linear(&self.value, xs), t);
        let p = if train { self.dropout } else { 0.0 };
        let context = if p > 0.0 && xs.device() == tch::Device::Cpu {
            // On CPU libtorch's fused attention takes no dropout and falls back to this
            // same arithmetic; written out, the dropout draws from the thread's generator
            // (see `crate::rng`), so threads training together stay deterministic.
            let scores = q.matmul(&k.transpose(-1, -2)) / (self.head_dim as f64).sqrt() + mask_bias;
            dropout(&scores.softmax(-1, scores.kind()), p, train).matmul(&v)
        } else {
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask_bias), p, false, None, false)
        };
        context.transpose(1, 2).contiguous().view([b, q_len, h])
    }
}

/// One encoder layer. Post-LN (BERT, RoBERTa):
/// `x = LN(x + Attn(x)); x = LN(x + FFN(x))`. Pre-LN (XLM-R XL):
/// `x = x + Attn(LN(x)); x = x + FFN(LN(x))`.
#[derive(Debug)]
struct Layer {
    attention_self: SelfAttention,
    attention_output_dense: nn::Linear,
    /// Post-LN: `attention.output.LayerNorm`; pre-LN: `attention.self_attn_layer_norm`.
    attention_layer_norm: nn::LayerNorm,
    intermediate_dense: nn::Linear,
    output_dense: nn::Linear,
    /// Post-LN: `output.LayerNorm`; pre-LN: the layer's own `LayerNorm` before the FFN.
    ffn_layer_norm: nn::LayerNorm,
    pre_norm: bool,
    hidden_act: String,
    dropout: f64,
}

impl Layer {
    fn new(p: nn::Path, config: &EncoderConfig, family: Family) -> Self {
        let h = config.hidden_size;
        let attention = &p / "attention";
        let pre_norm = family == Family::RobertaXl;
        let (attention_layer_norm, ffn_layer_norm) = if pre_norm {
            (layer_norm(&attention / "self_attn_layer_norm", config), layer_norm(&p / "LayerNorm", config))
        } else {
            (layer_norm(&attention / "output" / "LayerNorm", config), layer_norm(&p / "output" / "LayerNorm", config))
        };
        Self {
            attention_self: SelfAttention::new(&attention / "self", config),
            attention_output_dense: linear(&attention / "output" / "dense", h, h),
            attention_layer_norm,
            intermediate_dense: linear(&p / "intermediate" / "dense", h, config.intermediate_size),
            output_dense: linear(&p / "output" / "dense", config.intermediate_size, h),
            ffn_layer_norm,
            pre_norm,
            hidden_act: config.hidden_act.clone(),
            dropout: config.hidden_dropout_prob,
        }
    }

    fn feed_forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let inner = activation(&self.hidden_act, &step_weights::linear(&self.intermediate_dense, xs));
        dropout(&step_weights::linear(&self.output_dense, &inner), self.dropout, train)
    }

    /// The layer's output at every position.
    fn forward_t(&self, xs: &Tensor, mask_bias: &Tensor, train: bool) -> Tensor {
        self.forward_at(xs, None, mask_bias, train)
    }

    /// The layer's output at `positions` (batch, k) only, or at every position. Keys
    /// and values still come from every position; the queries, the attention output,
    /// the FFN and the LayerNorms run on the k rows alone.
    fn forward_at(&self, xs: &Tensor, positions: Option<&Tensor>, mask_bias: &Tensor, train: bool) -> Tensor {
        let select = |t: &Tensor| positions.map_or_else(|| t.shallow_clone(), |p| gather_rows(t, p));
        if self.pre_norm {
            let normed = self.attention_layer_norm.forward(xs);
            let attn = self.attention_self.forward_t(&select(&normed), &normed, mask_bias, train);
            let xs = select(xs) + dropout(&step_weights::linear(&self.attention_output_dense, &attn), self.dropout, train);
            let ffn = self.feed_forward(&self.ffn_layer_norm.forward(&xs), train);
            xs + ffn
        } else {
            let residual = select(xs);
            let attn = self.attention_self.forward_t(&residual, xs, mask_bias, train);
            let attn = dropout(&step_weights::linear(&self.attention_output_dense, &attn), self.dropout, train);
            let xs = self.attention_layer_norm.forward(&(attn + residual));
            let ffn = self.feed_forward(&xs, train);
            self.ffn_layer_norm.forward(&(ffn + xs))
        }
    }
}

/// `xs` (batch, seq, hidden) at `positions` (batch, k) -> (batch, k, hidden).
fn gather_rows(xs: &Tensor, positions: &Tensor) -> Tensor {
    let (b, k) = positions.size2().expect("positions are 2-D");
    let h = xs.size()[2];
    xs.gather(1, &positions.unsqueeze(-1).expand([b, k, h], false), false)
}

/// Embeddings plus the stack of layers (`BertModel` without its pooler).
#[derive(Debug)]
pub struct Encoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    /// XLM-R XL's `encoder.LayerNorm` after the last layer.
    final_layer_norm: Option<nn::LayerNorm>,
}

impl Encoder {
    /// `p` is the model root (`bert`, `roberta`): weights are `p.embeddings.*`,
    /// `p.encoder.layer.{i}.*`.
    pub fn new<'a>(p: impl Borrow<nn::Path<'a>>, config: &EncoderConfig, family: Family) -> Self {
        let p = p.borrow().clone();
        Self::new_by_unit(config, family, &mut |_| p.clone(), &mut |_| {})
    }

    /// Builds the encoder one [`Unit`] at a time, in the order of [`Encoder::new`]:
    /// each unit's weights under `root_of(unit)` (the model root in its own store, say),
    /// and `built(unit)` called once a unit's weights exist, before the next unit is
    /// made. The head is not built here.
    pub fn new_by_unit<'a>(config: &EncoderConfig, family: Family, root_of: &mut dyn FnMut(Unit) -> nn::Path<'a>, built: &mut dyn FnMut(Unit)) -> Self {
        let embeddings = Embeddings::new(root_of(Unit::Embeddings) / "embeddings", config, family);
        built(Unit::Embeddings);
        let layers = (0..config.num_hidden_layers as usize)
            .map(|i| {
                let layer = Layer::new(root_of(Unit::Layer(i)) / "encoder" / "layer" / i, config, family);
                built(Unit::Layer(i));
                layer
            })
            .collect();
        // The final LayerNorm belongs to the head's unit: both run once, after the last layer.
        let final_layer_norm = (family == Family::RobertaXl).then(|| layer_norm(root_of(Unit::Head) / "encoder" / "LayerNorm", config));
        Self { embeddings, layers, final_layer_norm }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Every layer's Linear layers (attention projections and output, the FFN's two).
    pub fn linears(&self) -> Vec<&nn::Linear> {
        self.layers
            .iter()
            .flat_map(|l| {
                let a = &l.attention_self;
                [&a.query, &a.key, &a.value, &l.attention_output_dense, &l.intermediate_dense, &l.output_dense]
            })
            .collect()
    }

    /// `input_ids`, `attention_mask`: (batch, seq) int64 -> last hidden state
    /// (batch, seq, hidden).
    pub fn forward_t(&self, input_ids: &Tensor, attention_mask: &Tensor, train: bool) -> Tensor {
        self.forward_at(input_ids, attention_mask, None, train)
    }

    /// The last hidden state at `positions` (batch, k) only -> (batch, k, hidden), or
    /// at every position. Nothing after the last layer mixes positions, so its output
    /// elsewhere is never needed where only some positions are read (the pooling).
    pub fn forward_at(&self, input_ids: &Tensor, attention_mask: &Tensor, positions: Option<&Tensor>, train: bool) -> Tensor {
        let mut xs = self.embed(input_ids, None, train);
        let mask_bias = extended_attention_mask(attention_mask, xs.kind());
        for i in 0..self.layers.len() {
            xs = self.layer(i, &xs, &mask_bias, positions, train);
        }
        self.finish(&xs)
    }

    /// The embeddings' output (batch, seq, hidden) for `input_ids` (batch, seq), with
    /// a sentence pair's segment ids when given.
    pub fn embed(&self, input_ids: &Tensor, token_type_ids: Option<&Tensor>, train: bool) -> Tensor {
        self.embeddings.forward_t(input_ids, token_type_ids, train)
    }

    /// [`Encoder::embed`] from the word embeddings of `input_ids`, looked up elsewhere.
    pub fn embed_from_words(&self, words: &Tensor, input_ids: &Tensor, token_type_ids: Option<&Tensor>, train: bool) -> Tensor {
        self.embeddings.forward_words(words, input_ids, token_type_ids, train)
    }

    /// Layer `i` on `xs` (batch, seq, hidden) with the additive `mask_bias` of
    /// [`extended_attention_mask`]; the last layer computes only `positions` when given.
    pub fn layer(&self, i: usize, xs: &Tensor, mask_bias: &Tensor, positions: Option<&Tensor>, train: bool) -> Tensor {
        match positions {
            Some(positions) if i + 1 == self.layers.len() => self.layers[i].forward_at(xs, Some(positions), mask_bias, train),
            _ => self.layers[i].forward_t(xs, mask_bias, train),
        }
    }

    /// What follows the last layer: XLM-R XL's final LayerNorm, or nothing.
    pub fn finish(&self, xs: &Tensor) -> Tensor {
        match &self.final_layer_norm {
            Some(ln) => ln.forward(xs),
            None => xs.shallow_clone(),
        }
    }
}

/// The parts the model is built, sharded and run in (FSDP's wrapping units): the
/// embeddings, each encoder layer, and the head (with XL's final LayerNorm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Embeddings,
    Layer(usize),
    Head,
}

impl Unit {
    /// The unit a variable belongs to, by its HF name.
    pub fn of(name: &str) -> Unit {
        if name.contains("embeddings.") {
            return Unit::Embeddings;
        }
        if let Some(rest) = name.split("encoder.layer.").nth(1) {
            if let Some(i) = rest.split('.').next().and_then(|i| i.parse().ok()) {
                return Unit::Layer(i);
            }
        }
        Unit::Head
    }
}

/// (batch, seq) 0/1 -> (batch, 1, 1, seq): 0 where attended, the dtype's lowest value
/// where padded (HF `get_extended_attention_mask`, `torch.finfo(dtype).min`).
pub fn extended_attention_mask(attention_mask: &Tensor, kind: Kind) -> Tensor {
    let lowest = match kind {
        Kind::BFloat16 => -3.389_531_4e38,
        Kind::Half => -65504.0,
        _ => f32::MIN as f64,
    };
    attention_mask.eq(0).to_kind(kind).unsqueeze(1).unsqueeze(1) * lowest
}
