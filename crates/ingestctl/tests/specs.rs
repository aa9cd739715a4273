//! `ingestctl spec` with the real binary against the real database. Every test uses
//! ids of its own, so tests can run in parallel and again.

mod common;

use common::{fails, ok, ok_json, pool, project_with_datasource};
use ingest_testkit::unique;
use ingest_types::validate::specs::{AttributeSpec, DataType, EventTypeSpec, ParameterSpec, Specs};
use serde_json::Value;

/// Reads `spec list --json` back into the shared type the gateway validates against.
fn specs(project: &str, datasource: &str) -> Specs {
    let json = ok_json(&["spec", "list", project, datasource]);
    serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("not Specs ({e}): {json}"))
}

fn attribute(data_type: DataType, max_values: Option<u32>) -> AttributeSpec {
    AttributeSpec {
        data_type,
        max_values,
    }
}

fn parameter(data_type: DataType, max_values: Option<u32>, required: bool) -> ParameterSpec {
    ParameterSpec {
        data_type,
        max_values,
        required,
    }
}

#[tokio::test]
async fn spec_declare_list_change_and_remove() {
    let (p, d) = project_with_datasource();
    let (p, d) = (p.as_str(), d.as_str());
    assert_eq!(specs(p, d), Specs::default());
    let empty = ok(&["spec", "list", p, d]);
    assert!(
        empty.contains("no attribute specs") && empty.contains("no event types"),
        "{empty}"
    );

    // Attributes: single-valued and multivalue.
    let out = ok(&["spec", "attribute", "set", p, d, "plan", "--type", "string"]);
    assert_eq!(
        out,
        format!("declared attribute \"plan\" on {p}/{d}: string, single value\n")
    );
    let a = ok_json(&[
        "spec",
        "attribute",
        "set",
        p,
        d,
        "tags",
        "--type",
        "string",
        "--multivalue",
        "5",
    ]);
    assert_eq!(
        a["spec"],
        serde_json::json!({"data_type": "string", "max_values": 5})
    );
    assert!(a["previous"].is_null(), "{a}");
    ok(&["spec", "attribute", "set", p, d, "age", "--type", "number"]);
    ok(&[
        "spec",
        "attribute",
        "set",
        p,
        d,
        "vip",
        "--type",
        "boolean",
        "--multivalue",
        "100",
    ]);
    ok(&[
        "spec",
        "attribute",
        "set",
        p,
        d,
        "one",
        "--type",
        "number",
        "--multivalue",
        "1",
    ]);

    // Event types (adding one again succeeds and says so) and their parameters.
    assert!(ok(&["spec", "event-type", "add", p, d, "purchase"]).contains("declared"));
    let again = ok(&["spec", "event-type", "add", p, d, "purchase"]);
    assert!(again.contains("already declared"), "{again}");
    let again = ok_json(&["spec", "event-type", "add", p, d, "purchase"]);
    assert_eq!(again["already_declared"], true);
    let added = ok_json(&["spec", "event-type", "add", p, d, "Page View"]);
    assert_eq!(
        (&added["event_type"], &added["already_declared"]),
        (&Value::from("Page View"), &false.into())
    );
    ok(&["spec", "event-type", "add", p, d, "login"]);
    let long = "e".repeat(128);
    ok(&["spec", "event-type", "add", p, d, &long]);
    let out = ok(&[
        "spec",
        "parameter",
        "set",
        p,
        d,
        "purchase",
        "amount",
        "--type",
        "number",
        "--required",
    ]);
    assert!(out.contains("required"), "{out}");
    ok(&[
        "spec",
        "parameter",
        "set",
        p,
        d,
        "purchase",
        "coupon",
        "--type",
        "string",
    ]);
    ok(&[
        "spec",
        "parameter",
        "set",
        p,
        d,
        "purchase",
        "items",
        "--type",
        "string",
        "--multivalue",
        "20",
        "--required",
    ]);
    ok(&[
        "spec",
        "parameter",
        "set",
        p,
        d,
        "Page View",
        "url",
        "--type",
        "string",
    ]);

    let mut expected = Specs::default();
    for (name, spec) in [
        ("plan", attribute(DataType::String, None)),
        ("tags", attribute(DataType::String, Some(5))),
        ("age", attribute(DataType::Number, None)),
        ("vip", attribute(DataType::Boolean, Some(100))),
        ("one", attribute(DataType::Number, Some(1))),
    ] {
        expected.attributes.insert(name.into(), spec);
    }
    let event_type = |parameters: &[(&str, ParameterSpec)]| EventTypeSpec {
        parameters: parameters
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect(),
    };
    expected.event_types.insert(
        "purchase".into(),
        event_type(&[
            ("amount", parameter(DataType::Number, None, true)),
            ("coupon", parameter(DataType::String, None, false)),
            ("items", parameter(DataType::String, Some(20), true)),
        ]),
    );
    expected.event_types.insert(
        "Page View".into(),
        event_type(&[("url", parameter(DataType::String, None, false))]),
    );
    expected
        .event_types
        .insert("login".into(), EventTypeSpec::default());
    expected
        .event_types
        .insert(long.clone(), EventTypeSpec::default());
    assert_eq!(specs(p, d), expected);

    // The text listing: attributes, then event types with their parameters, by name.
    let list = ok(&["spec", "list", p, d]);
    let lines: Vec<&str> = list.lines().collect();
    fn cells(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }
    assert_eq!(cells(lines[0]), ["ATTRIBUTE", "TYPE", "VALUES"], "{list}");
    assert_eq!(cells(lines[1]), ["age", "number", "single"], "{list}");
    assert_eq!(cells(lines[2]), ["one", "number", "max", "1"], "{list}");
    assert_eq!(cells(lines[4]), ["tags", "string", "max", "5"], "{list}");
    assert_eq!(cells(lines[5]), ["vip", "boolean", "max", "100"], "{list}");
    assert_eq!(lines[6], "", "{list}");
    assert!(lines[7].starts_with("EVENT TYPE"), "{list}");
    assert!(
        lines[8].starts_with("Page View") && lines[8].contains("url"),
        "{list}"
    );
    // Byte order: "Page View" < "eee..." < "login" < "purchase".
    assert_eq!(cells(lines[9]), [long.as_str(), "-"], "{list}");
    assert_eq!(cells(lines[10]), ["login", "-"], "{list}");
    assert_eq!(
        cells(lines[11]),
        ["purchase", "amount", "number", "single", "yes"],
        "{list}"
    );
    assert_eq!(
        cells(lines[13]),
        ["purchase", "items", "string", "max", "20", "yes"],
        "{list}"
    );
    assert_eq!(lines.len(), 14, "{list}");

    // Upserts change the type, the bound and requiredness, and report what was there.
    let a = ok_json(&[
        "spec",
        "attribute",
        "set",
        p,
        d,
        "plan",
        "--type",
        "number",
        "--multivalue",
        "3",
    ]);
    assert_eq!(
        a["previous"],
        serde_json::json!({"data_type": "string", "max_values": null})
    );
    let out = ok(&[
        "spec",
        "attribute",
        "set",
        p,
        d,
        "tags",
        "--type",
        "boolean",
    ]);
    assert!(
        out.starts_with("updated") && out.contains("(was string, up to 5 values)"),
        "{out}"
    );
    let changed = ok_json(&[
        "spec",
        "parameter",
        "set",
        p,
        d,
        "purchase",
        "amount",
        "--type",
        "string",
    ]);
    assert_eq!(changed["previous"]["required"], true);
    assert_eq!(changed["spec"]["required"], false);
    expected
        .attributes
        .insert("plan".into(), attribute(DataType::Number, Some(3)));
    expected
        .attributes
        .insert("tags".into(), attribute(DataType::Boolean, None));
    expected
        .event_types
        .get_mut("purchase")
        .unwrap()
        .parameters
        .insert("amount".into(), parameter(DataType::String, None, false));
    assert_eq!(specs(p, d), expected);

    // Removals.
    let r = ok_json(&["spec", "attribute", "remove", p, d, "vip"]);
    assert_eq!(
        r["removed"],
        serde_json::json!({"data_type": "boolean", "max_values": 100})
    );
    assert!(ok(&["spec", "attribute", "remove", p, d, "age"]).contains("removed attribute"));
    let r = ok_json(&["spec", "parameter", "remove", p, d, "purchase", "coupon"]);
    assert_eq!(r["removed"]["data_type"], "string");
    expected.attributes.remove("vip");
    expected.attributes.remove("age");
    expected
        .event_types
        .get_mut("purchase")
        .unwrap()
        .parameters
        .remove("coupon");
    assert_eq!(specs(p, d), expected);

    // Removing an event type removes its parameter specs with it.
    let r = ok_json(&["spec", "event-type", "remove", p, d, "purchase"]);
    assert_eq!(
        r["parameters_removed"],
        serde_json::json!(["amount", "items"])
    );
    let out = ok(&["spec", "event-type", "remove", p, d, "Page View"]);
    assert!(out.contains("its 1 parameter spec (url)"), "{out}");
    ok(&["spec", "event-type", "remove", p, d, &long]);
    expected.event_types.remove("purchase");
    expected.event_types.remove("Page View");
    expected.event_types.remove(&long);
    assert_eq!(specs(p, d), expected);
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_parameter_specs WHERE project = $1 AND datasource = $2",
    )
    .bind(p)
    .bind(d)
    .fetch_one(&pool().await)
    .await
    .unwrap();
    assert_eq!(left, 0);
    // Declared again, it starts with no parameters.
    ok(&["spec", "event-type", "add", p, d, "purchase"]);
    assert_eq!(
        specs(p, d).event_types["purchase"],
        EventTypeSpec::default()
    );

    // Another datasource of the project declares nothing.
    ok(&["datasource", "create", p, "other"]);
    assert_eq!(specs(p, "other"), Specs::default());
}

