//! Event items: `POST /stream/events`.
//!
//! Walking-skeleton rules: `_user_id`, `_event_id` (1–128 chars) and `_event_type`
//! (1–128 chars) are required strings; `_event_date` is an optional RFC 3339 date-time
//! that defaults to the time the gateway received the request; `_event_parameters` is an
//! optional object; any other key is an unknown field. Spec checks and the future bound
//! on `_event_date` arrive with the write-contract issue and belong in this module.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{
    add_error, as_object, required_id, user_id, FieldErrors, ValidItem, INVALID_FORMAT,
    MUST_BE_OBJECT, MUST_BE_STRING, UNKNOWN_FIELD,
};
use crate::envelope::Operation;

const KNOWN: [&str; 5] = [
    "_user_id",
    "_event_id",
    "_event_type",
    "_event_date",
    "_event_parameters",
];

pub fn validate(item: &Value, received_at: DateTime<Utc>) -> Result<ValidItem, FieldErrors> {
    let object = as_object(item)?;
    let mut errors = FieldErrors::new();
    let user_id = user_id(object, &mut errors);
    let event_id = required_id(object, "_event_id", 128, &mut errors);
    let event_type = required_id(object, "_event_type", 128, &mut errors);

    let event_date = match object.get("_event_date") {
        None | Some(Value::Null) => Some(received_at),
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(date) => Some(date.with_timezone(&Utc)),
            Err(_) => {
                add_error(&mut errors, "_event_date", INVALID_FORMAT);
                None
            }
        },
        Some(_) => {
            add_error(&mut errors, "_event_date", MUST_BE_STRING);
            None
        }
    };

    let parameters = match object.get("_event_parameters") {
        None | Some(Value::Null) => Some(Map::new()),
        Some(Value::Object(map)) => Some(map.clone()),
        Some(_) => {
            add_error(&mut errors, "_event_parameters", MUST_BE_OBJECT);
            None
        }
    };

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::REQUIRED;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-11-24T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn valid_event_defaults_date_to_receipt() {
        let item = validate(
            &json!({"_user_id": "u", "_event_id": "e", "_event_type": "buy",
                    "_event_parameters": {"amount": 3}}),
            now(),
        )
        .unwrap();
        assert_eq!(
            item.op,
            Operation::AppendEvent {
                event_id: "e".into(),
                event_type: "buy".into(),
                event_date: now(),
                parameters: json!({"amount": 3}).as_object().unwrap().clone(),
            }
        );
    }

    #[test]
    fn explicit_date_with_offset_is_normalized_to_utc() {
        let item = validate(
            &json!({"_user_id": "u", "_event_id": "e", "_event_type": "t",
                    "_event_date": "2026-11-24T13:30:00+01:00"}),
            now(),
        )
        .unwrap();
        let Operation::AppendEvent { event_date, .. } = item.op else {
            panic!("expected an event")
        };
        assert_eq!(
            event_date,
            "2026-11-24T12:30:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn collects_every_field_error() {
        let errors = validate(
            &json!({"_event_date": "yesterday", "_event_parameters": [1], "color": "red"}),
            now(),
        )
        .unwrap_err();
        assert_eq!(errors["_user_id"], vec![REQUIRED]);
        assert_eq!(errors["_event_id"], vec![REQUIRED]);
        assert_eq!(errors["_event_type"], vec![REQUIRED]);
        assert_eq!(errors["_event_date"], vec![INVALID_FORMAT]);
        assert_eq!(errors["_event_parameters"], vec![MUST_BE_OBJECT]);
        assert_eq!(errors["color"], vec![UNKNOWN_FIELD]);
    }
}
