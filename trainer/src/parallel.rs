//! Training across devices: data-parallel replicas whose gradients are summed every
//! step by device-to-device copies (no maintained Rust crate binds NCCL for tch), and
//! layer stages that put consecutive encoder layers on the devices of a [`crate::plan`].

use std::ops::Range;
use std::sync::{Barrier, Mutex};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use crate::checkpoint::{self, LoadOptions, LoadedModel};
use crate::ModelError;
use crate::training::data::{collate, Example};
use crate::rng;
use crate::training::optimizer::AdamW;

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

/// Sums each variable's gradient over the replicas (on the first replica's device)
/// and writes the sum back into every replica. When each replica's loss was its rows'
/// share of the batch mean, every replica then holds the whole batch's gradient.
pub fn all_reduce_gradients(replicas: &[&nn::VarStore]) {
    let Some(first) = replicas.first() else { return };
    tch::no_grad(|| {
        for (name, var) in first.variables() {
            let mut total = var.grad();
            if !total.defined() {
                continue;
            }
            total = total.copy();
            for other in &replicas[1..] {
                let g = other.variables()[&name].grad();
                if g.defined() {
                    total += g.to_device(total.device());
                }
            }
            for vs in replicas {
                let mut g = vs.variables()[&name].grad();
                if g.defined() {
                    g.copy_(&total);
                }
            }
        }
    });
}

/// N copies of a model, each with its own optimizer, kept identical: every step each
/// replica runs its share of the batch, gradients are all-reduced, clipped and every
/// replica takes the same AdamW step. One replica is plain training.
///
/// One replica on the CPU can also split each micro-batch over `batch_threads` OS
/// threads that share its weights, each running libtorch on one core: on a few cores
/// that beats libtorch's own intra-op threads, which synchronise after every small
/// kernel. Each part's gradients come back from autograd separately and are summed in
/// part order, and each part's dropout draws from its own seeded generator, so a run
/// stays reproducible bit for bit.
pub struct DataParallel {
    pub replicas: Vec<LoadedModel>,
    optimizers: Vec<AdamW>,
    batch_threads: usize,
    /// The gradients hold the last step's values, not zeros: batch threads overwrite
    /// them with the next micro-batch's sums instead of zeroing and then adding.
    grads_stale: bool,
}

impl DataParallel {
    /// `replicas` must hold the same weights (see [`Layout::load`]); `offload_optimizer`
    /// keeps AdamW's moments, and runs its update, in CPU memory.
    pub fn new(replicas: Vec<LoadedModel>, weight_decay: f64, offload_optimizer: bool) -> Self {
        let optimizers = replicas.iter().map(|r| AdamW::new(&r.vs, weight_decay).offloaded(offload_optimizer)).collect();
        Self { replicas, optimizers, batch_threads: 1, grads_stale: false }
    }

    /// Splits each micro-batch over `threads` threads (one replica on the CPU only;
    /// otherwise ignored).
    pub fn with_batch_threads(mut self, threads: usize) -> Self {
        let cpu_only = self.replicas.len() == 1 && self.replicas[0].vs.device() == Device::Cpu;
        self.batch_threads = if cpu_only { threads.max(1) } else { 1 };
        self
    }

    /// Splits each optimizer's fused CPU update over `threads` OS threads.
    pub fn with_optimizer_threads(mut self, threads: usize) -> Self {
        self.optimizers = self.optimizers.into_iter().map(|o| o.with_update_threads(threads)).collect();
        self
    }

    /// The first replica: the one evaluated and saved.
    pub fn model(&self) -> &LoadedModel {
        &self.replicas[0]
    }

    /// The first replica's optimizer (all hold the same state).
    pub fn optimizer(&self) -> &AdamW {
        &self.optimizers[0]
    }

    /// Restores every replica's optimizer from a checkpoint's moments.
    pub fn load_optimizer_state(&mut self, tensors: &std::collections::BTreeMap<String, Tensor>, step: i64) -> Result<(), String> {
        self.optimizers.iter_mut().try_for_each(|o| o.load_state(tensors, step))
    }

