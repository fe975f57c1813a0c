//! Every exported graph runs in ONNX Runtime and gives libtorch's logits: the small
//! random-weight BERT, XLM-R and XLM-R XL models on their fixture inputs (both
//! poolings, several batch and sequence shapes), and all-MiniLM-L6-v2 over the whole
//! laptops test set. The int8 graph runs too and stays close to fp32.

mod common;

use std::path::{Path, PathBuf};

use absa_domain::readers::{self, ReaderOptions};
use absa_domain::{AspectEncoder, AspectSpan, LabelSet};
use absa_onnx::{ModelManifest, Precision};
use absa_scorer::runtime::{session_from_file, SessionOptions};
use absa_trainer::checkpoint::{LoadOptions, LoadedModel};
use absa_trainer::export::{self, ExportOptions, GraphStyle};
use absa_trainer::model::Pooling;
use ndarray::Array2;
use ort::value::TensorRef;
use tch::{Kind, Tensor};

const TOLERANCE: f32 = 1e-4;
/// int8 against fp32 on the tiny random models: measured at most 5.9e-5 (their logits
/// are small); the bound leaves room for other CPUs' int8 kernels.
const TINY_INT8_TOLERANCE: f32 = 1e-3;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn shared() -> PathBuf {
    absa_domain::reference::shared_dir().unwrap_or_else(|e| panic!("{e}"))
}

/// A folder with a `tokenizer.json`: the tiny fixtures have none, and export copies one.
fn tokenizer_dir() -> PathBuf {
    shared().join("models/all-minilm-l6-v2")
}

fn to_array(t: &Tensor) -> Array2<i64> {
    let (b, s) = t.size2().unwrap();
    let v = Vec::<i64>::try_from(t.to_kind(Kind::Int64).reshape([-1])).unwrap();
    Array2::from_shape_vec((b as usize, s as usize), v).unwrap()
}

fn to_matrix(t: &Tensor) -> Array2<f32> {
    let (b, c) = t.size2().unwrap();
    let v = Vec::<f32>::try_from(t.to_kind(Kind::Float).reshape([-1])).unwrap();
    Array2::from_shape_vec((b as usize, c as usize), v).unwrap()
}

/// Runs one graph of an exported directory: (logits, probabilities).
struct Runner(ort::session::Session);

impl Runner {
    fn open(dir: &Path, precision: Precision) -> Self {
        let manifest = ModelManifest::read(dir).unwrap();
        let file = &manifest.graph(dir, precision).unwrap().file;
        Self(session_from_file(&dir.join(file), &SessionOptions::with_threads(2)).unwrap())
    }

    fn run(&mut self, ids: &Array2<i64>, att: &Array2<i64>, asp: &Array2<i64>) -> (Array2<f32>, Array2<f32>) {
        let out = self
            .0
            .run(ort::inputs![
                "input_ids" => TensorRef::from_array_view(ids).unwrap(),
                "attention_mask" => TensorRef::from_array_view(att).unwrap(),
                "aspect_mask" => TensorRef::from_array_view(asp).unwrap(),
            ])
            .unwrap();
        let get = |name: &str| out[name].try_extract_array::<f32>().unwrap().into_dimensionality::<ndarray::Ix2>().unwrap().to_owned();
        (get("logits"), get("probabilities"))
    }
}

fn max_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn assert_probabilities(logits: &Array2<f32>, probs: &Array2<f32>) {
    for (l, p) in logits.outer_iter().zip(probs.outer_iter()) {
        let max = l.fold(f32::MIN, |m, &v| m.max(v));
        let z: f32 = l.iter().map(|v| (v - max).exp()).sum();
        for (lv, pv) in l.iter().zip(p.iter()) {
            assert!(((lv - max).exp() / z - pv).abs() < 1e-5);
        }
    }
}

fn libtorch_logits(loaded: &LoadedModel, ids: &Tensor, att: &Tensor, asp: &Tensor) -> Array2<f32> {
    to_matrix(&tch::no_grad(|| loaded.model.forward_t(ids, att, asp, false)).logits)
}

