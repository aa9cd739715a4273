//! `ingestctl project`, `datasource` and `token` with the real binary against the real
//! database. Every test uses ids of its own, so tests can run in parallel and again.

mod common;

use common::{fails, ok, ok_json, pool, project_with_datasource};
use ingest_testkit::unique;
use sha2::{Digest, Sha256};

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
