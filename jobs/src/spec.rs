//! The one place that checks and bounds what a job asks for. The API's train, sweep
//! and schedule routes, the scheduler (retrain firings, sweep children) and the trainer
//! (before it touches anything) all call [`check_train`] or the checks it is made of,
//! so a parameter refused at one door is refused at every door. Every number has a
//! range that fits the models and the machines this service trains on.

pub use crate::recipe::{check_hyperparameters, hyperparameter_names, hyperparameters_schema, MAX_TOKENS_PER_BATCH};
pub use crate::text::{brief, truncate};
use serde_json::Value;

use crate::fields::struct_fields;
use crate::promotion::{self, PromotionPolicy};
use crate::train::TrainParams;

/// Priorities a client may give: they order a team's own jobs.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -100..=100;
/// The most GPUs one job may ask for: one machine's worth (the work queues go up to it).
pub const MAX_GPUS_PER_JOB: u32 = 8;
/// CPU ranks (processes on one trainer's host) a job may ask for.
pub const MAX_RANKS_PER_JOB: u64 = 64;
/// Labels a model may have, and characters per label.
pub const MAX_LABELS: usize = 100;
pub const MAX_LABEL_CHARS: usize = 100;
/// Characters of a base model's folder name.
pub const MAX_BASE_MODEL_CHARS: usize = 100;
/// A base model is the name of one folder in the trainers' models folder: no paths.
pub fn check_base_model(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_BASE_MODEL_CHARS
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "base_model {:?}: the name of a folder in the trainers' models folder (1 to {MAX_BASE_MODEL_CHARS} letters, digits, '.', '-', '_'; no paths)",
            truncate(name, 60)
        ))
    }
}

/// Label names: 2 to [`MAX_LABELS`] distinct, non-empty names.
pub fn check_labels(labels: &[String]) -> Result<(), String> {
    if labels.len() < 2 || labels.len() > MAX_LABELS {
        return Err(format!("labels: 2 to {MAX_LABELS} names, not {}", labels.len()));
    }
    for (i, label) in labels.iter().enumerate() {
        if label.trim().is_empty() || label.chars().count() > MAX_LABEL_CHARS || label.contains('\0') {
            return Err(format!("labels[{i}] {:?}: 1 to {MAX_LABEL_CHARS} characters", truncate(label, 40)));
        }
        if labels[..i].contains(label) {
            return Err(format!("labels[{i}] {label:?} is listed twice"));
        }
    }
    Ok(())
}

pub fn check_promote(policy: &PromotionPolicy) -> Result<(), String> {
    if promotion::valid_alias(&policy.alias) {
        Ok(())
    } else {
        Err(format!("promote.alias {:?}: 1 to 63 lower-case letters, digits, '-' and '_'", truncate(&policy.alias, 70)))
    }
}

/// GPUs on one machine, or CPU ranks on one host, not both.
pub fn check_devices(gpus: u64, ranks: u64) -> Result<(), String> {
    if gpus > u64::from(MAX_GPUS_PER_JOB) {
        return Err(format!("gpus {gpus}: a job runs on one machine, at most {MAX_GPUS_PER_JOB} GPUs"));
    }
    if ranks > MAX_RANKS_PER_JOB {
        return Err(format!("ranks {ranks}: at most {MAX_RANKS_PER_JOB} processes on one trainer"));
    }
    if ranks > 1 && gpus > 0 {
        return Err(format!("ranks {ranks} with gpus {gpus}: a GPU job trains one rank per GPU; give one of the two"));
    }
    Ok(())
}

