//! The memory estimate and device plan: the parameter count agrees with the models
//! libtorch builds (the real all-MiniLM-L6-v2 and the tiny BERT, XLM-R and XLM-R XL
//! fixtures), and for xlm-roberta base, large, xl and xxl at batch 16, length 100 the
//! plan on the reference's GPUs (1x8 GB, 1x16 GB, 2x32 GB, 4x40 GB) trains base and
//! large whole, shards xl over its two GPUs and needs CPU offload for xxl on four, as
//! docs/model.md reports. (The per-rank estimate is checked against measured memory in
//! `sharded_memory.rs`.)

use std::path::PathBuf;

use absa_trainer::checkpoint::{self, LoadOptions};
use absa_trainer::distributed::Sharding;
use absa_trainer::plan::{self, ModelShape, Precision, GIB};

fn numel(dir: &std::path::Path) -> (u64, ModelShape) {
    // A base checkpoint without a head gets a fresh one for three labels.
    let labels = absa_domain::labels::LabelSet::new(vec!["negative".into(), "neutral".into(), "positive".into()]).unwrap();
    let options = LoadOptions { labels: Some(labels), ..LoadOptions::default() };
    let loaded = checkpoint::load(dir, &options, tch::Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let n: i64 = loaded.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    let config = absa_trainer::model::EncoderConfig::from_file(&dir.join("config.json")).unwrap();
    (n as u64, ModelShape::from_config(&config, loaded.labels.len() as u64).unwrap())
}

#[test]
fn the_parameter_count_is_what_libtorch_builds() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let mut dirs: Vec<PathBuf> = ["bert_tiny", "xlmr_tiny", "xlmr_xl_tiny"].iter().map(|d| fixtures.join(d)).collect();
    dirs.push(absa_domain::reference::shared_dir().expect("the shared reference folder (set ABSA_SHARED)").join("models/all-minilm-l6-v2"));
    for dir in dirs {
        let (built, shape) = numel(&dir);
        assert_eq!(shape.parameters(), built, "{}: {shape:?}", dir.display());
    }
}

/// xlm-roberta-* shapes from their Hugging Face configs, three labels.
fn xlmr(size: &str) -> ModelShape {
    ModelShape::from_config(&absa_trainer::model::EncoderConfig::xlm_roberta(size).unwrap(), 3).unwrap()
}

#[test]
fn xlm_roberta_sizes_on_the_reference_gpus() {
    let gib = |g: f64| (g * GIB) as u64;
    // (name, shape, published parameters, reference GPUs, GiB each)
    let cases = [
        ("base", xlmr("base"), 278e6, 1, 8.0),
        ("large", xlmr("large"), 560e6, 1, 16.0),
        ("xl", xlmr("xl"), 3.48e9, 2, 32.0),
        ("xxl", xlmr("xxl"), 10.7e9, 4, 40.0),
    ];
    println!("| model | parameters | weights + grads + AdamW | activations (bf16) | one GPU needs | reference GPUs | our plan there | per GPU | fewest 80 GiB GPUs |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut plans = Vec::new();
    for (name, shape, published, gpus, each) in cases {
        let e = plan::estimate(&shape, 16, 100, Precision::Bf16Mixed);
        let share = (e.parameters as f64 - published).abs() / published;
        assert!(share < 0.01, "{name}: {} parameters, published {published}", e.parameters);
        let whole = plan::per_rank(&shape, 16, 100, Precision::Bf16Mixed, 1, Sharding::NoShard, false, plan::PER_GPU_OVERHEAD_BYTES);
        let p = plan::plan(&shape, 16, 100, Precision::Bf16Mixed, gpus, gib(each))
            .unwrap_or_else(|| panic!("{name} does not fit on {gpus}x{each} GiB: {}", plan::describe(&e)));
        let min80 = plan::min_gpus(&shape, 16, 100, Precision::Bf16Mixed, gib(80.0)).unwrap();
        let how = format!("{} rank(s), {:?}{}", p.ranks, p.sharding, if p.offload_optimizer { ", AdamW states on CPU" } else { "" });
        println!(
            "| xlm-roberta-{name} | {:.2} B | {:.1} GiB | {:.2} GiB | {:.1} GiB | {gpus}x{each:.0} GB | {how} | {:.1} GiB | {min80} |",
            e.parameters as f64 / 1e9,
            (e.weights + e.gradients + e.optimizer) as f64 / GIB,
            e.activations as f64 / GIB,
            whole.total() as f64 / GIB,
            p.per_rank_bytes as f64 / GIB
        );
        plans.push((name, p, whole));
    }
    let by = |n: &str| plans.iter().find(|(name, _, _)| *name == n).unwrap();
    // docs/model.md's figures (GiB, one decimal): base and large whole on one GPU, xl and
    // xxl per rank on the reference's GPUs.
    let tenths = |bytes: u64| (bytes as f64 / GIB * 10.0).round() / 10.0;
    let figures = [tenths(by("base").2.total()), tenths(by("large").2.total()), tenths(by("xl").1.per_rank_bytes), tenths(by("xxl").1.per_rank_bytes)];
    assert_eq!(figures, [6.4, 11.8, 30.2, 28.8], "docs/model.md: 6.4 and 11.8 GiB whole, xl 30.2 and xxl 28.8 GiB a rank");
    assert_eq!(by("xl").1.sharding, Sharding::FullShard, "docs/model.md: xl as two fully sharded ranks");
    // base and large train whole on one GPU.
    assert_eq!((by("base").1.sharding, by("base").1.offload_optimizer), (Sharding::NoShard, false));
    assert_eq!((by("large").1.sharding, by("large").1.offload_optimizer), (Sharding::NoShard, false));
    // xl needs more than one 32 GB GPU: its two ranks shard it.
    let xl = by("xl");
    assert!(xl.2.total() > gib(32.0), "xl needs more than one 32 GB GPU");
    assert!(matches!(xl.1.sharding, Sharding::ShardGradOp | Sharding::FullShard) && !xl.1.offload_optimizer, "{:?}", xl.1);
    // xxl does not fit 4x40 GiB even fully sharded: the reference's CPU offload is needed.
    let xxl = by("xxl");
    assert_eq!((xxl.1.sharding, xxl.1.offload_optimizer), (Sharding::FullShard, true), "{:?}", xxl.1);
    let sharded = plan::per_rank(&xlmr("xxl"), 16, 100, Precision::Bf16Mixed, 4, Sharding::FullShard, false, plan::PER_GPU_OVERHEAD_BYTES);
    assert!(sharded.total() > gib(40.0), "{sharded:?}");
    // Too few GPUs: no plan, and the estimate says how many it would take.
    let shape = xlmr("xxl");
    assert_eq!(plan::plan(&shape, 16, 100, Precision::Bf16Mixed, 1, gib(40.0)), None);
    assert!(plan::min_gpus(&shape, 16, 100, Precision::Bf16Mixed, gib(40.0)).unwrap() > 1);
}