fn check_tiny(model: &str) {
    let dir = fixtures().join("models").join(model);
    let expected: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("expected.safetensors")).unwrap().into_iter().collect();
    let (ids, att, asp) = (&expected["input_ids"], &expected["attention_mask"], &expected["aspect_mask"]);
    let mut loaded = common::load_seeded(&dir, &LoadOptions::default());
    let cases = [
        (Pooling::Max, GraphStyle::OrtFused),
        (Pooling::Mean, GraphStyle::OrtFused),
        (Pooling::Max, GraphStyle::Portable),
        (Pooling::Mean, GraphStyle::Portable),
    ];
    for (pooling, style) in cases {
        loaded.model.pooling = pooling;
        let out = tempfile::tempdir().unwrap();
        let options = ExportOptions { max_length: 32, int8: true, style };
        let report = export::export_model_dir(&loaded, &tokenizer_dir(), out.path(), &options).unwrap();
        assert_eq!(report.graphs.len(), 2);
        let manifest = ModelManifest::read(out.path()).unwrap();
        assert_eq!(manifest.labels, LabelSet::sentiment().names());
        assert_eq!(manifest.max_length, 32);

        let mut fp32 = Runner::open(out.path(), Precision::Fp32);
        let (logits, probs) = fp32.run(&to_array(ids), &to_array(att), &to_array(asp));
        let torch = libtorch_logits(&loaded, ids, att, asp);
        let diff = max_diff(&logits, &torch);
        println!("{model} {pooling:?} {style:?}: fp32 ONNX vs libtorch max |Δlogit| = {diff:.2e}");
        assert!(diff <= TOLERANCE, "{model} {pooling:?} {style:?}: ONNX vs libtorch {diff:e}");
        let suffix = format!("{pooling:?}").to_lowercase();
        let hf = to_matrix(&expected[&format!("logits_{suffix}")]);
        assert!(max_diff(&logits, &hf) <= TOLERANCE, "{model} {pooling:?}: ONNX vs transformers");
        assert_probabilities(&logits, &probs);

        // Other shapes through the same session: each row alone, cut to its own length.
        let lengths = Vec::<i64>::try_from(att.sum_dim_intlist(1, false, Kind::Int64)).unwrap();
        for (row, &len) in lengths.iter().enumerate() {
            let pick = |t: &Tensor| t.narrow(0, row as i64, 1).narrow(1, 0, len);
            let (one, _) = fp32.run(&to_array(&pick(ids)), &to_array(&pick(att)), &to_array(&pick(asp)));
            let torch_row = torch.row(row).to_owned().insert_axis(ndarray::Axis(0));
            assert!(max_diff(&one, &torch_row) <= TOLERANCE, "{model} row {row} alone");
        }

        // The laptops test set in length-sorted batches of 64: MiniLM's tokenization,
        // ids folded into the tiny vocabulary (above its special ids, so the only pads
        // are the padding), 638 rows of every length.
        let vocab = loaded.model.config.vocab_size;
        let encoder = AspectEncoder::from_file(&tokenizer_dir().join("tokenizer.json"), 32).unwrap();
        let mut worst = 0f32;
        for (ids, att, asp, _) in laptops_test_batches(&encoder, 0) {
            let ids = ndarray::Zip::from(&ids).and(&att).map_collect(|&id, &a| if a == 1 { 5 + id % (vocab - 5) } else { manifest.pad_token_id });
            let t = |a: &Array2<i64>| Tensor::from_slice(a.as_slice().unwrap()).reshape([a.nrows() as i64, a.ncols() as i64]);
            let torch = libtorch_logits(&loaded, &t(&ids), &t(&att), &t(&asp));
            worst = worst.max(max_diff(&fp32.run(&ids, &att, &asp).0, &torch));
        }
        println!("{model} {pooling:?} {style:?}: laptops test (638, batches of 64) max |Δlogit| = {worst:.2e}");
        assert!(worst <= TOLERANCE, "{model} {pooling:?} {style:?}: laptops test {worst:e}");

        let mut int8 = Runner::open(out.path(), Precision::Int8);
        let (q_logits, q_probs) = int8.run(&to_array(ids), &to_array(att), &to_array(asp));
        assert_probabilities(&q_logits, &q_probs);
        let int8_diff = max_diff(&q_logits, &logits);
        println!("{model} {pooling:?} {style:?}: int8 vs fp32 max |Δlogit| = {int8_diff:.2e}");
        assert!(int8_diff <= TINY_INT8_TOLERANCE, "{model} {pooling:?} {style:?}: int8 vs fp32 {int8_diff:e}");
    }
}

#[test]
fn bert_exports_with_libtorch_logits() {
    check_tiny("bert_tiny");
}

#[test]
fn xlm_roberta_exports_with_libtorch_logits() {
    check_tiny("xlmr_tiny");
}

#[test]
fn xlm_roberta_xl_exports_with_libtorch_logits() {
    check_tiny("xlmr_xl_tiny");
}

#[test]
fn a_max_length_beyond_the_position_table_is_refused() {
    let loaded = common::load_seeded(&fixtures().join("models/xlmr_tiny"), &LoadOptions::default());
    let limit = export::max_length_limit(&loaded);
    let out = tempfile::tempdir().unwrap();
    let options = ExportOptions { max_length: limit + 1, int8: false, ..Default::default() };
    let err = export::export_model_dir(&loaded, &tokenizer_dir(), out.path(), &options).unwrap_err();
    assert!(err.to_string().contains("position embeddings"), "{err}");
}

