//! Checkpoint directories: errors name what is wrong; what we write loads back (here
//! and, when a Python with transformers is available, in transformers).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use absa_domain::LabelSet;
use absa_trainer::checkpoint::{self, write_safetensors, LoadOptions};
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("absa-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_config(from: &Path, to: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(from.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(to.join("config.json"), config.to_string()).unwrap();
}

#[test]
fn an_unknown_architecture_names_the_supported_ones() {
    let dir = temp_dir("unknown-arch");
    copy_config(&fixtures().join("models/bert_tiny"), &dir, |c| {
        c["model_type"] = "distilbert".into();
        c["architectures"] = serde_json::json!(["DistilBertModel"]);
    });
    let err = checkpoint::load(&dir, &LoadOptions::default(), Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("\"distilbert\"") && err.contains("DistilBertModel"), "{err}");
    assert!(err.contains("bert, roberta, xlm-roberta, xlm-roberta-xl"), "{err}");
}

#[test]
fn a_directory_without_weights_says_which_files_it_needs() {
    let dir = temp_dir("no-weights");
    copy_config(&fixtures().join("models/bert_tiny"), &dir, |_| {});
    let err = checkpoint::load(&dir, &LoadOptions::default(), Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("model.safetensors.index.json"), "{err}");
}

#[test]
fn missing_encoder_weights_are_named_and_unexpected_ones_reported() {
    let src = fixtures().join("models/bert_tiny");
    let dir = temp_dir("missing");
    copy_config(&src, &dir, |_| {});
    let mut tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(src.join("model.safetensors")).unwrap().into_iter().collect();
    tensors.remove("bert.encoder.layer.1.output.dense.weight");
    tensors.insert("bert.something.extra".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu)));
    write_safetensors(&tensors, &dir.join("model.safetensors")).unwrap();
    let err = checkpoint::load(&dir, &LoadOptions::default(), Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("bert.encoder.layer.1.output.dense.weight"), "{err}");

    tensors.insert(
        "bert.encoder.layer.1.output.dense.weight".into(),
        Tensor::read_safetensors(src.join("model.safetensors")).unwrap().into_iter().find(|(n, _)| n == "bert.encoder.layer.1.output.dense.weight").unwrap().1,
    );
    write_safetensors(&tensors, &dir.join("model.safetensors")).unwrap();
    let loaded = checkpoint::load(&dir, &LoadOptions::default(), Device::Cpu).unwrap();
    assert_eq!(loaded.report.unexpected, vec!["bert.something.extra"]);
}

#[test]
fn other_labels_start_a_fresh_head_and_a_base_model_needs_labels() {
    let dir = fixtures().join("models/xlmr_tiny");
    let loaded = checkpoint::load(&dir, &LoadOptions { labels: Some(LabelSet::stance()), pooling: None, input: None }, Device::Cpu).unwrap();
    assert_eq!(loaded.report.initialised.len(), 4, "{:?}", loaded.report);
    assert_eq!(loaded.labels, LabelSet::stance());
}

/// Forward pass on the fixture inputs, returning (inputs, logits).
fn logits_of(loaded: &checkpoint::LoadedModel, expected: &BTreeMap<String, Tensor>) -> Tensor {
    tch::no_grad(|| loaded.model.forward_t(&expected["input_ids"], &expected["attention_mask"], &expected["aspect_mask"], false).logits)
}

