//! A unit's parameters as one flat buffer (FSDP's `FlatParameter`): its variables
//! concatenated in a fixed order, padded to a multiple of the number of shards, and
//! cut into equal contiguous shards, one per rank. A unit is then one collective.

use std::ops::Range;

/// One variable's place in its unit's flat buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct FlatVar {
    /// Hugging Face name (`roberta.encoder.layer.3.attention.self.query.weight`).
    pub name: String,
    pub shape: Vec<i64>,
    pub offset: usize,
    pub numel: usize,
    /// AdamW decays it (not a bias or LayerNorm weight; HF's rule).
    pub decay: bool,
}

/// The part of one variable that falls in a shard.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    /// Index into [`FlatLayout::vars`].
    pub var: usize,
    /// Elements of the variable (row-major) in this shard.
    pub elements: Range<usize>,
    /// Where they start in the shard.
    pub at: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FlatLayout {
    pub vars: Vec<FlatVar>,
    /// Elements of all variables.
    pub numel: usize,
    /// `numel` rounded up to a multiple of `shards`; the tail is zeros.
    pub padded: usize,
    pub shards: usize,
}

impl FlatLayout {
    /// `vars` (name, shape, decays) in the order they are laid out; `shards` equal parts.
    pub fn new(vars: Vec<(String, Vec<i64>, bool)>, shards: usize) -> Self {
        Self::aligned(vars, shards, 1)
    }

    /// [`FlatLayout::new`] with each shard a multiple of `align` elements: a table's
    /// shards of whole rows when `align` is its row length.
    pub fn aligned(vars: Vec<(String, Vec<i64>, bool)>, shards: usize, align: usize) -> Self {
        let shards = shards.max(1);
        let align = align.max(1);
        let mut offset = 0;
        let vars: Vec<FlatVar> = vars
            .into_iter()
            .map(|(name, shape, decay)| {
                let numel = shape.iter().product::<i64>().max(0) as usize;
                let var = FlatVar { name, shape, offset, numel, decay };
                offset += numel;
                var
            })
            .collect();
        let unit = shards * align;
        let padded = offset.div_ceil(unit).max(1) * unit;
        Self { vars, numel: offset, padded, shards }
    }

    /// Elements per shard.
    pub fn shard_len(&self) -> usize {
        self.padded / self.shards
    }

    /// The flat elements shard `index` holds.
    pub fn shard_range(&self, index: usize) -> Range<usize> {
        let len = self.shard_len();
        index * len..(index + 1) * len
    }

    /// The variables' parts in shard `index`, in order (padding excluded).
    pub fn pieces(&self, index: usize) -> Vec<Piece> {
        let shard = self.shard_range(index);
        self.vars
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let start = v.offset.max(shard.start);
                let end = (v.offset + v.numel).min(shard.end);
                (start < end).then(|| Piece { var: i, elements: start - v.offset..end - v.offset, at: start - shard.start })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(shards: usize) -> FlatLayout {
        FlatLayout::new(vec![("w".into(), vec![2, 3], true), ("b".into(), vec![3], false), ("ln".into(), vec![1], false)], shards)
    }

    #[test]
    fn variables_are_laid_out_in_order_and_padded_to_equal_shards() {
        let l = layout(4);
        assert_eq!(l.numel, 10);
        assert_eq!(l.padded, 12);
        assert_eq!(l.shard_len(), 3);
        assert_eq!(l.vars[1].offset, 6);
        assert_eq!(l.shard_range(3), 9..12);
        assert_eq!(layout(1).padded, 10);
        let rows = FlatLayout::aligned(vec![("table".into(), vec![5, 3], true)], 2, 3);
        assert_eq!((rows.padded, rows.shard_len()), (18, 9), "three whole rows per shard");
    }

    #[test]
    fn every_element_is_in_exactly_one_shard_piece() {
        for shards in 1..=7 {
            let l = layout(shards);
            let mut seen = vec![0; l.numel];
            for s in 0..shards {
                for p in l.pieces(s) {
                    let v = &l.vars[p.var];
                    assert!(p.at + p.elements.len() <= l.shard_len());
                    for e in p.elements.clone() {
                        seen[v.offset + e] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{shards} shards: {seen:?}");
        }
    }

    #[test]
    fn a_shard_of_padding_only_has_no_pieces() {
        let l = FlatLayout::new(vec![("x".into(), vec![2], true)], 4);
        assert_eq!(l.padded, 4);
        assert!(l.pieces(3).is_empty());
        assert_eq!(l.pieces(1), vec![Piece { var: 0, elements: 1..2, at: 0 }]);
    }
}
