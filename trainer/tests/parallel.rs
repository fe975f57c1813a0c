//! Training across devices, on CPU: N data-parallel replicas reach the parameters of
//! one replica given the whole batch after k AdamW steps (within 1e-5), and a model
//! split into layer stages (all stages on the CPU here) gives the unsharded model's
//! loss and gradients; a batch split over threads sharing one model gives the
//! whole batch's parameters, and with dropout on, the same ones twice. Tiny
//! random-weight BERT and XLM-R XL fixtures.

use std::path::PathBuf;

use absa_trainer::checkpoint::{self, LoadOptions, LoadedModel};
use absa_trainer::parallel::{self, DataParallel, Stages};
use absa_trainer::training::data::Example;
use tch::{Device, Kind, Tensor};

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
            Example { input_ids, aspect_mask, label: next(3) as i64 }
        })
        .collect()
}

fn max_difference(a: &LoadedModel, b: &LoadedModel) -> f64 {
    let bv = b.vs.variables();
    a.vs.variables().iter().map(|(name, t)| (t - &bv[name]).abs().max().double_value(&[])).fold(0.0, f64::max)
}

#[test]
fn rows_split_into_near_equal_ranges() {
    assert_eq!(parallel::split_rows(8, 2), vec![0..4, 4..8]);
    assert_eq!(parallel::split_rows(10, 4), vec![0..3, 3..6, 6..8, 8..10]);
    assert_eq!(parallel::split_rows(2, 3), vec![0..1, 1..2, 2..2]);
}

/// Trains `model` three AdamW steps on `batches` with dropout on or off; returns the
/// losses.
fn three_steps(model: &mut DataParallel, batches: &[Vec<Example>], train: bool) -> Vec<f64> {
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
    let mut single = DataParallel::new(vec![fixture("bert_tiny")], 0.01, false);
    let whole = three_steps(&mut single, &batches, false);
    assert!(max_difference(&single.replicas[0], &initial) > 1e-3);
    for threads in [2, 3] {
        // Dropout off: the parts' gradients sum to the whole batch's.
        let mut threaded = DataParallel::new(vec![fixture("bert_tiny")], 0.01, false).with_batch_threads(threads);
        let split = three_steps(&mut threaded, &batches, false);
        for (a, b) in whole.iter().zip(&split) {
            assert!((a - b).abs() < 1e-5, "{threads} threads: loss {a} vs {b}");
        }
        let d = max_difference(&threaded.replicas[0], &single.replicas[0]);
        eprintln!("{threads} batch threads vs one, dropout off: parameters differ by {d:e}");
        assert!(d < 1e-5, "{threads} threads: parameters differ by {d}");
    }
    // Dropout on: each part draws from its own seeded generator, whatever order the
    // threads run in, so two runs agree exactly.
    let runs: Vec<(Vec<f64>, DataParallel)> = (0..2)
        .map(|_| {
            let mut threaded = DataParallel::new(vec![fixture("bert_tiny")], 0.01, false).with_batch_threads(2);
            (three_steps(&mut threaded, &batches, true), threaded)
        })
        .collect();
    assert_eq!(runs[0].0, runs[1].0, "losses with dropout");
    assert_eq!(max_difference(&runs[0].1.replicas[0], &runs[1].1.replicas[0]), 0.0, "weights with dropout");
    let d = max_difference(&runs[0].1.replicas[0], &single.replicas[0]);
    assert!(d > 1e-6, "dropout changed nothing ({d})");
}

#[test]
fn replicas_reach_the_parameters_of_one_model_on_the_whole_batch() {
    tch::manual_seed(0);
    for (name, n) in [("bert_tiny", 2), ("xlmr_xl_tiny", 4)] {
        let initial = fixture(name);
        let vocab = initial.model.config.vocab_size;
        let batches: Vec<Vec<Example>> = (0..3).map(|_| examples(4 * n, vocab)).collect();
        let mut single = DataParallel::new(vec![fixture(name)], 0.01, false);
        let mut replicated = DataParallel::new((0..n).map(|_| fixture(name)).collect(), 0.01, false);
        for batch in &batches {
            let rows: Vec<&Example> = batch.iter().collect();
            // Dropout off: the replicas' masks could not match the single model's.
            let whole = single.backward(&rows, None, 1, 1, false, 0);
            single.step(1e-3, 1.0);
            let split = replicated.backward(&rows, None, 1, 1, false, 0);
            replicated.step(1e-3, 1.0);
            assert!((whole - split).abs() < 1e-5, "{name}: loss {whole} vs {split}");
        }
        let moved = max_difference(&single.replicas[0], &initial);
        assert!(moved > 1e-3, "{name}: three steps at lr 1e-3 moved the weights by only {moved}");
        let d = replicated.replicas.iter().map(|r| max_difference(r, &single.replicas[0])).fold(0.0, f64::max);
        assert!(d < 1e-5, "{name}, {n} replicas: parameters differ by {d}");
        eprintln!("{name}: {n} replicas vs one model on the whole batch after 3 steps: max parameter difference {d:.2e} (weights moved {moved:.2e})");
    }
}

#[test]
fn layer_stages_give_the_unsharded_loss_and_gradients() {
    for name in ["bert_tiny", "xlmr_xl_tiny"] {
        let plain = fixture(name);
        let mut staged = fixture(name);
        let layers = staged.model.config.num_hidden_layers as usize;
        let bad = Stages { devices: vec![Device::Cpu, Device::Cpu], layers_per_stage: vec![layers, 1] };
        assert!(parallel::place_stages(&mut staged, &bad).is_err(), "stages must cover the layers exactly");
        let stages = Stages { devices: vec![Device::Cpu, Device::Cpu], layers_per_stage: vec![layers / 2, layers - layers / 2] };
        parallel::place_stages(&mut staged, &stages).unwrap();

        let rows = examples(6, plain.model.config.vocab_size);
        let refs: Vec<&Example> = rows.iter().collect();
        let batch = absa_trainer::training::data::collate(&refs, None, 1, Device::Cpu);
        let loss = |m: &LoadedModel| {
            let logits = m.model.forward_t(&batch.input_ids, &batch.attention_mask, &batch.aspect_mask, false).logits;
            let loss = logits.to_kind(Kind::Float).cross_entropy_for_logits(&batch.labels);
            loss.backward();
            loss.double_value(&[])
        };
        let (a, b) = (loss(&plain), loss(&staged));
        assert!((a - b).abs() < 1e-6, "{name}: loss {a} vs {b}");
        let staged_vars = staged.vs.variables();
        for (var, t) in plain.vs.variables() {
            let (ga, gb): (Tensor, Tensor) = (t.grad(), staged_vars[&var].grad());
            assert!(ga.defined() && gb.defined(), "{name}: no gradient for {var}");
            let d = (&ga - &gb).abs().max().double_value(&[]);
            assert!(d < 1e-6, "{name}: gradient of {var} differs by {d}");
        }
    }
}
