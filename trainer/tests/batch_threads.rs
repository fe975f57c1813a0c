//! Batch threads in one process, on CPU: a batch split over threads sharing one model
//! gives the whole batch's parameters, and with dropout on, the same ones twice; the
//! training loss (label smoothing included) is the same on either path. Tiny
//! random-weight BERT fixture.

use std::path::PathBuf;

use absa_trainer::checkpoint::{self, LoadOptions, LoadedModel};
use absa_trainer::training::data::Example;
use absa_trainer::training::local::{self, LocalEngine};
use tch::Device;

fn fixture(name: &str) -> LoadedModel {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name);
    checkpoint::load(&dir, &LoadOptions::default(), Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// `n` rows of 4 to 19 tokens (ids below `vocab`), an aspect of two tokens, labels 0-2;
/// deterministic.
fn examples(n: usize, vocab: i64) -> Vec<Example> {
    let mut state = 7u64;
    let mut next = |m: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    (0..n)
        .map(|_| {
            let len = 4 + next(16) as usize;
            let input_ids: Vec<i64> = (0..len).map(|_| 5 + next(vocab as u64 - 5) as i64).collect();
            let at = 1 + next(len as u64 - 3) as usize;
            let aspect_mask = (0..len).map(|i| i == at || i == at + 1).collect();
            Example { input_ids, aspect_mask, token_type_ids: Vec::new(), label: next(3) as i64 }
        })
        .collect()
}

fn max_difference(a: &LoadedModel, b: &LoadedModel) -> f64 {
    let bv = b.vs.variables();
    a.vs.variables().iter().map(|(name, t)| (t - &bv[name]).abs().max().double_value(&[])).fold(0.0, f64::max)
}

#[test]
fn rows_split_into_near_equal_ranges() {
    assert_eq!(local::split_rows(8, 2), vec![0..4, 4..8]);
    assert_eq!(local::split_rows(10, 4), vec![0..3, 3..6, 6..8, 8..10]);
    assert_eq!(local::split_rows(2, 3), vec![0..1, 1..2, 2..2]);
}

/// Trains `model` three AdamW steps on `batches` with dropout on or off; returns the
/// losses.
fn three_steps(model: &mut LocalEngine, batches: &[Vec<Example>], train: bool) -> Vec<f64> {
    batches
        .iter()
        .enumerate()
        .map(|(i, batch)| {
            let rows: Vec<&Example> = batch.iter().collect();
            let loss = model.backward(&rows, None, 1, 1, train, 100 + i as u64);
            model.step(1e-3, 1.0);
            loss
        })
        .collect()
}

#[test]
fn batch_threads_reach_the_parameters_of_one_thread_and_repeat_bit_for_bit() {
    let initial = fixture("bert_tiny");
    let vocab = initial.model.config.vocab_size;
    let batches: Vec<Vec<Example>> = (0..3).map(|_| examples(9, vocab)).collect();
    let mut single = LocalEngine::new(fixture("bert_tiny"), 0.01, false);
    let whole = three_steps(&mut single, &batches, false);
    assert!(max_difference(&single.model, &initial) > 1e-3);
    for threads in [2, 3] {
        // Dropout off: the parts' gradients sum to the whole batch's.
        let mut threaded = LocalEngine::new(fixture("bert_tiny"), 0.01, false).with_batch_threads(threads);
        let split = three_steps(&mut threaded, &batches, false);
        for (a, b) in whole.iter().zip(&split) {
            assert!((a - b).abs() < 1e-5, "{threads} threads: loss {a} vs {b}");
        }
        let d = max_difference(&threaded.model, &single.model);
        eprintln!("{threads} batch threads vs one, dropout off: parameters differ by {d:e}");
        assert!(d < 1e-5, "{threads} threads: parameters differ by {d}");
    }
    // Dropout on: each part draws from its own seeded generator, whatever order the
    // threads run in, so two runs agree exactly.
    let runs: Vec<(Vec<f64>, LocalEngine)> = (0..2)
        .map(|_| {
            let mut threaded = LocalEngine::new(fixture("bert_tiny"), 0.01, false).with_batch_threads(2);
            (three_steps(&mut threaded, &batches, true), threaded)
        })
        .collect();
    assert_eq!(runs[0].0, runs[1].0, "losses with dropout");
    assert_eq!(max_difference(&runs[0].1.model, &runs[1].1.model), 0.0, "weights with dropout");
    let d = max_difference(&runs[0].1.model, &single.model);
    assert!(d > 1e-6, "dropout changed nothing ({d})");
}

/// The loss of one batch (dropout off, no step) under `label_smoothing` with `threads`.
fn smoothed_loss(rows: &[Example], label_smoothing: f64, threads: usize) -> f64 {
    let mut engine = LocalEngine::new(fixture("bert_tiny"), 0.01, false).with_label_smoothing(label_smoothing).with_batch_threads(threads);
    engine.backward(&rows.iter().collect::<Vec<_>>(), None, 1, 1, false, 100)
}

#[test]
fn label_smoothing_mixes_cross_entropy_with_the_uniform_target_on_both_paths() {
    let vocab = fixture("bert_tiny").model.config.vocab_size;
    let rows = examples(9, vocab);
    for threads in [1, 2] {
        // The smoothed loss is (1 - e) * CE + e * (mean over classes of -log p): linear in e.
        let (plain, uniform, half) = (smoothed_loss(&rows, 0.0, threads), smoothed_loss(&rows, 1.0, threads), smoothed_loss(&rows, 0.5, threads));
        eprintln!("{threads} thread(s): loss {plain} plain, {uniform} uniform target, {half} at 0.5");
        assert!((plain - uniform).abs() > 1e-3, "{threads} thread(s): smoothing changed nothing ({plain} vs {uniform})");
        assert!((half - (plain + uniform) / 2.0).abs() < 1e-5, "{threads} thread(s): {half} is not halfway between {plain} and {uniform}");
    }
}