/// A training job's parameters as stored (the `parameters` of a `train` job): every
/// field checked, unknown ones refused (the known ones are [`TrainParams`]' fields).
pub fn check_train(parameters: &Value) -> Result<(), String> {
    let p = parameters.as_object().ok_or("training parameters: a JSON object")?;
    let known = struct_fields::<TrainParams>();
    if let Some(key) = p.keys().find(|key| !known.contains(&key.as_str())) {
        return Err(format!("unknown field {:?}", truncate(key, 40)));
    }
    match p.get("dataset_id").and_then(Value::as_str).map(uuid::Uuid::parse_str) {
        Some(Ok(_)) => {}
        _ => return Err("dataset_id: a dataset's id".into()),
    }
    check_base_model(p.get("base_model").and_then(Value::as_str).ok_or("base_model: the name of a model folder")?)?;
    match p.get("hyperparameters") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => check_hyperparameters(h)?,
        Some(_) => return Err("hyperparameters: a JSON object".into()),
    }
    match p.get("labels") {
        None | Some(Value::Null) => {}
        Some(v) => check_labels(&serde_json::from_value::<Vec<String>>(v.clone()).map_err(|_| "labels: a list of names".to_string())?)?,
    }
    let count = |name: &str| -> Result<u64, String> {
        match p.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v.as_u64().ok_or_else(|| format!("{name}: a non-negative integer")),
        }
    };
    check_devices(count("gpus")?, count("ranks")?)?;
    match p.get("model") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) if promotion::valid_model_name(name) => {}
        Some(_) => return Err("model: a registered model's name (lower-case letters, digits, '-' and '_', at most 63)".into()),
    }
    match p.get("promote") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let policy: PromotionPolicy = serde_json::from_value(v.clone()).map_err(|e| format!("promote: {e}"))?;
            check_promote(&policy)?;
            // F_avg needs against and favor among the labels (given here; else the API
            // checks the dataset's).
            if let Some(labels) = p.get("labels").and_then(|l| serde_json::from_value::<Vec<String>>(l.clone()).ok()) {
                policy.metric.check_labels(&labels).map_err(|e| format!("promote: {e}"))?;
            }
        }
    }
    Ok(())
}

/// A score job's bounds: its shards, the lexicon's size, the stance targets.
pub mod score {
    use serde::{Deserialize, Serialize};

    /// Documents per shard: a shard is a claim, a lease and a transaction, so tiny
    /// shards only multiply overhead.
    pub const MIN_SHARD_SIZE: i64 = 100;
    pub const MAX_SHARD_SIZE: i64 = 1_000_000;
    /// Shards one score job fans out to (the shard size grows to stay under it).
    pub const MAX_SHARDS: i64 = 10_000;
    /// Lexicon terms, and characters per term.
    pub const MAX_LEXICON_TERMS: usize = 1_000;
    pub const MAX_TERM_CHARS: usize = 100;

    /// A lexicon: 1 to [`MAX_LEXICON_TERMS`] non-empty terms of at most [`MAX_TERM_CHARS`].
    pub fn check_lexicon(terms: &[String]) -> Result<(), String> {
        if terms.is_empty() || terms.len() > MAX_LEXICON_TERMS {
            return Err(format!("lexicon: 1 to {MAX_LEXICON_TERMS} terms, not {}", terms.len()));
        }
        for (i, term) in terms.iter().enumerate() {
            if term.trim().is_empty() || term.chars().count() > MAX_TERM_CHARS || term.contains('\0') {
                return Err(format!("lexicon[{i}] {:?}: 1 to {MAX_TERM_CHARS} characters, not blank", super::truncate(term, 40)));
            }
        }
        Ok(())
    }

    /// Stance targets a score job names, characters per name, aliases per target and
    /// characters per alias.
    pub const MAX_TARGETS: usize = 100;
    pub const MAX_TARGET_NAME_CHARS: usize = 200;
    pub const MAX_ALIASES: usize = 50;
    pub const MAX_ALIAS_CHARS: usize = 100;

