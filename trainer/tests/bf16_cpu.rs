//! bf16 mixed precision on the CPU. `--precision auto` picks bf16 exactly where
//! libtorch detects native bf16 (AMX or AVX-512 BF16, as the kernel's CPU flags list
//! them) and fp32 elsewhere. bf16 steps train (the loss falls, with batch threads
//! too) while the weights, their gradients and AdamW's moments stay fp32; a whole run
//! records what it used and what was detected in its summary.

use std::path::{Path, PathBuf};

use absa_trainer::autocast::{self, CpuBf16};
use absa_trainer::checkpoint::{self, LoadOptions, LoadedModel};
use absa_trainer::data_files::DataFiles;
use absa_trainer::plan::Precision;
use absa_trainer::training::data::{collate, Example};
use absa_trainer::training::local::{self, LocalEngine};
use absa_trainer::training::{self, DeviceChoice, Observer, PrecisionChoice, Recipe, TrainConfig};
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> LoadedModel {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name);
    checkpoint::load(&dir, &LoadOptions::default(), Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

#[test]
fn auto_picks_bf16_on_cuda_and_on_cpus_with_native_bf16_only() {
    let none = CpuBf16::default();
    let amx = CpuBf16 { avx512_bf16: true, amx_bf16: true };
    let avx512 = CpuBf16 { avx512_bf16: true, amx_bf16: false };
    assert!(!autocast::bf16_with(PrecisionChoice::Auto, Device::Cpu, none), "no bf16 instructions: fp32");
    assert!(autocast::bf16_with(PrecisionChoice::Auto, Device::Cpu, amx));
    assert!(autocast::bf16_with(PrecisionChoice::Auto, Device::Cpu, avx512));
    assert!(autocast::bf16_with(PrecisionChoice::Auto, Device::Cuda(0), none), "CUDA: bf16 whatever the host CPU");
    assert!(!autocast::bf16_with(PrecisionChoice::Fp32, Device::Cpu, amx));
    assert!(autocast::bf16_with(PrecisionChoice::Bf16, Device::Cpu, none), "asked for: bf16 even where emulated");
    assert_eq!(amx.names(), ["amx_bf16", "avx512_bf16"]);
    assert!(none.names().is_empty());
}

/// libtorch's cpuinfo and the kernel agree on this machine's bf16 instructions, and
/// `auto` follows them.
#[test]
fn detection_matches_the_kernels_cpu_flags() {
    let detected = CpuBf16::detect();
    eprintln!("detected: {:?} ({:?})", detected, detected.names());
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        eprintln!("no /proc/cpuinfo: nothing to compare with");
        return;
    };
    let flags: Vec<&str> = cpuinfo.lines().find(|l| l.starts_with("flags")).map(|l| l.split_whitespace().collect()).unwrap_or_default();
    let has = |flag: &str| flags.contains(&flag);
    assert_eq!(detected.avx512_bf16, has("avx512_bf16"), "flags: {flags:?}");
    assert_eq!(detected.amx_bf16, has("amx_bf16") && has("amx_tile"), "flags: {flags:?}");
    assert_eq!(autocast::bf16_on(PrecisionChoice::Auto, Device::Cpu), has("avx512_bf16") || has("amx_bf16"));
}

/// Rows of 6 to 13 tokens (ids below `vocab`), a two-token aspect, labels 0-2.
fn examples(n: usize, vocab: i64) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let len = 6 + i % 8;
            let input_ids: Vec<i64> = (0..len).map(|j| 5 + ((i * 31 + j * 17) as i64 % (vocab - 5))).collect();
            let aspect_mask = (0..len).map(|j| j == 2 || j == 3).collect();
            Example { input_ids, aspect_mask, token_type_ids: Vec::new(), label: (i % 3) as i64 }
        })
        .collect()
}

/// Eight AdamW steps on one batch under bf16 autocast, the batch whole and split over
/// two threads: the loss falls at every step (the batch is learnt), and every parameter, gradient
/// and moment is still fp32 afterwards. Runs wherever libtorch does (bf16 is emulated
/// where the CPU has no bf16 instructions).
#[test]
fn bf16_steps_lower_the_loss_and_keep_fp32_weights_gradients_and_moments() {
    for threads in [1, 2] {
        let model = fixture("bert_tiny");
        let vocab = model.model.config.vocab_size;
        let batch = examples(12, vocab);
        let rows: Vec<&Example> = batch.iter().collect();
        let mut engine = LocalEngine::new(model, 0.01, false).with_bf16(true).with_batch_threads(threads);
        let losses: Vec<f64> = (0..8)
            .map(|step| {
                let loss = engine.backward(&rows, None, 1, 1, false, step);
                if step == 7 {
                    for (name, t) in engine.model().vs.variables() {
                        assert_eq!(t.grad().kind(), Kind::Float, "{threads} threads: gradient of {name}");
                    }
                }
                engine.step(1e-3, 1.0);
                loss
            })
            .collect();
        eprintln!("{threads} batch thread(s), bf16 losses: {losses:.4?}");
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        // Measured: 1.098 -> 0.894 in steady steps (one thread).
        assert!(losses.windows(2).all(|w| w[1] < w[0]) && losses[7] < 0.9 * losses[0], "{threads} threads: the loss did not fall: {losses:?}");
        for (name, t) in engine.model().vs.variables() {
            assert_eq!(t.kind(), Kind::Float, "weight {name}");
        }
        for (name, t) in engine.optimizer().state_tensors() {
            assert_eq!(t.kind(), Kind::Float, "optimizer state {name}");
        }
    }
}

