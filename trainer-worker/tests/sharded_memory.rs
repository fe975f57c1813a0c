//! Memory of fully sharded training on c10d (Gloo, CPU): a random-weight model of
//! XLM-R large's shape (24 layers of 1024, the real 250,002-piece vocabulary: 560 M
//! parameters) trains two steps as one process and as 2 and 4 ranks. Each rank's
//! resident memory for the model's state while training (peak RSS during the first
//! epoch minus RSS before loading) is about 1/N of the one process's, and the device
//! plan's per-rank estimate is within 15% of what each rank measured.
//!
//! Its own test binary: the runs take most of the machine's memory and cores.

use std::path::{Path, PathBuf};
use std::process::Command;

use absa_trainer::checkpoint::{copy_tokenizer_files, write_safetensors};
use absa_trainer::distributed::Sharding;
use absa_trainer::model::{EncoderConfig, Pooling, TdBertModel};
use absa_trainer::plan::{self, ModelShape, Precision};
use serde_json::{json, Value};
use tch::{nn, Device};

const BIN: &str = env!("CARGO_BIN_EXE_absa-trainer");
const MIB: f64 = (1u64 << 20) as f64;

fn shared() -> PathBuf {
    absa_domain::reference::shared_dir().unwrap_or_else(|e| panic!("{e}"))
}

/// A base checkpoint (no head) of XLM-R large's shape with random weights and the
/// XLM-R tokenizer.
fn random_xlmr_large(dir: &Path) -> PathBuf {
    let out = dir.join("xlmr-large-random");
    std::fs::create_dir_all(&out).unwrap();
    let shape = EncoderConfig::xlm_roberta("large").unwrap();
    let config = json!({
        "model_type": "xlm-roberta", "architectures": ["XLMRobertaForMaskedLM"], "vocab_size": shape.vocab_size,
        "hidden_size": shape.hidden_size, "num_hidden_layers": shape.num_hidden_layers, "num_attention_heads": shape.num_attention_heads,
        "intermediate_size": shape.intermediate_size, "hidden_act": "gelu", "max_position_embeddings": shape.max_position_embeddings,
        "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    });
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    TdBertModel::new(&vs.root(), EncoderConfig::from_file(&out.join("config.json")).unwrap(), 3, Pooling::Max).unwrap();
    let encoder = vs.variables().into_iter().filter(|(n, _)| !n.starts_with("classifier.")).collect();
    write_safetensors(&encoder, &out.join("model.safetensors")).unwrap();
    copy_tokenizer_files(&shared().join("models/xlmr-tokenizer"), &out).unwrap();
    out
}

fn slice(skip: usize, n: usize, to: &Path) -> String {
    let text = std::fs::read_to_string(shared().join("data/semeval14_laptops/train.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().skip(skip).take(n).collect();
    std::fs::write(to, lines.join("\n") + "\n").unwrap();
    to.display().to_string()
}

/// Runs `args` (after `launch ... --` for `ranks` > 1) and returns its summary.
fn run(ranks: usize, args: &[String]) -> Value {
    let mut command = Command::new(BIN);
    if ranks > 1 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        command.args(["launch", "--nproc-per-node", &ranks.to_string(), "--master-port", &port.to_string(), "--"]);
    }
    let output = command.args(args).output().unwrap();
    assert!(output.status.success(), "{ranks} rank(s): {}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(String::from_utf8_lossy(&output.stdout).lines().last().expect("a summary")).unwrap()
}

/// Each rank's model-state memory in MiB: peak RSS while training minus RSS before loading.
fn model_state(summary: &Value) -> Vec<f64> {
    let before = summary["rank_rss_before_model_mib"].as_array().unwrap();
    let peak = summary["rank_training_peak_rss_mib"].as_array().unwrap();
    before.iter().zip(peak).map(|(b, p)| p.as_f64().unwrap() - b.as_f64().unwrap()).collect()
}

#[ignore = "slow: trains models for minutes (scripts/test.sh runs it after the fast tier)"]
#[test]
fn fully_sharded_ranks_each_hold_about_one_nth_of_the_model_state_as_the_plan_says() {
    let dir = std::env::temp_dir().join(format!("absa-sharded-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = random_xlmr_large(&dir);
    let (train, validation) = (slice(0, 16, &dir.join("train.jsonl")), slice(1000, 4, &dir.join("validation.jsonl")));
    const BATCH: u64 = 8;
    const LENGTH: u64 = 32;
    let args = |out: &str, threads: usize, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "train",
            "--base",
            &base.display().to_string(),
            "--train",
            &train,
            "--validation",
            &validation,
            "--out",
            &dir.join(out).display().to_string(),
            "--epochs",
            "1",
            "--batch-size",
            &BATCH.to_string(),
            "--max-length",
            &LENGTH.to_string(),
            "--padding",
            "fixed",
            "--lr",
            "1e-5",
            "--warmup-steps",
            "0",
            "--threads",
            &threads.to_string(),
            "--batch-threads",
            "1",
            "--device",
            "cpu",
            // The plan below is fp32's (auto trains bf16 on CPUs with AMX or AVX-512 BF16).
            "--precision",
            "fp32",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let single = model_state(&run(1, &args("single", 2, &[])))[0];
    std::fs::remove_dir_all(dir.join("single")).unwrap();
    let shape = ModelShape::from_config(&EncoderConfig::from_file(&base.join("config.json")).unwrap(), 3).unwrap();
    let one_process = plan::per_rank(&shape, BATCH, LENGTH, Precision::Fp32, 1, Sharding::NoShard, false, 0).total() as f64 / MIB;
    eprintln!("one process: model state {single:.0} MiB (plan {one_process:.0} MiB, {:+.1}%)", 100.0 * (one_process - single) / single);
    assert!((one_process - single).abs() / single < 0.15, "one process: plan {one_process:.0} MiB, measured {single:.0} MiB");
    for ranks in [2usize, 4] {
        let name = format!("ranks-{ranks}");
        let measured = model_state(&run(ranks, &args(&name, 1, &["--sharding", "full-shard"])));
        std::fs::remove_dir_all(dir.join(&name)).unwrap();
        let estimate = plan::per_rank(&shape, BATCH, LENGTH, Precision::Fp32, ranks as u64, Sharding::FullShard, false, 0).total() as f64 / MIB;
        for (rank, state) in measured.iter().enumerate() {
            let share = state / single;
            eprintln!(
                "{ranks} ranks, full shard, rank {rank}: model state {state:.0} MiB = {share:.3} of one process's (1/{ranks} = {:.3}); plan {estimate:.0} MiB ({:+.1}%)",
                1.0 / ranks as f64,
                100.0 * (estimate - state) / state
            );
            assert!((estimate - state).abs() / state < 0.15, "{ranks} ranks, rank {rank}: plan {estimate:.0} MiB, measured {state:.0} MiB");
            assert!((share - 1.0 / ranks as f64).abs() < SHARE_MARGIN, "{ranks} ranks, rank {rank}: {share:.3} of one process's state");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// How far a rank's share of one process's model state may be from 1/N: the gathered
/// layers, their gradients in flight and the activations are not divided. Measured:
/// 0.465 and 0.470 with 2 ranks, 0.255 to 0.268 with 4 (the plan within 4.6%).
const SHARE_MARGIN: f64 = 0.05;
