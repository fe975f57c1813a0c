//! AdamW with decoupled weight decay, the linear warmup/decay schedule and gradient
//! clipping, as HF Trainer runs them for this recipe.
//!
//! Written out instead of using `tch::nn::Optimizer` because a resumed run must
//! continue from exactly the saved moments, and libtorch's C++ optimizer state is not
//! reachable from Rust.

use std::collections::BTreeMap;

use tch::{nn, Kind, Tensor};

struct Param {
    name: String,
    tensor: Tensor,
    decay: bool,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

pub struct AdamW {
    params: Vec<Param>,
    /// Optimizer steps taken so far (torch's `state_steps`).
    step: i64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// Moments in CPU memory; each step copies the gradient there, updates a CPU copy
    /// of the weight and writes it back (ZeRO-Offload's split: the GPU keeps weights,
    /// gradients and activations).
    offload: bool,
    /// OS threads of the fused CPU update (1 unless [`AdamW::with_update_threads`]).
    threads: usize,
}

/// HF `get_decay_parameter_names`: every parameter decays except biases and LayerNorm
/// weights.
pub(crate) fn decays(name: &str) -> bool {
    !(name.contains("bias") || name.contains("LayerNorm") || name.contains("layer_norm"))
}

impl AdamW {
    /// torch defaults: betas (0.9, 0.999), eps 1e-8.
    pub fn new(vs: &nn::VarStore, weight_decay: f64) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = vars
            .into_iter()
            .map(|(name, tensor)| Param { decay: decays(&name), exp_avg: tensor.zeros_like(), exp_avg_sq: tensor.zeros_like(), name, tensor })
            .collect();
        Self { params, step: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, offload: false, threads: 1 }
    }

    /// Splits the fused CPU update over `threads` OS threads (the engine passes its
    /// CPU threads).
    pub fn with_update_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// With `offload`, the moments move to CPU memory and the update runs there.
    pub fn offloaded(mut self, offload: bool) -> Self {
        if offload {
            for p in &mut self.params {
                p.exp_avg = p.exp_avg.to_device(tch::Device::Cpu);
                p.exp_avg_sq = p.exp_avg_sq.to_device(tch::Device::Cpu);
            }
        }
        self.offload = offload;
        self
    }

    pub fn steps_taken(&self) -> i64 {
        self.step
    }

    /// The trained variables (handles on the model's own tensors), in name order.
    pub fn parameters(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.tensor.shallow_clone()).collect()
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.tensor.zero_grad();
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm`
    /// (`torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self.params.iter().map(|p| p.tensor.grad()).filter(|g| g.defined()).collect();
            if grads.is_empty() {
                return 0.0;
            }
            let squares: Vec<Tensor> = grads.iter().map(|g| g.norm().square()).collect();
            let total = Tensor::stack(&squares, 0).sum(Kind::Float).sqrt().double_value(&[]);
            let coef = (max_norm / (total + 1e-6)).min(1.0);
            if coef < 1.0 {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(coef);
                }
            }
            total
        })
    }

    /// One update with learning rate `lr`: torch's AdamW. On CPU one fused pass per
    /// parameter reads the weight, gradient and moments once and writes them once (as
    /// torch's `fused=True`); step by step with tensor operations that is about a dozen
    /// passes and five temporaries per parameter, measured at ~20% of a dynamic-padding
    /// training step on MiniLM.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let h = Hyper::at(lr, self.step, self.beta1, self.beta2, self.eps);
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let decay = if p.decay { 1.0 - lr * self.weight_decay } else { 1.0 };
                let (mut weight, grad) = if self.offload {
                    // A CPU copy even when the weight is on the CPU, so the staging is
                    // the same wherever the model runs.
                    let cpu = |t: &Tensor| {
                        if t.device() == tch::Device::Cpu {
                            t.copy()
                        } else {
                            t.to_device(tch::Device::Cpu)
                        }
                    };
                    (cpu(&p.tensor), cpu(&grad))
                } else {
                    (p.tensor.shallow_clone(), grad)
                };
                update(&mut weight, &grad, &mut p.exp_avg, &mut p.exp_avg_sq, decay, &h, self.threads);
                if self.offload {
                    p.tensor.copy_(&weight);
                }
            }
        })
    }

    /// The moments by parameter name, for checkpoints.
    pub fn state_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for p in &self.params {
            out.insert(format!("exp_avg.{}", p.name), p.exp_avg.shallow_clone());
            out.insert(format!("exp_avg_sq.{}", p.name), p.exp_avg_sq.shallow_clone());
        }
        out
    }

    /// Restores moments and the step count saved by [`AdamW::state_tensors`].
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>, step: i64) -> Result<(), String> {
        tch::no_grad(|| {
            for p in &mut self.params {
                for (prefix, slot) in [("exp_avg", &mut p.exp_avg), ("exp_avg_sq", &mut p.exp_avg_sq)] {
                    let key = format!("{prefix}.{}", p.name);
                    let src = tensors.get(&key).ok_or_else(|| format!("optimizer state lacks {key}"))?;
                    if src.size() != slot.size() {
                        return Err(format!("optimizer state {key} has shape {:?}, expected {:?}", src.size(), slot.size()));
                    }
                    slot.copy_(src);
                }
            }
            Ok(())
        })?;
        self.step = step;
        Ok(())
    }
}

