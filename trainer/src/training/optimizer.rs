//! AdamW with decoupled weight decay, the linear warmup/decay schedule and gradient
//! clipping, as HF Trainer runs them for this recipe.
//!
//! Written out instead of using `tch::nn::Optimizer` because a resumed run must
//! continue from exactly the saved moments, and libtorch's C++ optimizer state is not
//! reachable from Rust.

use std::collections::BTreeMap;

use tch::{nn, Kind, Tensor};

use crate::simd::{self, Kernel};

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
            let coef = clip_coef(total, max_norm);
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
        self.step_scaled(lr, 1.0);
    }

    /// [`AdamW::step`] on the gradients times `grad_scale`: gradient clipping's factor,
    /// applied as the update reads each gradient instead of in a pass of its own
    /// (the same arithmetic as `clip_grad_norm_` scaling them in place first).
    pub fn step_scaled(&mut self, lr: f64, grad_scale: f64) {
        self.step += 1;
        let h = Hyper::at(lr, self.step, self.beta1, self.beta2, self.eps);
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self.params.iter().map(|p| p.tensor.grad()).collect();
            let mut fused = Vec::new();
            for (p, grad) in self.params.iter_mut().zip(&grads) {
                if !grad.defined() {
                    continue;
                }
                let decay = if p.decay { 1.0 - lr * self.weight_decay } else { 1.0 };
                if !self.offload {
                    // SAFETY: the slab borrows the weight, moments and gradient, which
                    // outlive it (`self.params`, `grads`), and nothing else touches them
                    // while the update runs (no_grad, one thread drives training).
                    if let Some(slab) = unsafe { Slab::of(&p.tensor, grad, &p.exp_avg, &p.exp_avg_sq, decay) } {
                        fused.push(slab);
                        continue;
                    }
                }
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
                    (cpu(&p.tensor), cpu(grad))
                } else {
                    (p.tensor.shallow_clone(), grad.shallow_clone())
                };
                let grad = if grad_scale != 1.0 { grad * grad_scale } else { grad };
                update(&mut weight, &grad, &mut p.exp_avg, &mut p.exp_avg_sq, decay, &h, self.threads);
                if self.offload {
                    p.tensor.copy_(&weight);
                }
            }
            fused_cpu_steps(fused, &h, grad_scale, self.threads);
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

/// The factor `clip_grad_norm_` scales gradients of global L2 norm `norm` by.
pub fn clip_coef(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
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
    // SAFETY: the caller's tensors outlive the slab and are not used elsewhere meanwhile.
    match unsafe { Slab::of(weight, grad, exp_avg, exp_avg_sq, decay) } {
        Some(slab) => fused_cpu_steps(vec![slab], h, 1.0, threads),
        None => tensor_step(weight, grad, exp_avg, exp_avg_sq, decay, h),
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

/// Elements below which the fused update stays on one thread.
const FUSED_CHUNK: usize = 1 << 16;

/// One parameter's (or a piece of one's) buffers for the fused update.
struct Slab<'a> {
    weight: &'a mut [f32],
    grad: &'a [f32],
    exp_avg: &'a mut [f32],
    exp_avg_sq: &'a mut [f32],
    decay: f32,
}

impl<'a> Slab<'a> {
    /// The buffers of four distinct contiguous f32 CPU tensors of one size, or `None`.
    ///
    /// # Safety
    /// The tensors must outlive `'a` and nothing else may read or write the weight and
    /// moments, or write the gradient, during `'a`.
    unsafe fn of(weight: &Tensor, grad: &Tensor, exp_avg: &Tensor, exp_avg_sq: &Tensor, decay: f64) -> Option<Self> {
        let usable = |t: &Tensor| t.device() == tch::Device::Cpu && t.kind() == Kind::Float && t.is_contiguous() && !t.is_sparse();
        let n = weight.numel();
        if ![weight, grad, exp_avg, exp_avg_sq].iter().all(|t| usable(t) && t.numel() == n) {
            return None;
        }
        // SAFETY: see above; the moments were made with `zeros_like` and the gradient is
        // its own buffer, so the four do not overlap.
        unsafe {
            Some(Self {
                weight: std::slice::from_raw_parts_mut(weight.data_ptr() as *mut f32, n),
                grad: std::slice::from_raw_parts(grad.data_ptr() as *const f32, n),
                exp_avg: std::slice::from_raw_parts_mut(exp_avg.data_ptr() as *mut f32, n),
                exp_avg_sq: std::slice::from_raw_parts_mut(exp_avg_sq.data_ptr() as *mut f32, n),
                decay: decay as f32,
            })
        }
    }

    fn len(&self) -> usize {
        self.weight.len()
    }

    /// The first `at` elements and the rest.
    fn split_at(self, at: usize) -> (Self, Self) {
        let (w0, w1) = self.weight.split_at_mut(at);
        let (g0, g1) = self.grad.split_at(at);
        let (m0, m1) = self.exp_avg.split_at_mut(at);
        let (v0, v1) = self.exp_avg_sq.split_at_mut(at);
        let decay = self.decay;
        (Self { weight: w0, grad: g0, exp_avg: m0, exp_avg_sq: v0, decay }, Self { weight: w1, grad: g1, exp_avg: m1, exp_avg_sq: v1, decay })
    }

    /// The update, at the CPU's widest vector width: the loop is bound by its
    /// divisions and square roots as much as by memory.
    fn update(self, k: &Constants) {
        simd::widest(Update { slab: self, k })
    }
}

/// One slab's AdamW update with the step's constants.
struct Update<'a, 'k> {
    slab: Slab<'a>,
    k: &'k Constants,
}

impl Kernel for Update<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Constants { b2, one_minus_b1, one_minus_b2, step_size, bc2, eps, grad_scale } = *self.k;
        let Slab { weight, grad, exp_avg, exp_avg_sq, decay } = self.slab;
        let n = weight.len();
        let (grad, exp_avg, exp_avg_sq) = (&grad[..n], &mut exp_avg[..n], &mut exp_avg_sq[..n]);
        for i in 0..n {
            let gi = grad[i] * grad_scale;
            let mi = exp_avg[i] + one_minus_b1 * (gi - exp_avg[i]); // lerp, as torch
            let vi = b2 * exp_avg_sq[i] + gi * (gi * one_minus_b2);
            exp_avg[i] = mi;
            exp_avg_sq[i] = vi;
            weight[i] = weight[i] * decay - step_size * mi / (vi.sqrt() / bc2 + eps);
        }
    }
}

