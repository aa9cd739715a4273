//! The migration to partitioned events (`20261202000002_partitioned_events.sql`) on a
//! database that already holds rows written the old way: nothing is lost or changed, the
//! old table becomes the partition of what came before, the ids it holds keep
//! deduplicating, and new events land in day partitions.

use chrono::{TimeDelta, Utc};
use ingest_testkit::{unique, PrivateDatabase};
use ingest_types::{Envelope, Operation, ENVELOPE_VERSION};
use ingest_worker::persist::{Batch, MIGRATOR};
use serde_json::json;

const PARTITIONING: &str = "20261202000002";

/// A migrator of every migration before partitioning.
async fn before_partitioning() -> sqlx::migrate::Migrator {
    let dir = std::env::temp_dir().join(unique("migrations"));
    std::fs::create_dir_all(&dir).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < PARTITIONING {
            std::fs::copy(&path, dir.join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(dir).await.unwrap()
}

#[tokio::test]
async fn a_populated_database_migrates_without_losing_or_changing_a_row() {
    let old = before_partitioning().await;
    assert!(old.iter().count() < MIGRATOR.iter().count());
    let db = PrivateDatabase::create_with(&old).await;
    // 20,000 events received over the last five days, written as the old worker did.
    sqlx::query(
        "INSERT INTO events (project, datasource, event_id, user_id, event_type, event_date,
                             parameters, received_at)
         SELECT 'p', 'web', 'e-' || n, 'u-' || (n % 100), 't', now() - n * interval '1 second',
                jsonb_build_object('n', n), now() - (n % 5) * interval '1 day'
           FROM generate_series(1, 20000) AS n",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO contacts (project, datasource, user_id, attributes, version)
         VALUES ('p', 'web', 'u-1', '{\"plan\": \"pro\"}', 7)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let fingerprint = "SELECT count(*), sum(hashtext(event_id || parameters::text || received_at::text))::bigint FROM events";
    let before: (i64, i64) = sqlx::query_as(fingerprint)
        .fetch_one(&db.pool)
        .await
        .unwrap();

    MIGRATOR.run(&db.pool).await.unwrap();

    let after: (i64, i64) = sqlx::query_as(fingerprint)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        after, before,
        "every row, unchanged, through the partitioned table"
    );
    let where_they_are: Vec<(String, i64)> =
        sqlx::query_as("SELECT tableoid::regclass::text, count(*) FROM events GROUP BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(where_they_are, vec![("events_legacy".to_owned(), 20_000)]);
    let ids: i64 = sqlx::query_scalar("SELECT count(*) FROM event_ids")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(ids, 20_000, "the old table's ids are remembered");
    let contact: serde_json::Value = sqlx::query_scalar(
        "SELECT attributes FROM contacts WHERE project = 'p' AND user_id = 'u-1'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(contact, json!({"plan": "pro"}));

    // A client retrying an old event tomorrow, and a new event: one stored, one not.
    let tomorrow = Utc::now() + TimeDelta::days(1);
    let envelope = |id: &str, n: i64| Envelope {
        v: ENVELOPE_VERSION,
        project: "p".into(),
        datasource: "web".into(),
        user_id: "u-1".into(),
        received_at: tomorrow,
        request_id: "r".into(),
        sync_id: None,
        op: Operation::AppendEvent {
            event_id: id.into(),
            event_type: "t".into(),
            event_date: tomorrow,
            parameters: json!({"n": n}).as_object().unwrap().clone(),
        },
    };
    let (retry, new) = (envelope("e-42", -1), envelope("e-new", 1));
    Batch::from_envelopes([(1, &retry), (2, &new)])
        .persist(&db.pool)
        .await
        .unwrap();
    let stored: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT event_id, tableoid::regclass::text, (parameters->>'n')::bigint FROM events
          WHERE event_id IN ('e-42', 'e-new') ORDER BY event_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        vec![
            ("e-42".to_owned(), "events_legacy".to_owned(), 42),
            (
                "e-new".to_owned(),
                tomorrow.format("events_p%Y%m%d").to_string(),
                1
            ),
        ]
    );

    // Running the migrations again changes nothing.
    MIGRATOR.run(&db.pool).await.unwrap();

    // Once all it holds is past the retention, the old table goes like any partition.
    let report = ingest_worker::lifecycle::maintain(&db.pool, Utc::now() + TimeDelta::days(40))
        .await
        .unwrap();
    assert!(report
        .partitions
        .dropped
        .contains(&"events_legacy".to_owned()));
    let legacy: (Option<String>, Option<chrono::DateTime<Utc>>) = sqlx::query_as(
        "SELECT to_regclass('events_legacy')::text, legacy_until FROM lifecycle_state",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(legacy, (None, None));
}
