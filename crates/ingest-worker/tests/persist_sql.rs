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
