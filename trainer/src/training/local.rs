//! Training in one process on one device. On the CPU each batch can be split over
//! threads that share the model's weights, each running libtorch on one core: on a few
//! cores that beats libtorch's own intra-op threads, which synchronise after every
//! small kernel. Each part's gradients come back from autograd separately and are
//! summed in part order, and each part's dropout draws from its own seeded generator,
//! so a run stays reproducible bit for bit.

use std::ops::Range;
use std::sync::{Barrier, Mutex};

use tch::{Device, Tensor};

use crate::checkpoint::LoadedModel;
use crate::model::StepWeights;
use crate::rng;
use crate::training::data::{collate, Example};
use crate::training::grad_sum::sum_into_grad;
use crate::training::optimizer::{clip_coef, AdamW};

/// `rows` split into `n` consecutive ranges whose sizes differ by at most one.
pub fn split_rows(rows: usize, n: usize) -> Vec<Range<usize>> {
    let n = n.max(1);
    let mut start = 0;
    (0..n)
        .map(|i| {
            let len = rows / n + usize::from(i < rows % n);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

/// A model and its optimizer in this process.
pub struct LocalEngine {
    pub model: LoadedModel,
    optimizer: AdamW,
    batch_threads: usize,
    /// The forward pass runs under bf16 autocast.
    bf16: bool,
    /// The gradients hold the last step's values, not zeros: batch threads overwrite
    /// them with the next micro-batch's sums instead of zeroing and then adding.
    grads_stale: bool,
    /// The gradients' sum of squares, when the last micro-batch's summing pass gave it
    /// (batch threads): clipping then needs no pass of its own.
    grad_squares: Option<f64>,
    /// The training loss's label smoothing (0: plain cross-entropy).
    label_smoothing: f64,
}

impl LocalEngine {
    /// `offload_optimizer` keeps AdamW's moments, and runs its update, in CPU memory.
    pub fn new(model: LoadedModel, weight_decay: f64, offload_optimizer: bool) -> Self {
        let optimizer = AdamW::new(&model.vs, weight_decay).offloaded(offload_optimizer);
        Self { model, optimizer, batch_threads: 1, bf16: false, grads_stale: false, grad_squares: None, label_smoothing: 0.0 }
    }

    /// Runs the forward pass under bf16 autocast (fp32 master weights).
    pub fn with_bf16(mut self, bf16: bool) -> Self {
        self.bf16 = bf16;
        self
    }

    /// Trains on cross-entropy with this share of each label spread over all classes.
    pub fn with_label_smoothing(mut self, factor: f64) -> Self {
        self.label_smoothing = factor;
        self
    }

    pub fn bf16(&self) -> bool {
        self.bf16
    }

    /// Splits each micro-batch over `threads` threads (on the CPU only; otherwise ignored).
    pub fn with_batch_threads(mut self, threads: usize) -> Self {
        self.batch_threads = if self.model.vs.device() == Device::Cpu { threads.max(1) } else { 1 };
        self
    }

    /// Splits the optimizer's fused CPU update over `threads` OS threads.
    pub fn with_optimizer_threads(mut self, threads: usize) -> Self {
        self.optimizer = self.optimizer.with_update_threads(threads);
        self
    }

    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    /// Restores the optimizer from a checkpoint's moments.
    pub fn load_optimizer_state(&mut self, tensors: &std::collections::BTreeMap<String, Tensor>, step: i64) -> Result<(), String> {
        self.optimizer.load_state(tensors, step)
    }

    /// Forward and backward of one micro-batch; gradients accumulate until
    /// [`LocalEngine::step`]. The loss is the rows' mean divided by `accumulation` (the
    /// micro-batches per step). `train` switches dropout; on the CPU part `i` draws its
    /// masks from a generator seeded with `derive_seed(seed, i)`. Returns the rows'
    /// mean loss.
    pub fn backward(&mut self, rows: &[&Example], pad_to: Option<usize>, pad_id: i64, accumulation: usize, train: bool, seed: u64) -> f64 {
        let fresh = std::mem::take(&mut self.grads_stale);
        self.grad_squares = None;
        if self.batch_threads > 1 && rows.len() > 1 {
            return self.backward_in_threads(rows, pad_to, pad_id, accumulation, train, seed, fresh);
        }
        if fresh {
            self.optimizer.zero_grad();
        }
        rng::with_thread_seed(rng::derive_seed(seed, 0), || {
            let loss = part_loss(&self.model, rows, pad_to, pad_id, train, self.bf16, self.label_smoothing);
            (&loss / accumulation as f64).backward();
            loss.double_value(&[])
        })
    }

    /// [`LocalEngine::backward`] with the rows split over `batch_threads` threads. Each
    /// thread computes its part's gradients (of the step's shared bf16 weight copies
    /// under bf16, sparse for the word table: see [`StepWeights`]); then, once all are
    /// done, each sums every part's gradient, in part order, into the fp32 gradients of
    /// its own share of the variables (over them when `fresh`), and the sums of squares
    /// of those gradients are kept for clipping.
    #[allow(clippy::too_many_arguments)]
    fn backward_in_threads(&mut self, rows: &[&Example], pad_to: Option<usize>, pad_id: i64, accumulation: usize, train: bool, seed: u64, fresh: bool) -> f64 {
        let model = Shared(&self.model);
        let (bf16, label_smoothing) = (self.bf16, self.label_smoothing);
        let variables = Shared(self.optimizer.parameters());
        let step_weights = StepWeights::new(&self.model.model.linears(), bf16, true);
        let leaves = Shared(variables.0.iter().map(|v| step_weights.leaf_for(v)).collect::<Vec<_>>());
        let total = rows.len() as f64;
        let ranges: Vec<Range<usize>> = split_rows(rows.len(), self.batch_threads).into_iter().filter(|r| !r.is_empty()).collect();
        let owner = owners(&variables.0, ranges.len());
        let grads: Vec<Mutex<Vec<Tensor>>> = ranges.iter().map(|_| Mutex::new(Vec::new())).collect();
        let squares: Vec<Mutex<Option<f64>>> = variables.0.iter().map(|_| Mutex::new(None)).collect();
        let all_done = Barrier::new(ranges.len());
        let losses: Vec<std::thread::Result<f64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = ranges
                .into_iter()
                .enumerate()
                .map(|(i, range)| {
                    let (model, variables, leaves, grads, squares, owner, all_done, step_weights) =
                        (&model, &variables, &leaves, &grads, &squares, &owner, &all_done, &step_weights);
                    scope.spawn(move || {
                        tch::set_num_threads(1);
                        let part = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            step_weights.run(|| {
                                rng::with_thread_seed(rng::derive_seed(seed, i as u64), || {
                                    let share = &rows[range];
                                    let loss = part_loss(model.0, share, pad_to, pad_id, train, bf16, label_smoothing);
                                    let scaled = &loss * (share.len() as f64 / total) / accumulation as f64;
                                    // Returned, not accumulated: the sums below fix the order.
                                    *grads[i].lock().expect("no part panicked holding it") = Tensor::run_backward(&[scaled], &leaves.0, false, false);
                                    loss.double_value(&[]) * share.len() as f64
                                })
                            })
                        }));
                        // Every thread reaches the barrier, also after a panic, so none waits forever.
                        all_done.wait();
                        let part = part?;
                        let parts: Vec<Vec<Tensor>> =
                            grads.iter().map(|g| g.lock().map(|g| g.iter().map(Tensor::shallow_clone).collect()).unwrap_or_default()).collect();
                        if parts.iter().any(|p| p.len() != variables.0.len()) {
                            return Ok(part); // another part panicked: its panic is reported below
                        }
                        tch::no_grad(|| {
                            for (j, variable) in variables.0.iter().enumerate().filter(|&(j, _)| owner[j] == i) {
                                let defined: Vec<&Tensor> = parts.iter().map(|grads| &grads[j]).filter(|g| g.defined()).collect();
                                *squares[j].lock().expect("one writer") = sum_into_grad(variable, &defined, fresh);
                            }
                        });
                        Ok(part)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(Err)).collect()
        });
        let mut loss_sum = 0.0;
        for loss in losses {
            loss_sum += loss.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
        // Summed in variable order, so the norm does not depend on which thread finished first.
        self.grad_squares = Some(squares.into_iter().filter_map(|s| s.into_inner().ok().flatten()).sum());
        loss_sum / total
    }

    /// The optimizer step after the micro-batches: clip at `max_grad_norm`, AdamW at
    /// `lr`, zero the gradients. Returns the gradients' L2 norm before clipping (HF
    /// Trainer's logged `grad_norm`).
    pub fn step(&mut self, lr: f64, max_grad_norm: f64) -> f64 {
        let norm = match self.grad_squares.take() {
            Some(squares) => {
                let norm = squares.sqrt();
                self.optimizer.step_scaled(lr, clip_coef(norm, max_grad_norm));
                norm
            }
            None => {
                let norm = self.optimizer.clip_grad_norm(max_grad_norm);
                self.optimizer.step(lr);
                norm
            }
        };
        if self.batch_threads == 1 {
            self.optimizer.zero_grad();
        }
        // Batch threads write the next sums over these gradients: zeroing them first
        // would be one more pass over every parameter's worth of memory.
        self.grads_stale = self.batch_threads > 1;
        norm
    }
}

/// The mean cross-entropy of `rows` under `model`, labels smoothed by `label_smoothing`.
fn part_loss(model: &LoadedModel, rows: &[&Example], pad_to: Option<usize>, pad_id: i64, train: bool, bf16: bool, label_smoothing: f64) -> Tensor {
    let batch = collate(rows, pad_to, pad_id, model.vs.device());
    crate::training::logits(model, &batch, train, bf16).cross_entropy_loss::<Tensor>(&batch.labels, None, tch::Reduction::Mean, -100, label_smoothing)
}

/// Which of `parts` threads sums each variable's gradient: the largest variables first,
/// each to the thread with the fewest elements so far.
fn owners(variables: &[Tensor], parts: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..variables.len()).collect();
    order.sort_by_key(|&j| std::cmp::Reverse(variables[j].numel()));
    let mut load = vec![0usize; parts.max(1)];
    let mut owner = vec![0; variables.len()];
    for j in order {
        let least = (0..load.len()).min_by_key(|&t| load[t]).unwrap_or(0);
        owner[j] = least;
        load[least] += variables[j].numel();
    }
    owner
}

/// A model, or handles on its variables, used by several batch threads at once: the
/// forward passes only read the weights, libtorch's ops and autograd run concurrently
/// on shared read-only tensors, and each gradient is written by one thread only.
struct Shared<T>(T);
// SAFETY: see above; the threads end (scope) before the weights are written.
unsafe impl<T> Sync for Shared<T> {}
unsafe impl<T> Send for Shared<T> {}
