//! Unit tests of the shared rules in `validate/mod.rs`.

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
    assert_eq!(check(json!({"_user_id": "x"})), Ok(Some("x".into())));
    let long = "x".repeat(256);
    assert_eq!(check(json!({ "_user_id": long })), Ok(Some(long)));
    // 256 chars, more than 256 bytes: chars count.
    let wide = "é".repeat(256);
    assert_eq!(check(json!({ "_user_id": wide })), Ok(Some(wide)));
    for (item, msg) in [
        (json!({}), REQUIRED),
        (json!({"_user_id": null}), REQUIRED),
        (json!({"_user_id": 7}), MUST_BE_STRING),
        (json!({"_user_id": true}), MUST_BE_STRING),
        (json!({"_user_id": ["u"]}), MUST_BE_STRING),
        (json!({"_user_id": {"id": "u"}}), MUST_BE_STRING),
        (json!({"_user_id": ""}), INVALID_FORMAT),
        (json!({"_user_id": "a\nb"}), INVALID_FORMAT),
        (json!({"_user_id": "a\u{0}b"}), INVALID_FORMAT),
        (json!({"_user_id": "a\u{7f}b"}), INVALID_FORMAT),
        (json!({"_user_id": "a\u{85}b"}), INVALID_FORMAT),
        (json!({"_user_id": "x".repeat(257)}), INVALID_FORMAT),
    ] {
        let errors = check(item).unwrap_err();
        assert_eq!(errors["_user_id"], vec![msg.to_string()]);
    }
}

#[test]
fn check_user_id_outside_an_item() {
    assert_eq!(check_user_id("USER/1"), Ok(()));
    assert_eq!(check_user_id(&"é".repeat(256)), Ok(()));
    for bad in [
        String::new(),
        "x".repeat(257),
        "a\u{0}b".into(),
        "a\rb".into(),
    ] {
        assert_eq!(
            check_user_id(&bad),
            Err(item_error_at("_user_id", INVALID_FORMAT))
        );
    }
}

#[test]
fn add_error_lists_each_message_once() {
    let mut errors = FieldErrors::new();
    add_error(&mut errors, "f", TOO_LONG);
    add_error(&mut errors, "f", INVALID_TYPE);
    add_error(&mut errors, "f", TOO_LONG);
    assert_eq!(errors["f"], vec![TOO_LONG, INVALID_TYPE]);
}

#[test]
fn name_rule() {
    for ok in [
        "a",
        "plan",
        "a_1",
        "z9",
        "a__",
        &format!("a{}", "b".repeat(63)),
    ] {
        assert!(is_valid_name(ok), "{ok}");
    }
    for bad in [
        "",
        "_a",
        "1a",
        "A",
        "aB",
        "a-b",
        "a b",
        "a.b",
        "é",
        "aé",
        &format!("a{}", "b".repeat(64)),
    ] {
        assert!(!is_valid_name(bad), "{bad}");
    }
}

fn value(value: Value, spec: Option<ValueSpec>) -> Result<Value, Vec<String>> {
    let mut errors = FieldErrors::new();
    match custom_value("f", "f", &value, spec, &mut errors) {
        Some(stored) => {
            assert!(errors.is_empty());
            Ok(stored)
        }
        None => Err(errors.remove("f").unwrap()),
    }
}

fn single(data_type: DataType) -> Option<ValueSpec> {
    Some(ValueSpec {
        data_type,
        max_values: None,
    })
}

fn multi(data_type: DataType, max: u32) -> Option<ValueSpec> {
    Some(ValueSpec {
        data_type,
        max_values: Some(max),
    })
}

#[test]
fn generic_value_rules() {
    for ok in [
        json!(null),
        json!(""),
        json!("x".repeat(1024)),
        json!("é".repeat(1024)),
        json!(0),
        json!(-3),
        json!(u64::MAX),
        json!(1.5),
        json!(true),
        json!(false),
        json!([]),
        json!(["a", 1, 2.5, true, null]),
        json!(vec![1; 100]),
        json!(vec!["x".repeat(1024); 3]),
    ] {
        assert_eq!(value(ok.clone(), None), Ok(ok));
    }
    for (bad, messages) in [
        (json!("x".repeat(1025)), vec![TOO_LONG]),
        (json!({}), vec![INVALID_TYPE]),
        (json!({"a": 1}), vec![INVALID_TYPE]),
        (json!([[1]]), vec![INVALID_TYPE]),
        (json!([{"a": 1}]), vec![INVALID_TYPE]),
        (json!([[1], {"a": 1}]), vec![INVALID_TYPE]),
        (json!(["x".repeat(1025)]), vec![TOO_LONG]),
        (json!(vec![1; 101]), vec![TOO_MANY_VALUES]),
        (
            json!(["x".repeat(1025), [1], "y".repeat(2000)]),
            vec![TOO_LONG, INVALID_TYPE],
        ),
    ] {
        assert_eq!(
            value(bad, None),
            Err(messages.iter().map(|m| m.to_string()).collect())
        );
    }
    let mut big: Vec<Value> = vec![json!(1); 100];
    big.push(json!([]));
    assert_eq!(
        value(Value::Array(big), None),
        Err(vec![INVALID_TYPE.to_string(), TOO_MANY_VALUES.to_string()])
    );
}

