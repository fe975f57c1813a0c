//! Encoded instances and the batches the model sees: instances of similar length
//! together (sorted within a window of the stream), each batch padded to its own
//! longest row, so the encoder spends little on padding.

use std::sync::Arc;

use ndarray::Array2;
use serde_json::Value;

/// One target of one row, tokenized.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Position in the stream: output keeps this order.
    pub seq: u64,
    pub line: usize,
    /// The row's id, shared by all its targets.
    pub id: Arc<Value>,
    pub aspect: String,
    /// The target's span; none for a target the text does not mention.
    pub start: Option<usize>,
    pub end: Option<usize>,
    pub input_ids: Vec<i64>,
    pub aspect_mask: Vec<bool>,
    /// Segment ids (a sentence pair's second segment); empty for one segment.
    pub token_type_ids: Vec<i64>,
    /// The text was longer than the max length and a window around the aspect was used.
    pub windowed: bool,
}

/// Model inputs for one batch, (batch, longest row) each.
pub struct PaddedBatch {
    pub input_ids: Array2<i64>,
    pub attention_mask: Array2<i64>,
    pub aspect_mask: Array2<i64>,
    /// Zero for one segment.
    pub token_type_ids: Array2<i64>,
}

impl PaddedBatch {
    pub fn new<'a>(instances: impl ExactSizeIterator<Item = &'a Instance> + Clone, pad_id: i64) -> Self {
        let rows = instances.len();
        let width = instances.clone().map(|i| i.input_ids.len()).max().unwrap_or(0);
        let mut input_ids = Array2::from_elem((rows, width), pad_id);
        let mut attention_mask = Array2::zeros((rows, width));
        let mut aspect_mask = Array2::zeros((rows, width));
        let mut token_type_ids = Array2::zeros((rows, width));
        for (r, inst) in instances.enumerate() {
            let n = inst.input_ids.len();
            input_ids.row_mut(r).as_slice_mut().expect("standard layout")[..n].copy_from_slice(&inst.input_ids);
            attention_mask.row_mut(r).as_slice_mut().expect("standard layout")[..n].fill(1);
            for (dst, &m) in aspect_mask.row_mut(r).iter_mut().zip(&inst.aspect_mask) {
                *dst = m as i64;
            }
            for (dst, &t) in token_type_ids.row_mut(r).iter_mut().zip(&inst.token_type_ids) {
                *dst = t;
            }
        }
        Self { input_ids, attention_mask, aspect_mask, token_type_ids }
    }

    /// Tokens the model processes, padding included.
    pub fn tokens(&self) -> usize {
        self.input_ids.len()
    }
}

/// The order to run a window's instances in (by length, stable) cut into batches of
/// at most `batch_size`: index lists into the window.
pub fn length_sorted_batches(window: &[Instance], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..window.len()).collect();
    order.sort_by_key(|&i| window[i].input_ids.len());
    order.chunks(batch_size.max(1)).map(<[usize]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(seq: u64, len: usize) -> Instance {
        Instance {
            seq,
            line: seq as usize + 1,
            id: Arc::new(Value::from(seq)),
            aspect: "a".into(),
            start: Some(0),
            end: Some(1),
            input_ids: (1..=len as i64).collect(),
            aspect_mask: (0..len).map(|i| i == 1).collect(),
            token_type_ids: Vec::new(),
            windowed: false,
        }
    }

    #[test]
    fn batches_group_similar_lengths_and_cover_every_instance_once() {
        let window: Vec<Instance> = [5, 2, 9, 2, 7].iter().enumerate().map(|(i, &l)| inst(i as u64, l)).collect();
        let batches = length_sorted_batches(&window, 2);
        assert_eq!(batches, vec![vec![1, 3], vec![0, 4], vec![2]]);
    }

    #[test]
    fn a_batch_is_padded_to_its_longest_row() {
        let window = [inst(0, 3), inst(1, 5)];
        let b = PaddedBatch::new(window.iter(), 0);
        assert_eq!(b.input_ids.shape(), &[2, 5]);
        assert_eq!(b.input_ids.row(0).to_vec(), vec![1, 2, 3, 0, 0]);
        assert_eq!(b.attention_mask.row(0).to_vec(), vec![1, 1, 1, 0, 0]);
        assert_eq!(b.aspect_mask.row(1).to_vec(), vec![0, 1, 0, 0, 0]);
        assert_eq!(b.tokens(), 10);
    }
}
