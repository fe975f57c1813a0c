//! The base models the trainers have: each trainer records the model folders of its
//! `models_dir` when it starts, so the API can list them (`GET /v1/base-models`) and
//! refuse a training job that names none of them at submission instead of failing it
//! later in a worker. A record stays when its trainers scale to zero.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use serde::Serialize;
use sqlx::PgPool;

use crate::Result;

/// A model folder as a trainer sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BaseModel {
    pub name: String,
    /// `model_type` of its `config.json` (`bert`, `xlm-roberta`, ...).
    pub model_type: String,
    /// Weights counted from the safetensors headers; `None` for other formats.
    pub parameters: Option<i64>,
}

/// The folders of `dir` holding a model: a `config.json` with a `model_type`, and
/// weights (`model.safetensors`, a sharded `model.safetensors.index.json`, or
/// `pytorch_model.bin`). Anything else (a tokenizer folder) is left out.
pub fn scan(dir: &Path) -> Vec<BaseModel> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let folder = entry.path();
        let Some(name) = folder.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        let config: Option<serde_json::Value> = std::fs::read(folder.join("config.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let Some(model_type) = config.as_ref().and_then(|c| c["model_type"].as_str()).map(str::to_owned) else { continue };
        let parameters = if folder.join("model.safetensors").is_file() {
            safetensors_parameters(&folder.join("model.safetensors"))
        } else if folder.join("model.safetensors.index.json").is_file() {
            sharded_parameters(&folder)
        } else if folder.join("pytorch_model.bin").is_file() {
            None
        } else {
            continue;
        };
        found.push(BaseModel { name, model_type, parameters });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The number of weights a safetensors file holds, from its JSON header alone.
fn safetensors_parameters(file: &Path) -> Option<i64> {
    let mut f = std::fs::File::open(file).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    // A header is a few hundred KB at most; refuse anything absurd.
    if len > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).ok()?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header).ok()?;
    let mut total = 0i64;
    for (name, tensor) in &header {
        if name == "__metadata__" {
            continue;
        }
        total += tensor["shape"].as_array()?.iter().map(|d| d.as_i64()).product::<Option<i64>>()?;
    }
    Some(total)
}

/// The weights of a sharded checkpoint: every shard its index names, counted once.
fn sharded_parameters(folder: &Path) -> Option<i64> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(folder.join("model.safetensors.index.json")).ok()?).ok()?;
    let shards: BTreeSet<&str> = index["weight_map"].as_object()?.values().filter_map(|v| v.as_str()).collect();
    shards.into_iter().map(|s| safetensors_parameters(&folder.join(s))).sum()
}

/// Records what trainer `trainer` has (upserts; others' records stay).
pub async fn record(pool: &PgPool, trainer: &str, models: &[BaseModel]) -> Result<()> {
    for m in models {
        sqlx::query(
            "INSERT INTO base_models (name, model_type, parameters, advertised_by) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET model_type = EXCLUDED.model_type, parameters = EXCLUDED.parameters,
                                              advertised_by = EXCLUDED.advertised_by, advertised_at = now()",
        )
        .bind(&m.name)
        .bind(&m.model_type)
        .bind(m.parameters)
        .bind(trainer)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Every recorded base model, by name, with when a trainer last recorded it.
pub async fn list(pool: &PgPool) -> Result<Vec<(String, String, Option<i64>, chrono::DateTime<chrono::Utc>)>> {
    Ok(sqlx::query_as("SELECT name, model_type, parameters, advertised_at FROM base_models ORDER BY name").fetch_all(pool).await?)
}

/// Whether a job may name `name`: yes when a trainer recorded it, or when no trainer
/// has recorded anything yet (a fresh install before its first trainer starts); else
/// the detail to refuse it with.
pub async fn check_known(pool: &PgPool, name: &str) -> Result<std::result::Result<(), String>> {
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM base_models ORDER BY name").fetch_all(pool).await?;
    if names.is_empty() || names.iter().any(|n| n == name) {
        return Ok(Ok(()));
    }
    Ok(Err(format!("base_model {:?}: no trainer has it (they have: {}; GET /v1/base-models)", absa_jobs::spec::truncate(name, 60), names.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_a_model_with_a_config_and_weights_and_its_parameters_are_counted() {
        let dir = std::env::temp_dir().join(format!("absa-base-models-{}", uuid::Uuid::new_v4().simple()));
        let model = |name: &str, config: Option<&str>, files: &[(&str, Vec<u8>)]| {
            let folder = dir.join(name);
            std::fs::create_dir_all(&folder).unwrap();
            if let Some(c) = config {
                std::fs::write(folder.join("config.json"), c).unwrap();
            }
            for (file, bytes) in files {
                std::fs::write(folder.join(file), bytes).unwrap();
            }
        };
        let safetensors = |header: &str| {
            let mut b = (header.len() as u64).to_le_bytes().to_vec();
            b.extend(header.as_bytes());
            b
        };
        let one = safetensors(
            r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[3,4],"data_offsets":[0,48]},"b":{"dtype":"F32","shape":[5],"data_offsets":[48,68]}}"#,
        );
        model("tiny-bert", Some(r#"{"model_type": "bert"}"#), &[("model.safetensors", one.clone())]);
        let index = r#"{"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"}}"#;
        let two = safetensors(r#"{"c":{"dtype":"F32","shape":[2,2,2],"data_offsets":[0,32]}}"#);
        model(
            "sharded-xl",
            Some(r#"{"model_type": "xlm-roberta-xl"}"#),
            &[("model.safetensors.index.json", index.into()), ("s1.safetensors", one), ("s2.safetensors", two)],
        );
        model("old-format", Some(r#"{"model_type": "roberta"}"#), &[("pytorch_model.bin", vec![0])]);
        model("a-tokenizer", None, &[("tokenizer.json", b"{}".to_vec())]);
        model("no-weights", Some(r#"{"model_type": "bert"}"#), &[]);
        let found = scan(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let m = |name: &str, model_type: &str, parameters: Option<i64>| BaseModel { name: name.into(), model_type: model_type.into(), parameters };
        assert_eq!(found, vec![m("old-format", "roberta", None), m("sharded-xl", "xlm-roberta-xl", Some(17 + 8)), m("tiny-bert", "bert", Some(17))]);
    }
}