/// The step's constants.
pub(crate) struct Hyper {
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// lr / (1 - beta1^t)
    step_size: f64,
    bias_correction2_sqrt: f64,
}

impl Hyper {
    /// The constants of update number `step` (from 1) at learning rate `lr`.
    pub(crate) fn at(lr: f64, step: i64, beta1: f64, beta2: f64, eps: f64) -> Self {
        let t = step as i32;
        Self { beta1, beta2, eps, step_size: lr / (1.0 - beta1.powi(t)), bias_correction2_sqrt: (1.0 - beta2.powi(t)).sqrt() }
    }
}

/// One AdamW update of `weight` and its moments in place, `decay` the weight's factor
/// (1 - lr·weight_decay, or 1): one fused pass over contiguous f32 CPU tensors split
/// over `threads`, else tensor operations (any device).
pub(crate) fn update(weight: &mut Tensor, grad: &Tensor, exp_avg: &mut Tensor, exp_avg_sq: &mut Tensor, decay: f64, h: &Hyper, threads: usize) {
    if !fused_cpu_step(weight, grad, exp_avg, exp_avg_sq, decay, h, threads) {
        tensor_step(weight, grad, exp_avg, exp_avg_sq, decay, h);
    }
}

/// The update written with tensor operations (any device).
fn tensor_step(weight: &mut Tensor, grad: &Tensor, exp_avg: &mut Tensor, exp_avg_sq: &mut Tensor, decay: f64, h: &Hyper) {
    if decay != 1.0 {
        let _ = weight.g_mul_scalar_(decay);
    }
    let _ = exp_avg.lerp_(grad, 1.0 - h.beta1);
    let _ = exp_avg_sq.g_mul_scalar_(h.beta2);
    let _ = exp_avg_sq.addcmul_(grad, &(grad * (1.0 - h.beta2)));
    let denom = exp_avg_sq.sqrt() / h.bias_correction2_sqrt + h.eps;
    let update = (&*exp_avg / denom) * h.step_size;
    let _ = weight.f_sub_(&update).expect("parameter update");
}

/// Elements per parallel chunk of the fused update.
const FUSED_CHUNK: usize = 1 << 16;

