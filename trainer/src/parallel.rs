//! Training across devices: data-parallel replicas whose gradients are summed every
//! step by device-to-device copies (no maintained Rust crate binds NCCL for tch), and
//! layer stages that put consecutive encoder layers on the devices of a [`crate::plan`].

use std::ops::Range;

use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::LoadedModel;
use crate::training::data::{collate, Example};
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
/// replica takes the same AdamW step.
pub struct DataParallel {
    pub replicas: Vec<LoadedModel>,
    optimizers: Vec<AdamW>,
}

impl DataParallel {
    /// `replicas` must hold the same weights (loaded from one checkpoint, one per device).
    pub fn new(replicas: Vec<LoadedModel>, weight_decay: f64) -> Self {
        let optimizers = replicas.iter().map(|r| AdamW::new(&r.vs, weight_decay)).collect();
        Self { replicas, optimizers }
    }

    /// One optimizer step over `rows`; returns the batch's mean loss. `train` switches
    /// dropout (each replica draws its own masks, as DDP does).
    pub fn step(&mut self, rows: &[&Example], pad_id: i64, lr: f64, max_grad_norm: f64, train: bool) -> f64 {
        let total = rows.len().max(1) as f64;
        let mut loss_sum = 0.0;
        for (replica, range) in self.replicas.iter().zip(split_rows(rows.len(), self.replicas.len())) {
            if range.is_empty() {
                continue;
            }
            let share = &rows[range];
            let batch = collate(share, None, pad_id, replica.vs.device());
            let logits = replica.model.forward_t(&batch.input_ids, &batch.attention_mask, &batch.aspect_mask, train).logits;
            let loss = logits.to_kind(Kind::Float).cross_entropy_for_logits(&batch.labels);
            // This replica's rows' share of the whole batch's mean.
            (&loss * (share.len() as f64 / total)).backward();
            loss_sum += loss.double_value(&[]) * share.len() as f64;
        }
        let stores: Vec<&nn::VarStore> = self.replicas.iter().map(|r| &r.vs).collect();
        all_reduce_gradients(&stores);
        for opt in &mut self.optimizers {
            opt.clip_grad_norm(max_grad_norm);
            opt.step(lr);
            opt.zero_grad();
        }
        loss_sum / total
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
