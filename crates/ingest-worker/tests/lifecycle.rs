//! The maintenance job (`ingest_worker::lifecycle`) against the real PostgreSQL, each test
//! in a database of its own (the job looks at every tenant's rows): tombstones past the
//! horizon are purged after the horizon is announced, nothing younger is touched, a second
//! run changes nothing, one run at a time, and the worker runs it on its schedule.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use ingest_testkit::{wait_for, PrivateDatabase, TestTopics, TestWorker};
use ingest_worker::lifecycle::maintain;
use sqlx::PgPool;

/// `count` tombstones of project `p`, deleted `age` before `now`.
async fn tombstones(pool: &PgPool, label: &str, count: i64, now: DateTime<Utc>, age: TimeDelta) {
    sqlx::query(
        "INSERT INTO contact_tombstones (project, datasource, user_id, version, deleted_at)
         SELECT 'p', 'web', $1 || '-' || n, n, $2 FROM generate_series(1, $3) AS n",
    )
    .bind(label)
    .bind(now - age)
    .bind(count)
    .execute(pool)
    .await
    .unwrap();
}

async fn left(pool: &PgPool, label: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM contact_tombstones WHERE user_id LIKE $1 || '-%'")
        .bind(label)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn purged_before(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT tombstones_purged_before FROM lifecycle_state")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn days(n: i64) -> TimeDelta {
    TimeDelta::days(n)
}

#[tokio::test]
async fn tombstones_past_the_horizon_are_purged_and_younger_ones_kept() {
    let db = PrivateDatabase::create().await;
    let now = Utc::now().trunc_subsecs(6); // PostgreSQL keeps microseconds
                                           // More than one purge chunk of old ones, so the loop is exercised.
    tombstones(
        &db.pool,
        "old",
        25_000,
        now,
        days(30) + TimeDelta::minutes(1),
    )
    .await;
    tombstones(&db.pool, "young", 3, now, days(30) - TimeDelta::minutes(1)).await;

    let report = maintain(&db.pool, now).await.unwrap();
    assert!(report.ran);
    assert_eq!(report.tombstones_purged, 25_000);
    assert_eq!(report.tombstones_purged_before, Some(now - days(30)));
    assert_eq!(
        (left(&db.pool, "old").await, left(&db.pool, "young").await),
        (0, 3)
    );
    assert_eq!(purged_before(&db.pool).await, now - days(30));

    // Again: nothing left to do.
    let again = maintain(&db.pool, now).await.unwrap();
    assert_eq!(again.tombstones_purged, 0);
    // A clock that went back never lowers the horizon.
    let earlier = maintain(&db.pool, now - days(2)).await.unwrap();
    assert_eq!(earlier.tombstones_purged_before, Some(now - days(30)));
    assert_eq!(left(&db.pool, "young").await, 3);

    let (started, finished, error): (Option<DateTime<Utc>>, Option<DateTime<Utc>>, Option<String>) =
        sqlx::query_as(
            "SELECT last_run_started_at, last_run_finished_at, last_run_error FROM lifecycle_state",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        (started.is_some(), finished.is_some(), error),
        (true, true, None)
    );
}

#[tokio::test]
async fn a_shorter_horizon_takes_effect_at_the_next_run() {
    let db = PrivateDatabase::create().await;
    let now = Utc::now().trunc_subsecs(6); // PostgreSQL keeps microseconds
    tombstones(&db.pool, "ten-days", 2, now, days(10)).await;
    assert_eq!(maintain(&db.pool, now).await.unwrap().tombstones_purged, 0);

    sqlx::query("UPDATE lifecycle_settings SET tombstone_horizon_days = 7")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(maintain(&db.pool, now).await.unwrap().tombstones_purged, 2);
    assert_eq!(purged_before(&db.pool).await, now - days(7));
}

#[tokio::test]
async fn one_run_at_a_time_the_others_skip() {
    let db = PrivateDatabase::create().await;
    let now = Utc::now().trunc_subsecs(6); // PostgreSQL keeps microseconds
    tombstones(&db.pool, "old", 5, now, days(40)).await;

    let mut holder = db.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('ingest-worker:maintenance', 0))")
        .execute(&mut *holder)
        .await
        .unwrap();
    let skipped = maintain(&db.pool, now).await.unwrap();
    assert!(!skipped.ran);
    assert_eq!(left(&db.pool, "old").await, 5);
    let untouched: bool =
        sqlx::query_scalar("SELECT tombstones_purged_before = '-infinity' FROM lifecycle_state")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(untouched, "a skipped run announces no horizon");

    sqlx::query("SELECT pg_advisory_unlock(hashtextextended('ingest-worker:maintenance', 0))")
        .execute(&mut *holder)
        .await
        .unwrap();
    assert_eq!(maintain(&db.pool, now).await.unwrap().tombstones_purged, 5);
}

