//! Contact items: `POST /stream/contacts`.
//!
//! | field | rule | errors |
//! |---|---|---|
//! | `_user_id` | required; string, 1–256 chars, no control characters | `Required`, `Must be a string`, `Invalid format` |
//! | `_email` | optional; a valid address, at most 254 chars | `Invalid format` |
//! | `_phone_mobile` | optional; E.164 (`^\+[1-9]\d{1,14}$`, ASCII digits) | `Invalid format` |
//! | `_first_name`, `_last_name` | optional; string, at most 256 chars, no U+0000 | `Must be a string`, `Too long`, `Invalid format` |
//! | any other `_` key | not allowed | `Unknown reserved attribute` |
//! | any other key | a custom attribute (rules in the `validate` module) | `Invalid name`, `Invalid type`, `Too long`, `Too many values` |
//!
//! Every optional attribute may be `null`, which removes it from the contact.
//!
//! `_email` is checked with the `email_address` crate (RFC 5321/5322 syntax), stricter
//! than its defaults: the domain needs at least two labels (`a@localhost` fails), and
//! neither domain literals (`a@[127.0.0.1]`) nor display names (`Ann <a@b.co>`) are
//! allowed. A non-string `_email` or `_phone_mobile` is `Invalid format`, the only error
//! the contract lists for them.

/// The reserved attributes, as `GET /stream/specs/attributes` lists them: name, type,
/// and whether every contact must have it.
pub const RESERVED_ATTRIBUTES: [(&str, DataType, bool); 5] = [
    ("_user_id", DataType::String, true),
    ("_email", DataType::String, false),
    ("_phone_mobile", DataType::String, false),
    ("_first_name", DataType::String, false),
    ("_last_name", DataType::String, false),
];

use super::specs::DataType;
use super::storable::is_storable_str;
use email_address::{EmailAddress, Options};
use serde_json::{Map, Value};

use super::{
    add_error, as_sized_object, custom_value, user_id, FieldErrors, Specs, ValidItem,
    INVALID_FORMAT, MAX_EMAIL_CHARS, MAX_NAME_CHARS, MUST_BE_STRING, TOO_LONG,
    UNKNOWN_RESERVED_ATTRIBUTE,
};
use crate::envelope::Operation;

/// Validates one parsed contact item; on success the operation carries every attribute
/// except `_user_id` (multivalue scalars normalized to one-element arrays).
pub fn validate(item: &Value, specs: &Specs) -> Result<ValidItem, FieldErrors> {
    validate_object(as_sized_object(item)?, specs)
}

/// The field rules, on an item that already passed the whole-item rules.
pub(crate) fn validate_object(
    object: &Map<String, Value>,
    specs: &Specs,
) -> Result<ValidItem, FieldErrors> {
    let mut errors = FieldErrors::new();
    let user_id = user_id(object, &mut errors);
    let mut attributes = Map::new();
    for (key, value) in object {
        match key.as_str() {
            "_user_id" => continue,
            "_email" => {
                if !(value.is_null() || value.as_str().is_some_and(is_valid_email)) {
                    add_error(&mut errors, key, INVALID_FORMAT);
                }
            }
            "_phone_mobile" => {
                if !(value.is_null() || value.as_str().is_some_and(is_e164)) {
                    add_error(&mut errors, key, INVALID_FORMAT);
                }
            }
            "_first_name" | "_last_name" => match value {
                Value::Null => {}
                Value::String(s) => {
                    if s.chars().count() > MAX_NAME_CHARS {
                        add_error(&mut errors, key, TOO_LONG);
                    }
                    if !is_storable_str(s) {
                        add_error(&mut errors, key, INVALID_FORMAT);
                    }
                }
                _ => add_error(&mut errors, key, MUST_BE_STRING),
            },
            reserved if reserved.starts_with('_') => {
                add_error(&mut errors, key, UNKNOWN_RESERVED_ATTRIBUTE)
            }
            name => {
                let spec = specs.attributes.get(name).map(Into::into);
                if let Some(stored) = custom_value(key, name, value, spec, &mut errors) {
                    attributes.insert(key.clone(), stored);
                }
                continue;
            }
        }
        attributes.insert(key.clone(), value.clone());
    }
    match user_id {
        Some(user_id) if errors.is_empty() => Ok(ValidItem {
            user_id,
            op: Operation::UpsertContact { attributes },
        }),
        _ => Err(errors),
    }
}

