//! The partitioned `events` table and its deduplication, on the real PostgreSQL, each test
//! in a database of its own: rows land in the partition of their receipt day, and an event
//! is stored once per (project, datasource, `_event_id`) whatever day, partition or
//! generation its retry lands in, and in whichever order the two are written, as long as
//! the two are received within the deduplication window.

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use ingest_testkit::PrivateDatabase;
use ingest_types::{Envelope, Operation, ENVELOPE_VERSION};
use ingest_worker::persist::Batch;
use serde_json::json;
use sqlx::PgPool;

fn event(id: &str, n: i64, received_at: DateTime<Utc>) -> Envelope {
    Envelope {
        v: ENVELOPE_VERSION,
        project: "p".into(),
        datasource: "web".into(),
        user_id: "U".into(),
        received_at,
        request_id: "r".into(),
        sync_id: None,
        op: Operation::AppendEvent {
            event_id: id.into(),
            event_type: "t".into(),
            // An omitted `_event_date` defaults to the receipt time.
            event_date: received_at,
            parameters: json!({"n": n}).as_object().unwrap().clone(),
        },
    }
}

async fn persist(pool: &PgPool, envelopes: &[Envelope]) {
    Batch::from_envelopes(envelopes.iter().enumerate().map(|(i, e)| (i as i64, e)))
        .persist(pool)
        .await
        .unwrap();
}

/// (partition, parameter n) of every stored copy of event `id`.
async fn stored(pool: &PgPool, id: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT tableoid::regclass::text, (parameters->>'n')::bigint FROM events
          WHERE project = 'p' AND datasource = 'web' AND event_id = $1",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn partition(t: DateTime<Utc>) -> String {
    format!("events_p{}", t.format("%Y%m%d"))
}

async fn ensure_day_partitions(pool: &PgPool, times: &[DateTime<Utc>]) {
    for t in times {
        sqlx::query("SELECT ingest_ensure_events_partition($1)")
            .bind(t.date_naive())
            .execute(pool)
            .await
            .unwrap();
    }
}

/// Remakes the generations as one from the beginning of time to `boundary`, so that a
/// boundary can lie in the past, where real time has passed it (the migration makes the
/// first one end a window from now). The worker appends the next ones as it needs them.
async fn first_generation_until(pool: &PgPool, boundary: DateTime<Utc>) {
    let parts: Vec<String> = sqlx::query_scalar("SELECT part FROM event_id_generations")
        .fetch_all(pool)
        .await
        .unwrap();
    for part in parts {
        sqlx::query(&format!("DROP TABLE \"{part}\""))
            .execute(pool)
            .await
            .unwrap();
    }
    sqlx::query("DELETE FROM event_id_generations")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("SELECT ingest_create_event_id_generation('0001-01-01 00:00:00+00', $1)")
        .bind(boundary)
        .execute(pool)
        .await
        .unwrap();
}

/// The generations (their first instants) holding the keys of these event ids.
async fn generations_of(pool: &PgPool, ids: &[&str]) -> Vec<DateTime<Utc>> {
    sqlx::query_scalar(
        "SELECT DISTINCT bucket FROM event_ids
          WHERE event_key IN (SELECT ingest_event_key(id) FROM UNNEST($1::text[]) id)
            AND bucket IN (SELECT bucket FROM event_id_generations)
          ORDER BY bucket",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn rows_land_in_the_partition_of_their_receipt_day() {
    let db = PrivateDatabase::create().await;
    let tomorrow = Utc::now() + TimeDelta::days(1);
    let in_three_days = Utc::now() + TimeDelta::days(3);
    persist(
        &db.pool,
        &[event("a", 1, tomorrow), event("b", 2, in_three_days)],
    )
    .await;
    assert_eq!(stored(&db.pool, "a").await, vec![(partition(tomorrow), 1)]);
    assert_eq!(
        stored(&db.pool, "b").await,
        vec![(partition(in_three_days), 2)]
    );

    // A day with no partition yet (beyond the ones made ahead): the default partition
    // takes it, and creating the day's partition moves it there.
    let far = Utc::now() + TimeDelta::days(20);
    persist(&db.pool, &[event("far", 3, far)]).await;
    assert_eq!(
        stored(&db.pool, "far").await,
        vec![("events_default".into(), 3)]
    );
    sqlx::query("SELECT ingest_ensure_events_partition($1)")
        .bind(far.date_naive())
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored(&db.pool, "far").await, vec![(partition(far), 3)]);
}

