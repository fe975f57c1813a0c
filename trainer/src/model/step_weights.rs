//! What a batch thread's forward pass reads in place of the model's own variables
//! during one optimizer step. Batch threads (see `training::local`) each run the whole
//! model on their share of the rows; two things they would otherwise each do alone
//! are done once per step here:
//!
//! - bf16: one bf16 copy of every Linear weight, cast once and read by all threads.
//!   Under autocast alone each thread casts every weight itself, and autograd sends each
//!   thread's bf16 weight gradient back through its own cast to fp32 before the threads'
//!   gradients are summed. With the shared copy the threads' bf16 gradients come back as
//!   they are and are summed into the fp32 gradient in one pass: the same values (a bf16
//!   to fp32 conversion is exact), three fewer passes over the weights per thread.
//! - sparse word-embedding gradients: a part's gradient of the word table is the rows
//!   its tokens looked up, not a dense table-sized tensor (a 30k-row table is half of
//!   MiniLM's parameters) that each thread zero-fills and the sum then reads back.

use std::cell::RefCell;
use std::collections::HashMap;

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// The substitutes of one step, shared by its batch threads (read-only while they run).
pub struct StepWeights {
    /// fp32 weight's data address -> its bf16 copy, a leaf that autograd differentiates.
    bf16: HashMap<usize, Tensor>,
    sparse_word_grads: bool,
}

// SAFETY: the threads only read the map and make shallow clones (reference-count
// increments, which libtorch makes atomically) of the tensors in it.
unsafe impl Sync for StepWeights {}

thread_local! {
    /// What the current thread's forward pass substitutes: its own shallow copy of the
    /// step's [`StepWeights`], set by [`StepWeights::run`].
    static CURRENT: RefCell<Option<StepWeights>> = const { RefCell::new(None) };
}

fn address(t: &Tensor) -> usize {
    t.data_ptr() as usize
}

impl StepWeights {
    /// bf16 copies of `linears`' weights when `bf16`; sparse word-embedding gradients
    /// when `sparse_word_grads`.
    pub fn new(linears: &[&nn::Linear], bf16: bool, sparse_word_grads: bool) -> Self {
        let bf16 = if bf16 {
            tch::no_grad(|| linears.iter().map(|l| (address(&l.ws), l.ws.to_kind(Kind::BFloat16).detach().set_requires_grad(true))).collect())
        } else {
            HashMap::new()
        };
        Self { bf16, sparse_word_grads }
    }

    /// The tensor autograd differentiates for `variable`: its bf16 copy where it has
    /// one (the gradient comes back bf16), else the variable itself.
    pub fn leaf_for(&self, variable: &Tensor) -> Tensor {
        self.bf16.get(&address(variable)).unwrap_or(variable).shallow_clone()
    }

    /// Runs `f` on this thread with these substitutes in force.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let mine = StepWeights { bf16: self.bf16.iter().map(|(&k, t)| (k, t.shallow_clone())).collect(), sparse_word_grads: self.sparse_word_grads };
        let previous = CURRENT.with(|c| c.replace(Some(mine)));
        struct Restore(Option<StepWeights>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| *c.borrow_mut() = self.0.take());
            }
        }
        let _restore = Restore(previous);
        f()
    }
}

/// `layer` applied to `xs`, with the step's bf16 copy of its weight where there is one.
pub(crate) fn linear(layer: &nn::Linear, xs: &Tensor) -> Tensor {
    let shared = CURRENT.with(|c| c.borrow().as_ref().and_then(|w| w.bf16.get(&address(&layer.ws)).map(Tensor::shallow_clone)));
    match shared {
        Some(weight) => xs.linear(&weight, layer.bs.as_ref()),
        None => layer.forward(xs),
    }
}

/// Whether the word-embedding lookup should give a sparse gradient on this thread.
pub(crate) fn sparse_word_grads() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(|w| w.sparse_word_grads))
}