fn round_trip(model: &str, labels: LabelSet) {
    let src = fixtures().join("models").join(model);
    let expected: BTreeMap<String, Tensor> = Tensor::read_safetensors(src.join("expected.safetensors")).unwrap().into_iter().collect();
    let loaded = checkpoint::load(&src, &LoadOptions { labels: Some(labels.clone()), pooling: None, input: None }, Device::Cpu).unwrap();
    let ours = logits_of(&loaded, &expected);
    let out = temp_dir(&format!("saved-{model}"));
    loaded.save(&out, None).unwrap();

    let again = checkpoint::load(&out, &LoadOptions::default(), Device::Cpu).unwrap();
    assert!(again.report.initialised.is_empty() && again.report.unexpected.is_empty(), "{:?}", again.report);
    assert_eq!(again.labels, labels);
    let reloaded = logits_of(&again, &expected);
    assert_eq!(Vec::<f32>::try_from(ours.flatten(0, -1)).unwrap(), Vec::<f32>::try_from(reloaded.flatten(0, -1)).unwrap(), "bitwise after reload");

    check_in_transformers(model, &out, &expected, ours);
}

/// transformers loads the checkpoint in `out` as *ForSequenceClassification with
/// nothing missing, and its encoder plus our pooling and head give our logits `ours`
/// on the fixture inputs `expected` (when ABSA_PYTHON names a Python with it).
fn check_in_transformers(model: &str, out: &Path, expected: &BTreeMap<String, Tensor>, ours: Tensor) {
    let Some(python) = std::env::var_os("ABSA_PYTHON") else {
        eprintln!("ABSA_PYTHON not set: skipping the transformers check (scripts/test.sh sets it)");
        return;
    };
    let mut check = BTreeMap::new();
    for k in ["input_ids", "attention_mask", "aspect_mask"] {
        check.insert(k.to_string(), expected[k].shallow_clone());
    }
    check.insert("logits".to_string(), ours);
    let inputs = out.join("check_inputs.safetensors");
    Tensor::write_safetensors(&check.iter().map(|(k, v)| (k.as_str(), v)).collect::<Vec<_>>(), &inputs).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fixtures/check_checkpoint.py");
    let output = Command::new(python).arg(&script).arg(out).arg(&inputs).output().expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{model}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("\"missing\": []"), "{stdout}");
}

#[test]
fn a_written_bert_checkpoint_loads_back_and_in_transformers() {
    round_trip("bert_tiny", LabelSet::sentiment());
}

#[test]
fn a_written_xlmr_checkpoint_with_new_labels_loads_back_and_in_transformers() {
    round_trip("xlmr_tiny", LabelSet::stance());
}

#[test]
fn a_written_xlmr_xl_checkpoint_loads_back_and_in_transformers() {
    round_trip("xlmr_xl_tiny", LabelSet::sentiment());
}

/// A checkpoint trained under bf16 (batch threads sharing bf16 weight copies) is the
/// fp32 master weights: every tensor written is F32, it loads back bit for bit, and
/// transformers gives its logits.
#[test]
fn a_checkpoint_trained_under_bf16_is_fp32_and_loads_in_transformers() {
    let src = fixtures().join("models/bert_tiny");
    let expected: BTreeMap<String, Tensor> = Tensor::read_safetensors(src.join("expected.safetensors")).unwrap().into_iter().collect();
    let loaded = checkpoint::load(&src, &LoadOptions { labels: Some(LabelSet::sentiment()), pooling: None, input: None }, Device::Cpu).unwrap();
    let before = logits_of(&loaded, &expected);
    let engine = common::trained_under_bf16(loaded);
    let trained = engine.model();
    let ours = logits_of(trained, &expected);
    assert!((&ours - &before).abs().max().double_value(&[]) > 1e-4, "the bf16 steps moved the logits");
    let out = temp_dir("bf16-trained");
    trained.save(&out, None).unwrap();
    for (name, tensor) in Tensor::read_safetensors(out.join("model.safetensors")).unwrap() {
        assert_eq!(tensor.kind(), Kind::Float, "{name} written as {:?}", tensor.kind());
    }
    let again = checkpoint::load(&out, &LoadOptions::default(), Device::Cpu).unwrap();
    assert!(logits_of(&again, &expected).equal(&ours), "bitwise after reload");
    check_in_transformers("bert_tiny trained under bf16", &out, &expected, ours);
}
