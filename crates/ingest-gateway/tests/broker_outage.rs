//! The broker stopped while the gateway serves: fast 503s with `Retry-After`, and 202s
//! again once it is back, with no gateway restart. This test runs its own single-node
//! Kafka (through `scripts/stack.sh`, in a private data dir on free ports) so stopping
//! it disturbs no other test.

use std::time::{Duration, Instant};

use ingest_testkit::{
    metrics_text, migrated_pool, wait_for, PrivateStack, Tenant, TestGateway, TestTopics,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_broker_gives_fast_503s_and_a_restarted_one_202s_again() {
    let kafka = PrivateStack::new();
    tokio::task::block_in_place(|| kafka.run(&["up", "kafka"]));
    let pool = migrated_pool().await;
    let tenant = Tenant::create(&pool).await;
    // Topics exist only on the private broker; TestTopics is used just for naming.
    let topics = TestTopics::naming_only("ingest");
    let brokers = kafka.kafka_brokers();
    let gateway = TestGateway::spawn(
        &topics,
        &[
            ("KAFKA_BROKERS", brokers.as_str()),
            ("INGEST_PUBLISH_TIMEOUT_MS", "2000"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let url = gateway.stream_url(&tenant.project, "web", "events");
    let post = |id: usize| {
        client
            .post(&url)
            .bearer_auth(&tenant.token)
            .json(&json!([{"_user_id": "u", "_event_id": format!("ev-{id}"), "_event_type": "t"}]))
            .send()
    };
    assert_eq!(post(0).await.unwrap().status(), 202);

    tokio::task::block_in_place(|| kafka.run(&["down", "kafka"]));
    for id in 1..=3 {
        let started = Instant::now();
        let response = post(id).await.unwrap();
        let took = started.elapsed();
        assert_eq!(response.status(), 503, "request {id}");
        assert!(took < Duration::from_secs(5), "503 took {took:?}");
        assert_eq!(response.headers()["retry-after"], "1");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("broker"),
            "{body}"
        );
    }
    let metrics = metrics_text(&gateway.admin_url).await;
    assert!(
        metrics.contains("outcome=\"unavailable\""),
        "failed items are counted as unavailable, not accepted"
    );

    tokio::task::block_in_place(|| kafka.run(&["up", "kafka"]));
    wait_for(
        "202 again after the broker restarted",
        Duration::from_secs(60),
        || async { (post(100).await.ok()?.status() == 202).then_some(()) },
    )
    .await;
    for id in 101..=105 {
        assert_eq!(post(id).await.unwrap().status(), 202);
    }

    gateway.stop().await;
}