    /// A target every document of a score job is scored toward (stance toward a party, a
    /// policy), whether or not the text mentions it; `aliases` are other words for it
    /// that the text may use. Stored once, in the parent score job (`parameters.targets`).
    #[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct StanceTarget {
        pub name: String,
        #[serde(default)]
        pub aliases: Vec<String>,
    }

    /// Stance targets: 1 to [`MAX_TARGETS`], names of 1 to [`MAX_TARGET_NAME_CHARS`]
    /// characters, not blank and distinct ignoring case; at most [`MAX_ALIASES`] aliases
    /// each, of 1 to [`MAX_ALIAS_CHARS`] characters, not blank.
    pub fn check_targets(targets: &[StanceTarget]) -> Result<(), String> {
        if targets.is_empty() || targets.len() > MAX_TARGETS {
            return Err(format!("targets: 1 to {MAX_TARGETS} targets, not {}", targets.len()));
        }
        let mut seen: Vec<String> = Vec::with_capacity(targets.len());
        for (i, target) in targets.iter().enumerate() {
            let name = &target.name;
            if name.trim().is_empty() || name.chars().count() > MAX_TARGET_NAME_CHARS || name.contains('\0') {
                return Err(format!("targets[{i}].name {:?}: 1 to {MAX_TARGET_NAME_CHARS} characters, not blank", super::truncate(name, 40)));
            }
            let folded = name.trim().to_lowercase();
            if let Some(first) = seen.iter().position(|s| *s == folded) {
                return Err(format!("targets[{i}].name {:?}: the same name as targets[{first}] (names are compared ignoring case)", super::truncate(name, 40)));
            }
            seen.push(folded);
            if target.aliases.len() > MAX_ALIASES {
                return Err(format!("targets[{i}].aliases: at most {MAX_ALIASES}, not {}", target.aliases.len()));
            }
            for (j, alias) in target.aliases.iter().enumerate() {
                if alias.trim().is_empty() || alias.chars().count() > MAX_ALIAS_CHARS || alias.contains('\0') {
                    return Err(format!("targets[{i}].aliases[{j}] {:?}: 1 to {MAX_ALIAS_CHARS} characters, not blank", super::truncate(alias, 40)));
                }
            }
        }
        Ok(())
    }

    pub fn check_shard_size(size: i64) -> Result<(), String> {
        if (MIN_SHARD_SIZE..=MAX_SHARD_SIZE).contains(&size) {
            Ok(())
        } else {
            Err(format!("shard_size {size}: outside [{MIN_SHARD_SIZE}, {MAX_SHARD_SIZE}]"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn train(extra: Value) -> Value {
        let mut p = json!({ "dataset_id": uuid::Uuid::nil(), "base_model": "all-minilm-l6-v2" });
        p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        p
    }

    #[test]
    fn a_job_setting_every_hyperparameter_to_the_recipes_value_passes() {
        // The reference recipe, every setting written out (the input form chosen).
        let mut recipe = serde_json::to_value(crate::Recipe::default()).unwrap();
        recipe["input"] = json!("text");
        assert_eq!(recipe.as_object().unwrap().len(), crate::HYPERPARAMETERS.len());
        check_train(&train(json!({ "hyperparameters": recipe, "labels": ["negative", "neutral", "positive"], "gpus": 2,
                                   "promote": { "alias": "production" }, "retrain": { "reason": "cron" } })))
        .unwrap();
    }

    #[test]
    fn what_a_hostile_caller_sent_is_refused_with_the_reason() {
        let cases = [
            (json!({ "hyperparameters": { "epochs": 1e15 } }), "epochs: an integer"),
            (json!({ "hyperparameters": { "epochs": 1_000_000 } }), "epochs 1000000: outside [1, 100]"),
            (json!({ "hyperparameters": { "max_length": 1_000_000_000 } }), "max_length 1000000000: outside"),
            (json!({ "hyperparameters": { "batch_size": 1_000_000_000_000u64 } }), "batch_size 1000000000000: outside"),
            (json!({ "hyperparameters": { "validation_fraction": 7.5 } }), "validation_fraction 7.5: outside (0, 1)"),
            (json!({ "hyperparameters": { "validation_fraction": 0.0 } }), "outside (0, 1)"),
            (json!({ "hyperparameters": { "learning_rate": 0 } }), "learning_rate 0: outside (0, 1]"),
            (json!({ "hyperparameters": { "lr": 1 } }), "unknown hyperparameter \"lr\""),
            (json!({ "hyperparameters": { "pooling": "first" } }), "pooling \"first\": expected one of max, mean, cls"),
            (json!({ "hyperparameters": { "input": "pair" } }), "input \"pair\": expected one of text, text_target_pair"),
            (json!({ "hyperparameters": { "batch_size": 1024, "max_length": 512 } }), "padded tokens a batch"),
            (json!({ "base_model": "/etc" }), "no paths"),
            (json!({ "base_model": "../../../etc" }), "no paths"),
            (json!({ "base_model": "a/b" }), "no paths"),
            (json!({ "base_model": "" }), "no paths"),
            (json!({ "promote": { "alias": "Prod!" } }), "promote.alias"),
            (json!({ "promote": { "metric": "f_avg" }, "labels": ["negative", "positive"] }), "promote: metric f_avg is stance's mean F1"),
            (json!({ "labels": ["only"] }), "labels: 2 to 100"),
            (json!({ "labels": ["a", "a"] }), "listed twice"),
            (json!({ "gpus": 9 }), "at most 8 GPUs"),
            (json!({ "ranks": 65 }), "at most 64 processes"),
            (json!({ "ranks": 2, "gpus": 2 }), "give one of the two"),
            (json!({ "priority": 1 }), "unknown field \"priority\""),
        ];
        for (extra, reason) in cases {
            let e = check_train(&train(extra.clone())).unwrap_err();
            assert!(e.contains(reason), "{extra}: {e}");
        }
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let e = check_base_model(&"x/".repeat(10_000)).unwrap_err();
        assert!(e.len() < 300 && e.contains("more bytes"), "{e}");
        let e = check_hyperparameters(json!({ "pooling": "m".repeat(100_000) }).as_object().unwrap()).unwrap_err();
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn lexicons_and_shards_are_bounded() {
        assert!(score::check_lexicon(&["battery".into()]).is_ok());
        assert!(score::check_lexicon(&vec!["t".to_string(); score::MAX_LEXICON_TERMS + 1]).unwrap_err().contains("1 to 1000 terms"));
        assert!(score::check_lexicon(&["x".repeat(101)]).unwrap_err().contains("1 to 100 characters"));
        assert!(score::check_lexicon(&[" ".into()]).is_err());
        assert!(score::check_shard_size(1).unwrap_err().contains("outside [100, 1000000]"));
        assert!(score::check_shard_size(500).is_ok());
    }

    fn target(name: &str, aliases: &[&str]) -> score::StanceTarget {
        score::StanceTarget { name: name.into(), aliases: aliases.iter().map(|a| a.to_string()).collect() }
    }

    #[test]
    fn stance_targets_are_bounded_and_named_once() {
        assert!(score::check_targets(&[target("legalization of abortion", &[]), target("CDU", &["Union", "Christdemokraten"])]).is_ok());
        let many = |n: usize| (0..n).map(|i| target(&format!("t{i}"), &[])).collect::<Vec<_>>();
        assert!(score::check_targets(&many(score::MAX_TARGETS)).is_ok());
        let cases = [
            (vec![], "targets: 1 to 100 targets, not 0"),
            (many(score::MAX_TARGETS + 1), "targets: 1 to 100 targets, not 101"),
            (vec![target("  ", &[])], "targets[0].name \"  \": 1 to 200 characters, not blank"),
            (vec![target("ok", &[]), target(&"x".repeat(201), &[])], "targets[1].name"),
            (vec![target("a\0b", &[])], "not blank"),
            (vec![target("CDU", &[]), target("SPD", &[]), target("cdu", &[])], "targets[2].name \"cdu\": the same name as targets[0]"),
            (vec![target("CDU", &["x"; 51])], "targets[0].aliases: at most 50, not 51"),
            (vec![target("CDU", &["Union", ""])], "targets[0].aliases[1] \"\": 1 to 100 characters"),
            (vec![target("CDU", &[&"u".repeat(101)])], "targets[0].aliases[0]"),
        ];
        for (targets, reason) in cases {
            let e = score::check_targets(&targets).unwrap_err();
            assert!(e.contains(reason), "{targets:?}: {e}");
            assert!(e.len() < 200, "{e}");
        }
    }

    #[test]
    fn stance_targets_read_from_json_with_optional_aliases_and_nothing_else() {
        let read: Vec<score::StanceTarget> = serde_json::from_value(json!([{"name": "CDU", "aliases": ["Union"]}, {"name": "abortion"}])).unwrap();
        assert_eq!(read, vec![target("CDU", &["Union"]), target("abortion", &[])]);
        assert!(serde_json::from_value::<score::StanceTarget>(json!({"name": "x", "alias": ["y"]})).is_err());
    }
}
