//! Item validation: pure functions from one JSON item to a typed operation, or to the
//! errors of every offending field. No I/O, no panics on any input.
//!
//! One module per item kind ([`contacts`], [`events`]); the rules they share (identifiers,
//! custom attribute names and values, the whole-item rules) live here, and what a
//! datasource declares lives in [`specs`]. The error texts are part of the HTTP contract
//! (`shared/API.md`), so they are constants, not ad-hoc strings.
//!
//! Entry points:
//! - [`check_raw`] (what the gateway calls: the echo and the outcome, one parse), or
//!   [`validate_raw`] / [`validate_contact`] / [`validate_event`] for the outcome alone: an
//!   item's JSON text as sent; the 32 KiB limit is measured on that text.
//! - [`validate_item`] (or [`contacts::validate`] / [`events::validate`]): an already parsed
//!   item; the 32 KiB limit is measured on its compact JSON serialization.
//!
//! Decisions where the contract is silent:
//! - Fields whose only listed error is `Invalid format` (`_email`, `_phone_mobile`,
//!   `_event_date`) answer `Invalid format` for a non-string too: a number or an object is
//!   not an address, a phone number or a date in any format.
//! - Lengths are counted in Unicode scalar values (chars), not bytes; the 32 KiB item limit
//!   is in bytes.
//! - Every field lists each distinct message once, in the order found.
//! - A `null` custom attribute (or event parameter) is always allowed, whatever its spec.
//!   Inside an array, `null` is allowed by the generic rules but not for a declared
//!   attribute, whose values must all be of the declared type.
//! - An array for a single-valued spec is `Invalid type`. A scalar for a multivalue spec is
//!   accepted as a one-element set and stored as `[value]`, so that a multivalue attribute
//!   is always stored as an array.
//! - A multivalue spec never lifts the generic bound of 100 values.
//!
//! Storability (see [`storable`]): an item is accepted only when the worker can store it
//! unchanged. A string containing U+0000 (`_event_type`, `_first_name`, `_last_name`,
//! `_email`, a custom string value or array element) is `Invalid format`, and so is a
//! number outside PostgreSQL's `numeric` (more than 131,072 digits before the point or
//! 16,383 after it); numbers within it are kept as the exact decimal sent. An item whose
//! text repeats a key (at any depth) fails with `_item: Duplicate key`. Keys containing
//! U+0000 never pass the name rules.

pub mod contacts;
pub mod events;
pub mod specs;
pub mod storable;

#[cfg(test)]
mod proptests;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::answer::ItemKind;
use crate::envelope::Operation;
use specs::ValueSpec;
pub use specs::{AttributeSpec, DataType, EventTypeSpec, ParameterSpec, Specs};

pub const REQUIRED: &str = "Required";
pub const MUST_BE_STRING: &str = "Must be a string";
pub const MUST_BE_OBJECT: &str = "Must be an object";
pub const INVALID_FORMAT: &str = "Invalid format";
pub const UNKNOWN_FIELD: &str = "Unknown field";
pub const TOO_LONG: &str = "Too long";
pub const TOO_LARGE: &str = "Too large";
pub const UNKNOWN_RESERVED_ATTRIBUTE: &str = "Unknown reserved attribute";
pub const INVALID_NAME: &str = "Invalid name";
pub const INVALID_TYPE: &str = "Invalid type";
pub const TOO_MANY_VALUES: &str = "Too many values";
pub const UNKNOWN_EVENT_TYPE: &str = "Unknown event type";
pub const TOO_FAR_IN_THE_FUTURE: &str = "Too far in the future";
/// Under [`ITEM_KEY`]: an object of the item repeats a key.
pub const DUPLICATE_KEY: &str = "Duplicate key";

/// The key under which whole-item errors (not an object, too large) are reported.
pub const ITEM_KEY: &str = "_item";

/// An item's JSON may be at most this many bytes.
pub const MAX_ITEM_BYTES: usize = 32 * 1024;
/// `_user_id`: at most this many chars.
pub const MAX_USER_ID_CHARS: usize = 256;
/// `_event_id`, `_event_type`: at most this many chars.
pub const MAX_EVENT_ID_CHARS: usize = 128;
pub const MAX_EVENT_TYPE_CHARS: usize = 128;
/// `_email`: at most this many chars.
pub const MAX_EMAIL_CHARS: usize = 254;
/// `_first_name`, `_last_name`: at most this many chars.
pub const MAX_NAME_CHARS: usize = 256;
/// A string custom attribute or event parameter value (or each value of a multivalue one).
pub const MAX_STRING_VALUE_CHARS: usize = 1024;
/// A multivalue custom attribute or event parameter: at most this many values.
pub const MAX_VALUES: usize = 100;
/// `_event_date` may be at most this many seconds after the gateway received the item.
pub const MAX_FUTURE_SECONDS: i64 = 24 * 60 * 60;

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

