//! `ingestctl retention`, `ingestctl maintain` and the replay guard, with the real binary
//! against a database of the test's own (the settings are global to a database).

use std::process::{Command, Output};

use chrono::{SubsecRound, TimeDelta, Utc};
use ingest_testkit::{kafka_brokers, unique, PrivateDatabase};
use serde_json::Value;

fn run(db: &PrivateDatabase, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ingestctl"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("KAFKA_BROKERS", kafka_brokers())
        .output()
        .expect("running ingestctl")
}

fn ok_json(db: &PrivateDatabase, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = run(db, &args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[tokio::test]
async fn retention_shows_and_sets_the_horizon_and_maintain_applies_it() {
    let db = PrivateDatabase::create().await;
    sqlx::query(
        "INSERT INTO contact_tombstones (project, datasource, user_id, version, deleted_at)
         VALUES ('p', 'web', 'a', 1, now() - interval '10 days'),
                ('p', 'web', 'b', 2, now() - interval '2 days')",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let shown = ok_json(&db, &["retention", "show"]);
    assert_eq!(shown["tombstone_horizon_days"], 30);
    assert_eq!(shown["tombstones"], 2);
    assert_eq!(shown["tombstones_due"], 0);
    assert_eq!(shown["tombstones_purged_before"], Value::Null);
    assert_eq!(shown["earliest_replay_from"], Value::Null);

    let set = ok_json(&db, &["retention", "set", "--tombstone-days", "7"]);
    assert_eq!(
        (
            set["tombstone_horizon_days"].clone(),
            set["tombstones_due"].clone()
        ),
        (7.into(), 1.into())
    );
    assert!(set["next_tombstone_due_at"].is_string(), "{set}");

    let report = ok_json(&db, &["maintain"]);
    assert_eq!(
        (report["ran"].clone(), report["tombstones_purged"].clone()),
        (true.into(), 1.into())
    );
    let after = ok_json(&db, &["retention", "show"]);
    assert_eq!(after["tombstones"], 1);
    assert!(after["earliest_replay_from"].is_string(), "{after}");

    let out = run(&db, &["retention", "set", "--tombstone-days", "0"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: --tombstone-days must be between 1 and 36500, not 0"
    );
}

#[tokio::test]
async fn a_replay_from_before_the_purge_horizon_is_refused() {
    let db = PrivateDatabase::create().await;
    ok_json(&db, &["retention", "set", "--tombstone-days", "1"]);
    ok_json(&db, &["maintain"]);
    let purged_before: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT tombstones_purged_before FROM lifecycle_state")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let group = unique("replay-guard");

    // Before the horizon plus the hour's margin: refused, before Kafka is asked anything.
    let from = (purged_before + TimeDelta::minutes(59)).trunc_subsecs(0);
    let out = run(
        &db,
        &["replay", "--from", &from.to_rfc3339(), "--group", &group],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.starts_with(&format!(
            "error: --from {} is before the tombstone horizon: tombstones of contacts deleted before {} were purged",
            from.to_rfc3339(),
            purged_before.to_rfc3339()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("the earliest allowed --from is"),
        "{stderr}"
    );

    // From the earliest allowed point on, the guard lets it through to Kafka (where this
    // group, which never committed anything, ends it: the guard is all this test is about).
    let allowed = (purged_before + TimeDelta::hours(1) + TimeDelta::seconds(1)).to_rfc3339();
    let out = run(
        &db,
        &["replay", "--from", &allowed, "--group", &group, "--dry-run"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has no committed offsets") && !stderr.contains("tombstone horizon"),
        "{stderr}"
    );
}

#[tokio::test]
async fn partitions_are_listed_and_a_shorter_events_retention_needs_yes() {
    let db = PrivateDatabase::create().await;
    let partitions = ok_json(&db, &["partitions"]);
    let names: Vec<&str> = partitions
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let today = Utc::now().format("events_p%Y%m%d").to_string();
    assert_eq!(
        names[0], today,
        "a new database starts with today's partition: {names:?}"
    );
    assert!(names.contains(&"events_default") && names.contains(&"event_ids_g00010101t0000"));
    let first = &partitions[0];
    assert!(
        first["drops_at"].is_string() && first["bytes"].as_i64().unwrap() > 0,
        "{first}"
    );

    let shown = ok_json(&db, &["retention", "show"]);
    assert_eq!(shown["events_retention_days"], 30);
    // The first dedup generation goes first: a window (7 days) and an hour after its end,
    // before today's events (30 days).
    assert_eq!(shown["next_drop"]["name"], "event_ids_g00010101t0000");

    // Shorter: refused without --yes, saying what it would drop.
    let out = run(&db, &["retention", "set", "--events-days", "7"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: shortening the events retention from 30 to 7 days drops"),
        "{stderr}"
    );
    assert_eq!(
        ok_json(&db, &["retention", "show"])["events_retention_days"],
        30
    );
    let set = ok_json(&db, &["retention", "set", "--events-days", "7", "--yes"]);
    assert_eq!(set["events_retention_days"], 7);
    // Longer needs no confirmation.
    let set = ok_json(&db, &["retention", "set", "--events-days", "90"]);
    assert_eq!(set["events_retention_days"], 90);
}

#[tokio::test]
async fn the_dedup_window_is_set_and_a_replay_from_before_what_was_forgotten_is_refused() {
    let db = PrivateDatabase::create().await;
    let shown = ok_json(&db, &["retention", "show"]);
    assert_eq!(shown["dedup_window_hours"], 168);
    assert_eq!(shown["event_ids_dropped_before"], Value::Null);

    // Shortening it forgets ids sooner: it needs --yes; lengthening it does not.
    let out = run(&db, &["retention", "set", "--dedup-window-hours", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.starts_with(
            "error: shortening the deduplication window from 168 to 2 hours forgets ids sooner"
        ),
        "{stderr}"
    );
    let set = ok_json(
        &db,
        &["retention", "set", "--dedup-window-hours", "2", "--yes"],
    );
    assert_eq!(set["dedup_window_hours"], 2);
    let out = run(&db, &["retention", "set", "--dedup-window-hours", "0"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: --dedup-window-hours must be between 1 and 87600, not 0"
    );

    // A generation forgotten (as the maintenance job records it when it drops one).
    let forgotten = (Utc::now() - TimeDelta::hours(3)).trunc_subsecs(0);
    sqlx::query("UPDATE lifecycle_state SET event_ids_dropped_before = $1")
        .bind(forgotten)
        .execute(&db.pool)
        .await
        .unwrap();
    let shown = ok_json(&db, &["retention", "show"]);
    assert!(shown["earliest_replay_from"].is_string(), "{shown}");
    let group = unique("replay-guard");
    let from = (forgotten + TimeDelta::minutes(30)).to_rfc3339();
    let out = run(&db, &["replay", "--from", &from, "--group", &group]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.starts_with(&format!(
            "error: --from {from} is before the deduplication horizon: the ids of events received before {} were forgotten",
            forgotten.to_rfc3339()
        )),
        "{stderr}"
    );
    let allowed = (forgotten + TimeDelta::hours(1) + TimeDelta::seconds(1)).to_rfc3339();
    let out = run(
        &db,
        &["replay", "--from", &allowed, "--group", &group, "--dry-run"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has no committed offsets") && !stderr.contains("horizon"),
        "{stderr}"
    );
}