/// `_email`: at most 254 chars and a valid address (see the module docs).
pub fn is_valid_email(address: &str) -> bool {
    let options = Options::default()
        .with_required_tld()
        .without_domain_literal()
        .without_display_text();
    address.chars().count() <= MAX_EMAIL_CHARS
        && is_storable_str(address)
        && EmailAddress::parse_with_options(address, options).is_ok()
}

/// `_phone_mobile`: E.164, `^\+[1-9]\d{1,14}$` with ASCII digits only.
pub fn is_e164(phone: &str) -> bool {
    match phone.strip_prefix('+') {
        Some(digits) => {
            (2..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::specs::{AttributeSpec, DataType};
    use crate::validate::{
        INVALID_NAME, INVALID_TYPE, ITEM_KEY, MUST_BE_OBJECT, REQUIRED, TOO_MANY_VALUES,
    };
    use serde_json::json;

    fn ok(item: Value) -> Map<String, Value> {
        ok_with(item, &Specs::default())
    }

    fn ok_with(item: Value, specs: &Specs) -> Map<String, Value> {
        let valid = validate(&item, specs).unwrap_or_else(|e| panic!("{item}: {e:?}"));
        let Operation::UpsertContact { attributes } = valid.op else {
            panic!("expected an upsert")
        };
        attributes
    }

    fn errors(item: Value) -> FieldErrors {
        validate(&item, &Specs::default()).unwrap_err()
    }

    fn only(field: &str, messages: &[&str]) -> FieldErrors {
        let mut errors = FieldErrors::new();
        for message in messages {
            add_error(&mut errors, field, message);
        }
        errors
    }

    #[test]
    fn keeps_attributes_without_user_id() {
        let item = validate(
            &json!({"_user_id": "U1", "_email": "a@b.co", "plan": null}),
            &Specs::default(),
        )
        .unwrap();
        assert_eq!(item.user_id, "U1");
        let Operation::UpsertContact { attributes } = item.op else {
            panic!("expected an upsert")
        };
        assert_eq!(
            Value::Object(attributes),
            json!({"_email": "a@b.co", "plan": null})
        );
        assert!(ok(json!({"_user_id": "U1"})).is_empty());
    }

    #[test]
    fn rejects_non_objects_and_missing_user_id() {
        for item in [json!("x"), json!(1), json!([]), json!(null), json!(true)] {
            assert_eq!(errors(item), only(ITEM_KEY, &[MUST_BE_OBJECT]));
        }
        assert_eq!(errors(json!({"a": 1})), only("_user_id", &[REQUIRED]));
        assert_eq!(
            errors(json!({"_user_id": 1})),
            only("_user_id", &[MUST_BE_STRING])
        );
        assert_eq!(
            errors(json!({"_user_id": ""})),
            only("_user_id", &[INVALID_FORMAT])
        );
    }

    fn email_of_len(len: usize) -> String {
        // local part of 64 chars (the RFC maximum) and labels of at most 63 chars
        let local = "l".repeat(64);
        let rest = len - local.len() - 1 - ".com".len();
        let mut labels = Vec::new();
        let mut left = rest;
        while left > 0 {
            // each further label costs its chars plus one dot
            let take = left.min(63);
            labels.push("d".repeat(take));
            left -= take;
            if left > 0 {
                left -= 1;
                if left == 0 {
                    // avoid ending with an empty label: move one char over
                    let last = labels.last_mut().unwrap();
                    last.pop();
                    left = 1;
                }
            }
        }
        let email = format!("{local}@{}.com", labels.join("."));
        assert_eq!(email.len(), len);
        email
    }

    #[test]
    fn email_rule() {
        for good in [
            "a@b.co",
            "first.last+tag@example.com",
            "o'hara@sub.example.org",
            "user_1@xn--bcher-kva.example",
            &email_of_len(254),
        ] {
            assert_eq!(
                ok(json!({"_user_id": "u", "_email": good}))["_email"],
                json!(good)
            );
        }
        assert_eq!(
            ok(json!({"_user_id": "u", "_email": null}))["_email"],
            json!(null)
        );
        let too_long = email_of_len(255);
        assert!(
            EmailAddress::is_valid(&too_long),
            "only the length is wrong"
        );
        for bad in [
            json!(too_long),
            json!(""),
            json!("plain"),
            json!("@b.co"),
            json!("a@"),
            json!("a@@b.co"),
            json!("a b@c.co"),
            json!(" a@b.co"),
            json!("a@b.co "),
            json!("a@localhost"),
            json!("a@[127.0.0.1]"),
            json!("Ann <a@b.co>"),
            json!("a@b..co"),
            json!(format!("{}@b.co", "l".repeat(65))),
            json!(1),
            json!(true),
            json!(["a@b.co"]),
            json!({"email": "a@b.co"}),
        ] {
            assert_eq!(
                errors(json!({"_user_id": "u", "_email": bad})),
                only("_email", &[INVALID_FORMAT]),
                "{bad}"
            );
        }
    }

    #[test]
    fn phone_rule() {
        for good in ["+34600000000", "+12", "+91", "+123456789012345"] {
            assert_eq!(
                ok(json!({"_user_id": "u", "_phone_mobile": good}))["_phone_mobile"],
                json!(good)
            );
        }
        assert_eq!(
            ok(json!({"_user_id": "u", "_phone_mobile": null}))["_phone_mobile"],
            json!(null)
        );
        for bad in [
            json!("+1"),                // one digit
            json!("+1234567890123456"), // sixteen digits
            json!("+0123456"),
            json!("34600000000"),
            json!("++34600000000"),
            json!("+34 600 000 000"),
            json!("+34-600000000"),
            json!("+3460000000a"),
            json!("+٣٤٦٠٠٠٠٠٠٠٠"), // non-ASCII digits
            json!(" +34600000000"),
            json!("+34600000000\n"),
            json!(""),
            json!("+"),
            json!(34600000000_u64),
            json!(["+34600000000"]),
        ] {
            assert_eq!(
                errors(json!({"_user_id": "u", "_phone_mobile": bad})),
                only("_phone_mobile", &[INVALID_FORMAT]),
                "{bad}"
            );
        }
    }

    #[test]
    fn name_attributes() {
        for field in ["_first_name", "_last_name"] {
            for good in [
                json!(""),
                json!("Ann"),
                json!("x".repeat(256)),
                json!("é".repeat(256)),
                json!(null),
            ] {
                assert_eq!(
                    ok(json!({"_user_id": "u", field: good.clone()}))[field],
                    good
                );
            }
            assert_eq!(
                errors(json!({"_user_id": "u", field: "x".repeat(257)})),
                only(field, &[TOO_LONG])
            );
            assert_eq!(
                errors(json!({"_user_id": "u", field: "A\u{0}nn"})),
                only(field, &[INVALID_FORMAT])
            );
            assert!(
                errors(json!({"_user_id": "u", "_email": "a\u{0}b@c.co"})).contains_key("_email")
            );
            for bad in [json!(1), json!(false), json!(["Ann"]), json!({"n": "Ann"})] {
                assert_eq!(
                    errors(json!({"_user_id": "u", field: bad})),
                    only(field, &[MUST_BE_STRING])
                );
            }
        }
    }

    #[test]
    fn unknown_reserved_attributes() {
        for key in ["_", "_foo", "_Email", "_event_id", "_event_type", "__email"] {
            assert_eq!(
                errors(json!({"_user_id": "u", key: "x"})),
                only(key, &[UNKNOWN_RESERVED_ATTRIBUTE])
            );
            // even null: it is not an attribute that could be removed
            assert_eq!(
                errors(json!({"_user_id": "u", key: null})),
                only(key, &[UNKNOWN_RESERVED_ATTRIBUTE])
            );
        }
    }

    #[test]
    fn custom_attributes_without_specs() {
        let attributes = ok(
            json!({"_user_id": "u", "plan": "pro", "age": 42, "score": 0.5,
            "vip": true, "gone": null, "tags": ["a", 1, false, null],
            "long": "x".repeat(1024), "many": vec![1; 100],
            &format!("a{}", "b".repeat(63)): 1}),
        );
        assert_eq!(attributes.len(), 9);
        assert_eq!(attributes["tags"], json!(["a", 1, false, null]));
        for (key, value, message) in [
            ("Plan", json!(1), INVALID_NAME),
            ("1plan", json!(1), INVALID_NAME),
            ("pl-an", json!(1), INVALID_NAME),
            (&format!("a{}", "b".repeat(64)), json!(1), INVALID_NAME),
            ("obj", json!({"a": 1}), INVALID_TYPE),
            ("nested", json!([[1]]), INVALID_TYPE),
            ("nested_obj", json!([{}]), INVALID_TYPE),
            ("long", json!("x".repeat(1025)), TOO_LONG),
            ("long_in_set", json!(["x".repeat(1025)]), TOO_LONG),
            ("many", json!(vec![1; 101]), TOO_MANY_VALUES),
        ] {
            assert_eq!(
                errors(json!({"_user_id": "u", key: value})),
                only(key, &[message]),
                "{key}"
            );
        }
    }

    #[test]
    fn collects_every_offending_field() {
        let got = errors(json!({
            "_user_id": 5,
            "_email": "nope",
            "_phone_mobile": "600",
            "_first_name": "x".repeat(300),
            "_last_name": 1,
            "_nickname": "x",
            "Bad Name": {"a": 1},
            "ok": "fine",
        }));
        let mut want = FieldErrors::new();
        add_error(&mut want, "_user_id", MUST_BE_STRING);
        add_error(&mut want, "_email", INVALID_FORMAT);
        add_error(&mut want, "_phone_mobile", INVALID_FORMAT);
        add_error(&mut want, "_first_name", TOO_LONG);
        add_error(&mut want, "_last_name", MUST_BE_STRING);
        add_error(&mut want, "_nickname", UNKNOWN_RESERVED_ATTRIBUTE);
        add_error(&mut want, "Bad Name", INVALID_NAME);
        add_error(&mut want, "Bad Name", INVALID_TYPE);
        assert_eq!(got, want);
        // Attribute errors are reported even when `_user_id` is fine or missing.
        let got = errors(json!({"_email": 1}));
        assert_eq!(got["_user_id"], vec![REQUIRED]);
        assert_eq!(got["_email"], vec![INVALID_FORMAT]);
    }

    fn specs() -> Specs {
        let mut specs = Specs::default();
        for (name, data_type, max_values) in [
            ("plan", DataType::String, None),
            ("age", DataType::Number, None),
            ("vip", DataType::Boolean, None),
            ("tags", DataType::String, Some(3)),
            // a spec for a reserved name does not change the reserved rules
            ("_email", DataType::Number, None),
        ] {
            specs.attributes.insert(
                name.into(),
                AttributeSpec {
                    data_type,
                    max_values,
                },
            );
        }
        specs
    }

    #[test]
    fn custom_attributes_with_specs() {
        let specs = specs();
        let attributes = ok_with(
            json!({"_user_id": "u", "_email": "a@b.co", "plan": "pro", "age": 3, "vip": false,
                   "tags": ["a", "b", "c"], "other": [1, "x"]}),
            &specs,
        );
        assert_eq!(attributes["tags"], json!(["a", "b", "c"]));
        // null always removes; a scalar for a multivalue spec becomes a one-element set
        let attributes = ok_with(
            json!({"_user_id": "u", "plan": null, "age": null, "vip": null, "tags": "a"}),
            &specs,
        );
        assert_eq!(
            Value::Object(attributes),
            json!({"plan": null, "age": null, "vip": null, "tags": ["a"]})
        );
        for (key, value, messages) in [
            ("plan", json!(1), vec![INVALID_TYPE]),
            ("plan", json!(["pro"]), vec![INVALID_TYPE]),
            ("age", json!("3"), vec![INVALID_TYPE]),
            ("vip", json!(1), vec![INVALID_TYPE]),
            ("tags", json!(1), vec![INVALID_TYPE]),
            ("tags", json!(["a", 2]), vec![INVALID_TYPE]),
            ("tags", json!(["a", "b", "c", "d"]), vec![TOO_MANY_VALUES]),
            (
                "tags",
                json!([1, 2, 3, 4]),
                vec![INVALID_TYPE, TOO_MANY_VALUES],
            ),
            ("plan", json!("x".repeat(1025)), vec![TOO_LONG]),
        ] {
            assert_eq!(
                validate(&json!({"_user_id": "u", key: value}), &specs).unwrap_err(),
                only(key, &messages),
                "{key}"
            );
        }
    }
}
