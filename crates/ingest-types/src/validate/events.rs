//! Event items: `POST /stream/events`.
//!
//! | field | rule | errors |
//! |---|---|---|
//! | `_user_id` | required, as for contacts | `Required`, `Must be a string`, `Invalid format` |
//! | `_event_id` | required; string, 1–128 chars, no control characters | `Required`, `Must be a string`, `Invalid format` |
//! | `_event_type` | required; string, 1–128 chars, no U+0000; one of the declared types, if any | `Required`, `Must be a string`, `Invalid format`, `Unknown event type` |
//! | `_event_date` | optional; RFC 3339 with offset; years 0001–9999 in UTC; at most 24 h after receipt | `Invalid format`, `Too far in the future` |
//! | `_event_parameters` | optional object; values as for custom attributes | `Must be an object`; per parameter under `_event_parameters.<name>` |
//! | any other key | not allowed | `Unknown field` |
//!
//! Decisions where the contract is silent:
//! - `_event_type` may contain control characters: the contract forbids them for the ids
//!   only. (A declared type list, when there is one, decides anyway.) U+0000 is the
//!   exception: PostgreSQL cannot store it.
//! - `_event_date` is stored as `timestamptz`: in UTC, to the microsecond (further digits
//!   are dropped), a leap second as the next second, and only within years 0001–9999
//!   once in UTC (`0001-01-01T00:00:00+01:00` is `Invalid format`).
//! - `_event_date` and `_event_parameters` may be `null`, meaning absent. A non-string
//!   `_event_date` is `Invalid format`. Exactly 24 h after receipt is allowed; past dates
//!   are not bounded.
//! - A required parameter that is absent or `null` is `Required`. Parameter specs are only
//!   checked when `_event_type` is valid and declared; parameters without a spec follow
//!   the generic custom-attribute rules.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};

use super::storable::storable_instant;
use super::{
    add_error, as_sized_object, custom_value, required_string, user_id, EventTypeSpec, FieldErrors,
    Specs, ValidItem, INVALID_FORMAT, MAX_EVENT_ID_CHARS, MAX_EVENT_TYPE_CHARS, MAX_FUTURE_SECONDS,
    MUST_BE_OBJECT, REQUIRED, TOO_FAR_IN_THE_FUTURE, UNKNOWN_EVENT_TYPE, UNKNOWN_FIELD,
};
use crate::envelope::Operation;

const KNOWN: [&str; 5] = [
    "_user_id",
    "_event_id",
    "_event_type",
    "_event_date",
    "_event_parameters",
];

/// The field under which errors of parameter `name` are reported.
pub fn parameter_field(name: &str) -> String {
    format!("_event_parameters.{name}")
}

/// Validates one parsed event item received at `received_at` (which is also its date
/// when it has none).
pub fn validate(
    item: &Value,
    received_at: DateTime<Utc>,
    specs: &Specs,
) -> Result<ValidItem, FieldErrors> {
    validate_object(as_sized_object(item)?, received_at, specs)
}

/// The field rules, on an item that already passed the whole-item rules.
pub(crate) fn validate_object(
    object: &Map<String, Value>,
    received_at: DateTime<Utc>,
    specs: &Specs,
) -> Result<ValidItem, FieldErrors> {
    let mut errors = FieldErrors::new();
    let user_id = user_id(object, &mut errors);
    let event_id = required_string(object, "_event_id", MAX_EVENT_ID_CHARS, false, &mut errors);
    let event_type = required_string(
        object,
        "_event_type",
        MAX_EVENT_TYPE_CHARS,
        true,
        &mut errors,
    );
    let type_spec = match &event_type {
        Some(name) if !specs.event_types.is_empty() => {
            let spec = specs.event_types.get(name);
            if spec.is_none() {
                add_error(&mut errors, "_event_type", UNKNOWN_EVENT_TYPE);
            }
            spec
        }
        _ => None,
    };
    let event_date = event_date(object.get("_event_date"), received_at, &mut errors);
    let parameters = parameters(object.get("_event_parameters"), type_spec, &mut errors);

    for key in object.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        add_error(&mut errors, key, UNKNOWN_FIELD);
    }

    match (user_id, event_id, event_type, event_date, parameters) {
        (Some(user_id), Some(event_id), Some(event_type), Some(event_date), Some(parameters))
            if errors.is_empty() =>
        {
            Ok(ValidItem {
                user_id,
                op: Operation::AppendEvent {
                    event_id,
                    event_type,
                    event_date,
                    parameters,
                },
            })
        }
        _ => Err(errors),
    }
}

