//! The TD-BERT forward pass as an ONNX graph, built from the VarStore's weights in the
//! order of [`crate::model`]: embeddings, layers (post- or pre-LayerNorm), aspect
//! pooling, the family's head. In the default [`GraphStyle::Portable`] every op is
//! standard opset 17, and ONNX Runtime's own graph optimisations fuse what they
//! recognise (exact GELU after a bias into `BiasGelu`, the int8 pattern of
//! [`super::quantize`] into `DynamicQuantizeMatMul`); [`GraphStyle::OrtFused`] writes
//! attention, residual LayerNorm and bias-GELU as contrib operators instead.
//!
//! Weights keep their Hugging Face names as initializer names; `Linear` weights are
//! stored transposed (`[in, out]`) because ONNX `MatMul(x, W)` wants them so.

use std::collections::HashMap;
use std::path::Path;

use absa_domain::InputForm;
use absa_onnx::manifest::{INPUT_NAMES, LOGITS, PROBABILITIES, TOKEN_TYPE_IDS};
use absa_onnx::{Attr, Dim, ElemType, GraphBuilder, Precision, MICROSOFT_DOMAIN};
use tch::{Device, Kind, Tensor};

use super::quantize::{self, QuantizedActivation};
use super::{ExportError, GraphStyle};
use crate::checkpoint::LoadedModel;
use crate::model::{EncoderConfig, Family, Pooling};

const PRODUCER: &str = "absa-trainer";

/// The serialised graph of `loaded` at `precision`, weights inline (models under
/// protobuf's 2 GiB limit).
pub fn build_graph(loaded: &LoadedModel, precision: Precision, style: GraphStyle) -> Result<Vec<u8>, ExportError> {
    let (g, metadata) = emit(loaded, precision, style, GraphBuilder::new("td_bert"))?;
    let metadata: Vec<(&str, String)> = metadata.iter().map(|(k, v)| (*k, v.clone())).collect();
    Ok(g.finish(PRODUCER, &metadata))
}

/// Writes the graph to `path`, weights to `external` when given; returns the model
/// file's size.
pub(super) fn write_graph(loaded: &LoadedModel, precision: Precision, style: GraphStyle, path: &Path, external: Option<&Path>) -> Result<u64, ExportError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e| ExportError::Io(p, e)
    };
    let mut g = GraphBuilder::new("td_bert");
    if let Some(data) = external {
        g = g.with_external_data(data).map_err(io(data))?;
    }
    let (g, metadata) = emit(loaded, precision, style, g)?;
    let metadata: Vec<(&str, String)> = metadata.iter().map(|(k, v)| (*k, v.clone())).collect();
    g.finish_to_file(path, PRODUCER, &metadata).map_err(io(path))
}