/// The same update in one pass over contiguous f32 CPU tensors, split over `threads`
/// OS threads. Returns false (nothing done) for any other layout or device.
fn fused_cpu_step(weight: &mut Tensor, grad: &Tensor, exp_avg: &mut Tensor, exp_avg_sq: &mut Tensor, decay: f64, h: &Hyper, threads: usize) -> bool {
    let usable = |t: &Tensor| t.device() == tch::Device::Cpu && t.kind() == Kind::Float && t.is_contiguous();
    if ![&*weight, grad, &*exp_avg, &*exp_avg_sq].iter().all(|t| usable(t)) {
        return false;
    }
    let n = weight.numel();
    // SAFETY: four distinct contiguous f32 CPU buffers of `n` elements (checked above;
    // the moments were created with `zeros_like` and the gradient is its own buffer),
    // not touched by anything else while this runs (no_grad, one thread drives training).
    let (weight, grad, m, v) = unsafe {
        (
            std::slice::from_raw_parts_mut(weight.data_ptr() as *mut f32, n),
            std::slice::from_raw_parts(grad.data_ptr() as *const f32, n),
            std::slice::from_raw_parts_mut(exp_avg.data_ptr() as *mut f32, n),
            std::slice::from_raw_parts_mut(exp_avg_sq.data_ptr() as *mut f32, n),
        )
    };
    // 1 - beta in f64 then rounded, as torch's scalars are: 1 - 0.999f32 is 1.3e-5 off.
    let (decay, b2, one_minus_b1, one_minus_b2) = (decay as f32, h.beta2 as f32, (1.0 - h.beta1) as f32, (1.0 - h.beta2) as f32);
    let (step_size, bc2, eps) = (h.step_size as f32, h.bias_correction2_sqrt as f32, h.eps as f32);
    let update = |w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
        for i in 0..w.len() {
            let gi = g[i];
            let mi = m[i] + one_minus_b1 * (gi - m[i]); // lerp, as torch
            let vi = b2 * v[i] + gi * (gi * one_minus_b2);
            m[i] = mi;
            v[i] = vi;
            w[i] = w[i] * decay - step_size * mi / (vi.sqrt() / bc2 + eps);
        }
    };
    let threads = threads.min(n.div_ceil(FUSED_CHUNK)).max(1);
    if threads == 1 {
        update(weight, grad, m, v);
        return true;
    }
    let per = n.div_ceil(threads);
    std::thread::scope(|scope| {
        let parts = weight.chunks_mut(per).zip(grad.chunks(per)).zip(m.chunks_mut(per)).zip(v.chunks_mut(per));
        for (((w, g), m), v) in parts {
            scope.spawn(move || update(w, g, m, v));
        }
    });
    true
}

