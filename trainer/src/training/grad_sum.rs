//! The batch threads' gradients summed into the fp32 gradients: one pass per variable
//! that also gives the sum of squares gradient clipping needs (so clipping reads no
//! gradient again). Parts are fp32, bf16 (a shared bf16 weight's gradient, see
//! `model::StepWeights`) or sparse rows of the word table.

use tch::{Device, Kind, Tensor};

use crate::simd::{self, Kernel};

/// Elements summed before their squares are added up (stays in L1 between the two).
const BLOCK: usize = 2048;

/// Adds the parts' gradients `parts`, in order, to `variable`'s gradient, or writes
/// their sum over it when `fresh` (its values are stale); the same bits either way
/// (0 + a + b is a + b). Returns the gradient's sum of squares afterwards, or `None`
/// when the variable has no gradient (no part gave one).
pub fn sum_into_grad(variable: &Tensor, parts: &[&Tensor], fresh: bool) -> Option<f64> {
    let mut grad = variable.grad();
    let mut fresh = fresh;
    if !grad.defined() {
        if parts.is_empty() {
            return None;
        }
        // tch cannot assign a gradient; this backward leaves zeros in it, written over below.
        tch::with_grad(|| (variable * 0.0).sum(Kind::Float).backward());
        grad = variable.grad();
        fresh = true;
    }
    if parts.iter().any(|p| p.is_sparse()) {
        return Some(sum_sparse(&mut grad, parts, fresh));
    }
    if let Some(squares) = sum_dense(&mut grad, parts, fresh) {
        return Some(squares);
    }
    // Another layout or device: libtorch's operations, the same order.
    let rest = match (fresh, parts) {
        (true, []) => {
            let _ = grad.zero_();
            &[][..]
        }
        (true, [only, rest @ ..]) => {
            grad.copy_(only);
            rest
        }
        (false, _) => parts,
    };
    for g in rest {
        grad += *g;
    }
    Some(grad.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]))
}

/// Sparse parts (rows of the word table looked up by one part's tokens, duplicates
/// not merged) added into the dense gradient; when `fresh`, only the rows they touch
/// are nonzero, so only those are squared.
fn sum_sparse(grad: &mut Tensor, parts: &[&Tensor], fresh: bool) -> f64 {
    if fresh {
        let _ = grad.zero_();
    }
    let mut rows = Vec::new();
    let mut dense_part = false;
    for part in parts {
        if part.is_sparse() {
            let indices = part.internal_indices().select(0, 0);
            let _ = grad.index_add_(0, &indices, &part.internal_values());
            rows.push(indices);
        } else {
            *grad += *part;
            dense_part = true;
        }
    }
    let touched = if fresh && !dense_part { grad.index_select(0, &Tensor::cat(&rows, 0).internal_unique(false, false).0) } else { grad.shallow_clone() };
    touched.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[])
}

/// One part's gradient as the summing loop reads it.
enum Part<'a> {
    F32(&'a [f32]),
    /// bf16 bit patterns: the upper half of an f32's.
    Bf16(&'a [u16]),
}

/// The sum over contiguous fp32 / bf16 CPU parts into a contiguous fp32 CPU gradient;
/// `None` (nothing done) for any other layout.
fn sum_dense(grad: &mut Tensor, parts: &[&Tensor], fresh: bool) -> Option<f64> {
    let plain = |t: &Tensor| t.device() == Device::Cpu && t.is_contiguous();
    if !plain(grad) || grad.kind() != Kind::Float {
        return None;
    }
    let n = grad.numel();
    let mut views = Vec::with_capacity(parts.len());
    for part in parts {
        if !plain(part) || part.numel() != n {
            return None;
        }
        // SAFETY: a contiguous CPU buffer of `n` elements of the matched type, alive
        // (held by `parts`) and not written while this runs.
        views.push(unsafe {
            match part.kind() {
                Kind::Float => Part::F32(std::slice::from_raw_parts(part.data_ptr() as *const f32, n)),
                Kind::BFloat16 => Part::Bf16(std::slice::from_raw_parts(part.data_ptr() as *const u16, n)),
                _ => return None,
            }
        });
    }
    // SAFETY: the gradient's own contiguous f32 buffer; only this thread writes it
    // (each variable's gradient has one owning thread).
    let out = unsafe { std::slice::from_raw_parts_mut(grad.data_ptr() as *mut f32, n) };
    Some(simd::widest(Sum { out, parts: &views, fresh }))
}

/// The parts summed into `out` (over it when `fresh`), and `out`'s sum of squares.
struct Sum<'a, 'p> {
    out: &'a mut [f32],
    parts: &'a [Part<'p>],
    fresh: bool,
}