#[tokio::test]
async fn the_worker_runs_the_job_on_its_schedule() {
    let db = PrivateDatabase::create().await;
    let topics = TestTopics::create(1).await;
    tombstones(&db.pool, "old", 4, Utc::now(), days(31)).await;
    let worker = TestWorker::spawn(
        &topics,
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("INGEST_WORKER_MAINTENANCE_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    wait_for(
        "the worker's maintenance run",
        Duration::from_secs(30),
        || async { (left(&db.pool, "old").await == 0).then_some(()) },
    )
    .await;
    // A later tombstone that ages past the horizon goes at a later run, not only at start-up.
    tombstones(&db.pool, "later", 1, Utc::now(), days(31)).await;
    wait_for(
        "a later maintenance run",
        Duration::from_secs(30),
        || async { (left(&db.pool, "later").await == 0).then_some(()) },
    )
    .await;
    let metrics = ingest_testkit::metrics_text(&worker.ops_url).await;
    assert!(
        metrics.contains("ingest_worker_maintenance_runs_total{outcome=\"ok\"}"),
        "{metrics}"
    );
    worker.stop().await;
    topics.delete().await;
}

/// Why a purge needs the replay guard (`ingestctl replay` refuses to rewind past the
/// horizon, tested in crates/ingestctl/tests/lifecycle.rs): the tombstone is what keeps an
/// old upsert delivered again from bringing a deleted contact back, and once it is purged
/// nothing does.
#[tokio::test]
async fn a_purged_tombstone_no_longer_stops_a_redelivered_old_upsert() {
    use ingest_types::{Envelope, Operation, ENVELOPE_VERSION};
    use ingest_worker::persist::Batch;

    let db = PrivateDatabase::create().await;
    let envelope = |op| Envelope {
        v: ENVELOPE_VERSION,
        project: "p".into(),
        datasource: "web".into(),
        user_id: "U".into(),
        received_at: Utc::now(),
        request_id: "r".into(),
        sync_id: None,
        op,
    };
    let upsert = envelope(Operation::UpsertContact {
        attributes: serde_json::json!({"plan": "pro"})
            .as_object()
            .unwrap()
            .clone(),
    });
    let delete = envelope(Operation::DeleteContact);
    let persist = |offset: i64, e: &Envelope| {
        let batch = Batch::from_envelopes([(offset, e)]);
        let pool = db.pool.clone();
        async move { batch.persist(&pool).await.unwrap() }
    };
    let contacts = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM contacts WHERE user_id = 'U'")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    persist(10, &upsert).await;
    persist(11, &delete).await;
    persist(10, &upsert).await; // redelivered: the tombstone (version 11) wins
    assert_eq!(contacts().await, 0);

    sqlx::query("UPDATE contact_tombstones SET deleted_at = now() - interval '31 days'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        maintain(&db.pool, Utc::now())
            .await
            .unwrap()
            .tombstones_purged,
        1
    );
    persist(10, &upsert).await; // the same redelivery after the purge
    assert_eq!(
        contacts().await,
        1,
        "resurrected: what the replay guard prevents"
    );
}

fn event(id: &str, received_at: DateTime<Utc>) -> ingest_types::Envelope {
    ingest_types::Envelope {
        v: ingest_types::ENVELOPE_VERSION,
        project: "p".into(),
        datasource: "web".into(),
        user_id: "U".into(),
        received_at,
        request_id: "r".into(),
        sync_id: None,
        op: ingest_types::Operation::AppendEvent {
            event_id: id.into(),
            event_type: "t".into(),
            event_date: received_at,
            parameters: Default::default(),
        },
    }
}

async fn persist_events(pool: &PgPool, envelopes: &[ingest_types::Envelope]) {
    ingest_worker::persist::Batch::from_envelopes(
        envelopes.iter().enumerate().map(|(i, e)| (i as i64, e)),
    )
    .persist(pool)
    .await
    .unwrap();
}

async fn events_partitions(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'events'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn day_partition(t: DateTime<Utc>) -> String {
    format!("events_p{}", t.format("%Y%m%d"))
}

/// Retention on a clock moved forward: partitions ahead are created, whole partitions past
/// the retention dropped (the table the migration found too: tests/migration.rs), rows
/// that landed in the default partition past the retention deleted; and a second run
/// changes nothing. (Dedup generations go with the window, not the retention: below.)
#[tokio::test]
async fn retention_drops_whole_partitions_once_past_it() {
    let db = PrivateDatabase::create().await;
    let now = Utc::now();
    let tomorrow = now + days(1);
    persist_events(&db.pool, &[event("today", now), event("day", tomorrow)]).await;
    assert!(events_partitions(&db.pool)
        .await
        .contains(&day_partition(now)));

    // 40 days on, with the default 30-day retention.
    let later = now + days(40);
    let report = maintain(&db.pool, later).await.unwrap();
    let dropped = &report.partitions.dropped;
    assert!(dropped.contains(&day_partition(now)), "{dropped:?}");
    assert!(dropped.contains(&day_partition(tomorrow)), "{dropped:?}");
    for ahead in 0..=7 {
        assert!(
            events_partitions(&db.pool)
                .await
                .contains(&day_partition(later + days(ahead))),
            "partition {ahead} days ahead of the clock"
        );
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let dropped_before: DateTime<Utc> =
        sqlx::query_scalar("SELECT events_dropped_before FROM lifecycle_state")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(dropped_before > tomorrow && dropped_before <= later - days(30));

    // Again at the same time: nothing to do.
    let again = maintain(&db.pool, later).await.unwrap();
    assert_eq!(
        (
            again.partitions.created.len(),
            again.partitions.dropped.len()
        ),
        (0, 0)
    );

    // An event received on a dropped day (a late replay) lands in the default partition,
    // and its id below every generation left: the next run deletes both, they are past
    // the retention and the window.
    persist_events(&db.pool, &[event("late", tomorrow)]).await;
    let report = maintain(&db.pool, later).await.unwrap();
    assert_eq!(report.partitions.default_rows_deleted, 2);
}

/// The deduplication window on a clock moved forward: generations are made a day (or one
/// window) ahead, each a window wide, and dropped an hour after the window has passed
/// their end, whatever the events retention; what was forgotten is recorded (replays
/// from before it are refused: ingestctl's tests).
#[tokio::test]
async fn generations_are_dropped_once_the_window_has_passed_them() {
    let db = PrivateDatabase::create().await;
    sqlx::query("UPDATE lifecycle_settings SET dedup_window_hours = 6")
        .execute(&db.pool)
        .await
        .unwrap();
    let first_end: DateTime<Utc> = sqlx::query_scalar("SELECT ends FROM event_id_generations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let hours = TimeDelta::hours;
    let generations = |pool: PgPool| async move {
        sqlx::query_as::<_, (DateTime<Utc>, DateTime<Utc>, String)>(
            "SELECT bucket, ends, part FROM event_id_generations ORDER BY bucket",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };

    // At the first generation's end: a day ahead in generations of six hours.
    maintain(&db.pool, first_end).await.unwrap();
    let made = generations(db.pool.clone()).await;
    let widths: Vec<TimeDelta> = made[1..].iter().map(|(from, to, _)| *to - *from).collect();
    assert_eq!(widths, vec![hours(6); 5], "{made:?}");
    assert_eq!(made[1].0, first_end);

    // Just before the window and the grace have passed the first one: nothing dropped.
    let report = maintain(&db.pool, first_end + hours(7) - TimeDelta::seconds(1))
        .await
        .unwrap();
    assert!(report.partitions.dropped.is_empty(), "{report:?}");
    let nothing_forgotten: bool =
        sqlx::query_scalar("SELECT event_ids_dropped_before = '-infinity' FROM lifecycle_state")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(nothing_forgotten);
    // Then the first goes, and the next one six hours later, events retention or not.
    let report = maintain(&db.pool, first_end + hours(7)).await.unwrap();
    assert_eq!(report.partitions.dropped, vec![made[0].2.clone()]);
    let report = maintain(&db.pool, first_end + hours(13)).await.unwrap();
    assert_eq!(report.partitions.dropped, vec![made[1].2.clone()]);
    let forgotten: DateTime<Utc> =
        sqlx::query_scalar("SELECT event_ids_dropped_before FROM lifecycle_state")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(forgotten, made[1].1);
}
