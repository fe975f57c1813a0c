//! Values cut short for error messages: a caller's input is named, never echoed whole.

use serde_json::Value;

/// A value as a short text for an error message (never the whole of a large value).
pub fn brief(value: &Value) -> String {
    truncate(&value.to_string(), 40)
}

/// `text` cut to `max` characters, saying how much was left out.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}... ({} more bytes)", &text[..cut], text.len() - cut),
    }
}
