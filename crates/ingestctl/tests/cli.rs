//! Runs the real `ingestctl` binary against the real database (`DATABASE_URL`, the
//! dev-stack default when unset). Every test uses ids of its own, so tests can run in
//! parallel and again.

use std::process::{Command, Output};

use ingest_testkit::{database_url, unique};
use ingest_types::validate::specs::{AttributeSpec, DataType, EventTypeSpec, ParameterSpec, Specs};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ingestctl"))
        .args(args)
        .env("DATABASE_URL", database_url())
        .output()
        .expect("running ingestctl")
}

/// Runs a command that must succeed; returns its stdout.
fn ok(args: &[&str]) -> String {
    let out = run(args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{args:?} failed: {stderr}\n{stdout}");
    stdout
}

/// Runs a command with `--json` that must succeed; returns the parsed document.
fn ok_json(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let stdout = ok(&args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}

/// Runs a command that must fail with exactly one stderr line `error: <message>`.
fn fails(args: &[&str], message: &str) {
    let out = run(args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{args:?} succeeded unexpectedly");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr, format!("error: {message}\n"), "{args:?}");
    assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
}

/// A fresh project with one datasource.
fn project_with_datasource() -> (String, String) {
    let project = unique("p");
    ok(&["project", "create", &project]);
    ok(&["datasource", "create", &project, "ds"]);
    (project, "ds".to_owned())
}

async fn pool() -> sqlx::PgPool {
    sqlx::PgPool::connect(&database_url()).await.unwrap()
}

#[tokio::test]
async fn full_lifecycle() {
    let project = unique("life");
    assert!(ok(&["project", "create", &project]).contains(&project));
    assert!(ok(&["project", "list"]).contains(&project));
    ok(&["datasource", "create", &project, "web"]);
    ok(&["datasource", "create", &project, "app"]);

    // One endpoint, then all of them on the other datasource.
    ok(&["datasource", "set-limit", &project, "web", "events", "120"]);
    ok(&["datasource", "set-limit", &project, "app", "all", "30"]);
    ok(&["datasource", "set-limit", &project, "app", "all", "40"]); // upsert
    let list = ok(&["datasource", "list", &project]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    let cells = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cells(lines[0]),
        [
            "PROJECT",
            "DATASOURCE",
            "stream",
            "contacts",
            "events",
            "contacts_delete",
            "specs",
            "erasures"
        ]
    );
    assert_eq!(
        cells(lines[1]),
        [&*project, "app", "40", "40", "40", "40", "40", "40"]
    );
    assert_eq!(
        cells(lines[2]),
        [&*project, "web", "600", "600", "120", "600", "600", "600"]
    );

    // Tokens: the secret is printed once, with a warning; only its hash is stored.
    let created = ok(&["token", "create", &project, "--name", "ci bot"]);
    let secret = created.lines().next().unwrap().trim().to_owned();
    assert!(secret.starts_with("ingk_"), "{created}");
    assert_eq!(created.matches(&secret).count(), 1, "{created}");
    assert!(created.contains("shown only once"), "{created}");
    let project_token = created
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(created.contains(&format!("project {project}")), "{created}");

    let json = ok_json(&["token", "create", &project, "--datasource", "web"]);
    let ds_secret = json["secret"].as_str().unwrap().to_owned();
    let ds_token = json["id"].as_str().unwrap().to_owned();
    assert!(ds_secret.starts_with("ingk_"));
    assert_eq!(json["project"], project);
    assert_eq!(json["datasource"], "web");

    let pool = pool().await;
    for (id, secret, datasource, name) in [
        (&project_token, &secret, None, "ci bot"),
        (&ds_token, &ds_secret, Some("web"), ""),
    ] {
        let (hash, prefix, ds, stored_name): (Vec<u8>, String, Option<String>, String) =
            sqlx::query_as(
                "SELECT secret_hash, display_prefix, datasource, name
                   FROM api_tokens WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(hash, Sha256::digest(secret.as_bytes()).to_vec());
        assert!(secret.starts_with(&prefix) && prefix.len() < secret.len());
        assert_eq!(ds.as_deref(), datasource);
        assert_eq!(stored_name, name);
        // The secret itself is nowhere in the row.
        let row_text: String =
            sqlx::query_scalar("SELECT (t.*)::text FROM api_tokens t WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(!row_text.contains(secret.as_str()), "{row_text}");
    }

    // Listings never show secrets or hashes.
    let hashes = [&secret, &ds_secret].map(|s| hex::encode(Sha256::digest(s.as_bytes())));
    let list = ok(&["token", "list", &project]);
    let list_json = ok_json(&["token", "list", &project, "--all"]);
    for text in [&list, &list_json.to_string()] {
        for needle in [&secret, &ds_secret, &hashes[0], &hashes[1]] {
            assert!(!text.contains(needle.as_str()), "{text}");
        }
    }
    assert!(
        list.contains(&project_token) && list.contains(&ds_token),
        "{list}"
    );
    let row = list.lines().find(|l| l.contains(&project_token)).unwrap();
    assert_eq!(cells(row)[2], "*", "{row}");
    assert!(row.ends_with("ci bot"), "{row}");

    // Revoke: gone from the default list, shown as revoked with --all; idempotent.
    assert!(ok(&["token", "revoke", &ds_token]).contains("revoked"));
    let again = ok(&["token", "revoke", &ds_token]);
    assert!(again.contains("already revoked"), "{again}");
    let again = ok_json(&["token", "revoke", &ds_token]);
    assert_eq!(again["already_revoked"], true);
    let revoked_at: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT revoked_at FROM api_tokens WHERE id = $1")
            .bind(&ds_token)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(revoked_at.is_some());

    let list = ok(&["token", "list", &project]);
    assert!(
        list.contains(&project_token) && !list.contains(&ds_token),
        "{list}"
    );
    let list = ok(&["token", "list", &project, "--all"]);
    let row = list.lines().find(|l| l.contains(&ds_token)).unwrap();
    assert!(row.contains(" UTC") && cells(row)[5] != "-", "{row}");
    let tokens = ok_json(&["token", "list", &project, "--all"]);
    let tokens = tokens.as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    let revoked = tokens
        .iter()
        .find(|t| t["id"] == ds_token.as_str())
        .unwrap();
    assert!(revoked["revoked_at"].is_string());
    let active = tokens
        .iter()
        .find(|t| t["id"] == project_token.as_str())
        .unwrap();
    assert!(active["revoked_at"].is_null() && active["datasource"].is_null());
}

#[test]
fn json_output_of_every_command() {
    let project = unique("json");
    let p = ok_json(&["project", "create", &project]);
    assert_eq!(p["id"], project);
    let projects = ok_json(&["project", "list"]);
    assert!(projects
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == project.as_str()));

    let d = ok_json(&["datasource", "create", &project, "d1"]);
    assert_eq!(
        (&d["project"], &d["id"]),
        (&Value::from(project.as_str()), &"d1".into())
    );
    assert_eq!(d["limits"]["specs"], 600);
    let d = ok_json(&[
        "datasource",
        "set-limit",
        &project,
        "d1",
        "contacts_delete",
        "7",
    ]);
    assert_eq!(d["limits"]["contacts_delete"], 7);
    assert_eq!(d["limits"]["stream"], 600);
    let list = ok_json(&["datasource", "list", &project]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["limits"]["contacts_delete"], 7);
    assert_eq!(list[0]["limits"].as_object().unwrap().len(), 6);

    let t = ok_json(&["token", "create", &project, "--name", "x"]);
    let keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5);
    for key in ["id", "secret", "project", "datasource", "name"] {
        assert!(keys.contains(&key), "{t}");
    }
    assert!(t["datasource"].is_null());
    let id = t["id"].as_str().unwrap();
    let tokens = ok_json(&["token", "list", &project]);
    let token = &tokens[0];
    assert_eq!(token["id"], id);
    assert_eq!(token["name"], "x");
    assert!(token.get("secret").is_none() && token.get("secret_hash").is_none());
    assert!(token["display_prefix"]
        .as_str()
        .unwrap()
        .starts_with("ingk_"));
    let r = ok_json(&["token", "revoke", id]);
    assert_eq!(
        (&r["id"], &r["already_revoked"]),
        (&Value::from(id), &false.into())
    );
    assert_eq!(ok_json(&["token", "list", &project]), Value::Array(vec![]));

    let m = ok_json(&["migrate"]);
    assert!(m["migrations_applied"].as_i64().unwrap() >= 2);
}

#[test]
fn errors_name_what_is_wrong() {
    let (project, ds) = project_with_datasource();
    let missing = unique("missing");

    fails(
        &["project", "create", &project],
        &format!("project {project:?} already exists"),
    );
    fails(
        &["project", "create", "a b"],
        r#"invalid id "a b": use 1-64 characters of A-Z a-z 0-9 _ -"#,
    );
    let long = "x".repeat(65);
    fails(
        &["project", "create", &long],
        &format!("invalid id {long:?}: use 1-64 characters of A-Z a-z 0-9 _ -"),
    );
    fails(
        &["datasource", "create", &project, "a/b"],
        r#"invalid id "a/b": use 1-64 characters of A-Z a-z 0-9 _ -"#,
    );

    let no_project = format!("project {missing:?} does not exist");
    fails(&["datasource", "create", &missing, "d"], &no_project);
    fails(&["datasource", "list", &missing], &no_project);
    fails(
        &["datasource", "set-limit", &missing, "d", "stream", "5"],
        &no_project,
    );
    fails(&["token", "create", &missing], &no_project);
    fails(&["token", "list", &missing], &no_project);

    fails(
        &["datasource", "create", &project, &ds],
        &format!(r#"datasource "{project}/{ds}" already exists"#),
    );
    let no_ds = format!(r#"datasource "{project}/nope" does not exist"#);
    fails(
        &["token", "create", &project, "--datasource", "nope"],
        &no_ds,
    );
    fails(
        &["datasource", "set-limit", &project, "nope", "stream", "5"],
        &no_ds,
    );

    fails(
        &["datasource", "set-limit", &project, &ds, "streams", "5"],
        r#"unknown endpoint "streams": use one of stream, contacts, events, contacts_delete, specs, erasures, or all"#,
    );
    let bad_rpm = |n: &str| {
        format!("invalid limit {n}: requests per minute must be between 1 and 2147483647")
    };
    fails(
        &["datasource", "set-limit", &project, &ds, "stream", "0"],
        &bad_rpm("0"),
    );
    fails(
        &["datasource", "set-limit", &project, &ds, "all", "-5"],
        &bad_rpm("-5"),
    );
    fails(
        &[
            "datasource",
            "set-limit",
            &project,
            &ds,
            "all",
            "2147483648",
        ],
        &bad_rpm("2147483648"),
    );

    fails(
        &["token", "revoke", "tok_0000000000000000"],
        r#"token "tok_0000000000000000" does not exist"#,
    );

    // Nothing was changed by the failed set-limit calls.
    let list = ok_json(&["datasource", "list", &project]);
    assert!(
        list[0]["limits"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == 600),
        "{list}"
    );
}

#[test]
fn usage_errors_exit_non_zero() {
    for args in [
        &["project"][..],
        &["project", "create"],
        &["datasource", "set-limit", "p", "d", "stream", "many"],
        &["token", "frobnicate"],
        &["spec", "attribute", "set", "p", "d", "plan"], // no --type
        &[
            "spec",
            "attribute",
            "set",
            "p",
            "d",
            "n",
            "--type",
            "string",
            "--multivalue",
            "x",
        ],
        &["spec", "event-type", "add", "p", "d"],
    ] {
        let out = run(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8(out.stderr).unwrap().starts_with("error:"),
            "{args:?}"
        );
    }
}

#[test]
fn help_for_every_command() {
    let commands: [&[&str]; 24] = [
        &[],
        &["migrate"],
        &["project"],
        &["project", "create"],
        &["project", "list"],
        &["datasource"],
        &["datasource", "create"],
        &["datasource", "list"],
        &["datasource", "set-limit"],
        &["token"],
        &["token", "create"],
        &["token", "list"],
        &["token", "revoke"],
        &["spec"],
        &["spec", "attribute"],
        &["spec", "attribute", "set"],
        &["spec", "attribute", "remove"],
        &["spec", "event-type"],
        &["spec", "event-type", "add"],
        &["spec", "event-type", "remove"],
        &["spec", "parameter"],
        &["spec", "parameter", "set"],
        &["spec", "parameter", "remove"],
        &["spec", "list"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let out = run(&args);
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(stdout.contains("Usage: ingestctl"), "{args:?}: {stdout}");
        assert!(stdout.contains("--json"), "{args:?}: {stdout}");
    }
    let help = ok(&["datasource", "set-limit", "--help"]);
    assert!(
        help.contains("contacts_delete") && help.contains("erasures") && help.contains("all"),
        "{help}"
    );
    let help = ok(&["token", "list", "--help"]);
    assert!(help.contains("--all") && help.contains("Revoked"), "{help}");
    let help = ok(&["spec", "parameter", "set", "--help"]);
    for needle in ["--type", "boolean", "--multivalue", "1-100", "--required"] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}

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
