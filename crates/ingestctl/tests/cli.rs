//! Runs the real `ingestctl` binary against the real database (`DATABASE_URL`, the
//! dev-stack default when unset). Every test uses ids of its own, so tests can run in
//! parallel and again.

use std::process::{Command, Output};

use serde_json::Value;
use sha2::{Digest, Sha256};

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://ingest@127.0.0.1:55432/ingest".to_owned())
}

/// A fresh id with a readable prefix.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

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
            "specs"
        ]
    );
    assert_eq!(
        cells(lines[1]),
        [&*project, "app", "40", "40", "40", "40", "40"]
    );
    assert_eq!(
        cells(lines[2]),
        [&*project, "web", "600", "600", "120", "600", "600"]
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
    assert_eq!(list[0]["limits"].as_object().unwrap().len(), 5);

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
        r#"unknown endpoint "streams": use one of stream, contacts, events, contacts_delete, specs, or all"#,
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
    let commands: [&[&str]; 13] = [
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
        help.contains("contacts_delete") && help.contains("all"),
        "{help}"
    );
    let help = ok(&["token", "list", "--help"]);
    assert!(help.contains("--all") && help.contains("Revoked"), "{help}");
}
