//! A scoring job's parameters, and those of each shard the scheduler fans it out to.

pub use absa_onnx::Precision;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::spec::score::StanceTarget;

/// A `score` job's parameters: a corpus, a model version, and how to read the documents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreParams {
    pub corpus_id: Uuid,
    pub model_version_id: Uuid,
    /// The alias the caller named the version by, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Documents per shard; default: the scheduler's `dispatch.shard_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_size: Option<i64>,
    /// Which graph to run; default: the scorer's `precision` setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Terms scored wherever they occur in documents that carry no target (kept here,
    /// in the parent, only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexicon: Option<Vec<String>>,
    /// Stance targets every document is scored toward (kept here only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<StanceTarget>>,
}

impl ScoreParams {
    /// A stored job's parameters, typed; the message names what is wrong.
    pub fn from_value(parameters: &serde_json::Value) -> Result<Self, String> {
        // serde's message for a bad id does not say which field held it.
        for field in ["corpus_id", "model_version_id"] {
            match parameters.get(field) {
                Some(v) if v.as_str().and_then(|s| s.parse::<Uuid>().ok()).is_none() => {
                    return Err(format!("parameters: {field} must be a uuid, not {}", crate::text::brief(v)));
                }
                _ => {}
            }
        }
        let params: Self = serde_json::from_value(parameters.clone()).map_err(|e| format!("parameters: {e}"))?;
        if let Some(size) = params.shard_size.filter(|size| *size <= 0) {
            return Err(format!("parameters: shard_size must be a positive integer, not {size}"));
        }
        Ok(params)
    }
}

/// A `score_shard` job's parameters: its parent's (the lexicon and the targets stay
/// in the parent) and the documents it scores, `seq_from..seq_to`. The scheduler
/// writes them in SQL (`store/src/jobs/shards.rs`) as the parent's object plus the
/// three shard fields, so a field added to [`ScoreParams`] reaches shards with no
/// change here; `scheduler/tests/shards.rs` reads what it wrote back as this type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardParams {
    #[serde(flatten)]
    pub job: ScoreParams,
    pub seq_from: i64,
    /// Exclusive.
    pub seq_to: i64,
    #[serde(default)]
    pub shard: i32,
}

impl ShardParams {
    /// A stored shard's parameters, typed. Unknown fields are refused as for
    /// [`ScoreParams`] (serde cannot refuse them through `flatten`).
    pub fn from_value(parameters: &serde_json::Value) -> Result<Self, String> {
        let params: Self = serde_json::from_value(parameters.clone()).map_err(|e| format!("shard parameters: {e}"))?;
        // A field the type kept serialises back; one it dropped does not.
        let known = serde_json::to_value(&params).map_err(|e| e.to_string())?;
        let unknown = parameters.as_object().into_iter().flatten().find(|(name, value)| !value.is_null() && known.get(name.as_str()).is_none());
        match unknown {
            Some((name, _)) => Err(format!("shard parameters: unknown field `{name}`")),
            None => Ok(params),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn score_parameters_name_what_is_wrong() {
        let (corpus, model) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let ok = ScoreParams::from_value(&json!({ "corpus_id": corpus, "model_version_id": model, "precision": "int8", "lexicon": ["battery"] })).unwrap();
        assert_eq!((ok.precision, ok.lexicon.as_deref()), (Some(Precision::Int8), Some(&["battery".to_string()][..])));
        let cases = [
            (json!({ "model_version_id": model }), "missing field `corpus_id`"),
            (json!({ "corpus_id": corpus, "model_version_id": "x" }), "model_version_id must be a uuid, not \"x\""),
            (json!({ "corpus_id": corpus, "model_version_id": model, "shard_size": 0 }), "shard_size must be a positive integer, not 0"),
            (json!({ "corpus_id": corpus, "model_version_id": model, "shards": 3 }), "unknown field `shards`"),
        ];
        for (parameters, reason) in cases {
            let e = ScoreParams::from_value(&parameters).unwrap_err();
            assert!(e.starts_with("parameters: ") && e.contains(reason), "{parameters}: {e}");
        }
    }

    #[test]
    fn shard_parameters_are_the_parents_and_the_range_and_nothing_else() {
        let (corpus, model) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let stored = json!({ "corpus_id": corpus, "model_version_id": model, "precision": "int8", "alias": null, "shard": 2, "seq_from": 10, "seq_to": 20 });
        let shard = ShardParams::from_value(&stored).unwrap();
        assert_eq!((shard.job.corpus_id, shard.job.precision, shard.shard, shard.seq_from, shard.seq_to), (corpus, Some(Precision::Int8), 2, 10, 20));
        // An old shard's lexicon is the parent's field, so still read.
        let old = json!({ "corpus_id": corpus, "model_version_id": model, "lexicon": ["fan"], "seq_from": 0, "seq_to": 5 });
        assert_eq!(ShardParams::from_value(&old).unwrap().job.lexicon, Some(vec!["fan".to_string()]));
        let unknown = json!({ "corpus_id": corpus, "model_version_id": model, "seq_from": 0, "seq_to": 5, "seq_step": 2 });
        assert_eq!(ShardParams::from_value(&unknown).unwrap_err(), "shard parameters: unknown field `seq_step`");
        let missing = ShardParams::from_value(&json!({ "corpus_id": corpus, "model_version_id": model, "seq_from": 0 })).unwrap_err();
        assert!(missing.contains("seq_to"), "{missing}");
    }
}
