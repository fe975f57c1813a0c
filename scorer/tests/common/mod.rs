//! A small model directory for engine tests: the real MiniLM tokenizer and a toy graph
//! with TD-BERT's inputs and outputs (embedding lookup, masked max pooling over the
//! aspect, linear head, softmax), whose probabilities the tests recompute in Rust.
//! Engine behaviour (targets, order, batching, formats, errors) does not depend on the
//! encoder's depth; the real encoder's parity is the trainer's export test.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use absa_domain::readers::{self, ReaderOptions};
use absa_domain::{AspectEncoder, AspectSpan};
use absa_onnx::manifest::{self, GraphFile, ModelManifest, Precision, INPUT_NAMES, LOGITS, PROBABILITIES};
use absa_onnx::{Attr, Dim, ElemType, GraphBuilder};
use serde_json::{json, Value};

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

/// What one output record should be: id, aspect, start, end, and the text to recompute
/// the probabilities from.
pub struct Want {
    pub id: Value,
    pub aspect: &'static str,
    pub start: usize,
    pub end: usize,
    pub text: String,
}

pub fn want(id: Value, text: &str, aspect: &'static str, start: usize) -> Want {
    Want { id, aspect, start, end: start + aspect.chars().count(), text: text.into() }
}

/// Laptops test rows of varied lengths (to make the sort matter), then rows that
/// exercise every target mode and every kind of bad row. Returns the corpus lines and
/// the records the output must hold, in order.
/// Corpus lines, the records expected out, and (line, reason) of the rows expected in
/// the error file.
pub type Corpus = (Vec<Vec<u8>>, Vec<Want>, Vec<(usize, &'static str)>);

pub fn corpus() -> Corpus {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut wants = Vec::new();
    let laptops = std::fs::read_to_string(shared().join("data/semeval14_laptops/test.jsonl")).unwrap();
    for (i, line) in laptops.lines().take(25).enumerate() {
        let row: Value = serde_json::from_str(line).unwrap();
        let text = row["text"].as_str().unwrap();
        let start = row["start"].as_u64().unwrap() as usize;
        let aspect: &'static str = Box::leak(row["aspect"].as_str().unwrap().to_owned().into_boxed_str());
        lines.push(json!({"id": format!("l{i}"), "text": text, "aspect": aspect, "start": start, "end": row["end"]}).to_string().into_bytes());
        wants.push(want(json!(format!("l{i}")), text, aspect, start));
    }
    fn add(lines: &mut Vec<Vec<u8>>, v: Value) {
        lines.push(v.to_string().into_bytes());
    }
    add(&mut lines, json!({"id": 7, "text": "Über den Lüfter: der Lüfter ist laut", "aspect": "Lüfter"}));
    wants.push(want(json!(7), "Über den Lüfter: der Lüfter ist laut", "Lüfter", 9));
    wants.push(want(json!(7), "Über den Lüfter: der Lüfter ist laut", "Lüfter", 21));
    add(&mut lines, json!({"text": "Battery life and the SCREEN, not the screensaver."}));
    let lexicon_text = "Battery life and the SCREEN, not the screensaver.";
    let lexicon_line = lines.len() as i64;
    wants.push(want(json!(lexicon_line), lexicon_text, "Battery life", 0));
    wants.push(want(json!(lexicon_line), lexicon_text, "SCREEN", 21));
    lines.push(b"{\"text\": \"bad \xff byte\", \"aspect\": \"byte\"}".to_vec());
    add(&mut lines, json!({"id": "e", "aspect": "x", "start": 0, "end": 1}));
    add(&mut lines, json!({"text": "short", "start": 2, "end": 30}));
    add(&mut lines, json!({"text": "nice fan", "aspect": "fan", "start": 0, "end": 4}));
    add(&mut lines, json!({"text": format!("long {}", "word ".repeat(1000)), "aspect": "long", "start": 0, "end": 4}));
    lines.push(b"not json at all".to_vec());
    add(&mut lines, json!({"text": "nothing to find here"}));
    add(&mut lines, json!({"id": "ws", "text": "a  b", "start": 1, "end": 2}));
    add(&mut lines, json!({"id": "last", "text": "The keyboard is fine", "start": 4, "end": 12}));
    wants.push(want(json!("last"), "The keyboard is fine", "keyboard", 4));
    let errors = vec![
        (28, "invalid UTF-8"),
        (29, "missing field \"text\""),
        (30, "outside the text"),
        (31, "not the aspect"),
        (32, "exceeds the limit"),
        (33, "not JSON"),
        (35, "covers no token"),
    ];
    (lines, wants, errors)
}

pub fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        f.write_all(l).unwrap();
        f.write_all(b"\n").unwrap();
    }
}

pub fn read_records(path: &Path) -> Vec<serde_json::Map<String, Value>> {
    readers::open(path, &ReaderOptions::default()).unwrap().map(|r| r.unwrap().unwrap().fields).collect()
}
