//! Tags: free-form `key: value` strings a team puts on registered models and jobs, and
//! the `tag=KEY:VALUE` filter of their listings.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

const MAX_TAGS: usize = 50;
const MAX_TAG_KEY_CHARS: usize = 64;
const MAX_TAG_VALUE_CHARS: usize = 256;

/// At most 50 tags, keys of 1 to 64 characters, string values of at most 256; else a 422
/// naming the tag.
pub fn check(tags: &Map<String, Value>) -> ApiResult<()> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::Unprocessable(format!("tags: at most {MAX_TAGS}, not {}", tags.len())));
    }
    for (key, value) in tags {
        let fits = value.as_str().is_some_and(|v| v.chars().count() <= MAX_TAG_VALUE_CHARS);
        if key.is_empty() || key.chars().count() > MAX_TAG_KEY_CHARS || !fits {
            return Err(ApiError::Unprocessable(format!(
                "tags.{}: keys of 1 to {MAX_TAG_KEY_CHARS} characters, string values of at most {MAX_TAG_VALUE_CHARS}",
                absa_jobs::spec::truncate(key, 40)
            )));
        }
    }
    Ok(())
}

/// `KEY:VALUE` as the JSON object a row's tags must contain; a 422 naming `tag` otherwise.
pub fn filter(tag: &str) -> ApiResult<Value> {
    match tag.split_once(':') {
        Some((key, value)) if !key.is_empty() && key.chars().count() <= MAX_TAG_KEY_CHARS && value.chars().count() <= MAX_TAG_VALUE_CHARS => {
            Ok(Value::Object(Map::from_iter([(key.to_owned(), Value::String(value.to_owned()))])))
        }
        _ => Err(ApiError::Unprocessable(format!("tag {:?}: expected KEY:VALUE", absa_jobs::spec::truncate(tag, 60)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tags_are_bounded_strings_and_filters_are_key_colon_value() {
        let ok: Map<String, Value> = serde_json::from_value(json!({"owner": "mlops", "ticket": "ABSA-12"})).unwrap();
        assert!(check(&ok).is_ok());
        let number: Map<String, Value> = serde_json::from_value(json!({"n": 1})).unwrap();
        assert!(check(&number).is_err());
        let many: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(check(&many).is_err());
        assert_eq!(filter("owner:mlops").ok(), Some(json!({"owner": "mlops"})));
        assert_eq!(filter("url:http://x").ok(), Some(json!({"url": "http://x"})), "the first colon splits");
        assert!(filter("owner").is_err() && filter(":v").is_err());
    }
}
