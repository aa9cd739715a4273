//! A broker outage under the client: Kafka stopped, the gateway answers 503, the client
//! retries until Kafka is back, and every event ends up stored exactly once. The test
//! runs a Kafka of its own (`PrivateStack`) so stopping it disturbs no other test.

mod common;

use std::time::Duration;

use common::{builder, stored_events, wait_for_events};
use ingest_testkit::{
    metrics_text, migrated_pool, sample_sum, wait_for, PrivateStack, Tenant, TestGateway,
    TestTopics, TestWorker,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tracked_during_a_broker_outage_are_retried_and_stored_once() {
    let kafka = PrivateStack::new();
    tokio::task::block_in_place(|| kafka.run(&["up", "kafka"]));
    let brokers = kafka.kafka_brokers();
    // The private broker has its own `ingest.*` topics; TestTopics only names them.
    let topics = TestTopics::naming_only("ingest");
    let on_private = [("KAFKA_BROKERS", brokers.as_str())];
    let gateway = TestGateway::spawn(
        &topics,
        &[
            on_private[0],
            // A broker outage is answered 503 after 1 s instead of 5.
            ("INGEST_PUBLISH_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    let worker = TestWorker::spawn(&topics, &on_private).await;
    let pool = migrated_pool().await;
    let tenant = Tenant::create(&pool).await;
    let client = builder(&gateway.base_url, &tenant)
        .max_batch_items(10)
        .flush_interval(Duration::from_millis(200))
        .retry_max_backoff(Duration::from_secs(2))
        .build()
        .unwrap();
    let event = |n: usize| json!({"_user_id": format!("u{}", n % 7), "_event_id": format!("ev-{n}"), "_event_type": "view"});

    // Before: delivered at once.
    let mut handles = Vec::new();
    for n in 0..20 {
        handles.push(client.track(event(n)).await);
    }
    client.flush().await;
    assert_eq!(client.stats().accepted, 20);

    tokio::task::block_in_place(|| kafka.run(&["down", "kafka"]));
    for n in 20..70 {
        handles.push(client.track(event(n)).await);
    }
    // The gateway answers 503 and the client keeps retrying; nothing is accepted.
    wait_for(
        "the client retrying through 503s",
        Duration::from_secs(30),
        || async { (client.stats().retries >= 10).then_some(()) },
    )
    .await;
    let during = client.stats();
    assert_eq!((during.accepted, during.failed), (20, 0));
    let answered_503 = sample_sum(
        &metrics_text(&gateway.admin_url).await,
        "ingest_gateway_http_requests_total",
        "status=\"503\"",
    );
    assert!(answered_503 >= 10.0, "{answered_503} answers 503");

    tokio::task::block_in_place(|| kafka.run(&["up", "kafka"]));
    client.flush().await;
    for handle in handles {
        let outcome = handle.await;
        assert!(outcome.is_accepted(), "{outcome:?}");
    }
    let after = client.stats();
    assert_eq!((after.accepted, after.failed, after.queued), (70, 0, 0));
    assert!(after.retries >= 10);

    let stored = wait_for_events(&pool, &tenant.project, 70).await;
    let expected: Vec<String> = {
        let mut ids: Vec<String> = (0..70).map(|n| format!("ev-{n}")).collect();
        ids.sort();
        ids
    };
    assert_eq!(stored.keys().cloned().collect::<Vec<_>>(), expected);
    assert!(
        stored.values().all(|&copies| copies == 1),
        "an event stored more than once: {stored:?}"
    );
    // And it stays so once the worker has caught up with every retry.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stored_events(&pool, &tenant.project).await, stored);

    client.close(Duration::from_secs(5)).await;
    gateway.stop().await;
    worker.stop().await;
}
