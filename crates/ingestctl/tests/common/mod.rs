//! What the tests of `ingestctl` against the real database share: running the real
//! binary (`DATABASE_URL`, the dev-stack default when unset) and reading its answers.

#![allow(dead_code)] // each test binary uses its own part

use std::process::{Command, Output};

use ingest_testkit::{database_url, unique};
use serde_json::Value;

pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ingestctl"))
        .args(args)
        .env("DATABASE_URL", database_url())
        .output()
        .expect("running ingestctl")
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{args:?} failed: {stderr}\n{stdout}");
    stdout
}

/// Runs a command with `--json` that must succeed; returns the parsed document.
pub fn ok_json(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let stdout = ok(&args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}

/// Runs a command that must fail with exactly one stderr line `error: <message>`.
pub fn fails(args: &[&str], message: &str) {
    let out = run(args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{args:?} succeeded unexpectedly");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr, format!("error: {message}\n"), "{args:?}");
    assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
}

/// A fresh project with one datasource.
pub fn project_with_datasource() -> (String, String) {
    let project = unique("p");
    ok(&["project", "create", &project]);
    ok(&["datasource", "create", &project, "ds"]);
    (project, "ds".to_owned())
}

pub async fn pool() -> sqlx::PgPool {
    sqlx::PgPool::connect(&database_url()).await.unwrap()
}
