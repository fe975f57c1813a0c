//! Proves libtorch works here: a forward pass, a backward pass and an optimizer step.

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// What one self-test step observed.
#[derive(Debug)]
pub struct StepReport {
    pub device: Device,
    pub loss_before: f64,
    pub loss_after: f64,
}

/// Fits a two-layer network to a fixed target for a few AdamW steps on `device`
/// and reports the loss before and after.
pub fn train_steps(device: Device, steps: usize) -> Result<StepReport, tch::TchError> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let root = vs.root();
    let net =
        nn::seq().add(nn::linear(&root / "l1", 8, 16, Default::default())).add_fn(|x| x.gelu("none")).add(nn::linear(&root / "l2", 16, 3, Default::default()));
    let mut opt = nn::AdamW::default().build(&vs, 1e-2)?;
    let xs = Tensor::randn([32, 8], (Kind::Float, device));
    let ys = Tensor::arange(32, (Kind::Int64, device)).remainder(3);
    let loss_of = |net: &dyn Module| net.forward(&xs).cross_entropy_for_logits(&ys);
    let loss_before = loss_of(&net).double_value(&[]);
    for _ in 0..steps {
        let loss = loss_of(&net);
        opt.backward_step(&loss);
    }
    let loss_after = loss_of(&net).double_value(&[]);
    Ok(StepReport { device, loss_before, loss_after })
}
