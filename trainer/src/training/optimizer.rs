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
}

/// HF `get_decay_parameter_names`: every parameter decays except biases and LayerNorm
/// weights.
fn decays(name: &str) -> bool {
    !(name.contains("bias") || name.contains("LayerNorm") || name.contains("layer_norm"))
}

impl AdamW {
    /// torch defaults: betas (0.9, 0.999), eps 1e-8.
    pub fn new(vs: &nn::VarStore, weight_decay: f64) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = vars
            .into_iter()
            .map(|(name, tensor)| Param {
                decay: decays(&name),
                exp_avg: tensor.zeros_like(),
                exp_avg_sq: tensor.zeros_like(),
                name,
                tensor,
            })
            .collect();
        Self { params, step: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay }
    }

    pub fn steps_taken(&self) -> i64 {
        self.step
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

    /// One update with learning rate `lr` (torch's single-tensor AdamW).
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let t = self.step as i32;
        let bias_correction1 = 1.0 - self.beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        let step_size = lr / bias_correction1;
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                if p.decay && self.weight_decay != 0.0 {
                    let _ = p.tensor.g_mul_scalar_(1.0 - lr * self.weight_decay);
                }
                let _ = p.exp_avg.lerp_(&grad, 1.0 - self.beta1);
                let _ = p.exp_avg_sq.g_mul_scalar_(self.beta2);
                let _ = p.exp_avg_sq.addcmul_(&grad, &(&grad * (1.0 - self.beta2)));
                let denom = p.exp_avg_sq.sqrt() / bias_correction2_sqrt + self.eps;
                let update = (&p.exp_avg / denom) * step_size;
                let _ = p.tensor.f_sub_(&update).expect("parameter update");
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
        let _ = w.zero_grad();
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