/// Batch threads under bf16 cast every Linear weight to bf16 once per step and share the
/// copy (`StepWeights`); autocast alone would cast it in each thread and send each
/// thread's gradient back through that cast. Both give the same gradients, bit for bit:
/// here the engine's against each part run under autocast on its own, its fp32
/// gradients summed in part order; the clipping norm agrees to rounding.
#[test]
fn shared_bf16_weight_copies_give_the_gradients_of_autocast_in_each_thread() {
    let reference = fixture("bert_tiny");
    let vocab = reference.model.config.vocab_size;
    let batch = examples(9, vocab);
    let rows: Vec<&Example> = batch.iter().collect();
    let mut names: Vec<String> = reference.vs.variables().into_keys().collect();
    names.sort();
    let variables: Vec<Tensor> = names.iter().map(|n| reference.vs.variables()[n].shallow_clone()).collect();
    let mut expected: Vec<Tensor> = variables.iter().map(|v| v.zeros_like()).collect();
    for part in local::split_rows(rows.len(), 2) {
        let part_rows = &rows[part];
        let batch = collate(part_rows, None, 1, Device::Cpu);
        let loss = training::logits(&reference, &batch, false, true).cross_entropy_for_logits(&batch.labels) * (part_rows.len() as f64 / rows.len() as f64);
        for (sum, grad) in expected.iter_mut().zip(Tensor::run_backward(&[loss], &variables, false, false)) {
            assert_eq!(grad.kind(), Kind::Float, "autocast's gradient of an fp32 weight");
            *sum += grad;
        }
    }
    let mut engine = LocalEngine::new(fixture("bert_tiny"), 0.01, false).with_bf16(true).with_batch_threads(2);
    engine.backward(&rows, None, 1, 1, false, 0);
    let got = engine.model().vs.variables();
    let mut linear_weights = 0;
    for (name, want) in names.iter().zip(&expected) {
        let grad = got[name].grad();
        assert_eq!(grad.kind(), Kind::Float, "{name}");
        let d = (&grad - want).abs().max().double_value(&[]);
        assert_eq!(d, 0.0, "gradient of {name} differs by {d}");
        linear_weights += usize::from(grad.dim() == 2 && !name.contains("embeddings"));
    }
    assert!(linear_weights >= 12, "the fixture's Linear weights were compared ({linear_weights})");
    let want_norm = expected.iter().map(|g| g.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[])).sum::<f64>().sqrt();
    let norm = engine.step(1e-3, 1.0);
    assert!((norm - want_norm).abs() < 1e-9 * want_norm, "clipping norm {norm} vs {want_norm}");
}

fn slice(skip: usize, n: usize, to: &Path) -> PathBuf {
    let shared = absa_domain::reference::shared_dir().unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(shared.join("data/semeval14_laptops/train.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().skip(skip).take(n).collect();
    std::fs::write(to, lines.join("\n") + "\n").unwrap();
    to.to_path_buf()
}

struct Quiet;
impl Observer for Quiet {}

/// A run with the default precision (`auto`) on all-MiniLM-L6-v2: bf16 where this CPU
/// has native bf16, fp32 where it has not, and the summary says which and why.
#[test]
fn a_run_on_auto_records_the_precision_it_used_and_the_cpus_bf16() {
    let dir = std::env::temp_dir().join(format!("absa-bf16-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let shared = absa_domain::reference::shared_dir().unwrap_or_else(|e| panic!("{e}"));
    let rows = DataFiles::new(slice(0, 32, &dir.join("train.jsonl")), Some(slice(1000, 8, &dir.join("validation.jsonl"))), None).read().unwrap();
    let config = TrainConfig {
        base: shared.join("models/all-minilm-l6-v2"),
        out: dir.join("out"),
        device: DeviceChoice::Cpu,
        recipe: Recipe { learning_rate: 5e-5, warmup_steps: 0, batch_size: 8, epochs: 1, ..Recipe::default() },
        ..TrainConfig::default()
    };
    assert_eq!(config.recipe.precision, PrecisionChoice::Auto, "auto is the default");
    let summary = training::train(&config, &rows, &mut Quiet).unwrap();
    let detected = CpuBf16::detect();
    let expected = if detected.supported() { Precision::Bf16Mixed } else { Precision::Fp32 };
    assert_eq!(summary.precision, expected, "detected {detected:?}");
    assert_eq!(summary.cpu_bf16, detected.names());
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("out/summary.json")).unwrap()).unwrap();
    assert_eq!(written["precision"], if detected.supported() { "bf16" } else { "fp32" });
    assert!(summary.validation_loss.is_finite());
    std::fs::remove_dir_all(&dir).unwrap();
}