    /// Forward and backward of one micro-batch, each replica (or batch thread) its
    /// share of `rows`; gradients accumulate until [`DataParallel::step`]. Each share's
    /// loss is its part of the rows' mean, divided by `accumulation` (the micro-batches
    /// per step). `train` switches dropout; on the CPU share `i` draws its masks from a
    /// generator seeded with `derive_seed(seed, i)` (each replica its own masks, as DDP
    /// does). Returns the rows' mean loss.
    pub fn backward(&mut self, rows: &[&Example], pad_to: Option<usize>, pad_id: i64, accumulation: usize, train: bool, seed: u64) -> f64 {
        let fresh = std::mem::take(&mut self.grads_stale);
        if self.batch_threads > 1 && rows.len() > 1 {
            return self.backward_in_threads(rows, pad_to, pad_id, accumulation, train, seed, fresh);
        }
        if fresh {
            self.optimizers.iter_mut().for_each(AdamW::zero_grad);
        }
        let total = rows.len().max(1) as f64;
        let mut loss_sum = 0.0;
        let single = self.replicas.len() == 1;
        for (i, (replica, range)) in self.replicas.iter().zip(split_rows(rows.len(), self.replicas.len())).enumerate() {
            if range.is_empty() {
                continue;
            }
            let share = &rows[range];
            let loss = rng::with_thread_seed(rng::derive_seed(seed, i as u64), || {
                let loss = part_loss(replica, share, pad_to, pad_id, train);
                if single {
                    // Exactly plain training: no factor of 1.0 to round through.
                    (&loss / accumulation as f64).backward();
                } else {
                    (&loss * (share.len() as f64 / total) / accumulation as f64).backward();
                }
                loss.double_value(&[])
            });
            if single {
                return loss;
            }
            loss_sum += loss * share.len() as f64;
        }
        loss_sum / total
    }

