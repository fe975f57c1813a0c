//! bf16 autocast through the trainer's shim (tch binds only fp16 CUDA autocast): on
//! CPU, where libtorch runs autocast too, matrix products come out bf16 while the
//! weights and their gradients stay fp32, and the state is restored afterwards; the
//! CUDA dtype is settable without a GPU.

use absa_trainer::autocast::{state, with_autocast};
use tch::{nn, nn::Module, Device, Kind, Tensor};

#[test]
fn bf16_autocast_keeps_fp32_master_weights() {
    let vs = nn::VarStore::new(Device::Cpu);
    let linear = nn::linear(vs.root(), 8, 4, Default::default());
    let x = Tensor::randn([2, 8], (Kind::Float, Device::Cpu));
    assert_eq!(linear.forward(&x).kind(), Kind::Float);
    assert!(!state(Device::Cpu).0);

    let y = with_autocast(Device::Cpu, Kind::BFloat16, || {
        assert_eq!(state(Device::Cpu), (true, Some(Kind::BFloat16)));
        linear.forward(&x)
    })
    .unwrap();
    assert_eq!(y.kind(), Kind::BFloat16, "linear runs in bf16 under autocast");
    y.to_kind(Kind::Float).sum(Kind::Float).backward();
    assert_eq!(linear.ws.kind(), Kind::Float, "master weights stay fp32");
    assert_eq!(linear.ws.grad().kind(), Kind::Float, "gradients are fp32");
    assert!(linear.ws.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);

    // Restored: off again, and fp32 outside.
    assert!(!state(Device::Cpu).0);
    assert_eq!(linear.forward(&x).kind(), Kind::Float);
}

#[test]
fn the_cuda_dtype_is_set_for_the_scope_and_restored() {
    let before = state(Device::Cuda(0));
    let inside = with_autocast(Device::Cuda(0), Kind::BFloat16, || state(Device::Cuda(0))).unwrap();
    assert_eq!(inside, (true, Some(Kind::BFloat16)));
    assert_eq!(state(Device::Cuda(0)), before);
    assert!(with_autocast(Device::Cpu, Kind::Float, || ()).is_err(), "fp32 is not a reduced precision");
}

#[test]
fn a_panic_inside_restores_the_state() {
    let caught = std::panic::catch_unwind(|| with_autocast(Device::Cpu, Kind::BFloat16, || panic!("inside")));
    assert!(caught.is_err());
    assert!(!state(Device::Cpu).0);
}

/// The GPU benchmark's binary on CPU with the tiny shape: it runs bf16 autocast
/// training steps and prints its figures and a JSON summary.
#[test]
fn the_gpu_benchmark_runs_on_cpu() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_absa-gpu-bench"))
        .args(["--device", "cpu", "--shape", "tiny", "--batch", "4", "--seq-len", "16", "--steps", "3", "--warmup-steps", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("samples/s") && stdout.contains("MFU            n/a"), "{stdout}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!((summary["shape"].as_str(), summary["precision"].as_str(), summary["steps"].as_u64()), (Some("tiny"), Some("bf16"), Some(3)));
    assert!(summary["samples_per_second"].as_f64().unwrap() > 0.0 && summary["last_loss"].as_f64().unwrap().is_finite(), "{summary}");
    assert!(summary["peak_memory_mib"].as_u64().unwrap() > 0, "{summary}");
}