#[test]
fn spec_errors_name_what_is_wrong() {
    let (p, d) = project_with_datasource();
    let (p, d) = (p.as_str(), d.as_str());
    let missing = unique("missing");
    ok(&["spec", "event-type", "add", p, d, "login"]);
    ok(&[
        "spec",
        "parameter",
        "set",
        p,
        d,
        "login",
        "method",
        "--type",
        "string",
    ]);
    let before = specs(p, d);

    // Unknown project or datasource, for every command.
    let no_ds = format!(r#"datasource "{p}/nope" does not exist"#);
    let no_project = format!("project {missing:?} does not exist");
    let set_attribute = ["spec", "attribute", "set"];
    let set_parameter = ["spec", "parameter", "set"];
    for (owner, message) in [((p, "nope"), &no_ds), ((missing.as_str(), d), &no_project)] {
        let (pp, dd) = owner;
        fails(
            &[&set_attribute[..], &[pp, dd, "plan", "--type", "string"]].concat(),
            message,
        );
        fails(&["spec", "attribute", "remove", pp, dd, "plan"], message);
        fails(&["spec", "event-type", "add", pp, dd, "login"], message);
        fails(&["spec", "event-type", "remove", pp, dd, "login"], message);
        fails(
            &[
                &set_parameter[..],
                &[pp, dd, "login", "method", "--type", "string"],
            ]
            .concat(),
            message,
        );
        fails(
            &["spec", "parameter", "remove", pp, dd, "login", "method"],
            message,
        );
        fails(&["spec", "list", pp, dd], message);
    }
    fails(
        &["spec", "list", p, "a/b"],
        r#"invalid id "a/b": use 1-64 characters of A-Z a-z 0-9 _ -"#,
    );

    // Invalid names.
    let name_rule = "use ^[a-z][a-z0-9_]{0,63}$";
    let too_long = format!("a{}", "b".repeat(64));
    for bad in ["Plan", "_email", "9lives", "a-b", "", too_long.as_str()] {
        fails(
            &["spec", "attribute", "set", p, d, bad, "--type", "string"],
            &format!("invalid attribute name {bad:?}: {name_rule}"),
        );
        fails(
            &["spec", "attribute", "remove", p, d, bad],
            &format!("invalid attribute name {bad:?}: {name_rule}"),
        );
        fails(
            &[
                "spec",
                "parameter",
                "set",
                p,
                d,
                "login",
                bad,
                "--type",
                "number",
            ],
            &format!("invalid parameter name {bad:?}: {name_rule}"),
        );
        fails(
            &["spec", "parameter", "remove", p, d, "login", bad],
            &format!("invalid parameter name {bad:?}: {name_rule}"),
        );
    }
    let long_type = "e".repeat(129);
    for bad in ["", long_type.as_str()] {
        let message = format!("invalid event type {bad:?}: use 1-128 characters");
        fails(&["spec", "event-type", "add", p, d, bad], &message);
        fails(&["spec", "event-type", "remove", p, d, bad], &message);
        fails(
            &[
                "spec",
                "parameter",
                "set",
                p,
                d,
                bad,
                "x",
                "--type",
                "string",
            ],
            &message,
        );
    }

    // Bad type and out-of-range bounds.
    for bad in ["text", "String", "int", ""] {
        let message = format!("unknown data type {bad:?} (expected string, number or boolean)");
        fails(
            &["spec", "attribute", "set", p, d, "plan", "--type", bad],
            &message,
        );
        fails(
            &[
                "spec",
                "parameter",
                "set",
                p,
                d,
                "login",
                "x",
                "--type",
                bad,
            ],
            &message,
        );
    }
    for bad in ["0", "101", "-1", "4294967297"] {
        let message =
            format!("invalid multivalue bound {bad}: a multivalue holds between 1 and 100 values");
        fails(
            &[
                "spec",
                "attribute",
                "set",
                p,
                d,
                "tags",
                "--type",
                "string",
                "--multivalue",
                bad,
            ],
            &message,
        );
        fails(
            &[
                "spec",
                "parameter",
                "set",
                p,
                d,
                "login",
                "x",
                "--type",
                "string",
                "--multivalue",
                bad,
            ],
            &message,
        );
    }

    // Not declared.
    fails(
        &["spec", "attribute", "remove", p, d, "plan"],
        &format!(r#"attribute "plan" is not declared for {p}/{d}"#),
    );
    let no_type = format!(r#"event type "purchase" is not declared for {p}/{d}"#);
    fails(
        &["spec", "event-type", "remove", p, d, "purchase"],
        &no_type,
    );
    fails(
        &[
            "spec",
            "parameter",
            "set",
            p,
            d,
            "purchase",
            "amount",
            "--type",
            "number",
        ],
        &no_type,
    );
    fails(
        &["spec", "parameter", "remove", p, d, "purchase", "amount"],
        &no_type,
    );
    fails(
        &["spec", "parameter", "remove", p, d, "login", "amount"],
        &format!(r#"parameter "amount" is not declared for event type "login" of {p}/{d}"#),
    );

    // Nothing was changed by the failed calls.
    assert_eq!(specs(p, d), before);
}
