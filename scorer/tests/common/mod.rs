//! A small model directory for engine tests: the real MiniLM tokenizer and a toy graph
//! with TD-BERT's inputs and outputs (embedding lookup, masked max pooling over the
//! aspect, linear head, softmax), whose probabilities the tests recompute in Rust.
//! Engine behaviour (targets, order, batching, formats, errors) does not depend on the
//! encoder's depth; the real encoder's parity is the trainer's export test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use absa_domain::{AspectEncoder, AspectSpan};
use absa_onnx::manifest::{self, GraphFile, ModelManifest, Precision, INPUT_NAMES, LOGITS, PROBABILITIES};
use absa_onnx::{Attr, Dim, ElemType, GraphBuilder};

pub const HIDDEN: usize = 8;
pub const LABELS: [&str; 3] = ["negative", "neutral", "positive"];

pub fn shared() -> PathBuf {
    absa_domain::reference::shared_dir().unwrap_or_else(|e| panic!("{e}"))
}

/// Deterministic weights: a cheap hash of the position.
fn weight(i: usize, salt: usize) -> f32 {
    let x = (i.wrapping_mul(2654435761) ^ salt.wrapping_mul(40503)) % 2001;
    (x as f32 - 1000.0) / 1000.0
}

pub struct ToyModel {
    pub vocab: usize,
    pub embedding: Vec<f32>,
    pub head: Vec<f32>,
    pub encoder: AspectEncoder,
}

impl ToyModel {
    /// Writes the toy model directory into `dir` and returns the model for reference.
    pub fn write(dir: &Path, max_length: usize) -> Self {
        let tokenizer = shared().join("models/all-minilm-l6-v2/tokenizer.json");
        std::fs::copy(&tokenizer, dir.join("tokenizer.json")).unwrap();
        let encoder = AspectEncoder::from_file(&tokenizer, max_length).unwrap();
        let vocab = encoder.tokenizer().get_vocab_size(true);
        let embedding: Vec<f32> = (0..vocab * HIDDEN).map(|i| weight(i, 1)).collect();
        let head: Vec<f32> = (0..HIDDEN * LABELS.len()).map(|i| weight(i, 2)).collect();

        let mut g = GraphBuilder::new("toy_td_bert");
        let dims = [Dim::Dynamic("batch"), Dim::Dynamic("sequence")];
        let ids = g.input(INPUT_NAMES[0], ElemType::I64, &dims);
        let _att = g.input(INPUT_NAMES[1], ElemType::I64, &dims);
        let asp = g.input(INPUT_NAMES[2], ElemType::I64, &dims);
        let emb = g.initializer_f32("embedding", &[vocab as i64, HIDDEN as i64], &embedding);
        let w = g.initializer_f32("head", &[HIDDEN as i64, LABELS.len() as i64], &head);
        let hidden = g.node("Gather", &[&emb, &ids], &[("axis", Attr::Int(0))]);
        let keep = g.node("Cast", &[&asp], &[("to", Attr::Int(ElemType::Bool as i64))]);
        let axis = g.const_i64(&[2]);
        let keep = g.node("Unsqueeze", &[&keep, &axis], &[]);
        let fill = g.scalar_f32(-10000.0);
        let filled = g.node("Where", &[&keep, &hidden, &fill], &[]);
        let pooled = g.node("ReduceMax", &[&filled], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))]);
        g.node_named("MatMul", &[&pooled, &w], &[LOGITS], &[]);
        g.node_named("Softmax", &[LOGITS], &[PROBABILITIES], &[("axis", Attr::Int(-1))]);
        for name in [LOGITS, PROBABILITIES] {
            g.output(name, ElemType::F32, &[Dim::Dynamic("batch"), Dim::Fixed(LABELS.len() as i64)]);
        }
        g.finish_to_file(&dir.join("model.onnx"), "absa-scorer-tests", &[]).unwrap();
        ModelManifest {
            format: manifest::FORMAT.into(),
            labels: LABELS.iter().map(|s| s.to_string()).collect(),
            max_length,
            model_type: "toy".into(),
            pooling: "max".into(),
            input: "text".into(),
            pad_token_id: 0,
            tokenizer: "tokenizer.json".into(),
            opset: absa_onnx::OPSET,
            graphs: vec![GraphFile { precision: Precision::Fp32, file: "model.onnx".into(), external_data: None }],
        }
        .write(dir)
        .unwrap();
        Self { vocab, embedding, head, encoder }
    }

    /// The probabilities the graph gives for `text` with the aspect at `start..end`.
    pub fn expected(&self, text: &str, start: usize, end: usize) -> Vec<f32> {
        let enc = self.encoder.encode(text, AspectSpan::parse(text, None, start, end).unwrap()).unwrap();
        let mut pooled = [f32::MIN; HIDDEN];
        for (id, _) in enc.input_ids.iter().zip(&enc.aspect_mask).filter(|(_, &m)| m) {
            for (h, p) in pooled.iter_mut().enumerate() {
                *p = p.max(self.embedding[*id as usize * HIDDEN + h]);
            }
        }
        let logits: Vec<f32> = (0..LABELS.len()).map(|c| (0..HIDDEN).map(|h| pooled[h] * self.head[h * LABELS.len() + c]).sum()).collect();
        let max = logits.iter().cloned().fold(f32::MIN, f32::max);
        let z: f32 = logits.iter().map(|l| (l - max).exp()).sum();
        logits.iter().map(|l| (l - max).exp() / z).collect()
    }
}
