//! The trainer binary restarts itself on tcmalloc where the machine has the library
//! (trainer/src/allocator.rs) and stays on glibc's malloc with `ABSA_MALLOC=glibc`;
//! the summary says which, and both compute the same numbers bit for bit.

use std::path::Path;
use std::process::Command;

fn train(dir: &Path, out: &str, glibc: bool) -> serde_json::Value {
    let shared = absa_domain::reference::shared_dir().unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(shared.join("data/semeval14_laptops/train.jsonl")).unwrap();
    let rows: Vec<&str> = text.lines().take(24).collect();
    let train = dir.join("train.jsonl");
    std::fs::write(&train, rows.join("\n") + "\n").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_absa-trainer"));
    command
        .args(["train", "--epochs", "1", "--batch-size", "8", "--validation-fraction", "0.25", "--device", "cpu", "--threads", "2"])
        .arg("--base")
        .arg(shared.join("models/all-minilm-l6-v2"))
        .arg("--train")
        .arg(&train)
        .arg("--out")
        .arg(dir.join(out))
        .env_remove("LD_PRELOAD")
        .env_remove("ABSA_MALLOC_RESTARTED");
    if glibc {
        command.env("ABSA_MALLOC", "glibc");
    } else {
        command.env_remove("ABSA_MALLOC");
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn the_trainer_runs_on_tcmalloc_where_installed_and_computes_the_same_numbers() {
    let dir = std::env::temp_dir().join(format!("absa-malloc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let preferred = train(&dir, "preferred", false);
    let glibc = train(&dir, "glibc", true);
    let installed = absa_trainer::allocator::tcmalloc_library();
    eprintln!("tcmalloc library: {installed:?}; default run on {}", preferred["malloc"]);
    assert_eq!(preferred["malloc"], if installed.is_some() { "tcmalloc" } else { "glibc" });
    assert_eq!(glibc["malloc"], "glibc");
    for key in ["validation_loss", "validation_accuracy"] {
        assert_eq!(preferred[key], glibc[key], "{key}: the allocator changed a result");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
