//! Training as several ranks on c10d (Gloo on the CPU), started by `absa-trainer
//! launch` as separate processes: all-MiniLM-L6-v2 with dropout off, from one saved
//! head, on 48 laptops rows in batches of 8 (6 AdamW steps).
//! - 2 and 4 ranks, unsharded (DDP), ShardGradOp and fully sharded, end with the
//!   parameters of one process trained on the whole batches;
//! - two launchers on this host as two nodes (node ranks 0 and 1) do too, and so do 2
//!   fully sharded ranks loading a sharded Hugging Face checkpoint (two safetensors files
//!   and their index) of XLM-R XL's layout with the XLM-R tokenizer's vocabulary;
//! - a fully sharded run with dropout stopped after its first epoch and resumed from
//!   its shard files ends bit for bit where an uninterrupted one does;
//! - ranks that cannot train (a missing file) end the launcher with the permanent
//!   failure's exit code and each rank's reason beside the output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use absa_domain::LabelSet;
use absa_trainer::checkpoint::{self, LoadOptions};
use absa_trainer::model::Pooling;
use tch::{Device, Tensor};

const BIN: &str = env!("CARGO_BIN_EXE_absa-trainer");

fn shared() -> PathBuf {
    absa_domain::reference::shared_dir().unwrap_or_else(|e| panic!("{e}"))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("absa-ranks-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// all-MiniLM-L6-v2 with a head drawn once (seed 7) and saved, dropout `dropout`:
/// every run starts from these weights.
fn base(dir: &Path, dropout: f64) -> PathBuf {
    let labels = LabelSet::new(vec!["negative".into(), "neutral".into(), "positive".into()]).unwrap();
    tch::manual_seed(7);
    let minilm = shared().join("models/all-minilm-l6-v2");
    let model = checkpoint::load(&minilm, &LoadOptions { labels: Some(labels), pooling: Some(Pooling::Max), input: None }, Device::Cpu).unwrap();
    let out = dir.join("base");
    model.save(&out, Some(&minilm)).unwrap();
    let path = out.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["hidden_dropout_prob"] = dropout.into();
    config["attention_probs_dropout_prob"] = dropout.into();
    std::fs::write(&path, config.to_string()).unwrap();
    out
}

/// A random-weight model of XLM-R XL's layout (pre-LayerNorm layers, the final
/// LayerNorm, 2 layers of 32, the XLM-R tokenizer's 250,002 pieces, a head) saved as a
/// sharded Hugging Face checkpoint: two safetensors files and their index.
fn sharded_xl_base(dir: &Path) -> PathBuf {
    let out = dir.join("xl-sharded");
    std::fs::create_dir_all(&out).unwrap();
    let config = serde_json::json!({
        "model_type": "xlm-roberta-xl", "architectures": ["XLMRobertaXLForSequenceClassification"], "vocab_size": 250002,
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "hidden_act": "gelu",
        "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "id2label": {"0": "negative", "1": "neutral", "2": "positive"}, "label2id": {"negative": 0, "neutral": 1, "positive": 2},
    });
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    tch::manual_seed(11);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let model_config = absa_trainer::model::EncoderConfig::from_file(&out.join("config.json")).unwrap();
    absa_trainer::model::TdBertModel::new(&vs.root(), model_config, 3, Pooling::Max).unwrap();
    let (mut first, mut second, mut weight_map) = (BTreeMap::new(), BTreeMap::new(), serde_json::Map::new());
    for (name, t) in vs.variables() {
        let file = if name.contains("encoder.layer.1.") || name.starts_with("classifier.") {
            "model-00002-of-00002.safetensors"
        } else {
            "model-00001-of-00002.safetensors"
        };
        weight_map.insert(name.clone(), file.into());
        if file.starts_with("model-00001") {
            first.insert(name, t)
        } else {
            second.insert(name, t)
        };
    }
    checkpoint::write_safetensors(&first, &out.join("model-00001-of-00002.safetensors")).unwrap();
    checkpoint::write_safetensors(&second, &out.join("model-00002-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(out.join("model.safetensors.index.json"), index.to_string()).unwrap();
    checkpoint::copy_tokenizer_files(&shared().join("models/xlmr-tokenizer"), &out).unwrap();
    out
}

/// Lines `skip..skip+n` of laptops train, written to `to`.
fn slice(skip: usize, n: usize, to: &Path) -> PathBuf {
    let text = std::fs::read_to_string(shared().join("data/semeval14_laptops/train.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().skip(skip).take(n).collect();
    std::fs::write(to, lines.join("\n") + "\n").unwrap();
    to.to_path_buf()
}

/// `train` arguments: 48 rows in batches of 8, `epochs` epochs, one thread.
fn train_args(dir: &Path, base: &Path, out: &str, epochs: usize, extra: &[&str]) -> Vec<String> {
    let train = slice(0, 48, &dir.join("train.jsonl"));
    let validation = slice(1000, 16, &dir.join("validation.jsonl"));
    let mut args: Vec<String> = [
        "train",
        "--base",
        &base.display().to_string(),
        "--train",
        &train.display().to_string(),
        "--validation",
        &validation.display().to_string(),
        "--out",
        &dir.join(out).display().to_string(),
        "--epochs",
        &epochs.to_string(),
        "--batch-size",
        "8",
        "--lr",
        "5e-5",
        "--warmup-steps",
        "2",
        "--patience",
        "10",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--collective-timeout-secs",
        "120",
        // fp32 on every CPU: the ranks must end at one process's parameters within
        // fp32 tolerances (auto trains bf16 on CPUs with AMX or AVX-512 BF16).
        "--precision",
        "fp32",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn check(output: Output, what: &str) -> Output {
    assert!(output.status.success(), "{what}: {}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    output
}

/// `ranks` ranks of `args` through one launcher.
fn launch(ranks: usize, args: &[String]) -> Output {
    let port = free_port().to_string();
    let mut command = Command::new(BIN);
    command.args(["launch", "--nproc-per-node", &ranks.to_string(), "--master-port", &port, "--"]).args(args);
    check(command.output().unwrap(), &format!("{ranks} ranks"))
}

fn weights(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_iter().collect()
}

/// Measured after 6 steps (libtorch 2.11): each parameter's change within 8.5e-5 of one
/// process's (relative L2), elements within 9.6e-7 (weights move up to 5e-5 a step),
/// over every rank count and sharding here. That is the engine's own noise floor: one
/// process with 2 batch threads instead of 1 lands 8.8e-5 / 9.6e-7 from it, with 2
/// intra-op threads 1.2e-4 / 1.6e-6. Summing the same gradients in another order changes their
/// last bits, and AdamW, dividing each gradient by its own running size, turns that
/// into small steps where a gradient is near zero.
const RELATIVE_TOLERANCE: f64 = 2e-4;
const ELEMENT_TOLERANCE: f64 = 4e-6;

/// A key bias adds the same amount to every score of a query, which the softmax
/// ignores: its gradient is zero but for rounding, and AdamW, dividing by the
/// gradient's own size, turns that rounding into steps of either sign (as between our
/// engine and transformers, see `trajectory.rs`).
fn gradient_is_noise(name: &str) -> bool {
    name.ends_with("attention.self.key.bias")
}

/// How far two runs' parameters are apart (key biases aside): the largest difference
/// of one parameter's change, relative (L2) to the change itself (as `trajectory.rs`
/// compares ours with transformers), with its name; and the largest element difference.
fn difference(a: &Path, b: &Path, start: &Path) -> (f64, f64, String) {
    let (a, b, start) = (weights(a), weights(b), weights(start));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "the same tensors");
    let (mut relative, mut absolute, mut worst) = (0.0f64, 0.0f64, String::new());
    for (name, x) in a.iter().filter(|(n, _)| !gradient_is_noise(n)) {
        let change = (x - &start[name]).norm().double_value(&[]);
        let d = (x - &b[name]).norm().double_value(&[]) / change.max(1e-30);
        absolute = absolute.max((x - &b[name]).abs().max().double_value(&[]));
        if d > relative {
            (relative, worst) = (d, name.clone());
        }
    }
    (relative, absolute, worst)
}

fn summary(output: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.lines().last().expect("a summary line")).unwrap()
}

#[test]
fn ranks_train_like_one_process_on_the_whole_batch() {
    let dir = temp_dir("equal");
    let base = base(&dir, 0.0);
    let single_args = train_args(&dir, &base, "single", 1, &["--batch-threads", "1"]);
    let single = check(Command::new(BIN).args(&single_args).output().unwrap(), "one process");
    let single = summary(&single);
    let reference = dir.join("single/checkpoint-best/model.safetensors");
    let start = base.join("model.safetensors");
    for (ranks, sharding) in [(2, "no-shard"), (2, "shard-grad-op"), (2, "full-shard"), (4, "no-shard"), (4, "full-shard")] {
        let name = format!("{ranks}-{sharding}");
        let out = launch(ranks, &train_args(&dir, &base, &name, 1, &["--sharding", sharding]));
        let ranked = summary(&out);
        assert_eq!(ranked["world_size"], ranks, "{name}: {ranked}");
        let (relative, absolute, worst) = difference(&dir.join(&name).join("checkpoint-best/model.safetensors"), &reference, &start);
        let loss = (ranked["validation_loss"].as_f64().unwrap() - single["validation_loss"].as_f64().unwrap()).abs();
        eprintln!("{name}: after 6 steps each parameter's change within {relative:.2e} (relative L2, largest: {worst}) of one process's, elements within {absolute:.2e}; validation loss by {loss:.2e}");
        assert!(relative < RELATIVE_TOLERANCE, "{name}: {worst}'s change differs by {relative:.2e} (relative L2)");
        assert!(absolute < ELEMENT_TOLERANCE, "{name}: parameters differ by {absolute:.2e}");
        assert!(loss < 1e-6, "{name}: validation loss differs by {loss:.2e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_launchers_as_two_nodes_train_like_one_process() {
    let dir = temp_dir("nodes");
    let base = base(&dir, 0.0);
    check(Command::new(BIN).args(train_args(&dir, &base, "single", 1, &["--batch-threads", "1"])).output().unwrap(), "one process");
    let port = free_port().to_string();
    let args = train_args(&dir, &base, "nodes", 1, &["--sharding", "full-shard"]);
    let node = |rank: &str| {
        Command::new(BIN)
            .args(["launch", "--nnodes", "2", "--node-rank", rank, "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", &port, "--"])
            .args(&args)
            .spawn()
            .unwrap()
    };
    let (first, second) = (node("0"), node("1"));
    check(first.wait_with_output().unwrap(), "node 0");
    check(second.wait_with_output().unwrap(), "node 1");
    let (relative, absolute, worst) = difference(
        &dir.join("nodes/checkpoint-best/model.safetensors"),
        &dir.join("single/checkpoint-best/model.safetensors"),
        &base.join("model.safetensors"),
    );
    eprintln!("two nodes: each parameter's change within {relative:.2e} (relative L2, largest: {worst}) of one process's, elements within {absolute:.2e}");
    assert!(absolute < ELEMENT_TOLERANCE && relative < RELATIVE_TOLERANCE, "two nodes differ by {absolute:.2e}, {relative:.2e} relative ({worst})");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fully_sharded_ranks_load_a_sharded_xlm_roberta_xl_checkpoint_and_train_like_one_process() {
    let dir = temp_dir("xl");
    let base = sharded_xl_base(&dir);
    check(Command::new(BIN).args(train_args(&dir, &base, "single", 1, &["--batch-threads", "1"])).output().unwrap(), "one process");
    launch(2, &train_args(&dir, &base, "ranks", 1, &["--sharding", "full-shard"]));
    // The consolidated checkpoint is one file; the start is the sharded one's tensors.
    let start = dir.join("start");
    std::fs::create_dir_all(&start).unwrap();
    let mut all: BTreeMap<String, Tensor> = BTreeMap::new();
    for file in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"] {
        all.extend(weights(&base.join(file)));
    }
    checkpoint::write_safetensors(&all, &start.join("model.safetensors")).unwrap();
    let (relative, absolute, worst) = difference(
        &dir.join("ranks/checkpoint-best/model.safetensors"),
        &dir.join("single/checkpoint-best/model.safetensors"),
        &start.join("model.safetensors"),
    );
    eprintln!("xlm-roberta-xl layout, sharded checkpoint, 2 ranks full shard: each parameter's change within {relative:.2e} (relative L2, largest: {worst}) of one process's, elements within {absolute:.2e}");
    assert!(absolute < ELEMENT_TOLERANCE && relative < RELATIVE_TOLERANCE, "2 ranks differ by {absolute:.2e}, {relative:.2e} relative ({worst})");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sharded_run_resumed_from_its_shards_ends_bitwise_where_an_uninterrupted_one_does() {
    let dir = temp_dir("resume");
    let base = base(&dir, 0.1);
    launch(2, &train_args(&dir, &base, "straight", 2, &["--sharding", "full-shard"]));
    launch(2, &train_args(&dir, &base, "resumed", 2, &["--sharding", "full-shard", "--stop-after-epoch", "1"]));
    let shards: Vec<_> = std::fs::read_dir(dir.join("resumed/checkpoint-last")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(shards.contains(&"shard-00001-of-00002.safetensors".to_string()) && shards.contains(&"sharding.json".to_string()), "{shards:?}");
    launch(2, &train_args(&dir, &base, "resumed", 2, &["--sharding", "full-shard", "--resume"]));
    for file in ["checkpoint-best/model.safetensors", "checkpoint-last/shard-00000-of-00002.safetensors", "checkpoint-last/shard-00001-of-00002.safetensors"] {
        let (a, b) = (weights(&dir.join("straight").join(file)), weights(&dir.join("resumed").join(file)));
        for (name, t) in &a {
            assert!(t.equal(&b[name]), "{file}: {name} differs after the resume");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ranks_that_cannot_train_end_the_launcher_with_their_reason() {
    let dir = temp_dir("bad");
    let base = base(&dir, 0.0);
    let mut args = train_args(&dir, &base, "bad", 1, &["--sharding", "full-shard"]);
    let at = args.iter().position(|a| a == "--train").unwrap() + 1;
    args[at] = dir.join("no-such-file.jsonl").display().to_string();
    let port = free_port().to_string();
    let output = Command::new(BIN).args(["launch", "--nproc-per-node", "2", "--master-port", &port, "--"]).args(&args).output().unwrap();
    assert_eq!(output.status.code(), Some(absa_trainer::distributed::launch::PERMANENT_EXIT_CODE), "{}", String::from_utf8_lossy(&output.stderr));
    let reasons = absa_trainer::distributed::launch::rank_errors(&dir.join("bad"), 2);
    assert!(!reasons.is_empty() && reasons.iter().all(|r| r.contains("no-such-file.jsonl")), "{reasons:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
