//! Property tests: no input makes a validator panic, and generated valid items validate
//! and travel through the Kafka envelope unchanged.

use chrono::{DateTime, FixedOffset, SecondsFormat, TimeDelta, Utc};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::specs::{AttributeSpec, DataType, EventTypeSpec, ParameterSpec, Specs};
use super::{
    check_raw, contacts, echo, events, validate_contact, validate_event, ValidItem, ITEM_KEY,
    MAX_FUTURE_SECONDS, TOO_LARGE,
};
use crate::envelope::{Envelope, Operation, ENVELOPE_VERSION};
use crate::ItemKind;

/// 256 cases (proptest's default; `PROPTEST_CASES` overrides it for a deeper local run).
fn config() -> Config {
    Config {
        // Keep regression files out of the source tree; a failure prints its input.
        failure_persistence: None,
        ..Config::default()
    }
}

fn received_at() -> DateTime<Utc> {
    "2026-11-24T12:00:00.5Z".parse().unwrap()
}

/// Strings that hit the validators' edges: reserved names, control characters, lookalike
/// digits, addresses, dates, long runs, arbitrary Unicode.
fn weird_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,20}",
        "[\\x00-\\x1f\\x7f\\u{85}\\u{2028}]{0,5}",
        Just("_user_id".to_owned()),
        Just("_email".to_owned()),
        Just("_phone_mobile".to_owned()),
        Just("_event_parameters".to_owned()),
        "[a-z0-9.+_-]{0,10}@[a-z0-9.\\[\\]-]{0,12}",
        "<?[^@]{0,5}@?[^@]{0,5}>?",
        "\\+[0-9٠-٩]{0,17}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})?",
        (0usize..1100).prop_map(|n| "é".repeat(n)),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("_user_id".to_owned()),
        Just("_email".to_owned()),
        Just("_phone_mobile".to_owned()),
        Just("_first_name".to_owned()),
        Just("_last_name".to_owned()),
        Just("_event_id".to_owned()),
        Just("_event_type".to_owned()),
        Just("_event_date".to_owned()),
        Just("_event_parameters".to_owned()),
        Just("plan".to_owned()),
        Just("tags".to_owned()),
        Just("amount".to_owned()),
        "[a-z][a-z0-9_]{0,70}",
        weird_string(),
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        weird_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 160, 12, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
            (0usize..150).prop_map(|n| Value::Array(vec![Value::from(1); n])),
            prop::collection::vec((key(), inner), 0..12)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn some_specs() -> Specs {
    let mut specs = Specs::default();
    for (name, data_type, max_values) in [
        ("plan", DataType::String, None),
        ("tags", DataType::String, Some(3)),
        ("amount", DataType::Number, Some(0)),
    ] {
        specs.attributes.insert(
            name.into(),
            AttributeSpec {
                data_type,
                max_values,
            },
        );
    }
    let mut buy = EventTypeSpec::default();
    for (name, data_type, max_values, required) in [
        ("amount", DataType::Number, None, true),
        ("tags", DataType::Boolean, Some(2), false),
    ] {
        buy.parameters.insert(
            name.into(),
            ParameterSpec {
                data_type,
                max_values,
                required,
            },
        );
    }
    specs.event_types.insert("buy".into(), buy);
    specs
}

fn check_never_panics(item: &Value) {
    for specs in [Specs::default(), some_specs()] {
        let contact = contacts::validate(item, &specs);
        let event = events::validate(item, received_at(), &specs);
        let _ = echo(item);
        let raw = RawValue::from_string(item.to_string()).unwrap();
        // The compact text is what the parsed path measures, so both paths agree on it.
        assert_eq!(validate_contact(&raw, &specs), contact);
        assert_eq!(validate_event(&raw, received_at(), &specs), event);
        assert_eq!(
            check_raw(ItemKind::Event, &raw, received_at(), &specs).0,
            echo(item)
        );
        for errors in [contact.err(), event.err()].into_iter().flatten() {
            assert!(!errors.is_empty());
            assert!(errors.values().all(|messages| !messages.is_empty()));
        }
    }
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

fn custom_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => scalar(),
        1 => prop::collection::vec(scalar(), 0..8).prop_map(Value::Array),
    ]
}

fn custom_map() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-z][a-z0-9_]{0,63}", custom_value(), 0..6)
        .prop_map(|map| map.into_iter().collect())
}

fn id(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!("[^\\p{{Cc}}]{{1,{max}}}")).unwrap(),
        "[A-Za-z0-9_/:.-]{1,40}",
    ]
}

fn email() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_+-]{0,15}(\\.[a-z0-9_+-]{1,8})?@[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]{1,8})?\\.[a-z]{2,6}"
}