fn event_date(
    value: Option<&Value>,
    received_at: DateTime<Utc>,
    errors: &mut FieldErrors,
) -> Option<DateTime<Utc>> {
    let date = match value {
        None | Some(Value::Null) => return Some(received_at),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(storable_instant),
        Some(_) => None,
    };
    let Some(date) = date else {
        add_error(errors, "_event_date", INVALID_FORMAT);
        return None;
    };
    if date.signed_duration_since(received_at) > TimeDelta::seconds(MAX_FUTURE_SECONDS) {
        add_error(errors, "_event_date", TOO_FAR_IN_THE_FUTURE);
        return None;
    }
    Some(date)
}

fn parameters(
    value: Option<&Value>,
    type_spec: Option<&EventTypeSpec>,
    errors: &mut FieldErrors,
) -> Option<Map<String, Value>> {
    let empty = Map::new();
    let given = match value {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => {
            add_error(errors, "_event_parameters", MUST_BE_OBJECT);
            return None;
        }
    };
    let mut stored = Map::new();
    let mut ok = true;
    for (name, value) in given {
        let spec = type_spec
            .and_then(|t| t.parameters.get(name))
            .map(Into::into);
        match custom_value(&parameter_field(name), name, value, spec, errors) {
            Some(value) => {
                stored.insert(name.clone(), value);
            }
            None => ok = false,
        }
    }
    for (name, spec) in type_spec.iter().flat_map(|t| &t.parameters) {
        if spec.required && given.get(name).is_none_or(Value::is_null) {
            add_error(errors, &parameter_field(name), REQUIRED);
            ok = false;
        }
    }
    ok.then_some(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::specs::{DataType, ParameterSpec};
    use crate::validate::{
        INVALID_NAME, INVALID_TYPE, ITEM_KEY, MUST_BE_STRING, TOO_LONG, TOO_MANY_VALUES,
    };
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-11-24T12:00:00Z".parse().unwrap()
    }

    fn event(extra: Value) -> Value {
        let mut item = json!({"_user_id": "u", "_event_id": "e", "_event_type": "buy"});
        for (k, v) in extra.as_object().unwrap() {
            item[k] = v.clone();
        }
        item
    }

    fn errors_with(item: Value, specs: &Specs) -> FieldErrors {
        validate(&item, now(), specs).unwrap_err()
    }

    fn errors(item: Value) -> FieldErrors {
        errors_with(item, &Specs::default())
    }

    fn only(field: &str, messages: &[&str]) -> FieldErrors {
        let mut errors = FieldErrors::new();
        for message in messages {
            add_error(&mut errors, field, message);
        }
        errors
    }

    fn op(item: Value, specs: &Specs) -> Operation {
        validate(&item, now(), specs)
            .unwrap_or_else(|e| panic!("{item}: {e:?}"))
            .op
    }

    fn params(item: Value, specs: &Specs) -> Map<String, Value> {
        let Operation::AppendEvent { parameters, .. } = op(item, specs) else {
            panic!("expected an event")
        };
        parameters
    }

    fn date(item: Value) -> DateTime<Utc> {
        let Operation::AppendEvent { event_date, .. } = op(item, &Specs::default()) else {
            panic!("expected an event")
        };
        event_date
    }

    #[test]
    fn valid_event_defaults_date_to_receipt() {
        let item = validate(
            &event(json!({"_event_parameters": {"amount": 3}})),
            now(),
            &Specs::default(),
        )
        .unwrap();
        assert_eq!(item.user_id, "u");
        assert_eq!(
            item.op,
            Operation::AppendEvent {
                event_id: "e".into(),
                event_type: "buy".into(),
                event_date: now(),
                parameters: json!({"amount": 3}).as_object().unwrap().clone(),
            }
        );
        assert_eq!(date(event(json!({"_event_date": null}))), now());
        assert!(params(event(json!({"_event_parameters": null})), &Specs::default()).is_empty());
        assert!(params(event(json!({})), &Specs::default()).is_empty());
    }

    #[test]
    fn not_an_object() {
        for item in [json!("x"), json!(1), json!([]), json!(null)] {
            assert_eq!(errors(item), only(ITEM_KEY, &[MUST_BE_OBJECT]));
        }
    }

    #[test]
    fn event_id_rule() {
        for good in ["x".to_string(), "x".repeat(128), "é".repeat(128)] {
            assert!(validate(&event(json!({"_event_id": good})), now(), &Specs::default()).is_ok());
        }
        for (bad, message) in [
            (json!(null), REQUIRED),
            (json!(1), MUST_BE_STRING),
            (json!(""), INVALID_FORMAT),
            (json!("x".repeat(129)), INVALID_FORMAT),
            (json!("a\tb"), INVALID_FORMAT),
        ] {
            assert_eq!(
                errors(event(json!({"_event_id": bad}))),
                only("_event_id", &[message])
            );
        }
        let mut item = event(json!({}));
        item.as_object_mut().unwrap().remove("_event_id");
        assert_eq!(errors(item), only("_event_id", &[REQUIRED]));
    }

    #[test]
    fn user_id_rule() {
        let mut item = event(json!({}));
        item.as_object_mut().unwrap().remove("_user_id");
        assert_eq!(errors(item), only("_user_id", &[REQUIRED]));
        assert_eq!(
            errors(event(json!({"_user_id": "x".repeat(257)}))),
            only("_user_id", &[INVALID_FORMAT])
        );
        assert!(validate(
            &event(json!({"_user_id": "x".repeat(256)})),
            now(),
            &Specs::default()
        )
        .is_ok());
    }

    #[test]
    fn event_type_rule() {
        for good in ["x".to_string(), "x".repeat(128), "a\tb".to_string()] {
            assert!(validate(
                &event(json!({"_event_type": good})),
                now(),
                &Specs::default()
            )
            .is_ok());
        }
        for (bad, message) in [
            (json!(null), REQUIRED),
            (json!(["buy"]), MUST_BE_STRING),
            (json!(""), INVALID_FORMAT),
            (json!("x".repeat(129)), INVALID_FORMAT),
            // Control characters are allowed, but PostgreSQL cannot store U+0000.
            (json!("a\u{0}b"), INVALID_FORMAT),
        ] {
            assert_eq!(
                errors(event(json!({"_event_type": bad}))),
                only("_event_type", &[message])
            );
        }
    }

    #[test]
    fn declared_event_types() {
        let mut specs = Specs::default();
        specs
            .event_types
            .insert("buy".into(), EventTypeSpec::default());
        specs
            .event_types
            .insert("view".into(), EventTypeSpec::default());
        assert!(validate(&event(json!({})), now(), &specs).is_ok());
        assert!(validate(&event(json!({"_event_type": "view"})), now(), &specs).is_ok());
        for other in ["Buy", "login", " buy"] {
            assert_eq!(
                errors_with(event(json!({"_event_type": other})), &specs),
                only("_event_type", &[UNKNOWN_EVENT_TYPE])
            );
        }
        // With no declared types, any type goes.
        assert!(validate(
            &event(json!({"_event_type": "login"})),
            now(),
            &Specs::default()
        )
        .is_ok());
    }

    #[test]
    fn explicit_date_with_offset_is_normalized_to_utc() {
        assert_eq!(
            date(event(json!({"_event_date": "2026-11-24T13:30:00+01:00"}))),
            "2026-11-24T12:30:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            date(event(
                json!({"_event_date": "2026-11-24T11:00:00.123456789Z"})
            )),
            // To the microsecond, as stored.
            "2026-11-24T11:00:00.123456Z"
                .parse::<DateTime<Utc>>()
                .unwrap()
        );
        // The past is not bounded.
        assert_eq!(
            date(event(json!({"_event_date": "1970-01-01T00:00:00Z"}))),
            DateTime::UNIX_EPOCH
        );
    }

    #[test]
    fn event_date_format() {
        for bad in [
            json!("2026-11-24T12:00:00"), // no offset
            json!("2026-11-24"),
            json!("12:00:00Z"),
            json!("yesterday"),
            json!("2026-11-24T25:00:00Z"),
            json!("2026-02-30T12:00:00Z"),
            json!(""),
            json!(1_795_000_000),
            json!(true),
            json!({"date": "2026-11-24T12:00:00Z"}),
            // Before year 1 once in UTC: `timestamptz` as the worker writes it.
            json!("0000-01-01T00:00:00Z"),
            json!("0001-01-01T00:00:00+01:00"),
        ] {
            assert_eq!(
                errors(event(json!({"_event_date": bad}))),
                only("_event_date", &[INVALID_FORMAT]),
                "{bad}"
            );
        }
    }

    #[test]
    fn event_date_at_most_24_hours_ahead() {
        let at = |offset: TimeDelta| (now() + offset).to_rfc3339();
        let limit = TimeDelta::hours(24);
        assert_eq!(
            date(event(json!({"_event_date": at(limit)}))),
            now() + limit
        );
        assert_eq!(
            date(event(
                json!({"_event_date": at(limit - TimeDelta::seconds(1))})
            )),
            now() + limit - TimeDelta::seconds(1)
        );
        for over in [
            TimeDelta::seconds(1),
            TimeDelta::milliseconds(1),
            TimeDelta::days(400),
        ] {
            assert_eq!(
                errors(event(json!({"_event_date": at(limit + over)}))),
                only("_event_date", &[TOO_FAR_IN_THE_FUTURE])
            );
        }
        // The bound is on the instant, whatever the offset it is written with.
        assert_eq!(
            errors(event(json!({"_event_date": "2026-11-25T14:00:01+02:00"}))),
            only("_event_date", &[TOO_FAR_IN_THE_FUTURE])
        );
        assert!(validate(
            &event(json!({"_event_date": "2026-11-25T14:00:00+02:00"})),
            now(),
            &Specs::default()
        )
        .is_ok());
    }

    #[test]
    fn parameters_follow_the_custom_attribute_rules() {
        let given = json!({"s": "x".repeat(1024), "n": 1.5, "b": true, "z": null,
                           "set": vec![1; 100], "mixed": ["a", 1, null]});
        assert_eq!(
            Value::Object(params(
                event(json!({"_event_parameters": given})),
                &Specs::default()
            )),
            given
        );
        for bad in [json!([1]), json!("x"), json!(1), json!(true)] {
            assert_eq!(
                errors(event(json!({"_event_parameters": bad}))),
                only("_event_parameters", &[MUST_BE_OBJECT])
            );
        }
        for (name, value, messages) in [
            ("Bad", json!(1), vec![INVALID_NAME]),
            ("_amount", json!(1), vec![INVALID_NAME]),
            ("", json!(1), vec![INVALID_NAME]),
            ("obj", json!({"a": 1}), vec![INVALID_TYPE]),
            ("nested", json!([[1]]), vec![INVALID_TYPE]),
            ("long", json!("x".repeat(1025)), vec![TOO_LONG]),
            ("many", json!(vec![1; 101]), vec![TOO_MANY_VALUES]),
            ("Bad", json!({}), vec![INVALID_NAME, INVALID_TYPE]),
        ] {
            assert_eq!(
                errors(event(
                    json!({"_event_parameters": {name: value, "fine": 1}})
                )),
                only(&format!("_event_parameters.{name}"), &messages),
                "{name}"
            );
        }
    }

    fn specs() -> Specs {
        let mut purchase = EventTypeSpec::default();
        for (name, data_type, max_values, required) in [
            ("amount", DataType::Number, None, true),
            ("currency", DataType::String, None, false),
            ("gift", DataType::Boolean, None, false),
            ("items", DataType::String, Some(2), false),
        ] {
            purchase.parameters.insert(
                name.into(),
                ParameterSpec {
                    data_type,
                    max_values,
                    required,
                },
            );
        }
        let mut specs = Specs::default();
        specs.event_types.insert("buy".into(), purchase);
        specs
            .event_types
            .insert("view".into(), EventTypeSpec::default());
        specs
    }

    #[test]
    fn parameter_specs() {
        let specs = specs();
        let got = params(
            event(
                json!({"_event_parameters": {"amount": 9.5, "currency": "EUR", "gift": false,
                                               "items": "sku", "extra": [1, "x"]}}),
            ),
            &specs,
        );
        assert_eq!(
            Value::Object(got),
            json!({"amount": 9.5, "currency": "EUR", "gift": false, "items": ["sku"],
                   "extra": [1, "x"]})
        );
        // Optional declared parameters may be absent or null.
        assert!(validate(
            &event(json!({"_event_parameters": {"amount": 1, "currency": null}})),
            now(),
            &specs
        )
        .is_ok());
        // Another declared type has no parameter specs.
        assert!(validate(&event(json!({"_event_type": "view"})), now(), &specs).is_ok());
        let p = |name: &str| format!("_event_parameters.{name}");
        for (given, field, messages) in [
            (json!({}), p("amount"), vec![REQUIRED]),
            (json!({"amount": null}), p("amount"), vec![REQUIRED]),
            (json!({"amount": "1"}), p("amount"), vec![INVALID_TYPE]),
            (json!({"amount": [1]}), p("amount"), vec![INVALID_TYPE]),
            (
                json!({"amount": 1, "currency": 978}),
                p("currency"),
                vec![INVALID_TYPE],
            ),
            (
                json!({"amount": 1, "gift": "yes"}),
                p("gift"),
                vec![INVALID_TYPE],
            ),
            (
                json!({"amount": 1, "items": ["a", 2]}),
                p("items"),
                vec![INVALID_TYPE],
            ),
            (
                json!({"amount": 1, "items": ["a", "b", "c"]}),
                p("items"),
                vec![TOO_MANY_VALUES],
            ),
        ] {
            assert_eq!(
                errors_with(event(json!({"_event_parameters": given})), &specs),
                only(&field, &messages),
                "{given}"
            );
        }
        // A missing `_event_parameters` misses its required parameters too.
        assert_eq!(
            errors_with(event(json!({})), &specs),
            only(&p("amount"), &[REQUIRED])
        );
        // Not an object: that is the one error, not one per required parameter.
        assert_eq!(
            errors_with(event(json!({"_event_parameters": [1]})), &specs),
            only("_event_parameters", &[MUST_BE_OBJECT])
        );
        // An undeclared type reports that, not its parameters.
        assert_eq!(
            errors_with(
                event(json!({"_event_type": "sell", "_event_parameters": {"x": 1}})),
                &specs
            ),
            only("_event_type", &[UNKNOWN_EVENT_TYPE])
        );
    }

    #[test]
    fn unknown_fields() {
        for key in ["color", "_email", "_event", "event_id", "_EVENT_ID"] {
            assert_eq!(errors(event(json!({key: 1}))), only(key, &[UNKNOWN_FIELD]));
            assert_eq!(
                errors(event(json!({key: null}))),
                only(key, &[UNKNOWN_FIELD])
            );
        }
    }

    #[test]
    fn collects_every_field_error() {
        let errors =
            errors(json!({"_event_date": "yesterday", "_event_parameters": [1], "color": "red"}));
        assert_eq!(errors["_user_id"], vec![REQUIRED]);
        assert_eq!(errors["_event_id"], vec![REQUIRED]);
        assert_eq!(errors["_event_type"], vec![REQUIRED]);
        assert_eq!(errors["_event_date"], vec![INVALID_FORMAT]);
        assert_eq!(errors["_event_parameters"], vec![MUST_BE_OBJECT]);
        assert_eq!(errors["color"], vec![UNKNOWN_FIELD]);
        assert_eq!(errors.len(), 6);

        let errors = errors_with(
            json!({"_user_id": 1, "_event_id": "", "_event_type": "nope",
                   "_event_date": "2030-01-01T00:00:00Z",
                   "_event_parameters": {"Bad": 1, "long": "x".repeat(2000)}}),
            &specs(),
        );
        assert_eq!(errors["_user_id"], vec![MUST_BE_STRING]);
        assert_eq!(errors["_event_id"], vec![INVALID_FORMAT]);
        assert_eq!(errors["_event_type"], vec![UNKNOWN_EVENT_TYPE]);
        assert_eq!(errors["_event_date"], vec![TOO_FAR_IN_THE_FUTURE]);
        assert_eq!(errors["_event_parameters.Bad"], vec![INVALID_NAME]);
        assert_eq!(errors["_event_parameters.long"], vec![TOO_LONG]);
        assert_eq!(errors.len(), 6);
    }
}