/// Adds `message` to `field` unless that field already lists it.
pub fn add_error(errors: &mut FieldErrors, field: &str, message: &str) {
    let messages = errors.entry(field.to_owned()).or_default();
    if !messages.iter().any(|m| m == message) {
        messages.push(message.to_owned());
    }
}

/// Validates one parsed item of either kind (see [`contacts::validate`],
/// [`events::validate`]).
pub fn validate_item(
    kind: ItemKind,
    item: &Value,
    received_at: DateTime<Utc>,
    specs: &Specs,
) -> Result<ValidItem, FieldErrors> {
    match kind {
        ItemKind::Contact => contacts::validate(item, specs),
        ItemKind::Event => events::validate(item, received_at, specs),
    }
}

/// Validates one item of either kind from its JSON text as sent: text larger than
/// [`MAX_ITEM_BYTES`] fails with `_item: Too large` (the outcome half of [`check_raw`]).
pub fn validate_raw(
    kind: ItemKind,
    raw: &RawValue,
    received_at: DateTime<Utc>,
    specs: &Specs,
) -> Result<ValidItem, FieldErrors> {
    check_raw(kind, raw, received_at, specs).1
}

/// What the gateway needs per item, parsing it once: what the answer echoes, and whether
/// the item is valid. An oversized item is still parsed for its echo. An item whose text
/// repeats a key fails with `_item: Duplicate key` (the parsed value would silently keep
/// the last one).
pub fn check_raw(
    kind: ItemKind,
    raw: &RawValue,
    received_at: DateTime<Utc>,
    specs: &Specs,
) -> (Echo, Result<ValidItem, FieldErrors>) {
    // One pass builds the value and notes a repeated key (not a second parse for that).
    let Ok((item, repeats_a_key)) = storable::parse_noting_duplicate_keys(raw.get()) else {
        return (Echo::default(), Err(item_error(INVALID_FORMAT)));
    };
    let echo = echo(&item);
    if raw.get().len() > MAX_ITEM_BYTES {
        return (echo, Err(item_error(TOO_LARGE)));
    }
    if repeats_a_key {
        return (echo, Err(item_error(DUPLICATE_KEY)));
    }
    let result = as_object(&item).and_then(|object| match kind {
        ItemKind::Contact => contacts::validate_object(object, specs),
        ItemKind::Event => events::validate_object(object, received_at, specs),
    });
    (echo, result)
}

/// A contact from its JSON text as sent (see [`validate_raw`]).
pub fn validate_contact(raw: &RawValue, specs: &Specs) -> Result<ValidItem, FieldErrors> {
    // The date is only read for events.
    validate_raw(ItemKind::Contact, raw, DateTime::UNIX_EPOCH, specs)
}

/// An event from its JSON text as sent (see [`validate_raw`]).
pub fn validate_event(
    raw: &RawValue,
    received_at: DateTime<Utc>,
    specs: &Specs,
) -> Result<ValidItem, FieldErrors> {
    validate_raw(ItemKind::Event, raw, received_at, specs)
}

/// What any item echoes, whether or not it validates.
pub fn echo(item: &Value) -> Echo {
    let string = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
    Echo {
        user_id: string("_user_id"),
        event_id: string("_event_id"),
    }
}

fn item_error(message: &str) -> FieldErrors {
    item_error_at(ITEM_KEY, message)
}

fn item_error_at(field: &str, message: &str) -> FieldErrors {
    let mut errors = FieldErrors::new();
    add_error(&mut errors, field, message);
    errors
}

/// The `_item` error for anything that is not a JSON object.
pub(crate) fn as_object(item: &Value) -> Result<&Map<String, Value>, FieldErrors> {
    item.as_object().ok_or_else(|| item_error(MUST_BE_OBJECT))
}

/// The whole-item rules on an already parsed item: its compact JSON is at most
/// [`MAX_ITEM_BYTES`] (checked first, as on the raw path), and it is an object.
pub(crate) fn as_sized_object(item: &Value) -> Result<&Map<String, Value>, FieldErrors> {
    if compact_len_exceeds(item, MAX_ITEM_BYTES) {
        return Err(item_error(TOO_LARGE));
    }
    as_object(item)
}

