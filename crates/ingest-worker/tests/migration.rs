//! Migrations of a database that already holds rows written the old way:
//! - to partitioned events (`20261202000002_partitioned_events.sql`): nothing is lost or
//!   changed, the old table becomes the partition of what came before, the ids it holds
//!   keep deduplicating, and new events land in day partitions;
//! - to 16-byte keys and the deduplication window (`20261206000001_dedup_window.sql`):
//!   every text id becomes its key in the generation it was in, and keeps deduplicating.

use chrono::{TimeDelta, Utc};
use ingest_testkit::{unique, PrivateDatabase};
use ingest_types::{Envelope, Operation, ENVELOPE_VERSION};
use ingest_worker::persist::{Batch, MIGRATOR};
use serde_json::json;

const PARTITIONING: &str = "20261202000002";
const DEDUP_WINDOW: &str = "20261206000001";

/// A migrator of every migration before partitioning.
async fn before_partitioning() -> sqlx::migrate::Migrator {
    migrations_before(PARTITIONING).await
}

/// A migrator of every migration before `first_left_out`.
async fn migrations_before(first_left_out: &str) -> sqlx::migrate::Migrator {
    let dir = std::env::temp_dir().join(unique("migrations"));
    std::fs::create_dir_all(&dir).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < first_left_out {
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

#[tokio::test]
async fn text_ids_become_keys_in_their_generations_and_keep_deduplicating() {
    let old = migrations_before(DEDUP_WINDOW).await;
    let db = PrivateDatabase::create_with(&old).await;
    // Ids of every form in the first generation, one in the next (made ahead), one in the
    // default partition (before every generation: a replay of something ancient).
    let ids = [
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "0F8FAD5B-D9CB-469F-A165-70867728950E",
        "01932c07-209c-7f6b-8a4e-1c2d3e4f5a6b",
        "order-42",
    ];
    let next: chrono::NaiveDate =
        sqlx::query_scalar("SELECT max(bucket) FROM event_id_generations")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let first: chrono::NaiveDate = "0001-01-01".parse().unwrap();
    let before_time: chrono::NaiveDate = "0000-06-01".parse().unwrap();
    let rows = ids
        .iter()
        .map(|id| (*id, first))
        .chain([("in-the-next", next), ("ancient", before_time)]);
    for (id, bucket) in rows {
        sqlx::query(
            "INSERT INTO event_ids (project, datasource, event_id, bucket, last_received_at)
             VALUES ('p', 'web', $1, $2, CASE WHEN $1 = 'order-42' THEN now() END)",
        )
        .bind(id)
        .bind(bucket)
        .execute(&db.pool)
        .await
        .unwrap();
    }

    MIGRATOR.run(&db.pool).await.unwrap();

    let kept: Vec<(uuid::Uuid, String, bool)> = sqlx::query_as(
        "SELECT event_key, tableoid::regclass::text, last_received_at IS NOT NULL
           FROM event_ids ORDER BY bucket, event_key",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(kept.len(), 6, "{kept:?}");
    for id in ids {
        let key = ingest_worker::persist::event_key(id);
        let row = kept.iter().find(|k| k.0 == key).expect(id);
        assert_eq!(row.1, "event_ids_g00010101t0000", "{id}");
        assert_eq!(row.2, id == "order-42", "{id}: last_received_at kept");
    }
    let in_next = kept
        .iter()
        .find(|k| k.0 == ingest_worker::persist::event_key("in-the-next"))
        .unwrap();
    assert_eq!(in_next.1, next.format("event_ids_g%Y%m%dt0000").to_string());
    let ancient = kept
        .iter()
        .find(|k| k.0 == ingest_worker::persist::event_key("ancient"))
        .unwrap();
    assert_eq!(ancient.1, "event_ids_default");

    // Retries of the converted ids, received now: none is stored (the uppercase UUID is
    // another id than its lowercase form, and each was remembered on its own).
    let envelope = |id: &str| Envelope {
        v: ENVELOPE_VERSION,
        project: "p".into(),
        datasource: "web".into(),
        user_id: "u".into(),
        received_at: Utc::now(),
        request_id: "r".into(),
        sync_id: None,
        op: Operation::AppendEvent {
            event_id: id.into(),
            event_type: "t".into(),
            event_date: Utc::now(),
            parameters: json!({}).as_object().unwrap().clone(),
        },
    };
    let retries: Vec<Envelope> = ids.iter().map(|id| envelope(id)).collect();
    Batch::from_envelopes(retries.iter().enumerate().map(|(i, e)| (i as i64, e)))
        .persist(&db.pool)
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "every retry was deduplicated");
    // And the generations go on a window wide from where the old ones ended.
    let last: (chrono::DateTime<Utc>, chrono::DateTime<Utc>) = sqlx::query_as(
        "SELECT bucket, ends FROM event_id_generations ORDER BY bucket DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(last.0 >= next.and_hms_opt(0, 0, 0).unwrap().and_utc());
}