/// The step's constants in f32, as the fused loop uses them.
#[derive(Clone, Copy)]
struct Constants {
    b2: f32,
    one_minus_b1: f32,
    one_minus_b2: f32,
    step_size: f32,
    bc2: f32,
    eps: f32,
    grad_scale: f32,
}

/// The fused update of every slab, the elements dealt out in order to `threads` OS
/// threads in equal shares (a slab split where a share ends): one set of threads per
/// step, not one per parameter.
fn fused_cpu_steps(slabs: Vec<Slab>, h: &Hyper, grad_scale: f64, threads: usize) {
    // 1 - beta in f64 then rounded, as torch's scalars are: 1 - 0.999f32 is 1.3e-5 off.
    let k = Constants {
        b2: h.beta2 as f32,
        one_minus_b1: (1.0 - h.beta1) as f32,
        one_minus_b2: (1.0 - h.beta2) as f32,
        step_size: h.step_size as f32,
        bc2: h.bias_correction2_sqrt as f32,
        eps: h.eps as f32,
        grad_scale: grad_scale as f32,
    };
    let total: usize = slabs.iter().map(Slab::len).sum();
    let threads = threads.min(total.div_ceil(FUSED_CHUNK)).max(1);
    let per = total.div_ceil(threads).max(1);
    let mut shares: Vec<Vec<Slab>> = Vec::with_capacity(threads);
    let (mut share, mut room) = (Vec::new(), per);
    for mut slab in slabs {
        while slab.len() > room {
            let (head, tail) = slab.split_at(room);
            share.push(head);
            shares.push(std::mem::take(&mut share));
            (slab, room) = (tail, per);
        }
        room -= slab.len();
        share.push(slab);
    }
    shares.push(share);
    let mut shares = shares.into_iter().filter(|s| !s.is_empty());
    let own = shares.next();
    std::thread::scope(|scope| {
        for share in shares {
            scope.spawn(move || share.into_iter().for_each(|slab| slab.update(&k)));
        }
        own.into_iter().flatten().for_each(|slab| slab.update(&k));
    });
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

    /// Clipping's factor applied as the update reads the gradients gives the bits of
    /// scaling them first, and one set of update threads over many parameters the bits
    /// of one thread.
    #[test]
    fn a_scaled_step_equals_clipping_then_stepping_at_any_thread_count() {
        let run = |scaled: bool, threads: usize| {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let sizes = [150_000i64, 70_001, 3, 90_000];
            let vars: Vec<Tensor> =
                sizes.iter().enumerate().map(|(i, &n)| (vs.root() / format!("layer{i}")).var("weight", &[n], nn::Init::Const(0.5))).collect();
            let mut opt = AdamW::new(&vs, 0.01).with_update_threads(threads);
            for step in 0..3 {
                opt.zero_grad();
                let loss: Tensor = vars
                    .iter()
                    .map(|v| (v - Tensor::arange(v.numel() as i64, (Kind::Float, tch::Device::Cpu)).sin() * (step + 2) as f64).square().sum(Kind::Float))
                    .sum();
                loss.backward();
                if scaled {
                    let squares: f64 = vars.iter().map(|v| v.grad().to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[])).sum();
                    opt.step_scaled(1e-3, clip_coef(squares.sqrt(), 1.0));
                } else {
                    opt.clip_grad_norm(1.0);
                    opt.step(1e-3);
                }
            }
            vars.iter().map(|v| v.detach().copy()).collect::<Vec<_>>()
        };
        let clipped = run(false, 1);
        for threads in [1, 2, 3] {
            for (a, b) in clipped.iter().zip(run(true, threads)) {
                let d = (a - &b).abs().max().double_value(&[]);
                // The norms differ in rounding (f64 here, f32 in clip_grad_norm), so the
                // weights (near 0.5-1) may differ in their last bit: measured 1.2e-7, one unit.
                assert!(d <= 2.0 * f64::from(f32::EPSILON), "{threads} threads: weights differ by {d}");
            }
        }
        let (one, two) = (run(true, 1), run(true, 2));
        assert!(one.iter().zip(&two).all(|(a, b)| a.equal(b)), "threads changed the bits");
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
