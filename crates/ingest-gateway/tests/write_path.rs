//! The gateway against the real broker: what it answers, and what it publishes.

use std::time::Duration;

use ingest_testkit::{kafka_brokers, migrated_pool, unique, Tenant, TestGateway, TestTopics};
use ingest_types::{Envelope, Operation};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use serde_json::{json, Value};

/// Reads `count` messages from `topic` (all partitions, from the start), with their keys.
async fn read_topic(topic: &str, count: usize) -> Vec<(String, Envelope)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    while out.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} messages arrived on {topic}", out.len()))
            .unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        out.push((key, Envelope::decode(message.payload().unwrap()).unwrap()));
    }
    out
}

#[tokio::test]
async fn accepted_items_are_on_the_broker_when_the_gateway_answers() {
    let topics = TestTopics::create(3).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&migrated_pool().await).await;
    let client = reqwest::Client::new();

    let response = client
        .post(gateway.stream_url(&tenant.project, &tenant.datasource, "contacts"))
        .bearer_auth(&tenant.token)
        .header("x-request-id", "req-contacts-1")
        .json(&json!([
            {"_user_id": "USER-1", "_email": "one@example.com"},
            {"_email": "nobody@example.com"},
            {"_user_id": "USER-2", "plan": "pro"},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-request-id"], "req-contacts-1");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"entity": {"successful": 2, "failed": 1, "items": [
            {"status": "success", "_user_id": "USER-1"},
            {"status": "error", "_user_id": null, "errors": {"_user_id": ["Required"]}},
            {"status": "success", "_user_id": "USER-2"},
        ]}})
    );

    let mut published = read_topic(&topics.topics.contacts, 2).await;
    published.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(published[0].0, format!("{}/web/USER-1", tenant.project));
    assert_eq!(published[1].0, format!("{}/web/USER-2", tenant.project));
    let first = &published[0].1;
    assert_eq!(
        (first.project.as_str(), first.datasource.as_str()),
        (tenant.project.as_str(), "web")
    );
    assert_eq!(first.request_id, "req-contacts-1");
    assert_eq!(
        first.op,
        Operation::UpsertContact {
            attributes: json!({"_email": "one@example.com"})
                .as_object()
                .unwrap()
                .clone()
        }
    );

    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn events_echo_their_ids_and_go_to_the_events_topic() {
    let topics = TestTopics::create(2).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&migrated_pool().await).await;
    let response = reqwest::Client::new()
        .post(gateway.stream_url(&tenant.project, &tenant.datasource, "events"))
        .bearer_auth(&tenant.token)
        .json(&json!([
            {"_user_id": "U1", "_event_id": "E1", "_event_type": "purchase",
             "_event_date": "2026-11-24T10:00:00+02:00", "_event_parameters": {"amount": 12.5}},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["entity"]["items"][0],
        json!({"status": "success", "_user_id": "U1", "_event_id": "E1"})
    );

    let published = read_topic(&topics.topics.events, 1).await;
    let Operation::AppendEvent {
        event_id,
        event_date,
        parameters,
        ..
    } = &published[0].1.op
    else {
        panic!("expected an event, got {:?}", published[0].1.op)
    };
    assert_eq!(event_id, "E1");
    assert_eq!(event_date.to_rfc3339(), "2026-11-24T08:00:00+00:00");
    assert_eq!(parameters["amount"], json!(12.5));

    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn malformed_batches_are_rejected_with_the_documented_status() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&migrated_pool().await).await;
    let client = reqwest::Client::new();
    let url = gateway.stream_url(&tenant.project, &tenant.datasource, "contacts");

    // 401: no token, wrong scheme, wrong token.
    for auth in [
        None,
        Some("Basic abc".to_owned()),
        Some("Bearer nope".to_owned()),
    ] {
        let mut request = client.post(&url).json(&json!([{"_user_id": "u"}]));
        if let Some(auth) = &auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "auth {auth:?}");
        assert!(response.headers().contains_key("x-request-id"));
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].is_string());
    }

    let post = |body: String| {
        client
            .post(&url)
            .bearer_auth(&tenant.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // 400 with a message saying which.
    for (body, expected) in [
        ("{\"a\":1}".to_owned(), "Body should be an array"),
        ("[]".to_owned(), "Body should not be empty"),
        ("not json".to_owned(), "Body should be a JSON array"),
        (
            format!("[{}]", vec!["{}"; 101].join(",")),
            "Body should have at most 100 items",
        ),
    ] {
        let response = post(body).await.unwrap();
        assert_eq!(response.status(), 400);
        let message = response.json::<Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.starts_with(expected),
            "{message:?} should start with {expected:?}"
        );
    }
    // 413 over 1 MiB.
    let big = format!(
        "[{{\"_user_id\": \"u\", \"x\": \"{}\"}}]",
        "a".repeat(1024 * 1024)
    );
    let response = post(big).await.unwrap();
    assert_eq!(response.status(), 413);
    assert!(response.json::<Value>().await.unwrap()["message"].is_string());
    // 422 when every item fails, with the per-item answer.
    let response = post(r#"[{"x": 1}, "str"]"#.to_owned()).await.unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["entity"]["failed"], 2);
    assert_eq!(
        body["entity"]["items"][1]["errors"],
        json!({"_item": ["Must be an object"]})
    );
    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&migrated_pool().await).await;
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", gateway.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("{}/readyz", gateway.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // One accepted item, then the counter shows up in the exposition.
    let response = client
        .post(gateway.stream_url(&tenant.project, &tenant.datasource, "contacts"))
        .bearer_auth(&tenant.token)
        .json(&json!([{"_user_id": "m"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let metrics = client
        .get(format!("{}/metrics", gateway.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ingest_gateway_items_total{kind=\"contact\",outcome=\"accepted\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("ingest_gateway_http_requests_total{route=\"/v1/project/{project}/datasource/{datasource}/stream/contacts\",status=\"202\"}"), "{metrics}");
    gateway.stop().await;
    topics.delete().await;
}