    /// [`DataParallel::backward`] with the first replica's rows split over
    /// `batch_threads` threads. Each thread computes its part's gradients; then, once
    /// all are done, each sums every part's gradient, in part order, into the
    /// gradients of its own share of the variables (over them when `fresh`).
    #[allow(clippy::too_many_arguments)]
    fn backward_in_threads(&mut self, rows: &[&Example], pad_to: Option<usize>, pad_id: i64, accumulation: usize, train: bool, seed: u64, fresh: bool) -> f64 {
        let model = Shared(&self.replicas[0]);
        let variables = Shared(self.optimizers[0].parameters());
        let total = rows.len() as f64;
        let ranges: Vec<Range<usize>> = split_rows(rows.len(), self.batch_threads).into_iter().filter(|r| !r.is_empty()).collect();
        let owner = owners(&variables.0, ranges.len());
        let grads: Vec<Mutex<Vec<Tensor>>> = ranges.iter().map(|_| Mutex::new(Vec::new())).collect();
        let all_done = Barrier::new(ranges.len());
        let losses: Vec<std::thread::Result<f64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = ranges
                .into_iter()
                .enumerate()
                .map(|(i, range)| {
                    let (model, variables, grads, owner, all_done) = (&model, &variables, &grads, &owner, &all_done);
                    scope.spawn(move || {
                        tch::set_num_threads(1);
                        let part = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            rng::with_thread_seed(rng::derive_seed(seed, i as u64), || {
                                let share = &rows[range];
                                let loss = part_loss(model.0, share, pad_to, pad_id, train);
                                let scaled = &loss * (share.len() as f64 / total) / accumulation as f64;
                                // Returned, not accumulated: the sums below fix the order.
                                *grads[i].lock().expect("no part panicked holding it") = Tensor::run_backward(&[scaled], &variables.0, false, false);
                                loss.double_value(&[]) * share.len() as f64
                            })
                        }));
                        // Every thread reaches the barrier, also after a panic, so none waits forever.
                        all_done.wait();
                        let part = part?;
                        let parts: Vec<Vec<Tensor>> = grads.iter().map(|g| g.lock().map(|g| g.iter().map(Tensor::shallow_clone).collect()).unwrap_or_default()).collect();
                        if parts.iter().any(|p| p.len() != variables.0.len()) {
                            return Ok(part); // another part panicked: its panic is reported below
                        }
                        tch::no_grad(|| {
                            for (j, variable) in variables.0.iter().enumerate().filter(|&(j, _)| owner[j] == i) {
                                let defined: Vec<&Tensor> = parts.iter().map(|grads| &grads[j]).filter(|g| g.defined()).collect();
                                sum_into_grad(variable, &defined, fresh);
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
        loss_sum / total
    }

    /// The optimizer step after the micro-batches: all-reduce, clip at `max_grad_norm`,
    /// AdamW at `lr`, zero the gradients. Returns the gradients' L2 norm before
    /// clipping (HF Trainer's logged `grad_norm`).
    pub fn step(&mut self, lr: f64, max_grad_norm: f64) -> f64 {
        if self.replicas.len() > 1 {
            let stores: Vec<&nn::VarStore> = self.replicas.iter().map(|r| &r.vs).collect();
            all_reduce_gradients(&stores);
        }
        let mut norm = 0.0;
        for opt in &mut self.optimizers {
            norm = opt.clip_grad_norm(max_grad_norm);
            opt.step(lr);
            if self.batch_threads == 1 {
                opt.zero_grad();
            }
        }
        // Batch threads write the next sums over these gradients: zeroing them first
        // would be one more pass over every parameter's worth of memory.
        self.grads_stale = self.batch_threads > 1;
        norm
    }
}

/// The mean cross-entropy of `rows` under `model` (padded on its first device).
fn part_loss(model: &LoadedModel, rows: &[&Example], pad_to: Option<usize>, pad_id: i64, train: bool) -> Tensor {
    let batch = collate(rows, pad_to, pad_id, model.vs.device());
    crate::training::logits(model, &batch, train).cross_entropy_for_logits(&batch.labels)
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

/// Adds the parts' gradients `parts`, in order, to `variable`'s gradient, or writes
/// their sum over it when `fresh` (its values are stale). The same bits either way:
/// 0 + a + b is a + b.
fn sum_into_grad(variable: &Tensor, parts: &[&Tensor], fresh: bool) {
    let mut grad = variable.grad();
    let rest = if !grad.defined() {
        let Some(first) = parts.first() else { return };
        // tch cannot assign a gradient; this backward leaves exactly `first` (· 1) in it.
        tch::with_grad(|| (variable * first.detach()).sum(tch::Kind::Float).backward());
        grad = variable.grad();
        &parts[1..]
    } else if fresh {
        match parts {
            [] => {
                let _ = grad.zero_();
                &[][..]
            }
            [only] => {
                grad.copy_(only);
                &[][..]
            }
            [a, b, rest @ ..] => {
                let _ = a.add_out(&grad, b);
                rest
            }
        }
    } else {
        parts
    };
    for g in rest {
        grad += *g;
    }
}

/// A model, or handles on its variables, used by several batch threads at once: the
/// forward passes only read the weights, libtorch's ops and autograd run concurrently
/// on shared read-only tensors, and each gradient is written by one thread only.
struct Shared<T>(T);
// SAFETY: see above; the threads end (scope) before the weights are written.
unsafe impl<T> Sync for Shared<T> {}
unsafe impl<T> Send for Shared<T> {}

/// How a training run spreads over devices: `replicas` data-parallel copies, each
/// sharded over `layers_per_stage.len()` devices (none or one entry: unsharded), and
/// where AdamW's moments live. On GPUs, copy `r` takes GPUs `r·stages .. (r+1)·stages`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub replicas: usize,
    /// Encoder layers on each of a copy's devices; empty: all on one.
    #[serde(default)]
    pub layers_per_stage: Vec<usize>,
    #[serde(default)]
    pub offload_optimizer: bool,
    /// Every device is the CPU: the same arithmetic where there is no GPU (tests).
    #[serde(default)]
    pub on_cpu: bool,
}

impl Layout {
    /// One copy on the first GPU, or on the CPU without one.
    pub fn single_device() -> Self {
        Self { replicas: 1, layers_per_stage: Vec::new(), offload_optimizer: false, on_cpu: !tch::Cuda::is_available() }
    }

    /// The devices of the first copy's stages: the copy evaluated and saved.
    pub fn first_copy_devices(&self) -> Vec<Device> {
        self.devices().swap_remove(0)
    }

    /// A device plan's layout on GPUs 0.. .
    pub fn from_plan(plan: &crate::plan::Plan) -> Self {
        Self {
            replicas: plan.replicas as usize,
            layers_per_stage: if plan.stages > 1 { plan.layers_per_stage.iter().map(|&l| l as usize).collect() } else { Vec::new() },
            offload_optimizer: plan.offload_optimizer,
            on_cpu: false,
        }
    }

    /// The devices of each copy's stages.
    pub fn devices(&self) -> Vec<Vec<Device>> {
        let stages = self.layers_per_stage.len().max(1);
        (0..self.replicas.max(1))
            .map(|r| (0..stages).map(|s| if self.on_cpu { Device::Cpu } else { Device::Cuda(r * stages + s) }).collect())
            .collect()
    }

    /// Loads one copy of the checkpoint in `dir` onto `devices` (its stages).
    pub fn load_copy(&self, dir: &Path, options: &LoadOptions, devices: &[Device]) -> Result<LoadedModel, ModelError> {
        let mut model = checkpoint::load(dir, options, devices[0])?;
        if self.layers_per_stage.len() > 1 {
            let stages = Stages { devices: devices.to_vec(), layers_per_stage: self.layers_per_stage.clone() };
            place_stages(&mut model, &stages).map_err(ModelError::Config)?;
        }
        Ok(model)
    }

    /// Every copy of the checkpoint in `dir`, with the first copy's weights (a fresh
    /// head is drawn once and copied to the others).
    pub fn load(&self, dir: &Path, options: &LoadOptions) -> Result<Vec<LoadedModel>, ModelError> {
        let mut copies: Vec<LoadedModel> = Vec::new();
        for devices in self.devices() {
            let mut copy = self.load_copy(dir, options, &devices)?;
            if let Some(first) = copies.first() {
                copy.vs.copy(&first.vs).map_err(|e| ModelError::Config(format!("copying weights to a replica: {e}")))?;
            }
            copies.push(copy);
        }
        Ok(copies)
    }
}

/// Which device each part of a model runs on: the embeddings on the first stage,
/// `layers_per_stage[i]` consecutive layers on `devices[i]`, the last LayerNorm, the
/// pooling and the head on the last stage.
#[derive(Clone, Debug)]
pub struct Stages {
    pub devices: Vec<Device>,
    pub layers_per_stage: Vec<usize>,
}

impl Stages {
    /// The device of each encoder layer.
    pub fn layer_devices(&self) -> Vec<Device> {
        self.devices.iter().zip(&self.layers_per_stage).flat_map(|(&d, &n)| std::iter::repeat_n(d, n)).collect()
    }

    /// The device a variable (HF name) lives on.
    pub fn device_of(&self, name: &str, layer_devices: &[Device]) -> Device {
        let last = *self.devices.last().expect("at least one stage");
        if name.contains(".embeddings.") {
            return self.devices[0];
        }
        if let Some(rest) = name.split(".encoder.layer.").nth(1) {
            if let Some(i) = rest.split('.').next().and_then(|i| i.parse::<usize>().ok()) {
                return layer_devices.get(i).copied().unwrap_or(last);
            }
        }
        last
    }
}

/// Moves `model`'s variables to their stages' devices (in place: every handle on a
/// variable sees the move) and makes its forward pass follow them.
pub fn place_stages(model: &mut LoadedModel, stages: &Stages) -> Result<(), String> {
    let layers = model.model.config.num_hidden_layers as usize;
    if stages.devices.len() != stages.layers_per_stage.len() || stages.layers_per_stage.iter().sum::<usize>() != layers {
        return Err(format!("stages {:?} do not cover the model's {layers} layers", stages.layers_per_stage));
    }
    let layer_devices = stages.layer_devices();
    tch::no_grad(|| {
        for (name, mut var) in model.vs.variables() {
            let device = stages.device_of(&name, &layer_devices);
            if var.device() != device {
                var.set_data(&var.to_device(device));
            }
        }
    });
    model.model.set_stage_devices(stages.devices[0], layer_devices, *stages.devices.last().expect("at least one stage"));
    Ok(())
}

/// Moves `t` to `device` unless it is there.
pub fn on(t: &Tensor, device: Device) -> Tensor {
    if t.device() == device {
        t.shallow_clone()
    } else {
        t.to_device(device)
    }
}