#[test]
fn invalid_name_comes_with_value_errors() {
    let mut errors = FieldErrors::new();
    assert_eq!(
        custom_value("Bad", "Bad", &json!({}), None, &mut errors),
        None
    );
    assert_eq!(errors["Bad"], vec![INVALID_NAME, INVALID_TYPE]);
    let mut errors = FieldErrors::new();
    assert_eq!(
        custom_value("Bad", "Bad", &json!(1), None, &mut errors),
        None
    );
    assert_eq!(errors["Bad"], vec![INVALID_NAME]);
}

#[test]
fn single_valued_spec() {
    let err = |m: &str| Err(vec![m.to_string()]);
    assert_eq!(value(json!("a"), single(DataType::String)), Ok(json!("a")));
    assert_eq!(value(json!(2.5), single(DataType::Number)), Ok(json!(2.5)));
    assert_eq!(
        value(json!(true), single(DataType::Boolean)),
        Ok(json!(true))
    );
    for spec in [DataType::String, DataType::Number, DataType::Boolean] {
        assert_eq!(value(json!(null), single(spec)), Ok(json!(null)));
    }
    assert_eq!(value(json!(1), single(DataType::String)), err(INVALID_TYPE));
    assert_eq!(
        value(json!("1"), single(DataType::Number)),
        err(INVALID_TYPE)
    );
    assert_eq!(
        value(json!("true"), single(DataType::Boolean)),
        err(INVALID_TYPE)
    );
    assert_eq!(
        value(json!(0), single(DataType::Boolean)),
        err(INVALID_TYPE)
    );
    assert_eq!(
        value(json!(["a"]), single(DataType::String)),
        err(INVALID_TYPE)
    );
    assert_eq!(
        value(json!([]), single(DataType::String)),
        err(INVALID_TYPE)
    );
    assert_eq!(
        value(json!({}), single(DataType::String)),
        err(INVALID_TYPE)
    );
    assert_eq!(
        value(json!("x".repeat(1025)), single(DataType::String)),
        err(TOO_LONG)
    );
    assert_eq!(
        value(json!("x".repeat(1025)), single(DataType::Number)),
        Err(vec![TOO_LONG.to_string(), INVALID_TYPE.to_string()])
    );
}

#[test]
fn multivalue_spec() {
    let err = |m: &[&str]| Err(m.iter().map(|m| m.to_string()).collect::<Vec<_>>());
    let tags = multi(DataType::String, 3);
    assert_eq!(
        value(json!(["a", "b", "c"]), tags),
        Ok(json!(["a", "b", "c"]))
    );
    assert_eq!(value(json!([]), tags), Ok(json!([])));
    assert_eq!(value(json!(null), tags), Ok(json!(null)));
    // A scalar is a one-element set.
    assert_eq!(value(json!("a"), tags), Ok(json!(["a"])));
    assert_eq!(value(json!(1), tags), err(&[INVALID_TYPE]));
    assert_eq!(
        value(json!(["a", "b", "c", "d"]), tags),
        err(&[TOO_MANY_VALUES])
    );
    assert_eq!(value(json!(["a", 1]), tags), err(&[INVALID_TYPE]));
    assert_eq!(value(json!(["a", null]), tags), err(&[INVALID_TYPE]));
    assert_eq!(
        value(json!([1, 2, 3, 4]), tags),
        err(&[INVALID_TYPE, TOO_MANY_VALUES])
    );
    assert_eq!(value(json!(["x".repeat(1025)]), tags), err(&[TOO_LONG]));
    assert_eq!(
        value(json!([1, 2]), multi(DataType::Number, 2)),
        Ok(json!([1, 2]))
    );
    assert_eq!(
        value(json!([true]), multi(DataType::Boolean, 1)),
        Ok(json!([true]))
    );
    // The generic bound of 100 holds whatever the spec says.
    let big = multi(DataType::Number, 1000);
    assert_eq!(value(json!(vec![1; 100]), big), Ok(json!(vec![1; 100])));
    assert_eq!(value(json!(vec![1; 101]), big), err(&[TOO_MANY_VALUES]));
    // A set of at most zero values takes no value at all.
    let none = multi(DataType::String, 0);
    assert_eq!(value(json!([]), none), Ok(json!([])));
    assert_eq!(value(json!("a"), none), err(&[TOO_MANY_VALUES]));
}