fn valid_contact() -> impl Strategy<Value = (String, Map<String, Value>)> {
    (
        id(256),
        prop::option::of(prop_oneof![
            email().prop_map(Value::from),
            Just(Value::Null)
        ]),
        prop::option::of(prop_oneof![
            "\\+[1-9][0-9]{1,14}".prop_map(Value::from),
            Just(Value::Null)
        ]),
        prop::option::of(prop_oneof![
            "[^\\p{Cc}]{0,40}".prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            Just(Value::Null)
        ]),
        prop::option::of("\\PC{0,256}".prop_map(Value::from)),
        custom_map(),
    )
        .prop_map(|(user_id, email, phone, first, last, mut attributes)| {
            for (key, value) in [
                ("_email", email),
                ("_phone_mobile", phone),
                ("_first_name", first),
                ("_last_name", last),
            ] {
                if let Some(value) = value {
                    attributes.insert(key.into(), value);
                }
            }
            (user_id, attributes)
        })
}

fn date_with_offset() -> impl Strategy<Value = DateTime<FixedOffset>> {
    (
        -10 * 365 * 86_400i64..=MAX_FUTURE_SECONDS,
        0u32..1_000_000_000,
        -14 * 60i32..=14 * 60,
    )
        .prop_map(|(seconds, nanos, offset_minutes)| {
            let mut utc = received_at() + TimeDelta::seconds(seconds);
            if seconds < MAX_FUTURE_SECONDS {
                utc += TimeDelta::nanoseconds(i64::from(nanos));
            }
            utc.with_timezone(&FixedOffset::east_opt(offset_minutes * 60).unwrap())
        })
}

#[derive(Debug)]
struct GeneratedEvent {
    item: Value,
    user_id: String,
    event_id: String,
    event_type: String,
    date: Option<DateTime<FixedOffset>>,
    parameters: Option<Map<String, Value>>,
}

fn valid_event() -> impl Strategy<Value = GeneratedEvent> {
    (
        id(256),
        id(128),
        "\\PC{1,128}",
        prop::option::of(date_with_offset()),
        prop::option::of(custom_map()),
    )
        .prop_map(|(user_id, event_id, event_type, date, parameters)| {
            let mut item = Map::new();
            item.insert("_user_id".into(), user_id.clone().into());
            item.insert("_event_id".into(), event_id.clone().into());
            item.insert("_event_type".into(), event_type.clone().into());
            if let Some(date) = date {
                item.insert(
                    "_event_date".into(),
                    date.to_rfc3339_opts(SecondsFormat::AutoSi, false).into(),
                );
            }
            if let Some(parameters) = &parameters {
                item.insert(
                    "_event_parameters".into(),
                    Value::Object(parameters.clone()),
                );
            }
            GeneratedEvent {
                item: Value::Object(item),
                user_id,
                event_id,
                event_type,
                date,
                parameters,
            }
        })
}

fn round_trips(valid: ValidItem) -> Envelope {
    let envelope = Envelope {
        v: ENVELOPE_VERSION,
        project: "p1".into(),
        datasource: "ds".into(),
        user_id: valid.user_id,
        received_at: received_at(),
        request_id: "req".into(),
        sync_id: None,
        op: valid.op,
    };
    let decoded = Envelope::decode(&envelope.encode()).unwrap();
    assert_eq!(decoded, envelope);
    decoded
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_json_never_panics(item in arbitrary_json()) {
        check_never_panics(&item);
    }

    #[test]
    fn arbitrary_objects_with_known_keys_never_panic(
        pairs in prop::collection::vec((key(), arbitrary_json()), 0..10)
    ) {
        check_never_panics(&Value::Object(pairs.into_iter().collect()));
    }

    #[test]
    fn valid_contacts_validate_and_round_trip((user_id, attributes) in valid_contact()) {
        let mut item = attributes.clone();
        item.insert("_user_id".into(), user_id.clone().into());
        let item = Value::Object(item);
        let valid = contacts::validate(&item, &Specs::default())
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let envelope = round_trips(valid);
        prop_assert_eq!(envelope.user_id, user_id);
        prop_assert_eq!(envelope.op, Operation::UpsertContact { attributes });
    }

    #[test]
    fn valid_events_validate_and_round_trip(generated in valid_event()) {
        let valid = events::validate(&generated.item, received_at(), &Specs::default())
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let envelope = round_trips(valid);
        prop_assert_eq!(envelope.user_id, generated.user_id);
        prop_assert_eq!(
            envelope.op,
            Operation::AppendEvent {
                event_id: generated.event_id,
                event_type: generated.event_type,
                // As stored: to the microsecond (see `storable`).
                event_date: generated.date.map_or(received_at(), |d| {
                    super::storable::storable_instant(d).expect("generated dates are storable")
                }),
                parameters: generated.parameters.unwrap_or_default(),
            }
        );
    }

    #[test]
    fn items_over_32_kib_fail_alone_under_item(extra in 1usize..4096) {
        let pad = "x".repeat(32 * 1024 + extra);
        let text = format!(r#"{{"_user_id":"u","_event_id":"e","p":"{pad}"}}"#);
        let raw = RawValue::from_string(text).unwrap();
        for result in [
            validate_contact(&raw, &Specs::default()),
            validate_event(&raw, received_at(), &Specs::default()),
        ] {
            let errors = result.unwrap_err();
            prop_assert_eq!(errors.len(), 1);
            prop_assert_eq!(&errors[ITEM_KEY], &vec![TOO_LARGE.to_string()]);
        }
    }
}
