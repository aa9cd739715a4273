//! Item validation: pure functions from one JSON item to a typed operation, or to the
//! errors of every offending field. No I/O, no panics on any input.
//!
//! One module per item kind ([`contacts`], [`events`]); the field rules they share live
//! here. The error texts are part of the HTTP contract (`shared/API.md`), so they are
//! constants, not ad-hoc strings.

pub mod contacts;
pub mod events;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::envelope::Operation;

pub const REQUIRED: &str = "Required";
pub const MUST_BE_STRING: &str = "Must be a string";
pub const MUST_BE_OBJECT: &str = "Must be an object";
pub const INVALID_FORMAT: &str = "Invalid format";
pub const UNKNOWN_FIELD: &str = "Unknown field";

/// The key under which whole-item errors (not an object, too large) are reported.
pub const ITEM_KEY: &str = "_item";

/// Errors per field, in a stable (sorted) order; every field lists all its messages.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// A valid item: the user it belongs to and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidItem {
    pub user_id: String,
    pub op: Operation,
}

/// What the answer echoes of an item, valid or not.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Echo {
    /// `_user_id` when it was a string.
    pub user_id: Option<String>,
    /// `_event_id` when it was a string (events only).
    pub event_id: Option<String>,
}

pub fn add_error(errors: &mut FieldErrors, field: &str, message: &str) {
    errors
        .entry(field.to_owned())
        .or_default()
        .push(message.to_owned());
}

/// `_user_id`: required string, 1–256 characters, no control characters.
pub(crate) fn user_id(
    item: &serde_json::Map<String, Value>,
    errors: &mut FieldErrors,
) -> Option<String> {
    required_id(item, "_user_id", 256, errors)
}

/// A required identifier string of 1..=max characters without control characters.
pub(crate) fn required_id(
    item: &serde_json::Map<String, Value>,
    field: &str,
    max_chars: usize,
    errors: &mut FieldErrors,
) -> Option<String> {
    match item.get(field) {
        None | Some(Value::Null) => {
            add_error(errors, field, REQUIRED);
            None
        }
        Some(Value::String(s)) => {
            let chars = s.chars().count();
            if chars == 0 || chars > max_chars || s.chars().any(char::is_control) {
                add_error(errors, field, INVALID_FORMAT);
                None
            } else {
                Some(s.clone())
            }
        }
        Some(_) => {
            add_error(errors, field, MUST_BE_STRING);
            None
        }
    }
}

/// What any item echoes, whether or not it validates.
pub fn echo(item: &Value) -> Echo {
    let string = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
    Echo {
        user_id: string("_user_id"),
        event_id: string("_event_id"),
    }
}

/// The `_item` error for anything that is not a JSON object.
pub(crate) fn as_object(item: &Value) -> Result<&serde_json::Map<String, Value>, FieldErrors> {
    item.as_object().ok_or_else(|| {
        let mut errors = FieldErrors::new();
        add_error(&mut errors, ITEM_KEY, MUST_BE_OBJECT);
        errors
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<Option<String>, FieldErrors> {
        let mut errors = FieldErrors::new();
        let got = user_id(v.as_object().unwrap(), &mut errors);
        if errors.is_empty() {
            Ok(got)
        } else {
            Err(errors)
        }
    }

    #[test]
    fn user_id_rules() {
        assert_eq!(check(json!({"_user_id": "U-1"})), Ok(Some("U-1".into())));
        let long = "x".repeat(256);
        assert_eq!(check(json!({ "_user_id": long })), Ok(Some(long)));
        for (item, msg) in [
            (json!({}), REQUIRED),
            (json!({"_user_id": null}), REQUIRED),
            (json!({"_user_id": 7}), MUST_BE_STRING),
            (json!({"_user_id": ""}), INVALID_FORMAT),
            (json!({"_user_id": "a\nb"}), INVALID_FORMAT),
            (json!({"_user_id": "x".repeat(257)}), INVALID_FORMAT),
        ] {
            let errors = check(item).unwrap_err();
            assert_eq!(errors["_user_id"], vec![msg.to_string()]);
        }
    }

    #[test]
    fn echo_takes_strings_only() {
        assert_eq!(
            echo(&json!({"_user_id": "u", "_event_id": "e"})),
            Echo {
                user_id: Some("u".into()),
                event_id: Some("e".into())
            }
        );
        assert_eq!(echo(&json!({"_user_id": 3})), Echo::default());
        assert_eq!(echo(&json!("str")), Echo::default());
    }
}