/// HF `get_linear_schedule_with_warmup`: the factor applied to the base learning rate
/// for the update that follows `step` completed updates.
pub fn linear_schedule(step: i64, warmup_steps: i64, total_steps: i64) -> f64 {
    if step < warmup_steps {
        step as f64 / warmup_steps.max(1) as f64
    } else {
        ((total_steps - step) as f64 / (total_steps - warmup_steps).max(1) as f64).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_warms_up_then_decays_to_zero() {
        assert_eq!(linear_schedule(0, 100, 1000), 0.0);
        assert_eq!(linear_schedule(50, 100, 1000), 0.5);
        assert_eq!(linear_schedule(100, 100, 1000), 1.0);
        assert_eq!(linear_schedule(550, 100, 1000), 0.5);
        assert_eq!(linear_schedule(1000, 100, 1000), 0.0);
        assert_eq!(linear_schedule(1200, 100, 1000), 0.0);
    }

    #[test]
    fn biases_and_layer_norms_do_not_decay() {
        assert!(decays("bert.encoder.layer.0.attention.self.query.weight"));
        assert!(decays("bert.embeddings.word_embeddings.weight"));
        assert!(!decays("bert.encoder.layer.0.attention.self.query.bias"));
        assert!(!decays("bert.embeddings.LayerNorm.weight"));
        assert!(!decays("roberta.encoder.layer.0.attention.self_attn_layer_norm.weight"));
    }

    #[test]
    fn one_step_matches_the_adamw_formula() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let mut w = (vs.root() / "w").var("weight", &[2], nn::Init::Const(1.0));
        let mut opt = AdamW::new(&vs, 0.1);
        let loss = (&w * Tensor::from_slice(&[2.0f32, -4.0])).sum(Kind::Float);
        loss.backward();
        opt.step(0.01);
        // decay: 1 * (1 - 0.001) = 0.999; m_hat = g, v_hat = g^2 -> update = lr * sign(g)
        let got: Vec<f32> = Vec::try_from(w.detach()).unwrap();
        assert!((got[0] - (0.999 - 0.01)).abs() < 1e-6, "{got:?}");
        assert!((got[1] - (0.999 + 0.01)).abs() < 1e-6, "{got:?}");
        w.zero_grad();
    }

    #[test]
    fn the_fused_cpu_update_equals_the_tensor_operations() {
        tch::manual_seed(7);
        let make = |fused: bool| {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let w = (vs.root() / "layer").var("weight", &[300_000], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
            w.detach().copy_(&Tensor::arange(300_000, (Kind::Float, tch::Device::Cpu)).sin());
            let mut opt = AdamW::new(&vs, 0.01).with_update_threads(3);
            for step in 0..3 {
                let target = Tensor::arange(300_000, (Kind::Float, tch::Device::Cpu)).cos() * (step + 1) as f64;
                let loss = (&w - target).square().sum(Kind::Float);
                opt.zero_grad();
                loss.backward();
                if fused {
                    opt.step(1e-3);
                } else {
                    opt.step += 1;
                    let t = opt.step as i32;
                    let h = Hyper {
                        beta1: 0.9,
                        beta2: 0.999,
                        eps: 1e-8,
                        step_size: 1e-3 / (1.0 - 0.9f64.powi(t)),
                        bias_correction2_sqrt: (1.0 - 0.999f64.powi(t)).sqrt(),
                    };
                    tch::no_grad(|| {
                        for p in &mut opt.params {
                            let g = p.tensor.grad();
                            tensor_step(&mut p.tensor, &g, &mut p.exp_avg, &mut p.exp_avg_sq, 1.0 - 1e-3 * 0.01, &h);
                        }
                    });
                }
            }
            (w.detach(), opt.params[0].exp_avg_sq.shallow_clone())
        };
        let (fused_w, fused_v) = make(true);
        let (plain_w, plain_v) = make(false);
        let dw = (&fused_w - &plain_w).abs().max().double_value(&[]);
        // Relative to the largest moment: where a gradient is ~0 its own relative error is not meaningful.
        let dv = (&fused_v - &plain_v).abs().max().double_value(&[]) / plain_v.abs().max().double_value(&[]);
        assert!(dw < 1e-6, "weights differ by {dw}");
        assert!(dv < 1e-6, "second moments differ by {dv} of the largest");
    }

    #[test]
    fn offloaded_moments_give_the_same_steps() {
        let run = |offload: bool| {
            tch::manual_seed(3);
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let w = (vs.root() / "layer").var("weight", &[1000], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
            let mut opt = AdamW::new(&vs, 0.01).offloaded(offload);
            for step in 0..4 {
                let loss = (&w - Tensor::arange(1000, (Kind::Float, tch::Device::Cpu)).cos() * step as f64).square().sum(Kind::Float);
                loss.backward();
                opt.step(1e-3);
                opt.zero_grad();
            }
            (w.detach().copy(), opt.params[0].exp_avg.copy())
        };
        let (w, m) = run(false);
        let (w_off, m_off) = run(true);
        // The same arithmetic on a staged copy: bitwise equal.
        assert!(w.equal(&w_off), "weights differ by {}", (&w - &w_off).abs().max().double_value(&[]));
        assert!(m.equal(&m_off));
        assert!(m.abs().sum(Kind::Float).double_value(&[]) > 0.0, "the steps moved the moments");
    }

    #[test]
    fn clipping_scales_the_global_norm_down() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let a = vs.root().var("a", &[1], nn::Init::Const(0.0));
        let b = vs.root().var("b", &[1], nn::Init::Const(0.0));
        let loss = &a * 3.0 + &b * 4.0;
        loss.sum(Kind::Float).backward();
        let mut opt = AdamW::new(&vs, 0.0);
        let norm = opt.clip_grad_norm(1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        let ga = a.grad().double_value(&[0]);
        assert!((ga - 0.6).abs() < 1e-5, "{ga}");
    }
}