#[tokio::test]
async fn a_retry_on_another_day_is_stored_once_and_the_first_copy_kept() {
    let db = PrivateDatabase::create().await;
    let first = Utc::now() + TimeDelta::days(1);
    persist(&db.pool, &[event("e", 1, first)]).await;
    // The client retries the next day, with the date omitted again: another partition.
    persist(&db.pool, &[event("e", 2, first + TimeDelta::days(1))]).await;
    // And the worker is handed the first one again (a redelivery).
    persist(&db.pool, &[event("e", 1, first)]).await;
    assert_eq!(stored(&db.pool, "e").await, vec![(partition(first), 1)]);
}

#[tokio::test]
async fn a_retry_in_the_next_generation_is_stored_once_in_either_order() {
    let db = PrivateDatabase::create().await;
    // Copies two hours apart on either side of a boundary an hour ago.
    let boundary = Utc::now() - TimeDelta::hours(1);
    first_generation_until(&db.pool, boundary).await;
    let before = boundary - TimeDelta::hours(1);
    let after = boundary + TimeDelta::minutes(59);
    ensure_day_partitions(&db.pool, &[before, after]).await;

    // Original, then retry a generation later (the worker creates that generation).
    persist(&db.pool, &[event("forward", 1, before)]).await;
    persist(&db.pool, &[event("forward", 2, after)]).await;
    assert_eq!(
        stored(&db.pool, "forward").await,
        vec![(partition(before), 1)]
    );

    // The retry first, then the original (a dead letter redriven late).
    persist(&db.pool, &[event("backward", 2, after)]).await;
    persist(&db.pool, &[event("backward", 1, before)]).await;
    assert_eq!(
        stored(&db.pool, "backward").await,
        vec![(partition(after), 2)]
    );

    let generations = generations_of(&db.pool, &["forward", "backward"]).await;
    assert_eq!(
        generations.len(),
        2,
        "the two copies' ids sit in two generations"
    );
}

