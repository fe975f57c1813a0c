//! The fine-tuning engine on the real all-MiniLM-L6-v2 and slices of laptops:
//! an interrupted run resumes to the same weights, bit for bit; bad rows are reported
//! by line while training goes on; the CLI prints its summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use absa_domain::records::{read_labelled_file, Columns};
use absa_trainer::training::{self, DeviceChoice, LabelledData, Quiet, Recipe, TrainConfig};
use tch::Tensor;

fn shared() -> PathBuf {
    absa_domain::reference::shared_dir().unwrap_or_else(|e| panic!("{e}"))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("absa-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Lines `skip..skip+n` of a laptops split, written to `to`.
fn slice(split: &str, skip: usize, n: usize, to: &Path) -> PathBuf {
    let text = std::fs::read_to_string(shared().join(format!("data/semeval14_laptops/{split}.jsonl"))).unwrap();
    let lines: Vec<&str> = text.lines().skip(skip).take(n).collect();
    std::fs::write(to, lines.join("\n") + "\n").unwrap();
    to.to_path_buf()
}

/// Rows `skip..skip+n` of laptops' train split, in memory.
fn rows(skip: usize, n: usize) -> Vec<absa_domain::LabelledRow> {
    let (rows, errors) = read_labelled_file(&shared().join("data/semeval14_laptops/train.jsonl"), &Columns::default()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    rows[skip..skip + n].to_vec()
}

/// 24 training rows and 8 validation rows, given to the engine as typed rows.
fn small_rows() -> LabelledData {
    LabelledData { train: rows(0, 24), validation: Some(rows(1000, 8)), ..LabelledData::default() }
}

fn small_config(dir: &Path) -> TrainConfig {
    TrainConfig {
        base: shared().join("models/all-minilm-l6-v2"),
        out: dir.join("out"),
        // Bit-for-bit comparisons: the same device for every run, whatever the machine has.
        device: DeviceChoice::Cpu,
        recipe: Recipe { learning_rate: 5e-5, warmup_steps: 2, batch_size: 8, epochs: 2, early_stopping_patience: 10, ..Recipe::default() },
        ..TrainConfig::default()
    }
}

/// libtorch's random generator (dropout) is process-global: in-process runs take turns
/// so one run's masks do not depend on another's.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    Tensor::read_safetensors(path).unwrap().into_iter().map(|(k, t)| (k, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())).collect()
}

#[test]
fn a_run_stopped_after_an_epoch_and_resumed_ends_with_the_same_weights_bitwise() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let straight_dir = temp_dir("straight");
    let straight = training::train(&small_config(&straight_dir), &small_rows(), &mut Quiet).unwrap();
    assert_eq!((straight.epochs_run, straight.finished), (2, true));

    let resumed_dir = temp_dir("resumed");
    let mut config = small_config(&resumed_dir);
    config.stop_after_epoch = Some(1);
    let paused = training::train(&config, &small_rows(), &mut Quiet).unwrap();
    assert_eq!((paused.epochs_run, paused.finished), (1, false));
    config.stop_after_epoch = None;
    config.resume = true;
    let resumed = training::train(&config, &small_rows(), &mut Quiet).unwrap();
    assert_eq!((resumed.epochs_run, resumed.finished), (2, true));

    for file in ["model.safetensors", "optimizer.safetensors"] {
        let a = tensors(&straight_dir.join("out/checkpoint-last").join(file));
        let b = tensors(&resumed_dir.join("out/checkpoint-last").join(file));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (name, values) in &a {
            assert!(values == &b[name], "{file}: {name} differs after resume");
        }
    }
    assert_eq!(straight.best_epoch, resumed.best_epoch);
    assert_eq!(straight.validation_loss, resumed.validation_loss);
    let metrics = std::fs::read_to_string(resumed_dir.join("out/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "one metrics line per epoch across both runs");
}

#[test]
fn resuming_with_other_rows_or_hyperparameters_is_refused() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("mismatch");
    let mut config = small_config(&dir);
    config.stop_after_epoch = Some(1);
    training::train(&config, &small_rows(), &mut Quiet).unwrap();
    config.resume = true;
    config.stop_after_epoch = None;
    let mut other_rows = small_rows();
    let label = &mut other_rows.train[3].label;
    *label = if label == "neutral" { "positive" } else { "neutral" }.into();
    let err = training::train(&config, &other_rows, &mut Quiet).unwrap_err().to_string();
    assert!(err.contains("cannot resume") && err.contains("other data"), "one label changed: {err}");
    config.recipe.learning_rate = 1e-4;
    let err = training::train(&config, &small_rows(), &mut Quiet).unwrap_err().to_string();
    assert!(err.contains("cannot resume") && err.contains("hyperparameters"), "{err}");
}

#[test]
fn bad_rows_are_reported_by_line_and_training_goes_on_via_the_cli() {
    let dir = temp_dir("bad-rows");
    let train = slice("train", 0, 30, &dir.join("train.jsonl"));
    let mut text = std::fs::read_to_string(&train).unwrap();
    text.push_str(concat!(
        r#"{"text":"the screen is great","aspect":"screen","start":4,"end":10}"#,
        "\n", // line 31: no label
        r#"{"text":"the screen is great","aspect":"screen","start":0,"end":3,"label":"positive"}"#,
        "\n", // 32: span/aspect mismatch
        r#"{"text":"","aspect":"x","start":0,"end":1,"label":"neutral"}"#,
        "\n", // 33: empty text
        r#"{"text":"fan ok","aspect":"fan","start":0,"end":30,"label":"neutral"}"#,
        "\n", // 34: span outside the text
    ));
    std::fs::write(&train, text).unwrap();
    let mut test = std::fs::read_to_string(slice("test", 0, 10, &dir.join("test.jsonl"))).unwrap();
    test.push_str(r#"{"text":"the keys","aspect":"keys","start":4,"end":8,"label":"furious"}"#); // line 11: unknown label
    std::fs::write(dir.join("test.jsonl"), test).unwrap();

    let base = shared().join("models/all-minilm-l6-v2");
    let output = Command::new(env!("CARGO_BIN_EXE_absa-trainer"))
        .args(["train", "--epochs", "1", "--batch-size", "8", "--validation-fraction", "0.2", "--lr", "5e-5"])
        .arg("--base")
        .arg(&base)
        .arg("--train")
        .arg(&train)
        .arg("--test")
        .arg(dir.join("test.jsonl"))
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["rows_rejected"]["train"], 4);
    assert_eq!(summary["rows_rejected"]["test"], 1);
    assert_eq!(summary["train_rows"].as_u64().unwrap() + summary["validation_rows"].as_u64().unwrap(), 30);
    assert_eq!(summary["test_rows"], 10);
    // A share of the 10 test rows: a multiple of 0.1 in [0, 1].
    let test_accuracy = summary["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&test_accuracy) && (test_accuracy * 10.0 - (test_accuracy * 10.0).round()).abs() < 1e-9, "test accuracy {test_accuracy}");
    for key in
        ["epochs_run", "best_epoch", "validation_accuracy", "validation_macro_f1", "test_macro_f1", "train_samples_per_second", "wall_seconds", "peak_rss_mib"]
    {
        assert!(!summary[key].is_null(), "summary lacks {key}: {summary}");
    }
    let rejected = std::fs::read_to_string(dir.join("out/rejected_rows.txt")).unwrap();
    for needle in [
        "train.jsonl:line 31: missing field \"label\"",
        "train.jsonl:line 32:",
        "line 33: empty text",
        "line 34: span 0..30 lies outside",
        "test.jsonl:line 11: unknown label \"furious\"",
    ] {
        assert!(rejected.contains(needle), "{needle} not in:\n{rejected}");
    }
    // Only the best and the last checkpoint are kept.
    let mut kept: Vec<String> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint"))
        .collect();
    kept.sort();
    assert_eq!(kept, vec!["checkpoint-best", "checkpoint-last"]);
}

/// all-MiniLM-L6-v2 with dropout off (the files linked, `config.json` edited): runs
/// that split the batch across replicas can then match one model's run.
fn minilm_without_dropout(dir: &Path) -> PathBuf {
    let source = shared().join("models/all-minilm-l6-v2");
    let base = dir.join("minilm-no-dropout");
    std::fs::create_dir_all(&base).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "config.json" {
            std::os::unix::fs::symlink(entry.path(), base.join(entry.file_name())).unwrap();
        }
    }
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(source.join("config.json")).unwrap()).unwrap();
    config["hidden_dropout_prob"] = 0.0.into();
    config["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(base.join("config.json"), config.to_string()).unwrap();
    base
}

#[test]
fn optimizer_offload_trains_like_the_plain_optimizer() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("offload");
    let base = minilm_without_dropout(&dir);
    let run = |name: &str, offload_optimizer: bool| {
        let mut config = small_config(&dir.join(name));
        config.base = base.clone();
        config.recipe.offload_optimizer = offload_optimizer;
        let summary = training::train(&config, &small_rows(), &mut Quiet).unwrap();
        (summary, tensors(&config.out.join("checkpoint-last/model.safetensors")))
    };
    for name in ["plain", "offload"] {
        std::fs::create_dir_all(dir.join(name)).unwrap();
    }
    let (plain, plain_weights) = run("plain", false);
    let (offload, offload_weights) = run("offload", true);
    assert_eq!(offload_weights.len(), plain_weights.len());
    let d = plain_weights.iter().map(|(k, a)| a.iter().zip(&offload_weights[k]).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max)).fold(0.0f32, f32::max);
    eprintln!("after 2 epochs (6 steps): offloaded AdamW differs by {d:e}; validation loss {:.6} / {:.6}", plain.validation_loss, offload.validation_loss);
    // AdamW's moments staged through CPU copies: the same arithmetic.
    assert_eq!(d, 0.0, "offloaded moments: the same update");
    assert_eq!(plain.validation_loss, offload.validation_loss);
    std::fs::remove_dir_all(&dir).unwrap();
}
