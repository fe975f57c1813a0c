//! Training data: labelled rows encoded for the model, batches grouped by length and
//! padded per batch (or to the max length, the recipe's way).

use absa_domain::{AspectEncoder, InputForm, LabelSet, LabelledRow, RowError};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use crate::model::UnitInputs;

/// One encoded, labelled instance.
#[derive(Clone, Debug)]
pub struct Example {
    pub input_ids: Vec<i64>,
    pub aspect_mask: Vec<bool>,
    /// Segment ids; empty for one segment (all 0).
    pub token_type_ids: Vec<i64>,
    pub label: i64,
}

/// Encodes rows as a model of `form` reads them; rows whose label is unknown or whose
/// target cannot be encoded become errors with their line, the rest become examples.
pub fn encode_rows(rows: &[LabelledRow], encoder: &AspectEncoder, form: InputForm, labels: &LabelSet) -> (Vec<Example>, Vec<RowError>) {
    let mut examples = Vec::with_capacity(rows.len());
    let mut errors = Vec::new();
    for row in rows {
        let Some(label) = labels.index(&row.label) else {
            errors.push(RowError { line: row.line, reason: format!("unknown label {:?} (labels: {})", row.label, labels.names().join(", ")) });
            continue;
        };
        match encoder.encode_as(form, &row.text, &row.target, row.span) {
            Ok(enc) => {
                let token_type_ids = if enc.token_type_ids.iter().any(|&t| t != 0) { enc.token_type_ids } else { Vec::new() };
                examples.push(Example { input_ids: enc.input_ids, aspect_mask: enc.aspect_mask, token_type_ids, label: label as i64 })
            }
            Err(e) => errors.push(RowError { line: row.line, reason: e.to_string() }),
        }
    }
    (examples, errors)
}

/// Model inputs for one batch.
pub struct Batch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub aspect_mask: Tensor,
    /// Segment ids when a row of the batch has a second segment.
    pub token_type_ids: Option<Tensor>,
    pub labels: Tensor,
}

impl Batch {
    /// What the model's units read.
    pub fn unit_inputs(&self) -> UnitInputs {
        UnitInputs::new(&self.input_ids, &self.attention_mask, &self.aspect_mask).with_token_types(self.token_type_ids.as_ref())
    }
}

/// Pads `examples` to their longest row, or to `pad_to` when given.
pub fn collate(examples: &[&Example], pad_to: Option<usize>, pad_id: i64, device: Device) -> Batch {
    let width = pad_to.unwrap_or_else(|| examples.iter().map(|e| e.input_ids.len()).max().unwrap_or(0));
    let n = examples.len();
    let mut ids = vec![pad_id; n * width];
    let mut att = vec![0i64; n * width];
    let mut asp = vec![0i64; n * width];
    let paired = examples.iter().any(|e| !e.token_type_ids.is_empty());
    let mut types = vec![0i64; if paired { n * width } else { 0 }];
    for (r, e) in examples.iter().enumerate() {
        let row = r * width;
        for (c, (&id, &m)) in e.input_ids.iter().zip(&e.aspect_mask).enumerate().take(width) {
            ids[row + c] = id;
            att[row + c] = 1;
            asp[row + c] = m as i64;
        }
        if paired {
            for (c, &t) in e.token_type_ids.iter().enumerate().take(width) {
                types[row + c] = t;
            }
        }
    }
    let shape = [n as i64, width as i64];
    let tensor = |v: &[i64]| Tensor::from_slice(v).view(shape).to_device(device);
    let labels: Vec<i64> = examples.iter().map(|e| e.label).collect();
    Batch {
        input_ids: tensor(&ids),
        attention_mask: tensor(&att),
        aspect_mask: tensor(&asp),
        token_type_ids: paired.then(|| tensor(&types)),
        labels: Tensor::from_slice(&labels).to_kind(Kind::Int64).to_device(device),
    }
}