/// Laptops test instances, encoded, in length-sorted batches of 64.
/// Model inputs (ids, attention mask, aspect mask) and gold label indices of a batch.
type Batch = (Array2<i64>, Array2<i64>, Array2<i64>, Vec<usize>);

fn laptops_test_batches(encoder: &AspectEncoder, pad: i64) -> Vec<Batch> {
    let path = shared().join("data/semeval14_laptops/test.jsonl");
    let mut encoded = Vec::new();
    for row in readers::open(&path, &ReaderOptions::default()).unwrap() {
        let r = row.unwrap().unwrap();
        let text = r.fields["text"].as_str().unwrap();
        let span =
            AspectSpan::parse(text, r.fields["aspect"].as_str(), r.fields["start"].as_u64().unwrap() as usize, r.fields["end"].as_u64().unwrap() as usize)
                .unwrap();
        let label = LabelSet::sentiment().index(r.fields["label"].as_str().unwrap()).unwrap();
        encoded.push((encoder.encode(text, span).unwrap(), label));
    }
    assert_eq!(encoded.len(), 638);
    encoded.sort_by_key(|(e, _)| e.len());
    encoded
        .chunks(64)
        .map(|chunk| {
            let width = chunk.iter().map(|(e, _)| e.len()).max().unwrap();
            let mut ids = Array2::from_elem((chunk.len(), width), pad);
            let mut att = Array2::zeros((chunk.len(), width));
            let mut asp = Array2::zeros((chunk.len(), width));
            for (i, (e, _)) in chunk.iter().enumerate() {
                for j in 0..e.len() {
                    ids[[i, j]] = e.input_ids[j];
                    att[[i, j]] = 1;
                    asp[[i, j]] = e.aspect_mask[j] as i64;
                }
            }
            (ids, att, asp, chunk.iter().map(|(_, l)| *l).collect())
        })
        .collect()
}

