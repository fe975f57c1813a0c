//! libtorch runs here: forward, backward and optimizer steps on CPU.

use absa_trainer::torch_check::train_steps;
use tch::{Device, Kind, Tensor};

#[test]
fn adamw_steps_on_cpu_reduce_the_loss() {
    let report = train_steps(Device::Cpu, 50).unwrap();
    assert!(report.loss_before.is_finite());
    assert!(report.loss_after < 0.5 * report.loss_before, "{report:?}");
}

#[test]
fn gradients_flow_through_a_forward_pass() {
    let w = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).set_requires_grad(true);
    let x = Tensor::from_slice(&[0.5f32, -1.0, 2.0]);
    let y = (&w * &x).sum(Kind::Float);
    y.backward();
    let grad: Vec<f32> = Vec::try_from(w.grad()).unwrap();
    assert_eq!(grad, vec![0.5, -1.0, 2.0]);
}