/// Model metadata written into the ONNX file (`metadata_props`).
type Metadata = Vec<(&'static str, String)>;

fn emit(loaded: &LoadedModel, precision: Precision, style: GraphStyle, g: GraphBuilder) -> Result<(GraphBuilder, Metadata), ExportError> {
    let model = &loaded.model;
    let mut w =
        Writer { g, vars: loaded.vs.variables(), config: &model.config, family: model.family, precision, style, quantized: HashMap::new(), padding_mask: None };
    let batch_seq = [Dim::Dynamic("batch"), Dim::Dynamic("sequence")];
    let [ids_name, att_name, asp_name] = INPUT_NAMES;
    let input_ids = w.g.input(ids_name, ElemType::I64, &batch_seq);
    let attention_mask = w.g.input(att_name, ElemType::I64, &batch_seq);
    let aspect_mask = w.g.input(asp_name, ElemType::I64, &batch_seq);
    let token_type_ids = (model.input == InputForm::TextTargetPair).then(|| w.g.input(TOKEN_TYPE_IDS, ElemType::I64, &batch_seq));

    let root = model.family.prefix();
    let hidden = w.encoder(root, &input_ids, token_type_ids.as_deref(), &attention_mask)?;
    let pooled = w.pool(model.pooling, &hidden, &aspect_mask);
    let logits = w.head(&pooled)?;

    let labels = model.num_labels;
    w.g.node_named("Identity", &[&logits], &[LOGITS], &[]);
    w.g.node_named("Softmax", &[LOGITS], &[PROBABILITIES], &[("axis", Attr::Int(-1))]);
    for name in [LOGITS, PROBABILITIES] {
        w.g.output(name, ElemType::F32, &[Dim::Dynamic("batch"), Dim::Fixed(labels)]);
    }
    let metadata = vec![
        ("labels", serde_json::to_string(loaded.labels.names()).expect("strings serialise")),
        ("model_type", model.config.model_type.clone()),
        ("pooling", format!("{:?}", model.pooling).to_lowercase()),
        ("input", serde_json::to_value(model.input).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()),
        ("precision", precision.to_string()),
        ("style", format!("{style:?}").to_lowercase()),
    ];
    Ok((w.g, metadata))
}

struct Writer<'a> {
    g: GraphBuilder,
    vars: HashMap<String, Tensor>,
    config: &'a EncoderConfig,
    family: Family,
    precision: Precision,
    style: GraphStyle,
    /// `DynamicQuantizeLinear` outputs per activation, so Q, K and V share one.
    quantized: HashMap<String, QuantizedActivation>,
    /// The attention mask as int32 (batch, seq), for `MultiHeadAttention`.
    padding_mask: Option<String>,
}