fn argmax(row: ndarray::ArrayView1<f32>) -> usize {
    row.iter().enumerate().fold((0, f32::MIN), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0
}

/// all-MiniLM-L6-v2 with a seeded head, or, when `ABSA_PARITY_CHECKPOINT` names one,
/// a fine-tuned MiniLM checkpoint with its own head.
#[test]
fn minilm_exports_with_libtorch_logits_over_the_laptops_test_set() {
    let (dir, labels) = match std::env::var_os("ABSA_PARITY_CHECKPOINT") {
        Some(dir) => (PathBuf::from(dir), None),
        None => (shared().join("models/all-minilm-l6-v2"), Some(LabelSet::sentiment())),
    };
    let loaded = common::load_seeded(&dir, &LoadOptions { labels, pooling: None, input: None });
    assert_eq!(loaded.labels, LabelSet::sentiment());
    for style in [GraphStyle::OrtFused, GraphStyle::Portable] {
        let out = tempfile::tempdir().unwrap();
        export::export_model_dir(&loaded, &dir, out.path(), &ExportOptions { style, ..Default::default() }).unwrap();
        let manifest = ModelManifest::read(out.path()).unwrap();
        let encoder = AspectEncoder::from_file(&out.path().join(&manifest.tokenizer), manifest.max_length).unwrap();
        let mut fp32 = Runner::open(out.path(), Precision::Fp32);
        let mut int8 = Runner::open(out.path(), Precision::Int8);
        let (mut worst, mut worst_int8, mut agree, mut n) = (0f32, 0f32, 0usize, 0usize);
        let (mut correct_fp32, mut correct_int8) = (0usize, 0usize);
        for (ids, att, asp, gold) in laptops_test_batches(&encoder, manifest.pad_token_id) {
            let t = |a: &Array2<i64>| Tensor::from_slice(a.as_slice().unwrap()).reshape([a.nrows() as i64, a.ncols() as i64]);
            let torch = libtorch_logits(&loaded, &t(&ids), &t(&att), &t(&asp));
            let (logits, _) = fp32.run(&ids, &att, &asp);
            let (q, _) = int8.run(&ids, &att, &asp);
            worst = worst.max(max_diff(&logits, &torch));
            worst_int8 = worst_int8.max(max_diff(&q, &logits));
            agree += logits.outer_iter().zip(q.outer_iter()).filter(|(a, b)| argmax(*a) == argmax(*b)).count();
            correct_fp32 += logits.outer_iter().zip(&gold).filter(|(l, g)| argmax(*l) == **g).count();
            correct_int8 += q.outer_iter().zip(&gold).filter(|(l, g)| argmax(*l) == **g).count();
            n += ids.nrows();
        }
        println!(
            "minilm ({}, {style:?}) laptops test ({n}): fp32 ONNX vs libtorch max |Δlogit| = {worst:.2e}; int8 vs fp32 max |Δlogit| = {worst_int8:.2e}, \
         argmax agreement {agree}/{n}; accuracy fp32 {:.4} int8 {:.4}",
            dir.display(),
            correct_fp32 as f64 / n as f64,
            correct_int8 as f64 / n as f64
        );
        assert!(worst <= TOLERANCE, "MiniLM {style:?} ONNX vs libtorch: {worst:e}");
        // int8 (dynamic quantization of the MatMuls) stays close to fp32: measured max
        // |Δlogit| 0.10-0.11, argmax agreement 607-610 of 638, accuracy within 0.5 points.
        let (agreement, accuracy_gap) = (agree as f64 / n as f64, (correct_fp32 as f64 - correct_int8 as f64).abs() / n as f64);
        assert!(
            worst_int8 <= 0.25 && agreement >= 0.9 && accuracy_gap <= 0.02,
            "MiniLM {style:?} int8 vs fp32: {worst_int8:e}, agreement {agreement:.3}, accuracy gap {accuracy_gap:.3}"
        );
    }
}

/// A model trained under bf16 (batch threads sharing bf16 weight copies) exports like
/// any other: its fp32 master weights go into the graph, and ONNX Runtime (the scorer's
/// runtime) gives libtorch's logits and predictions, on the fixture inputs and on the
/// laptops test set folded into the tiny vocabulary.
#[test]
fn a_model_trained_under_bf16_scores_in_onnx_runtime_as_in_libtorch() {
    let dir = fixtures().join("models/bert_tiny");
    let expected: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("expected.safetensors")).unwrap().into_iter().collect();
    let loaded = common::load_seeded(&dir, &LoadOptions::default());
    let vocab = loaded.model.config.vocab_size;
    let engine = common::trained_under_bf16(loaded);
    let trained = engine.model();
    let out = tempfile::tempdir().unwrap();
    export::export_model_dir(trained, &tokenizer_dir(), out.path(), &ExportOptions { max_length: 32, int8: false, style: GraphStyle::OrtFused }).unwrap();
    let mut onnx = Runner::open(out.path(), Precision::Fp32);
    // Predictions agree wherever libtorch's top two logits are further apart than the
    // logits may differ; returns how many rows that was.
    let same_predictions = |onnx: &Array2<f32>, torch: &Array2<f32>| {
        let mut decided = 0;
        for (o, t) in onnx.outer_iter().zip(torch.outer_iter()) {
            let mut order: Vec<usize> = (0..t.len()).collect();
            order.sort_by(|&a, &b| t[b].total_cmp(&t[a]));
            let best_onnx = (0..o.len()).max_by(|&a, &b| o[a].total_cmp(&o[b])).unwrap();
            if t[order[0]] - t[order[1]] > 2.0 * TOLERANCE {
                assert_eq!(best_onnx, order[0], "prediction: ONNX {o:?}, libtorch {t:?}");
                decided += 1;
            }
        }
        decided
    };
    let (ids, att, asp) = (&expected["input_ids"], &expected["attention_mask"], &expected["aspect_mask"]);
    let torch = libtorch_logits(trained, ids, att, asp);
    let (logits, _) = onnx.run(&to_array(ids), &to_array(att), &to_array(asp));
    assert!(max_diff(&logits, &torch) <= TOLERANCE, "fixture inputs: {:e}", max_diff(&logits, &torch));
    same_predictions(&logits, &torch);
    let encoder = AspectEncoder::from_file(&tokenizer_dir().join("tokenizer.json"), 32).unwrap();
    let pad = ModelManifest::read(out.path()).unwrap().pad_token_id;
    let (mut worst, mut rows_compared, mut decided) = (0f32, 0, 0);
    for (ids, att, asp, _) in laptops_test_batches(&encoder, 0) {
        let ids = ndarray::Zip::from(&ids).and(&att).map_collect(|&id, &a| if a == 1 { 5 + id % (vocab - 5) } else { pad });
        let t = |a: &Array2<i64>| Tensor::from_slice(a.as_slice().unwrap()).reshape([a.nrows() as i64, a.ncols() as i64]);
        let torch = libtorch_logits(trained, &t(&ids), &t(&att), &t(&asp));
        let (logits, _) = onnx.run(&ids, &att, &asp);
        worst = worst.max(max_diff(&logits, &torch));
        decided += same_predictions(&logits, &torch);
        rows_compared += logits.nrows();
    }
    println!("bf16-trained bert_tiny: ONNX vs libtorch over {rows_compared} laptops rows, max |Δlogit| = {worst:.2e}, same prediction in all {decided} rows with a margin");
    assert_eq!(rows_compared, 638);
    assert!(decided > 319, "only {decided} of 638 rows had a top-two margin above {}", 2.0 * TOLERANCE);
    assert!(worst <= TOLERANCE, "laptops test {worst:e}");
}
