//! The benchmark scores exactly N instances of the repeated corpus with each graph and
//! reports accuracy on the labelled test set from the engine's own predictions.

mod common;

use absa_onnx::Precision;
use absa_scorer::bench::{self, BenchOptions};
use absa_scorer::engine::EngineOptions;
use absa_scorer::runtime::SessionOptions;
use common::ToyModel;

#[test]
fn the_bench_scores_n_repeated_instances_and_measures_test_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let toy = ToyModel::write(dir.path(), 100);
    let laptops = common::shared().join("data/semeval14_laptops");
    let options = BenchOptions {
        corpus: vec![laptops.join("test.jsonl")],
        n: 1000,
        test: Some(laptops.join("test.jsonl")),
        engine: EngineOptions { sort_window: 1000, ..Default::default() },
        session: SessionOptions::with_threads(1),
        warmup: 64,
    };
    let result = bench::run(dir.path(), Precision::Fp32, &options).unwrap();
    assert_eq!(result.instances, 1000, "638 test rows repeated in order up to 1000");
    assert!(result.inst_per_s > 0.0 && result.wall_s > 0.0);
    assert!(result.tokens_mean > 10.0 && result.padding_overhead >= 0.0);
    let test = result.test.unwrap();
    assert_eq!(test.instances, 638);
    // The accuracy is the share of test rows whose recomputed argmax is the gold label.
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(laptops.join("test.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let correct = rows
        .iter()
        .filter(|r| {
            let p = toy.expected(r["text"].as_str().unwrap(), r["start"].as_u64().unwrap() as usize, r["end"].as_u64().unwrap() as usize);
            let best = p.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
            common::LABELS[best] == r["label"].as_str().unwrap()
        })
        .count();
    assert!((test.accuracy - correct as f64 / 638.0).abs() < 1e-12, "{} vs {}", test.accuracy, correct as f64 / 638.0);
}
