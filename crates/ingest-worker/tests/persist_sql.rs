//! The persistence SQL against the real database: merge semantics, deletes, and
//! idempotent events.

use chrono::Utc;
use ingest_testkit::{migrated_pool, unique};
use ingest_types::{Envelope, Operation, ENVELOPE_VERSION};
use ingest_worker::persist::Batch;
use serde_json::{json, Value};
use sqlx::PgPool;

fn envelope(project: &str, user: &str, op: Operation) -> Envelope {
    Envelope {
        v: ENVELOPE_VERSION,
        project: project.into(),
        datasource: "ds".into(),
        user_id: user.into(),
        received_at: Utc::now(),
        request_id: "r".into(),
        sync_id: None,
        op,
    }
}

fn upsert(attributes: Value) -> Operation {
    Operation::UpsertContact {
        attributes: attributes.as_object().unwrap().clone(),
    }
}

fn event(id: &str) -> Operation {
    Operation::AppendEvent {
        event_id: id.into(),
        event_type: "t".into(),
        event_date: Utc::now(),
        parameters: json!({"n": 1}).as_object().unwrap().clone(),
    }
}

/// Persists `envelopes` as consecutive offsets starting at `first`.
async fn persist_at(pool: &PgPool, first: i64, envelopes: &[Envelope]) {
    let versioned = envelopes
        .iter()
        .enumerate()
        .map(|(i, e)| (first + i as i64, e));
    Batch::from_envelopes(versioned)
        .persist(pool)
        .await
        .unwrap();
}

/// Persists with fresh, increasing versions (a new stretch of the log).
async fn persist(pool: &PgPool, envelopes: &[Envelope]) {
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1_000_000);
    let first = NEXT.fetch_add(1000, std::sync::atomic::Ordering::SeqCst);
    persist_at(pool, first, envelopes).await;
}