#[test]
fn compact_size_counts_bytes() {
    let item = json!({"k": "x"}); // {"k":"x"} is 9 bytes
    assert!(!compact_len_exceeds(&item, 9));
    assert!(compact_len_exceeds(&item, 8));
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

#[test]
fn check_raw_echoes_items_too_large_to_validate() {
    let text = format!(
        r#"{{"_user_id": "u", "_event_id": "e", "pad": "{}"}}"#,
        "x".repeat(MAX_ITEM_BYTES)
    );
    let raw = RawValue::from_string(text).unwrap();
    assert_eq!(
        validate_contact(&raw, &Specs::default()).unwrap_err()[ITEM_KEY],
        vec![TOO_LARGE]
    );
    assert_eq!(
        check_raw(
            ItemKind::Contact,
            &raw,
            DateTime::UNIX_EPOCH,
            &Specs::default()
        )
        .0,
        Echo {
            user_id: Some("u".into()),
            event_id: Some("e".into())
        }
    );
    assert_eq!(
        check_raw(
            ItemKind::Contact,
            &RawValue::from_string("[1]".into()).unwrap(),
            DateTime::UNIX_EPOCH,
            &Specs::default()
        )
        .0,
        Echo::default()
    );
}

/// A contact of exactly `len` bytes of JSON text, padded with whitespace inside the
/// object (as sent, it counts) or with an attribute.
fn sized(len: usize, pad_with_spaces: bool) -> Box<RawValue> {
    let base = r#"{"_user_id":"u","pad":""}"#;
    let text = if pad_with_spaces {
        format!(
            r#"{{"_user_id":"u",{}"pad":""}}"#,
            " \n\t".repeat(len).split_at(len - base.len()).0
        )
    } else {
        format!(
            r#"{{"_user_id":"u","pad":"{}"}}"#,
            "x".repeat(len - base.len())
        )
    };
    assert_eq!(text.len(), len);
    RawValue::from_string(text).unwrap()
}

#[test]
fn item_size_limit_on_raw_text() {
    let specs = Specs::default();
    for spaces in [false, true] {
        // The padding string is over 1024 chars: fine for size, not for the value.
        let ok = sized(MAX_ITEM_BYTES, spaces);
        let result = validate_contact(&ok, &specs);
        if spaces {
            assert!(result.is_ok());
        } else {
            assert_eq!(result.unwrap_err()["pad"], vec![TOO_LONG]);
        }
        let too_large = sized(MAX_ITEM_BYTES + 1, spaces);
        assert_eq!(
            validate_contact(&too_large, &specs).unwrap_err(),
            item_error(TOO_LARGE)
        );
        assert_eq!(
            validate_event(&too_large, DateTime::UNIX_EPOCH, &specs).unwrap_err(),
            item_error(TOO_LARGE)
        );
    }
}

#[test]
fn item_size_limit_on_parsed_items() {
    let specs = Specs::default();
    // 32 KiB of JSON made only of valid attributes: 32 string attributes of 1000 chars.
    let mut object = Map::new();
    object.insert("_user_id".into(), json!("u"));
    for i in 0..32 {
        object.insert(format!("a{i:02}"), json!("x".repeat(1000)));
    }
    let len = serde_json::to_vec(&object).unwrap().len();
    let missing = MAX_ITEM_BYTES - len - r#","zz":"""#.len();
    object.insert("zz".into(), json!("x".repeat(missing)));
    let item = Value::Object(object.clone());
    assert_eq!(serde_json::to_vec(&item).unwrap().len(), MAX_ITEM_BYTES);
    assert!(contacts::validate(&item, &specs).is_ok());
    assert!(validate_item(ItemKind::Contact, &item, DateTime::UNIX_EPOCH, &specs).is_ok());
    let raw = RawValue::from_string(item.to_string()).unwrap();
    assert!(validate_contact(&raw, &specs).is_ok());

    object.insert("zz".into(), json!("x".repeat(missing + 1)));
    let item = Value::Object(object);
    assert_eq!(
        contacts::validate(&item, &specs).unwrap_err(),
        item_error(TOO_LARGE)
    );
    assert_eq!(
        events::validate(&item, DateTime::UNIX_EPOCH, &specs).unwrap_err(),
        item_error(TOO_LARGE)
    );
    let raw = RawValue::from_string(item.to_string()).unwrap();
    assert_eq!(
        validate_contact(&raw, &specs).unwrap_err(),
        item_error(TOO_LARGE)
    );
}

#[test]
fn raw_items_that_are_not_objects() {
    let specs = Specs::default();
    for text in ["\"x\"", "1", "[]", "null", "true"] {
        let raw = RawValue::from_string(text.into()).unwrap();
        assert_eq!(
            validate_contact(&raw, &specs).unwrap_err(),
            item_error(MUST_BE_OBJECT)
        );
        assert_eq!(
            validate_event(&raw, DateTime::UNIX_EPOCH, &specs).unwrap_err(),
            item_error(MUST_BE_OBJECT)
        );
    }
}

#[test]
fn raw_and_parsed_entry_points_agree() {
    let specs = Specs::default();
    let now: DateTime<Utc> = "2026-11-24T12:00:00Z".parse().unwrap();
    let contact = json!({"_user_id": "u", "_email": "a@b.co", "plan": "pro"});
    let event = json!({"_user_id": "u", "_event_id": "e", "_event_type": "t"});
    let raw = |v: &Value| RawValue::from_string(v.to_string()).unwrap();
    assert_eq!(
        validate_contact(&raw(&contact), &specs),
        contacts::validate(&contact, &specs)
    );
    assert_eq!(
        validate_raw(ItemKind::Contact, &raw(&contact), now, &specs),
        validate_item(ItemKind::Contact, &contact, now, &specs)
    );
    assert_eq!(
        validate_event(&raw(&event), now, &specs),
        events::validate(&event, now, &specs)
    );
    assert_eq!(
        validate_raw(ItemKind::Event, &raw(&event), now, &specs),
        validate_item(ItemKind::Event, &event, now, &specs)
    );
    assert!(validate_item(ItemKind::Event, &event, now, &specs).is_ok());
}

#[test]
fn numbers_are_kept_as_sent_or_refused() {
    let specs = Specs::default();
    let raw = |text: &str| RawValue::from_string(text.into()).unwrap();
    // Outside PostgreSQL's numeric: refused under the attribute, never rounded.
    for n in ["1e200000", "1e-20000", "[1, 1e200000]"] {
        let item = raw(&format!(r#"{{"_user_id":"u","n":{n}}}"#));
        assert_eq!(
            validate_contact(&item, &specs).unwrap_err(),
            item_error_at("n", INVALID_FORMAT),
            "{n}"
        );
    }
    // Within it: the very text sent, whatever an f64 would make of it.
    for n in [
        "1e400",
        "1e-400",
        "123456789012345678901234567890",
        "-9223372036854775809",
        "0.1000000000000000000000000001",
    ] {
        let item = raw(&format!(r#"{{"_user_id":"u","n":{n}}}"#));
        let Operation::UpsertContact { attributes } = validate_contact(&item, &specs).unwrap().op
        else {
            panic!("expected an upsert")
        };
        // The parser writes a positive exponent with its sign (`1e+400`).
        let kept = attributes["n"].to_string();
        assert!(
            kept == n || kept == n.replace('e', "e+"),
            "{n} kept as {kept}"
        );
    }
}

#[test]
fn unstorable_strings_are_invalid_format() {
    let errors = |v: Value| {
        let mut errors = FieldErrors::new();
        custom_value("f", "f", &v, None, &mut errors);
        errors.remove("f").unwrap_or_default()
    };
    assert_eq!(errors(json!("a\u{0}b")), vec![INVALID_FORMAT]);
    assert_eq!(errors(json!(["ok", "\u{0}"])), vec![INVALID_FORMAT]);
    assert_eq!(
        errors(json!("\u{0}".repeat(1025))),
        vec![TOO_LONG, INVALID_FORMAT]
    );
    assert!(errors(json!("a\u{1}b\u{7f}")).is_empty());
}

#[test]
fn repeated_keys_fail_the_item() {
    let specs = Specs::default();
    for text in [
        r#"{"_user_id":"a","_user_id":"b"}"#,
        r#"{"_user_id":"a","x":1,"x":1}"#,
    ] {
        let raw = RawValue::from_string(text.into()).unwrap();
        let (echo, result) = check_raw(ItemKind::Contact, &raw, DateTime::UNIX_EPOCH, &specs);
        assert_eq!(result.unwrap_err(), item_error(DUPLICATE_KEY), "{text}");
        assert!(echo.user_id.is_some());
    }
    let event = RawValue::from_string(
        r#"{"_user_id":"u","_event_id":"e","_event_type":"t","_event_parameters":{"p":1,"p":2}}"#
            .into(),
    )
    .unwrap();
    assert_eq!(
        validate_event(&event, DateTime::UNIX_EPOCH, &specs).unwrap_err(),
        item_error(DUPLICATE_KEY)
    );
}
