//! What several test files share (each uses part of it).
#![allow(dead_code)]

use std::path::Path;

use absa_trainer::checkpoint::{self, LoadOptions, LoadedModel};
use absa_trainer::training::data::Example;
use absa_trainer::training::local::LocalEngine;
use tch::Device;

/// libtorch's generator is process-global and a file's tests run in parallel. Every
/// load draws from it (variables are initialised before the checkpoint's values are
/// copied in; a fresh head keeps its draws), so loads take turns: each seeded head is
/// the same every run, whatever the other tests load meanwhile.
static ONE_LOAD_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `dir` loaded on the CPU with `options`, any fresh head drawn from seed 42.
pub fn load_seeded(dir: &Path, options: &LoadOptions) -> LoadedModel {
    let _turn = ONE_LOAD_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(42);
    checkpoint::load(dir, options, Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// `model` after four AdamW steps (lr 1e-3, dropout on) under bf16 with two batch
/// threads, on eight rows of 6-10 ids below its vocabulary with a two-token aspect.
pub fn trained_under_bf16(model: LoadedModel) -> LocalEngine {
    let vocab = model.model.config.vocab_size;
    let rows: Vec<Example> = (0..8)
        .map(|i| {
            let len = 6 + i % 5;
            let input_ids = (0..len).map(|j| 5 + ((i * 13 + j * 7) as i64 % (vocab - 5))).collect();
            Example { input_ids, aspect_mask: (0..len).map(|j| j == 1 || j == 2).collect(), token_type_ids: Vec::new(), label: (i % 3) as i64 }
        })
        .collect();
    let rows: Vec<&Example> = rows.iter().collect();
    let mut engine = LocalEngine::new(model, 0.01, false).with_bf16(true).with_batch_threads(2);
    for step in 0..4 {
        engine.backward(&rows, None, 0, 1, true, step);
        engine.step(1e-3, 1.0);
    }
    engine
}