impl Kernel for Sum<'_, '_> {
    type Output = f64;

    #[inline(always)]
    fn run(self) -> f64 {
        let Sum { out, parts, fresh } = self;
        let mut lanes = [0f64; 8];
        for (b, block) in out.chunks_mut(BLOCK).enumerate() {
            let range = b * BLOCK..b * BLOCK + block.len();
            if fresh && parts.is_empty() {
                block.fill(0.0);
            }
            for (i, part) in parts.iter().enumerate() {
                let overwrite = fresh && i == 0;
                match part {
                    Part::F32(p) => add_block(block, &p[range.clone()], overwrite, |x| x),
                    Part::Bf16(p) => add_block(block, &p[range.clone()], overwrite, |x| f32::from_bits(u32::from(x) << 16)),
                }
            }
            // Eight independent sums, so the loop vectorises (a single sum cannot be reordered).
            let mut chunks = block.chunks_exact(8);
            for chunk in &mut chunks {
                for (lane, &x) in lanes.iter_mut().zip(chunk) {
                    *lane += f64::from(x) * f64::from(x);
                }
            }
            for (lane, &x) in lanes.iter_mut().zip(chunks.remainder()) {
                *lane += f64::from(x) * f64::from(x);
            }
        }
        lanes.iter().sum()
    }
}

/// `block` = `part` (converted) when `overwrite`, else `block` += `part`.
#[inline(always)]
fn add_block<T: Copy>(block: &mut [f32], part: &[T], overwrite: bool, to_f32: impl Fn(T) -> f32) {
    if overwrite {
        for (o, &x) in block.iter_mut().zip(part) {
            *o = to_f32(x);
        }
    } else {
        for (o, &x) in block.iter_mut().zip(part) {
            *o += to_f32(x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(values: &[f32]) -> Tensor {
        Tensor::from_slice(values).set_requires_grad(true)
    }

    #[test]
    fn fp32_and_bf16_parts_sum_as_libtorch_does() {
        let a = Tensor::randn([5000], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([5000], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
        let v = var(&vec![0.0; 5000]);
        let squares = sum_into_grad(&v, &[&a, &b], true).unwrap();
        let expected = &a + b.to_kind(Kind::Float);
        assert!(v.grad().equal(&expected), "fresh sum differs");
        let expected_squares = expected.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]);
        assert!((squares - expected_squares).abs() < 1e-9 * expected_squares, "{squares} vs {expected_squares}");
        // Not fresh: added to what is there, in part order.
        sum_into_grad(&v, &[&a], false).unwrap();
        assert!(v.grad().equal(&(&expected + &a)));
    }

    #[test]
    fn sparse_rows_add_into_a_dense_gradient() {
        let table = Tensor::zeros([10, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let ids = Tensor::from_slice(&[1i64, 4, 1]);
        let out = Tensor::embedding(&table, &ids, -1, false, true);
        let parts = Tensor::run_backward(&[(out * 2.0).sum(Kind::Float)], &[&table], false, false);
        assert!(parts[0].is_sparse());
        let squares = sum_into_grad(&table, &[&parts[0], &parts[0]], true).unwrap();
        let grad = table.grad();
        // Row 1 looked up twice in each of two parts: 2 · 2 · 2 = 8; row 4: 4; others 0.
        assert_eq!(grad.sum_dim_intlist(1, false, Kind::Float), Tensor::from_slice(&[0.0f32, 24.0, 0.0, 0.0, 12.0, 0.0, 0.0, 0.0, 0.0, 0.0]));
        assert!((squares - 3.0 * (64.0 + 16.0)).abs() < 1e-9, "{squares}");
    }
}
