//! The CLI as a whole, with the real binary (against the real database where a command
//! needs one): usage errors, help, `--json` for every command, and a closed stdout.
//! Every test uses ids of its own, so tests can run in parallel and again.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{ok, ok_json, run};
use ingest_testkit::{unique, PrivateDatabase};
use serde_json::Value;

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

/// A reader that stops early (`ingestctl ... | head -1`) closes stdout under the
/// command: it ends quietly and successfully, as command-line tools do, with no panic
/// about the broken pipe, in text and in JSON.
#[tokio::test]
async fn a_closed_stdout_ends_the_command_quietly() {
    // Far more output than a pipe holds, so the command is still writing when it closes.
    let db = PrivateDatabase::create().await;
    sqlx::query("INSERT INTO projects (id) SELECT 'p' || g FROM generate_series(1, 10000) g")
        .execute(&db.pool)
        .await
        .unwrap();
    for args in [&["project", "list"][..], &["--json", "project", "list"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ingestctl"))
            .args(args)
            .env("DATABASE_URL", &db.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running ingestctl");
        let mut first = String::new();
        // Reads one line, then drops the pipe's only reader.
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!first.is_empty(), "{args:?}: nothing on stdout");
        assert!(
            out.status.success(),
            "{args:?} exited with {}: {stderr}",
            out.status
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
}
