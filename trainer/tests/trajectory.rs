//! Our engine's training arithmetic against Hugging Face Trainer's: all-MiniLM-L6-v2
//! with the TD-BERT head, dropout off, trained six steps on the same laptops batches
//! from the same head (fixture: scripts/fixtures/make_minilm_trajectory.py). Losses,
//! gradient norms, learning rates and every parameter's change must agree (but the
//! key biases', whose gradient is rounding noise), with one thread over whole batches
//! and with batches split over two threads.

use std::collections::BTreeMap;
use std::path::PathBuf;

use absa_domain::records::{read_labelled_file, Columns};
use absa_domain::{AspectEncoder, LabelSet};
use absa_trainer::checkpoint::{self, LoadOptions};
use absa_trainer::model::Pooling;
use absa_trainer::training::data::{encode_rows, Example};
use absa_trainer::training::local::LocalEngine;
use absa_trainer::training::optimizer::linear_schedule;
use tch::{Device, Tensor};

const ROWS: usize = 48;
const BATCH: usize = 16;
const STEPS: usize = 6;
const LR: f64 = 5e-5;
const WARMUP: i64 = 2;
const TOTAL_STEPS: i64 = 8;

fn shared() -> PathBuf {
    absa_domain::reference::shared_dir().unwrap_or_else(|e| panic!("{e}"))
}

fn fixture() -> (BTreeMap<String, Tensor>, Vec<String>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_trajectory.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let names = metadata.metadata().as_ref().and_then(|m| m.get("parameters")).expect("metadata lists the parameters");
    let names: Vec<String> = serde_json::from_str(names).unwrap();
    (Tensor::read_safetensors(&path).unwrap().into_iter().collect(), names)
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.flatten(0, -1).to_kind(tch::Kind::Double)).unwrap()
}

/// The fixture's label ids: negative 0, neutral 1, positive 2.
fn labels() -> LabelSet {
    LabelSet::new(vec!["negative".into(), "neutral".into(), "positive".into()]).unwrap()
}

/// The first `ROWS` lines of laptops train, encoded with our tokenizer pipeline.
fn examples(base: &std::path::Path) -> (Vec<Example>, i64) {
    let (rows, errors) = read_labelled_file(&shared().join("data/semeval14_laptops/train.jsonl"), &Columns::default()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let encoder = AspectEncoder::from_file(&base.join("tokenizer.json"), 100).unwrap();
    let (examples, errors) = encode_rows(&rows[..ROWS], &encoder, absa_domain::InputForm::Text, &labels());
    assert!(errors.is_empty(), "{errors:?}");
    (examples, encoder.pad_id())
}

/// A key bias adds the same amount to every score of a query, which the softmax
/// ignores: its gradient is zero but for rounding (~1e-9), and AdamW, dividing by the
/// gradient's own size, turns that rounding into steps of either sign on both sides.
fn gradient_is_noise(name: &str) -> bool {
    name.ends_with("attention.self.key.bias")
}

#[test]
fn six_steps_follow_hugging_face_trainers_arithmetic() {
    let (expected, names) = fixture();
    let base = shared().join("models/all-minilm-l6-v2");
    let (examples, pad_id) = examples(&base);
    let options = LoadOptions { labels: Some(labels()), pooling: Some(Pooling::Max), input: None };

    for threads in [1, 2] {
        let model = checkpoint::load(&base, &options, Device::Cpu).unwrap();
        let variables = model.vs.variables();
        tch::no_grad(|| {
            for name in ["classifier.weight", "classifier.bias"] {
                variables[name].shallow_clone().copy_(&expected[name]);
            }
        });
        let initial: BTreeMap<String, Tensor> = variables.iter().map(|(n, t)| (n.clone(), t.detach().copy())).collect();
        assert_eq!(initial.keys().collect::<Vec<_>>(), names.iter().collect::<Vec<_>>(), "parameter names");

        let mut engine = LocalEngine::new(model, 0.01, false).with_batch_threads(threads);
        let (mut losses, mut norms, mut lrs) = (vec![], vec![], vec![]);
        for step in 0..STEPS {
            let rows: Vec<&Example> = examples.chunks(BATCH).nth(step % (ROWS / BATCH)).unwrap().iter().collect();
            // Dropout off (`train` false): the two sides' masks could never match.
            losses.push(engine.backward(&rows, None, pad_id, 1, false, 0));
            let lr = LR * linear_schedule(step as i64, WARMUP, TOTAL_STEPS);
            norms.push(engine.step(lr, 1.0));
            lrs.push(lr);
        }
        let compare = |what: &str, ours: &[f64], theirs: &Tensor, tolerance: f64| {
            for (i, (a, b)) in ours.iter().zip(values(theirs)).enumerate() {
                assert!((a - b).abs() <= tolerance * b.abs().max(1e-12), "{threads} thread(s), step {}: {what} {a} vs transformers {b}", i + 1);
            }
            eprintln!("{threads} thread(s) {what}: ours {ours:?}\n                  transformers {:?}", values(theirs));
        };
        compare("learning rate", &lrs, &expected["lr"], 1e-6);
        compare("loss", &losses, &expected["loss"], 1e-5);
        compare("gradient norm", &norms, &expected["grad_norm"], 1e-4);

        // Every parameter's change after six steps: its norm, and in full for the head
        // and the last layer's and the embeddings' biases and LayerNorms.
        let trained = engine.model().vs.variables();
        let delta = |name: &str| &trained[name] - &initial[name];
        let (mut worst_norm, mut worst_name) = (0.0f64, String::new());
        for (name, want) in names.iter().zip(values(&expected["delta_norm"])).filter(|(n, _)| !gradient_is_noise(n)) {
            let got = delta(name).norm().double_value(&[]);
            let relative = (got - want).abs() / want;
            if relative > worst_norm {
                (worst_norm, worst_name) = (relative, name.clone());
            }
        }
        eprintln!("{threads} thread(s): largest relative difference of a parameter's change norm {worst_norm:.2e} ({worst_name})");
        assert!(worst_norm < 1e-4, "{threads} thread(s): {worst_name}'s change differs from transformers' by {worst_norm:.2e} (relative norm)");
        let mut worst_element = 0.0f64;
        for (key, want) in expected.iter().filter_map(|(k, v)| k.strip_prefix("delta.").map(|n| (n, v))).filter(|(n, _)| !gradient_is_noise(n)) {
            let diff = (delta(key) - want).norm().double_value(&[]) / want.norm().double_value(&[]);
            assert!(diff < 1e-4, "{threads} thread(s): {key}'s change differs from transformers' by {diff:.2e} (relative)");
            worst_element = worst_element.max(diff);
        }
        eprintln!("{threads} thread(s): the change vectors of the head and of layer 5's and the embeddings' biases and LayerNorms within {worst_element:.2e} (relative L2)");
    }
}
