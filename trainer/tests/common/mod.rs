//! What several test files share.

use absa_trainer::checkpoint::LoadedModel;
use absa_trainer::training::data::Example;
use absa_trainer::training::local::LocalEngine;

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