/// A short window (one hour): its generations are an hour wide, made by the worker as it
/// needs them when none was made ahead. A copy received within the hour of another is
/// stored once, whichever generation each lands in and whichever is written first; a copy
/// received later than the window after the original is another event as far as
/// deduplication goes (the documented limit).
#[tokio::test]
async fn the_window_bounds_deduplication_and_its_generations_are_a_window_wide() {
    let db = PrivateDatabase::create().await;
    sqlx::query("UPDATE lifecycle_settings SET dedup_window_hours = 1")
        .execute(&db.pool)
        .await
        .unwrap();
    // Generations from three hours ago on: every receipt below is in the past.
    let b = (Utc::now() - TimeDelta::hours(3)).trunc_subsecs(0);
    first_generation_until(&db.pool, b).await;
    let minutes = |m: i64| b + TimeDelta::minutes(m);
    ensure_day_partitions(&db.pool, &[b, minutes(180)]).await;

    // 50 minutes apart, across a generation boundary: the worker makes the generations
    // it needs (none was made ahead), and the retry finds its original in the one before.
    persist(&db.pool, &[event("inside", 1, minutes(30))]).await;
    persist(&db.pool, &[event("inside", 2, minutes(80))]).await;
    assert_eq!(stored(&db.pool, "inside").await.len(), 1);
    assert_eq!(stored(&db.pool, "inside").await[0].1, 1);
    let widths: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT bucket, ends FROM event_id_generations WHERE bucket >= $1 ORDER BY bucket",
    )
    .bind(b)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(widths, vec![(b, minutes(60)), (minutes(60), minutes(120))]);

    // Exactly the window apart: still inside.
    persist(&db.pool, &[event("edge", 1, minutes(10))]).await;
    persist(&db.pool, &[event("edge", 2, minutes(70))]).await;
    assert_eq!(stored(&db.pool, "edge").await.len(), 1);

    // Two hours and twenty minutes apart: past the window, stored again.
    persist(&db.pool, &[event("outside", 1, minutes(5))]).await;
    persist(&db.pool, &[event("outside", 2, minutes(145))]).await;
    assert_eq!(stored(&db.pool, "outside").await.len(), 2);

    // The retry written first, the original 45 minutes earlier after it (a dead letter
    // redriven late): found in the next generation.
    persist(&db.pool, &[event("late", 2, minutes(100))]).await;
    persist(&db.pool, &[event("late", 1, minutes(55))]).await;
    assert_eq!(stored(&db.pool, "late").await.len(), 1);
    assert_eq!(stored(&db.pool, "late").await[0].1, 2);

    // In one batch, an original and its retry 50 minutes apart: the first copy stays.
    persist(
        &db.pool,
        &[
            event("batched", 1, minutes(100)),
            event("batched", 2, minutes(150)),
        ],
    )
    .await;
    assert_eq!(stored(&db.pool, "batched").await.len(), 1);
    assert_eq!(stored(&db.pool, "batched").await[0].1, 1);
}

#[tokio::test]
async fn duplicates_inside_one_batch_keep_the_first() {
    let db = PrivateDatabase::create().await;
    let now = Utc::now();
    persist(
        &db.pool,
        &[event("d", 1, now), event("x", 7, now), event("d", 2, now)],
    )
    .await;
    assert_eq!(stored(&db.pool, "d").await.len(), 1);
    assert_eq!(stored(&db.pool, "d").await[0].1, 1);
    assert_eq!(stored(&db.pool, "x").await.len(), 1);
}

/// During a rebalance two workers can write the same partition at once: the old owner a
/// batch it read before the partition was revoked, the new owner the same messages and
/// more. If an event and its retry then land in two generations, no unique index stands
/// between the two transactions; the partition's lock orders them, so the second one finds
/// the first one's copy. Both are held up here (behind an erasure of the datasource,
/// which each batch waits for after taking its partition's lock) and then let go at once.
#[tokio::test]
async fn copies_in_two_generations_written_at_once_by_two_owners_are_stored_once() {
    let db = PrivateDatabase::create().await;
    let boundary = Utc::now() - TimeDelta::hours(1);
    first_generation_until(&db.pool, boundary).await;
    let (before, after) = (
        boundary - TimeDelta::minutes(1),
        boundary + TimeDelta::minutes(1),
    );
    ensure_day_partitions(&db.pool, &[before, after]).await;
    // Makes the second generation, so that neither transaction below has to.
    persist(&db.pool, &[event("unrelated", 0, after)]).await;

    let mut erasing = db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('ingest-erasure:p/web', 0))")
        .execute(&mut *erasing)
        .await
        .unwrap();
    let owner = |n: i64, at: DateTime<Utc>| {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            let envelopes = [event("raced", n, at)];
            Batch::from_envelopes(envelopes.iter().map(|e| (n, e)))
                .locking_partitions([("ingest.events", 5)])
                .persist(&pool)
                .await
        })
    };
    let old_owner = owner(1, before);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let new_owner = owner(2, after);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    erasing.commit().await.unwrap();
    old_owner.await.unwrap().unwrap();
    new_owner.await.unwrap().unwrap();
    assert_eq!(
        stored(&db.pool, "raced").await,
        vec![(partition(before), 1)],
        "stored once, the first owner's copy"
    );
}
