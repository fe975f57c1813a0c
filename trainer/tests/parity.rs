//! Our TD-BERT forward pass equals Hugging Face transformers' in eval mode (fp32, CPU)
//! for BERT, XLM-R and XLM-R XL (small random-weight models) and the real
//! all-MiniLM-L6-v2, also when the last layer runs at the aspect tokens only (the
//! training path). Fixtures: scripts/fixtures/make_models.py and
//! make_minilm_expected.py.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use absa_domain::{AspectEncoder, AspectSpan, LabelSet};
use absa_trainer::checkpoint::{self, LoadOptions};
use absa_trainer::model::Pooling;
use tch::{Device, Tensor};

const TOLERANCE: f64 = 1e-5;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn shared() -> PathBuf {
    absa_domain::reference::shared_dir().unwrap_or_else(|e| panic!("{e}"))
}

fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

fn assert_close(name: &str, ours: &Tensor, theirs: &Tensor) {
    assert_eq!(ours.size(), theirs.size(), "{name} shape");
    let diff = (ours - theirs).abs().max().double_value(&[]);
    eprintln!("{name}: max abs difference {diff:e}");
    assert!(diff <= TOLERANCE, "{name}: max abs difference {diff:e} > {TOLERANCE:e}");
}

/// Hidden states at attended positions. Padded positions are never read (pooling masks
/// them out) and differ by ~5e-5 even between transformers' own eager and SDPA
/// attention on MiniLM, so they are not compared.
fn assert_close_attended(name: &str, ours: &Tensor, theirs: &Tensor, attention_mask: &Tensor) {
    let keep = attention_mask.unsqueeze(-1).to_kind(tch::Kind::Float);
    assert_close(name, &(ours * &keep), &(theirs * &keep));
}

fn check_tiny(model: &str) {
    let dir = fixtures().join("models").join(model);
    let expected = read(&dir.join("expected.safetensors"));
    let mut loaded = checkpoint::load(&dir, &LoadOptions::default(), Device::Cpu).unwrap();
    assert!(loaded.report.initialised.is_empty(), "{model}: head should load: {:?}", loaded.report);
    assert!(loaded.report.unexpected.is_empty(), "{model}: {:?}", loaded.report.unexpected);
    assert_eq!(loaded.labels, LabelSet::sentiment());
    let (ids, att, asp) = (&expected["input_ids"], &expected["attention_mask"], &expected["aspect_mask"]);
    for (pooling, suffix) in [(Pooling::Max, "max"), (Pooling::Mean, "mean")] {
        loaded.model.pooling = pooling;
        let out = tch::no_grad(|| loaded.model.forward_t(ids, att, asp, false));
        assert_close_attended(&format!("{model} last_hidden_state"), &out.last_hidden_state, &expected["last_hidden_state"], att);
        assert_close(&format!("{model} pooled_{suffix}"), &out.pooled, &expected[&format!("pooled_{suffix}")]);
        assert_close(&format!("{model} logits_{suffix}"), &out.logits, &expected[&format!("logits_{suffix}")]);
        let aspect_only = tch::no_grad(|| loaded.model.logits_t(ids, att, asp, false));
        assert_close(&format!("{model} logits_{suffix}, last layer at aspect tokens only"), &aspect_only, &expected[&format!("logits_{suffix}")]);
    }
}

#[test]
fn bert_matches_transformers() {
    check_tiny("bert_tiny");
}

#[test]
fn xlm_roberta_matches_transformers() {
    check_tiny("xlmr_tiny");
}

#[test]
fn xlm_roberta_xl_from_sharded_safetensors_matches_transformers() {
    check_tiny("xlmr_xl_tiny");
}

#[test]
fn all_minilm_l6_v2_matches_transformers_with_our_tokenization() {
    let fixture = fixtures().join("minilm_expected.safetensors");
    let expected = read(&fixture);
    let model_dir = shared().join("models/all-minilm-l6-v2");

    // Inputs: our encoder gives the same ids and masks as transformers' tokenizer.
    let bytes = std::fs::read(&fixture).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let inputs: serde_json::Value = serde_json::from_str(&meta.metadata().as_ref().unwrap()["inputs"]).unwrap();
    let encoder = AspectEncoder::from_file(&model_dir.join("tokenizer.json"), 100).unwrap();
    let ids: Vec<Vec<i64>> = Vec::try_from(&expected["input_ids"]).unwrap();
    let att: Vec<Vec<i64>> = Vec::try_from(&expected["attention_mask"]).unwrap();
    let asp: Vec<Vec<i64>> = Vec::try_from(&expected["aspect_mask"]).unwrap();
    for (i, case) in inputs.as_array().unwrap().iter().enumerate() {
        let text = case["text"].as_str().unwrap();
        let span = AspectSpan::parse(text, case["aspect"].as_str(), case["start"].as_u64().unwrap() as usize, case["end"].as_u64().unwrap() as usize).unwrap();
        let enc = encoder.encode(text, span).unwrap();
        let n = enc.len();
        assert_eq!(enc.input_ids, ids[i][..n], "row {i} ids");
        assert!(att[i][..n].iter().all(|&a| a == 1) && att[i][n..].iter().all(|&a| a == 0), "row {i} length");
        let mask: Vec<i64> = enc.aspect_mask.iter().map(|&m| m as i64).collect();
        assert_eq!(mask, asp[i][..n], "row {i} aspect mask");
    }

    // A base checkpoint has no head: it is initialised, then set to the fixture's.
    let options = LoadOptions { labels: Some(LabelSet::sentiment()), pooling: None, input: None };
    let mut loaded = checkpoint::load(&model_dir, &options, Device::Cpu).unwrap();
    assert_eq!(loaded.report.initialised, vec!["classifier.bias", "classifier.weight"]);
    assert!(loaded.report.unexpected.is_empty(), "{:?}", loaded.report.unexpected);
    let mut vars = loaded.vs.variables();
    tch::no_grad(|| {
        vars.get_mut("classifier.weight").unwrap().copy_(&expected["classifier.weight"]);
        vars.get_mut("classifier.bias").unwrap().copy_(&expected["classifier.bias"]);
    });
    let (ids, att, asp) = (&expected["input_ids"], &expected["attention_mask"], &expected["aspect_mask"]);
    for (pooling, suffix) in [(Pooling::Max, "max"), (Pooling::Mean, "mean")] {
        loaded.model.pooling = pooling;
        let out = tch::no_grad(|| loaded.model.forward_t(ids, att, asp, false));
        assert_close_attended("minilm last_hidden_state", &out.last_hidden_state, &expected["last_hidden_state"], att);
        assert_close(&format!("minilm pooled_{suffix}"), &out.pooled, &expected[&format!("pooled_{suffix}")]);
        assert_close(&format!("minilm logits_{suffix}"), &out.logits, &expected[&format!("logits_{suffix}")]);
        let aspect_only = tch::no_grad(|| loaded.model.logits_t(ids, att, asp, false));
        assert_close(&format!("minilm logits_{suffix}, last layer at aspect tokens only"), &aspect_only, &expected[&format!("logits_{suffix}")]);
    }
}