/// How an epoch's rows are grouped into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Shuffle, then chunk (HF's default random sampler).
    Shuffled,
    /// Shuffle, cut into mega-batches of 50 batches, sort each by length, chunk, and
    /// shuffle the batches (HF's `group_by_length`, plus a batch shuffle): little
    /// padding, still random.
    LengthGrouped,
}

/// The batches of one epoch, as indices into `lengths`; the same seed gives the same
/// batches, so a resumed run sees the data in the order an uninterrupted one would.
pub fn epoch_batches(lengths: &[usize], batch_size: usize, order: Order, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    idx.shuffle(&mut rng);
    match order {
        Order::Shuffled => idx.chunks(batch_size).map(<[usize]>::to_vec).collect(),
        Order::LengthGrouped => {
            let mut batches: Vec<Vec<usize>> = Vec::new();
            for mega in idx.chunks(batch_size * 50) {
                let mut mega = mega.to_vec();
                mega.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
                batches.extend(mega.chunks(batch_size).map(<[usize]>::to_vec));
            }
            batches.shuffle(&mut rng);
            batches
        }
    }
}

/// Evaluation batches: sorted by length (less padding), covering every row once.
pub fn eval_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    idx.sort_by_key(|&i| lengths[i]);
    idx.chunks(batch_size).map(<[usize]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_grouped_batches_cover_every_row_once_and_pad_little() {
        let lengths: Vec<usize> = (0..1000).map(|i| 5 + (i * 37) % 90).collect();
        let batches = epoch_batches(&lengths, 16, Order::LengthGrouped, 3);
        let mut all: Vec<usize> = batches.concat();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        let padded: usize = batches.iter().map(|b| b.iter().map(|&i| lengths[i]).max().unwrap() * b.len()).sum();
        let real: usize = lengths.iter().sum();
        assert!((padded as f64) < 1.1 * real as f64, "padding overhead {padded} vs {real}");
    }

    #[test]
    fn the_same_seed_gives_the_same_batches() {
        let lengths: Vec<usize> = (0..100).map(|i| i % 13).collect();
        assert_eq!(epoch_batches(&lengths, 8, Order::Shuffled, 9), epoch_batches(&lengths, 8, Order::Shuffled, 9));
        assert_ne!(epoch_batches(&lengths, 8, Order::Shuffled, 9), epoch_batches(&lengths, 8, Order::Shuffled, 10));
    }

    #[test]
    fn collate_pads_ids_masks_and_aspects() {
        let a = Example { input_ids: vec![2, 7, 3], aspect_mask: vec![false, true, false], token_type_ids: Vec::new(), label: 1 };
        let b = Example { input_ids: vec![2, 3], aspect_mask: vec![false, false], token_type_ids: vec![0, 1], label: 0 };
        let batch = collate(&[&a, &b], None, 0, Device::Cpu);
        assert_eq!(Vec::<Vec<i64>>::try_from(&batch.input_ids).unwrap(), vec![vec![2, 7, 3], vec![2, 3, 0]]);
        assert_eq!(Vec::<Vec<i64>>::try_from(&batch.attention_mask).unwrap(), vec![vec![1, 1, 1], vec![1, 1, 0]]);
        assert_eq!(Vec::<Vec<i64>>::try_from(&batch.aspect_mask).unwrap(), vec![vec![0, 1, 0], vec![0, 0, 0]]);
        let types = batch.token_type_ids.as_ref().expect("a pair row gives the batch segment ids");
        assert_eq!(Vec::<Vec<i64>>::try_from(types).unwrap(), vec![vec![0, 0, 0], vec![0, 1, 0]]);
        let fixed = collate(&[&a], Some(5), 1, Device::Cpu);
        assert!(fixed.token_type_ids.is_none(), "one segment: no segment ids");
        assert_eq!(Vec::<Vec<i64>>::try_from(&fixed.input_ids).unwrap(), vec![vec![2, 7, 3, 1, 1]]);
    }
}