async fn attributes(pool: &PgPool, project: &str, user: &str) -> Option<Value> {
    sqlx::query_scalar(
        "SELECT attributes FROM contacts WHERE project = $1 AND datasource = 'ds' AND user_id = $2",
    )
    .bind(project)
    .bind(user)
    .fetch_optional(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn contact_writes_merge_remove_and_delete_in_order() {
    let pool = migrated_pool().await;
    let p = unique("p");
    persist(
        &pool,
        &[envelope(
            &p,
            "a",
            upsert(json!({"x": 1, "y": 2, "gone": null})),
        )],
    )
    .await;
    assert_eq!(
        attributes(&pool, &p, "a").await,
        Some(json!({"x": 1, "y": 2}))
    );

    // Present keys overwrite, null removes, absent keys stay; two writes in one batch apply in order.
    persist(
        &pool,
        &[
            envelope(&p, "a", upsert(json!({"x": 10, "y": null}))),
            envelope(&p, "a", upsert(json!({"z": [1, "two"]}))),
        ],
    )
    .await;
    assert_eq!(
        attributes(&pool, &p, "a").await,
        Some(json!({"x": 10, "z": [1, "two"]}))
    );

    // upsert -> delete -> upsert in one batch leaves only the last write.
    persist(
        &pool,
        &[
            envelope(&p, "a", upsert(json!({"w": 1}))),
            envelope(&p, "a", Operation::DeleteContact),
            envelope(&p, "a", upsert(json!({"fresh": true, "nothing": null}))),
        ],
    )
    .await;
    assert_eq!(
        attributes(&pool, &p, "a").await,
        Some(json!({"fresh": true}))
    );

    // A delete at the end of a batch removes the row; deleting a missing contact is fine.
    persist(
        &pool,
        &[
            envelope(&p, "a", Operation::DeleteContact),
            envelope(&p, "never-existed", Operation::DeleteContact),
        ],
    )
    .await;
    assert_eq!(attributes(&pool, &p, "a").await, None);
}

#[tokio::test]
async fn events_are_stored_once_however_often_they_arrive() {
    let pool = migrated_pool().await;
    let p = unique("p");
    let batch = [
        envelope(&p, "u", event("e1")),
        envelope(&p, "u", event("e2")),
        envelope(&p, "u", event("e1")),
    ];
    persist(&pool, &batch).await;
    persist(&pool, &batch).await;
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM events WHERE project = $1 ORDER BY event_id")
            .bind(&p)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(ids, ["e1", "e2"]);
}

/// Ids of every form: UUIDs kept as their 16 bytes (v4, v7, other versions), and the
/// ids kept as a hash (an uppercase or braced UUID, a UUIDv8, other text, unicode).
const IDS_OF_EVERY_FORM: [&str; 12] = [
    "0f8fad5b-d9cb-469f-a165-70867728950e",
    "01932c07-209c-7f6b-8a4e-1c2d3e4f5a6b",
    "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    "00000000-0000-0000-0000-000000000000",
    "0F8FAD5B-D9CB-469F-A165-70867728950E",
    "{0f8fad5b-d9cb-469f-a165-70867728950e}",
    "0f8fad5b-d9cb-869f-a165-70867728950e",
    "0f8fad5bd9cb469fa16570867728950e",
    "order-42",
    "",
    "événement \"quoted\", comma\nnewline",
    "0f8fad5b-d9cb-469f-a165-70867728950",
];

#[tokio::test]
async fn the_database_computes_the_same_event_keys_as_the_worker() {
    let pool = migrated_pool().await;
    for id in IDS_OF_EVERY_FORM {
        let in_sql: uuid::Uuid = sqlx::query_scalar("SELECT ingest_event_key($1)")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(in_sql, ingest_worker::persist::event_key(id), "{id:?}");
    }
}

#[tokio::test]
async fn ids_of_every_form_are_told_apart_and_deduplicated() {
    let pool = migrated_pool().await;
    let p = unique("p");
    let batch: Vec<Envelope> = IDS_OF_EVERY_FORM
        .iter()
        .map(|id| envelope(&p, "u", event(id)))
        .collect();
    persist(&pool, &batch).await;
    persist(&pool, &batch).await;
    // One at a time too: the path that finds ids already there row by row.
    for envelope in &batch {
        persist(&pool, std::slice::from_ref(envelope)).await;
    }
    let mut ids: Vec<String> = sqlx::query_scalar("SELECT event_id FROM events WHERE project = $1")
        .bind(&p)
        .fetch_all(&pool)
        .await
        .unwrap();
    ids.sort();
    let mut expected: Vec<String> = IDS_OF_EVERY_FORM.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn older_writes_delivered_again_never_overwrite_newer_ones() {
    let pool = migrated_pool().await;
    let p = unique("p");
    let (v1, v2, v3) = (
        envelope(&p, "a", upsert(json!({"plan": "free", "x": 1}))),
        envelope(&p, "a", upsert(json!({"plan": "pro"}))),
        envelope(&p, "a", Operation::DeleteContact),
    );
    // Offsets 10, 11, 12 applied in separate batches.
    persist_at(&pool, 10, std::slice::from_ref(&v1)).await;
    persist_at(&pool, 11, std::slice::from_ref(&v2)).await;
    assert_eq!(
        attributes(&pool, &p, "a").await,
        Some(json!({"plan": "pro", "x": 1}))
    );
    // Offset 10 delivered again (a rebalance, a replay): no effect.
    persist_at(&pool, 10, std::slice::from_ref(&v1)).await;
    assert_eq!(
        attributes(&pool, &p, "a").await,
        Some(json!({"plan": "pro", "x": 1}))
    );
    // A batch overlapping what was applied (10..=11 again, then new 12 = delete).
    persist_at(&pool, 10, &[v1.clone(), v2.clone(), v3]).await;
    assert_eq!(attributes(&pool, &p, "a").await, None);
    // After the delete, the old upserts delivered again cannot bring the contact back.
    persist_at(&pool, 10, &[v1.clone(), v2]).await;
    assert_eq!(attributes(&pool, &p, "a").await, None);
    // A newer write does.
    persist_at(
        &pool,
        13,
        &[envelope(&p, "a", upsert(json!({"back": true})))],
    )
    .await;
    assert_eq!(
        attributes(&pool, &p, "a").await,
        Some(json!({"back": true}))
    );
    // And replaying the whole stretch 10..=13 ends identical.
    persist_at(
        &pool,
        10,
        &[
            v1.clone(),
            v1.clone(),
            v1,
            envelope(&p, "a", upsert(json!({"back": true}))),
        ],
    )
    .await;
    assert_eq!(
        attributes(&pool, &p, "a").await,
        Some(json!({"back": true}))
    );
}

#[tokio::test]
async fn contact_writes_wait_for_another_writer_of_their_partition() {
    let pool = migrated_pool().await;
    let project = unique("lock");
    let topic = unique("topic");
    // Another writer of the same partition (an old owner during a rebalance) holds it.
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('ingest-worker:' || $1, 0))")
        .bind(format!("{topic}/3"))
        .execute(&mut *other)
        .await
        .unwrap();
    let envelopes = [envelope(&project, "u", upsert(json!({"x": 1})))];
    let write = {
        let (pool, topic) = (pool.clone(), topic.clone());
        tokio::spawn(async move {
            Batch::from_envelopes(envelopes.iter().map(|e| (1, e)))
                .locking_partitions([(topic.as_str(), 3)])
                .persist(&pool)
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !write.is_finished(),
        "the write did not wait for the partition's lock"
    );
    assert_eq!(attributes(&pool, &project, "u").await, None);
    other.commit().await.unwrap();
    write.await.unwrap().unwrap();
    assert_eq!(
        attributes(&pool, &project, "u").await,
        Some(json!({"x": 1}))
    );
}

#[tokio::test]
async fn event_text_round_trips_through_copy() {
    let pool = migrated_pool().await;
    let project = unique("copytext");
    let parameters = json!({
        "quote": "say \"hi\", then leave",
        "lines": "a\nb\r\nc\td",
        "backslash": "C:\\path\\N",
        "empty": "",
        "null_word": "NULL",
        "unicode": "ñ 東京 🎉",
        "list": ["", ",", "\""],
    });
    let env = envelope(
        &project,
        "user \"1\", with comma",
        Operation::AppendEvent {
            event_id: "id,with\"quote\nand newline".into(),
            event_type: "".into(),
            event_date: "2026-11-24T10:00:00.123456Z".parse().unwrap(),
            parameters: parameters.as_object().unwrap().clone(),
        },
    );
    persist(&pool, std::slice::from_ref(&env)).await;
    let row: (String, String, String, chrono::DateTime<Utc>, Value) = sqlx::query_as(
        "SELECT event_id, user_id, event_type, event_date, parameters FROM events
          WHERE project = $1 AND datasource = 'ds'",
    )
    .bind(&project)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.0, "id,with\"quote\nand newline");
    assert_eq!(row.1, "user \"1\", with comma");
    assert_eq!(row.2, "");
    assert_eq!(row.3, env_date(&env));
    assert_eq!(row.4, parameters);
}

fn env_date(envelope: &Envelope) -> chrono::DateTime<Utc> {
    match &envelope.op {
        Operation::AppendEvent { event_date, .. } => *event_date,
        _ => unreachable!(),
    }
}