/// Whether `value` serializes (compactly) to more than `limit` bytes; stops counting early.
fn compact_len_exceeds(value: &Value, limit: usize) -> bool {
    struct Counter {
        len: usize,
        limit: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.len += buf.len();
            if self.len > self.limit {
                Err(std::io::Error::other("over the limit"))
            } else {
                Ok(buf.len())
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { len: 0, limit };
    serde_json::to_writer(&mut counter, value).is_err()
}

/// `_user_id`: required string, 1–256 characters, no control characters.
pub(crate) fn user_id(item: &Map<String, Value>, errors: &mut FieldErrors) -> Option<String> {
    required_string(item, "_user_id", MAX_USER_ID_CHARS, false, errors)
}

/// A required string of 1..=max chars, without control characters unless
/// `control_allowed`: `Required` when absent or `null`, `Must be a string`, `Invalid format`.
pub(crate) fn required_string(
    item: &Map<String, Value>,
    field: &str,
    max_chars: usize,
    control_allowed: bool,
    errors: &mut FieldErrors,
) -> Option<String> {
    match item.get(field) {
        None | Some(Value::Null) => {
            add_error(errors, field, REQUIRED);
            None
        }
        Some(Value::String(s)) => {
            if is_valid_id(s, max_chars, control_allowed) {
                Some(s.clone())
            } else {
                add_error(errors, field, INVALID_FORMAT);
                None
            }
        }
        Some(_) => {
            add_error(errors, field, MUST_BE_STRING);
            None
        }
    }
}

fn is_valid_id(s: &str, max_chars: usize, control_allowed: bool) -> bool {
    let chars = s.chars().count();
    chars != 0
        && chars <= max_chars
        && storable::is_storable_str(s)
        && (control_allowed || !s.chars().any(char::is_control))
}

/// The `_user_id` rule for a user id that arrives as a string outside an item (the path
/// of `DELETE /stream/contacts/{user_id}`): errors under `_user_id`.
pub fn check_user_id(user_id: &str) -> Result<(), FieldErrors> {
    if is_valid_id(user_id, MAX_USER_ID_CHARS, false) {
        Ok(())
    } else {
        Err(item_error_at("_user_id", INVALID_FORMAT))
    }
}

/// A custom attribute or event parameter name: `^[a-z][a-z0-9_]{0,63}$`.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            first.is_ascii_lowercase()
                && rest.len() <= 63
                && rest
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
        }
        None => false,
    }
}

/// Checks a custom attribute's (or event parameter's) name and value, adding every
/// message under `field`. Returns the value to store, or `None` when there were errors.
pub(crate) fn custom_value(
    field: &str,
    name: &str,
    value: &Value,
    spec: Option<ValueSpec>,
    errors: &mut FieldErrors,
) -> Option<Value> {
    let before = errors.get(field).map_or(0, Vec::len);
    if !is_valid_name(name) {
        add_error(errors, field, INVALID_NAME);
    }
    let mut error = |message| add_error(errors, field, message);
    let is_type = |value: &Value, data_type: DataType| {
        matches!(
            (value, data_type),
            (Value::String(_), DataType::String)
                | (Value::Number(_), DataType::Number)
                | (Value::Bool(_), DataType::Boolean)
        )
    };
    let stored = match value {
        Value::Null => Value::Null,
        Value::Object(_) => {
            error(INVALID_TYPE);
            Value::Null
        }
        Value::Array(values) => {
            for element in values {
                match element {
                    Value::Array(_) | Value::Object(_) => error(INVALID_TYPE),
                    scalar => scalar_rules(scalar, &mut error),
                }
            }
            match spec {
                Some(ValueSpec {
                    max_values: None, ..
                }) => error(INVALID_TYPE),
                Some(ValueSpec {
                    data_type,
                    max_values: Some(max),
                }) => {
                    if values.iter().any(|v| !is_type(v, data_type)) {
                        error(INVALID_TYPE);
                    }
                    if values.len() > max as usize {
                        error(TOO_MANY_VALUES);
                    }
                }
                None => {}
            }
            if values.len() > MAX_VALUES {
                error(TOO_MANY_VALUES);
            }
            value.clone()
        }
        scalar => {
            scalar_rules(scalar, &mut error);
            match spec {
                Some(spec) if !is_type(scalar, spec.data_type) => {
                    error(INVALID_TYPE);
                    scalar.clone()
                }
                // A scalar for a multivalue spec is a one-element set (see the module docs).
                Some(ValueSpec {
                    max_values: Some(max),
                    ..
                }) => {
                    if max == 0 {
                        error(TOO_MANY_VALUES);
                    }
                    Value::Array(vec![scalar.clone()])
                }
                _ => scalar.clone(),
            }
        }
    };
    (errors.get(field).map_or(0, Vec::len) == before).then_some(stored)
}

/// The rules of one scalar custom value (alone or in an array): strings at most
/// [`MAX_STRING_VALUE_CHARS`] and storable, numbers within PostgreSQL's `numeric`.
fn scalar_rules(value: &Value, error: &mut impl FnMut(&'static str)) {
    match value {
        Value::String(s) => {
            if s.chars().count() > MAX_STRING_VALUE_CHARS {
                error(TOO_LONG);
            }
            if !storable::is_storable_str(s) {
                error(INVALID_FORMAT);
            }
        }
        Value::Number(n) if !storable::is_storable_number(n) => error(INVALID_FORMAT),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
