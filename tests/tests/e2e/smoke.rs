//! Every binary starts, checks its services, and fails clearly when one is missing.

use std::process::Command;

use absa_e2e::binary;

fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(binary(name));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn every_binary_checks_its_services() {
    for name in ["absa-api", "absa-scheduler", "absa-trainer", "absa-scorer"] {
        let (ok, stdout, stderr) = run(name, &["check"], &[]);
        assert!(ok, "{name} check failed: {stdout}\n{stderr}");
        assert!(stdout.contains("postgres: "), "{name}: {stdout}");
        assert!(stdout.contains("rabbitmq: reached"), "{name}: {stdout}");
    }
    let (_, stdout, _) = run("absa-trainer", &["check"], &[]);
    // "libtorch: Cpu, 2 threads, loss 1.1 -> 0.2 after 20 AdamW steps" (Cuda(0) on a GPU machine).
    let line = stdout.lines().find(|l| l.starts_with("libtorch: ")).unwrap_or_else(|| panic!("{stdout}"));
    let device = line["libtorch: ".len()..].split(',').next().unwrap_or_default();
    assert!(device == "Cpu" || (device.starts_with("Cuda(") && device.ends_with(')')), "{line}");
    let losses: Vec<f64> =
        line.split("loss ").nth(1).and_then(|l| l.split(" after").next()).unwrap_or_default().split(" -> ").filter_map(|x| x.parse().ok()).collect();
    assert!(losses.len() == 2 && losses[1] < losses[0], "the self-test's loss falls: {line}");
    let (_, stdout, _) = run("absa-scorer", &["check"], &[]);
    assert!(stdout.contains("onnxruntime: "), "{stdout}");
}

#[test]
fn every_binary_has_help() {
    for name in ["absa-api", "absa-scheduler", "absa-trainer", "absa-scorer"] {
        let (ok, stdout, _) = run(name, &["--help"], &[]);
        assert!(ok && stdout.contains("check"), "{name}: {stdout}");
    }
}

#[test]
fn an_unreachable_postgres_is_a_clear_error_and_a_failure_exit() {
    for name in ["absa-api", "absa-scheduler", "absa-trainer", "absa-scorer"] {
        let (ok, _, stderr) =
            run(name, &["check"], &[("ABSA_DATABASE__URL", "postgres://absa:absa@127.0.0.1:1/absa"), ("ABSA_DATABASE__CONNECT_TIMEOUT_SECS", "1")]);
        assert!(!ok, "{name} succeeded without Postgres");
        assert!(stderr.contains("cannot reach Postgres at postgres://absa:***@127.0.0.1:1/absa"), "{name}: {stderr}");
    }
}

#[test]
fn an_unreachable_rabbitmq_is_a_clear_error_and_a_failure_exit() {
    let (ok, _, stderr) = run("absa-scheduler", &["check"], &[("ABSA_AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f")]);
    assert!(!ok);
    assert!(stderr.contains("cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/%2f"), "{stderr}");
}

#[test]
fn a_missing_onnx_runtime_is_a_clear_error() {
    let (ok, _, stderr) = run("absa-scorer", &["check"], &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")]);
    assert!(!ok);
    assert!(stderr.contains("ORT_DYLIB_PATH points to /nonexistent/libonnxruntime.so, which does not exist"), "{stderr}");
}

#[test]
fn a_bad_configuration_file_is_named_in_the_error() {
    let (ok, _, stderr) = run("absa-api", &["--config", "/nonexistent/absa.toml", "check"], &[]);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/absa.toml"), "{stderr}");
}