impl Writer<'_> {
    fn tensor(&self, name: &str) -> Result<Tensor, ExportError> {
        let t = self.vars.get(name).ok_or_else(|| ExportError::MissingWeight(name.into()))?;
        Ok(t.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous())
    }

    fn values(t: &Tensor) -> Result<Vec<f32>, ExportError> {
        Ok(Vec::<f32>::try_from(t.reshape([-1]))?)
    }

    /// An fp32 initializer from a tensor, under `name`.
    fn init(&mut self, name: &str, t: &Tensor) -> Result<String, ExportError> {
        let values = Self::values(t)?;
        Ok(self.g.initializer_f32(name, &t.size(), &values))
    }

    fn weight(&mut self, name: &str) -> Result<String, ExportError> {
        let t = self.tensor(name)?;
        self.init(name, &t)
    }

    /// `x · Wᵀ · scale + b · scale` for the torch `Linear` under `prefix`. Encoder
    /// layers are int8 in the int8 graph; the head stays fp32 (it sees one vector per
    /// instance, so int8 would save nothing and cost accuracy).
    fn linear(&mut self, x: &str, prefix: &str, quantizable: bool, scale: f32) -> Result<String, ExportError> {
        let (product, bias) = self.linear_unbiased(x, prefix, quantizable, scale)?;
        Ok(self.g.node("Add", &[&product, &bias], &[]))
    }

    /// `x · Wᵀ · scale` and the name of the (scaled) bias, for ops that add it themselves.
    fn linear_unbiased(&mut self, x: &str, prefix: &str, quantizable: bool, scale: f32) -> Result<(String, String), ExportError> {
        let product = self.linear_product(x, prefix, quantizable, scale)?;
        let bias = self.tensor(&format!("{prefix}.bias"))? * f64::from(scale);
        Ok((product, self.init(&format!("{prefix}.bias"), &bias)?))
    }

    /// `x · Wᵀ · scale` alone.
    fn linear_product(&mut self, x: &str, prefix: &str, quantizable: bool, scale: f32) -> Result<String, ExportError> {
        let weight = self.tensor(&format!("{prefix}.weight"))? * f64::from(scale);
        let product = if quantizable && self.precision == Precision::Int8 {
            let (outputs, inputs) = weight.size2()?;
            let q = quantize::quantize_per_output_channel(&Self::values(&weight)?, outputs as usize, inputs as usize);
            let qx = match self.quantized.get(x) {
                Some(qx) => qx.clone(),
                None => {
                    let qx = quantize::quantize_activation(&mut self.g, x);
                    self.quantized.insert(x.to_owned(), qx.clone());
                    qx
                }
            };
            quantize::matmul(&mut self.g, &qx, &q, prefix)
        } else {
            let transposed = weight.tr().contiguous();
            let w = self.init(&format!("{prefix}.weight"), &transposed)?;
            self.g.node("MatMul", &[x, &w], &[])
        };
        Ok(product)
    }

    fn layer_norm(&mut self, x: &str, prefix: &str) -> Result<String, ExportError> {
        let gamma = self.weight(&format!("{prefix}.weight"))?;
        let beta = self.weight(&format!("{prefix}.bias"))?;
        let eps = self.config.layer_norm_eps as f32;
        Ok(self.g.node("LayerNormalization", &[x, &gamma, &beta], &[("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))]))
    }

    /// HF `ACT2FN`, as [`crate::model`] applies it.
    fn activation(&mut self, x: &str) -> String {
        let g = &mut self.g;
        match self.config.hidden_act.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => {
                // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
                let x2 = g.node("Mul", &[x, x], &[]);
                let x3 = g.node("Mul", &[&x2, x], &[]);
                let c = g.scalar_f32(0.044715);
                let cx3 = g.node("Mul", &[&x3, &c], &[]);
                let inner = g.node("Add", &[x, &cx3], &[]);
                let k = g.scalar_f32((2.0 / std::f64::consts::PI).sqrt() as f32);
                let scaled = g.node("Mul", &[&inner, &k], &[]);
                let t = g.node("Tanh", &[&scaled], &[]);
                let one = g.scalar_f32(1.0);
                let t1 = g.node("Add", &[&t, &one], &[]);
                let half = g.scalar_f32(0.5);
                let hx = g.node("Mul", &[x, &half], &[]);
                g.node("Mul", &[&hx, &t1], &[])
            }
            "relu" => g.node("Relu", &[x], &[]),
            "silu" | "swish" => {
                let s = g.node("Sigmoid", &[x], &[]);
                g.node("Mul", &[x, &s], &[])
            }
            _ => {
                // Exact GELU, 0.5·x·(1 + erf(x/√2)), in the form torch exports (opset 17
                // has no Gelu op); ONNX Runtime fuses it with the bias before it.
                let sqrt2 = g.scalar_f32(std::f32::consts::SQRT_2);
                let d = g.node("Div", &[x, &sqrt2], &[]);
                let e = g.node("Erf", &[&d], &[]);
                let one = g.scalar_f32(1.0);
                let e1 = g.node("Add", &[&e, &one], &[]);
                let m = g.node("Mul", &[x, &e1], &[]);
                let half = g.scalar_f32(0.5);
                g.node("Mul", &[&m, &half], &[])
            }
        }
    }

    /// Embeddings: words + positions + token types (type 0 without segment ids), then
    /// LayerNorm (not in XL).
    fn embeddings(&mut self, p: &str, input_ids: &str, token_type_ids: Option<&str>) -> Result<String, ExportError> {
        let words = self.weight(&format!("{p}.word_embeddings.weight"))?;
        // Token type 0 is folded into the position table: one Add less per batch, the
        // same sum up to rounding. With segment ids, the rows' differences from type 0
        // are gathered and added.
        let type_table = self.tensor(&format!("{p}.token_type_embeddings.weight"))?;
        let type_0 = type_table.get(0);
        let positions = self.tensor(&format!("{p}.position_embeddings.weight"))? + &type_0;
        let positions = self.init(&format!("{p}.position_embeddings.weight+token_type_0"), &positions)?;
        let type_offsets = match token_type_ids {
            Some(ids) if type_table.size()[0] > 1 => {
                let offsets = self.init(&format!("{p}.token_type_embeddings.weight-token_type_0"), &(&type_table - &type_0))?;
                Some(self.g.node("Gather", &[&offsets, ids], &[("axis", Attr::Int(0))]))
            }
            _ => None, // one token type (XLM-R): every segment id is 0
        };

        let g = &mut self.g;
        let x = g.node("Gather", &[&words, input_ids], &[("axis", Attr::Int(0))]);
        let pos = match self.family {
            Family::Bert => {
                // Positions 0..seq: the first `seq` rows of the table.
                let shape = g.node("Shape", &[input_ids], &[]);
                let one = g.const_i64(&[1]);
                let two = g.const_i64(&[2]);
                let seq = g.node("Slice", &[&shape, &one, &two], &[]);
                let zero = g.const_i64(&[0]);
                g.node("Slice", &[&positions, &zero, &seq, &zero], &[])
            }
            Family::Roberta | Family::RobertaXl => {
                // create_position_ids_from_input_ids: cumsum(ids != pad) * (ids != pad) + pad.
                let pad = g.scalar_i64(self.config.pad_token_id);
                let is_pad = g.node("Equal", &[input_ids, &pad], &[]);
                let not_pad = g.node("Not", &[&is_pad], &[]);
                let mask = g.node("Cast", &[&not_pad], &[("to", Attr::Int(ElemType::I64 as i64))]);
                let axis = g.scalar_i64(1);
                let count = g.node("CumSum", &[&mask, &axis], &[]);
                let numbered = g.node("Mul", &[&count, &mask], &[]);
                let ids = g.node("Add", &[&numbered, &pad], &[]);
                g.node("Gather", &[&positions, &ids], &[("axis", Attr::Int(0))])
            }
        };
        let mut x = self.g.node("Add", &[&x, &pos], &[]);
        if let Some(types) = type_offsets {
            x = self.g.node("Add", &[&x, &types], &[]);
        }
        match self.family {
            Family::RobertaXl => Ok(x),
            Family::Bert | Family::Roberta => self.layer_norm(&x, &format!("{p}.LayerNorm")),
        }
    }

    /// (batch, seq) 0/1 -> (batch, 1, 1, seq): 0 where attended, f32::MIN where padded,
    /// as [`crate::model::Encoder`] (and HF) builds it.
    fn attention_bias(&mut self, attention_mask: &str) -> String {
        let g = &mut self.g;
        let m = g.node("Cast", &[attention_mask], &[("to", Attr::Int(ElemType::F32 as i64))]);
        let one = g.scalar_f32(1.0);
        let inverted = g.node("Sub", &[&one, &m], &[]);
        let lowest = g.scalar_f32(f32::MIN);
        let bias = g.node("Mul", &[&inverted, &lowest], &[]);
        let axes = g.const_i64(&[1, 2]);
        g.node("Unsqueeze", &[&bias, &axes], &[])
    }

    /// Multi-head self-attention under `p` (`...attention`), before the output dense.
    fn self_attention(&mut self, p: &str, x: &str, bias: &str) -> Result<String, ExportError> {
        let heads = self.config.num_attention_heads;
        let head_dim = self.config.head_dim();
        if self.style == GraphStyle::OrtFused {
            // MultiHeadAttention adds the three projection biases itself (packed),
            // scales by 1/√d, masks padded keys and merges the heads: one kernel for
            // what is otherwise 3 reshapes, 4 transposes, 2 MatMuls, an Add and a Softmax.
            let mut biases = Vec::new();
            let mut projected = Vec::new();
            for name in ["query", "key", "value"] {
                let prefix = format!("{p}.self.{name}");
                projected.push(self.linear_product(x, &prefix, true, 1.0)?);
                biases.push(self.tensor(&format!("{prefix}.bias"))?);
            }
            let packed = Tensor::cat(&biases, 0);
            let packed = self.init(&format!("{p}.self.qkv.bias"), &packed)?;
            let mask = self.padding_mask.clone().expect("the encoder sets the padding mask first");
            return Ok(self.g.node_with_domain(
                MICROSOFT_DOMAIN,
                "MultiHeadAttention",
                &[&projected[0], &projected[1], &projected[2], &packed, &mask],
                &[("num_heads", Attr::Int(heads))],
            ));
        }
        // 1/√d is folded into the query projection: no Div per layer.
        let scale = 1.0 / (head_dim as f32).sqrt();
        let q = self.linear(x, &format!("{p}.self.query"), true, scale)?;
        let k = self.linear(x, &format!("{p}.self.key"), true, 1.0)?;
        let v = self.linear(x, &format!("{p}.self.value"), true, 1.0)?;
        let g = &mut self.g;
        let split = g.const_i64(&[0, 0, heads, head_dim]);
        let mut heads_of = |t: &str, perm: &[i64]| {
            let r = g.node("Reshape", &[t, &split], &[]);
            g.node("Transpose", &[&r], &[("perm", Attr::Ints(perm.to_vec()))])
        };
        let q = heads_of(&q, &[0, 2, 1, 3]); // (batch, heads, seq, head_dim)
        let k = heads_of(&k, &[0, 2, 3, 1]); // (batch, heads, head_dim, seq)
        let v = heads_of(&v, &[0, 2, 1, 3]);
        let scores = g.node("MatMul", &[&q, &k], &[]);
        let scores = g.node("Add", &[&scores, bias], &[]);
        let probs = g.node("Softmax", &[&scores], &[("axis", Attr::Int(-1))]);
        let context = g.node("MatMul", &[&probs, &v], &[]);
        let context = g.node("Transpose", &[&context], &[("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
        let merge = g.const_i64(&[0, 0, self.config.hidden_size]);
        Ok(g.node("Reshape", &[&context, &merge], &[]))
    }

    /// `LayerNorm(x + residual)` where `x = product + bias` of a linear: one
    /// `SkipLayerNormalization` in the fused style, Add, Add, LayerNormalization otherwise.
    fn residual_layer_norm(&mut self, product: &str, bias: &str, residual: &str, prefix: &str) -> Result<String, ExportError> {
        if self.style == GraphStyle::OrtFused {
            let gamma = self.weight(&format!("{prefix}.weight"))?;
            let beta = self.weight(&format!("{prefix}.bias"))?;
            let eps = self.config.layer_norm_eps as f32;
            return Ok(self.g.node_with_domain(
                MICROSOFT_DOMAIN,
                "SkipLayerNormalization",
                &[product, residual, &gamma, &beta, bias],
                &[("epsilon", Attr::Float(eps))],
            ));
        }
        let x = self.g.node("Add", &[product, bias], &[]);
        let x = self.g.node("Add", &[&x, residual], &[]);
        self.layer_norm(&x, prefix)
    }

    /// The FFN's inner activation of `product + bias`: `BiasGelu` for exact GELU in the
    /// fused style.
    fn biased_activation(&mut self, product: &str, bias: &str) -> String {
        if self.style == GraphStyle::OrtFused && self.config.hidden_act == "gelu" {
            return self.g.node_with_domain(MICROSOFT_DOMAIN, "BiasGelu", &[product, bias], &[]);
        }
        let x = self.g.node("Add", &[product, bias], &[]);
        self.activation(&x)
    }

    /// The FFN up to its output dense's product (bias not yet added).
    fn feed_forward(&mut self, p: &str, x: &str) -> Result<(String, String), ExportError> {
        let (inner, bias) = self.linear_unbiased(x, &format!("{p}.intermediate.dense"), true, 1.0)?;
        let inner = self.biased_activation(&inner, &bias);
        self.linear_unbiased(&inner, &format!("{p}.output.dense"), true, 1.0)
    }

    /// One layer under `p` (`...encoder.layer.{i}`), post- or pre-LayerNorm.
    fn layer(&mut self, p: &str, x: &str, bias: &str) -> Result<String, ExportError> {
        let attention = format!("{p}.attention");
        if self.family == Family::RobertaXl {
            let normed = self.layer_norm(x, &format!("{attention}.self_attn_layer_norm"))?;
            let a = self.self_attention(&attention, &normed, bias)?;
            let a = self.linear(&a, &format!("{attention}.output.dense"), true, 1.0)?;
            let x = self.g.node("Add", &[x, &a], &[]);
            let normed = self.layer_norm(&x, &format!("{p}.LayerNorm"))?;
            let (f, f_bias) = self.feed_forward(p, &normed)?;
            let f = self.g.node("Add", &[&f, &f_bias], &[]);
            Ok(self.g.node("Add", &[&x, &f], &[]))
        } else {
            let a = self.self_attention(&attention, x, bias)?;
            let (a, a_bias) = self.linear_unbiased(&a, &format!("{attention}.output.dense"), true, 1.0)?;
            let x = self.residual_layer_norm(&a, &a_bias, x, &format!("{attention}.output.LayerNorm"))?;
            let (f, f_bias) = self.feed_forward(p, &x)?;
            self.residual_layer_norm(&f, &f_bias, &x, &format!("{p}.output.LayerNorm"))
        }
    }

    fn encoder(&mut self, root: &str, input_ids: &str, token_type_ids: Option<&str>, attention_mask: &str) -> Result<String, ExportError> {
        let mut x = self.embeddings(&format!("{root}.embeddings"), input_ids, token_type_ids)?;
        let bias = match self.style {
            GraphStyle::Portable => self.attention_bias(attention_mask),
            GraphStyle::OrtFused => {
                let mask = self.g.node("Cast", &[attention_mask], &[("to", Attr::Int(ElemType::I32 as i64))]);
                self.padding_mask = Some(mask);
                String::new()
            }
        };
        for i in 0..self.config.num_hidden_layers {
            x = self.layer(&format!("{root}.encoder.layer.{i}"), &x, &bias)?;
        }
        if self.family == Family::RobertaXl {
            x = self.layer_norm(&x, &format!("{root}.encoder.LayerNorm"))?;
        }
        Ok(x)
    }

    /// (batch, seq, hidden) -> (batch, hidden) over the aspect's tokens.
    fn pool(&mut self, pooling: Pooling, hidden: &str, aspect_mask: &str) -> String {
        let g = &mut self.g;
        let axis2 = g.const_i64(&[2]);
        match pooling {
            Pooling::Max | Pooling::Cls => {
                // Non-aspect positions are filled with -10000, then the max over seq.
                let keep = g.node("Cast", &[aspect_mask], &[("to", Attr::Int(ElemType::Bool as i64))]);
                let keep = g.node("Unsqueeze", &[&keep, &axis2], &[]);
                let fill = g.scalar_f32(-10000.0);
                let filled = g.node("Where", &[&keep, hidden, &fill], &[]);
                g.node("ReduceMax", &[&filled], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))])
            }
            Pooling::Mean => {
                let m = g.node("Cast", &[aspect_mask], &[("to", Attr::Int(ElemType::F32 as i64))]);
                let m = g.node("Unsqueeze", &[&m, &axis2], &[]);
                let masked = g.node("Mul", &[hidden, &m], &[]);
                let axis1 = g.const_i64(&[1]);
                let sum = g.node("ReduceSum", &[&masked, &axis1], &[("keepdims", Attr::Int(0))]);
                let count = g.node("ReduceSum", &[&m, &axis1], &[("keepdims", Attr::Int(0))]);
                g.node("Div", &[&sum, &count], &[])
            }
        }
    }

    fn head(&mut self, pooled: &str) -> Result<String, ExportError> {
        match self.family {
            Family::Bert => self.linear(pooled, "classifier", false, 1.0),
            Family::Roberta | Family::RobertaXl => {
                let x = self.linear(pooled, "classifier.dense", false, 1.0)?;
                let x = self.g.node("Tanh", &[&x], &[]);
                self.linear(&x, "classifier.out_proj", false, 1.0)
            }
        }
    }
}
