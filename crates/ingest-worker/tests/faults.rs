//! Fault scenarios on the real stack, with workers as real processes: scale-out across
//! two workers, `kill -9` of a worker mid-stream, SIGTERM, and the database becoming
//! unreachable mid-stream. In every case the rows in PostgreSQL equal what was accepted:
//! nothing lost, nothing doubled, the last write per user wins.

use std::time::Duration;

use ingest_testkit::{
    database_addr, metrics_text, migrated_pool, wait_for, CuttableProxy, PrivateStack, Tenant,
    TestGateway, TestTopics, WorkerProcess,
};
use serde_json::{json, Value};
use sqlx::PgPool;

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_ingest-worker");
/// The broker's minimum: a killed worker's partitions move on after this.
const FAST_SESSION: (&str, &str) = ("INGEST_WORKER_SESSION_TIMEOUT_MS", "6000");

/// Posts `batches` batches of 50 events (ids `ev-<batch>-<i>`) and, for 20 users, one
/// contact upsert per batch carrying the batch number (the last one must win).
async fn post_stream(gateway: &TestGateway, tenant: &Tenant, batches: std::ops::Range<usize>) {
    let client = reqwest::Client::new();
    let events_url = gateway.stream_url(&tenant.project, "web", "events");
    let contacts_url = gateway.stream_url(&tenant.project, "web", "contacts");
    for b in batches {
        let events: Vec<Value> = (0..50)
            .map(|i| json!({"_user_id": format!("u{}", i % 20), "_event_id": format!("ev-{b}-{i}"), "_event_type": "t"}))
            .collect();
        let contacts: Vec<Value> = (0..20)
            .map(|u| json!({"_user_id": format!("u{u}"), "batch": b}))
            .collect();
        for (url, body) in [(&events_url, events), (&contacts_url, contacts)] {
            let response = client
                .post(url)
                .bearer_auth(&tenant.token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
        }
    }
}

/// Waits until all `batches` are in, then checks exactly-once and last-write-wins.
async fn assert_complete(pool: &PgPool, tenant: &Tenant, batches: usize) {
    let expected = (batches * 50) as i64;
    let project = tenant.project.clone();
    wait_for(
        "every accepted event and the last contact writes",
        Duration::from_secs(120),
        || async {
            let (events,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM events WHERE project = $1")
                    .bind(&project)
                    .fetch_one(pool)
                    .await
                    .unwrap();
            let (last,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM contacts WHERE project = $1 AND (attributes->>'batch')::int = $2",
        )
        .bind(&project)
        .bind((batches - 1) as i32)
        .fetch_one(pool)
        .await
        .unwrap();
            (events == expected && last == 20).then_some(())
        },
    )
    .await;
    let (events, distinct, contacts): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE project = $1),
                (SELECT count(DISTINCT event_id) FROM events WHERE project = $1),
                (SELECT count(*) FROM contacts WHERE project = $1)",
    )
    .bind(&tenant.project)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((events, distinct, contacts), (expected, expected, 20));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_share_the_load_and_a_killed_one_loses_nothing() {
    let pool = migrated_pool().await;
    let topics = TestTopics::create(4).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&pool).await;
    let first = WorkerProcess::spawn(WORKER_BIN, &topics, &[FAST_SESSION]).await;
    let second = WorkerProcess::spawn(WORKER_BIN, &topics, &[FAST_SESSION]).await;

    // Keep writing until both take part (the group settles while they consume).
    let mut written = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !(first.persisted().await > 0 && second.persisted().await > 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the two workers never shared the partitions"
        );
        post_stream(&gateway, &tenant, written..written + 2).await;
        written += 2;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Kill one mid-stream (no shutdown, no commit), keep writing, then add a new one.
    let writing = post_stream(&gateway, &tenant, written..written + 10);
    let killing = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        first.kill9();
    };
    tokio::join!(writing, killing);
    written += 10;
    let third = WorkerProcess::spawn(WORKER_BIN, &topics, &[FAST_SESSION]).await;
    post_stream(&gateway, &tenant, written..written + 10).await;
    written += 10;

    assert_complete(&pool, &tenant, written).await;
    drop(third);
    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_cleanly_and_a_restart_resumes() {
    let pool = migrated_pool().await;
    let topics = TestTopics::create(2).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&pool).await;
    let worker = WorkerProcess::spawn(WORKER_BIN, &topics, &[FAST_SESSION]).await;
    post_stream(&gateway, &tenant, 0..5).await;
    let status = tokio::task::block_in_place(|| worker.terminate());
    assert!(
        status.success(),
        "the worker exits 0 on SIGTERM: {status:?}"
    );
    post_stream(&gateway, &tenant, 5..10).await;
    let _restarted = WorkerProcess::spawn(WORKER_BIN, &topics, &[FAST_SESSION]).await;
    assert_complete(&pool, &tenant, 10).await;
    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_going_away_mid_stream_loses_nothing() {
    let pool = migrated_pool().await;
    let topics = TestTopics::create(2).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&pool).await;
    let proxy = CuttableProxy::start(database_addr()).await;
    let through_proxy = proxy.database_url();
    let worker = WorkerProcess::spawn(
        WORKER_BIN,
        &topics,
        &[("DATABASE_URL", through_proxy.as_str()), FAST_SESSION],
    )
    .await;
    post_stream(&gateway, &tenant, 0..5).await;

    proxy.cut();
    post_stream(&gateway, &tenant, 5..10).await;
    // Unreachable: not ready, retrying (never skipping), and the stream waits in Kafka.
    wait_for(
        "the worker to report not ready",
        Duration::from_secs(30),
        || async {
            let status = reqwest::get(format!("{}/readyz", worker.ops_url))
                .await
                .ok()?
                .status();
            (status == 503).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();

    assert_complete(&pool, &tenant, 10).await;
    let metrics = metrics_text(&worker.ops_url).await;
    assert!(
        metrics.contains("ingest_worker_db_retries_total"),
        "{metrics}"
    );
    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_mid_stream_loses_nothing() {
    // The worker writes to a PostgreSQL of this test's own, which is really stopped and
    // started again while the stream goes on (tenancy stays on the shared database).
    let private = PrivateStack::new();
    tokio::task::block_in_place(|| private.run(&["up", "postgres"]));
    let private_url = private.database_url();
    let private_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&private_url)
        .await
        .unwrap();
    ingest_worker::persist::MIGRATOR
        .run(&private_pool)
        .await
        .unwrap();

    let topics = TestTopics::create(2).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&migrated_pool().await).await;
    let worker = WorkerProcess::spawn(
        WORKER_BIN,
        &topics,
        &[("DATABASE_URL", private_url.as_str()), FAST_SESSION],
    )
    .await;
    post_stream(&gateway, &tenant, 0..5).await;

    tokio::task::block_in_place(|| private.run(&["down", "postgres"]));
    post_stream(&gateway, &tenant, 5..10).await;
    tokio::task::block_in_place(|| private.run(&["up", "postgres"]));
    post_stream(&gateway, &tenant, 10..15).await;

    // The old pool's connections died with the server; a fresh one reads the result.
    let private_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&private_url)
        .await
        .unwrap();
    assert_complete(&private_pool, &tenant, 15).await;
    drop(worker);
    gateway.stop().await;
    topics.delete().await;
}
