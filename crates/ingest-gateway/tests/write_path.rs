//! The gateway against the real broker: what it answers, and what it publishes.

use std::time::Duration;

use ingest_testkit::{
    kafka_brokers, metrics_text, migrated_pool, unique, Tenant, TestGateway, TestTopics,
};
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
        .get(format!("{}/healthz", gateway.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("{}/readyz", gateway.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // The public port serves the API alone.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let response = client
            .get(format!("{}{path}", gateway.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body, json!({"message": "no such endpoint"}), "{path}");
    }
    // One accepted item, then the counter shows up in the exposition.
    let response = client
        .post(gateway.stream_url(&tenant.project, &tenant.datasource, "contacts"))
        .bearer_auth(&tenant.token)
        .json(&json!([{"_user_id": "m"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let metrics = metrics_text(&gateway.admin_url).await;
    assert!(
        metrics.contains("ingest_gateway_items_total{kind=\"contact\",outcome=\"accepted\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("ingest_gateway_http_requests_total{route=\"/v1/project/{project}/datasource/{datasource}/stream/contacts\",status=\"202\"}"), "{metrics}");
    // The recorder is shared by every gateway of this test process: check presence only.
    assert!(
        metrics.contains("\ningest_gateway_producer_queue_messages "),
        "{metrics}"
    );
    assert!(
        metrics.contains("ingest_gateway_publish_duration_seconds_bucket"),
        "{metrics}"
    );
    gateway.stop().await;
    topics.delete().await;
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_bodies_are_accepted_and_bombs_are_refused() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&migrated_pool().await).await;
    let client = reqwest::Client::new();
    let url = gateway.stream_url(&tenant.project, &tenant.datasource, "contacts");
    let post = |body: Vec<u8>, encoding: &'static str| {
        client
            .post(&url)
            .bearer_auth(&tenant.token)
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(body)
            .send()
    };

    let response = post(gzip(br#"[{"_user_id": "zipped"}]"#), "gzip")
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["entity"]["items"][0]["_user_id"], "zipped");

    // 20 MiB of JSON whitespace compresses to ~20 KiB: refused once past 1 MiB decoded.
    let mut bomb = b"[".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 20 * 1024 * 1024));
    bomb.extend(b"{}]");
    let response = post(gzip(&bomb), "gzip").await.unwrap();
    assert_eq!(response.status(), 413);
    assert!(response.json::<Value>().await.unwrap()["message"].is_string());

    let response = post(b"definitely not gzip".to_vec(), "gzip").await.unwrap();
    assert_eq!(response.status(), 400);
    let message = response.json::<Value>().await.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("Body is not valid gzip"), "{message}");

    let response = post(br#"[{"_user_id": "u"}]"#.to_vec(), "br")
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn request_ids_are_kept_when_sane_and_replaced_otherwise() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let client = reqwest::Client::new();
    let openapi = format!("{}/openapi.json", gateway.base_url);
    let sent = |id: String| client.get(&openapi).header("x-request-id", id).send();
    let response = sent("client-req.42:a_b".into()).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-req.42:a_b");
    for insane in ["has space".to_owned(), "x".repeat(129)] {
        let response = sent(insane.clone()).await.unwrap();
        let got = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(got, insane);
        assert_eq!(got.len(), 36, "a fresh UUID: {got}");
    }
    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn get_stream_checks_the_token_and_delete_is_ordered_with_upserts() {
    let topics = TestTopics::create(2).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&migrated_pool().await).await;
    tenant.set_limit("web", "contacts_delete", 77).await;
    let client = reqwest::Client::new();

    let stream = format!(
        "{}/v1/project/{}/datasource/web/stream",
        gateway.base_url, tenant.project
    );
    let response = client
        .get(&stream)
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-ratelimit-limit"], "600");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["project"], tenant.project.as_str());
    assert_eq!(body["token_scope"], "datasource");
    assert_eq!(body["rate_limits"]["contacts_delete"], 77);
    let response = client
        .get(&stream)
        .bearer_auth("ingk_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let contacts = gateway.stream_url(&tenant.project, "web", "contacts");
    let response = client
        .post(&contacts)
        .bearer_auth(&tenant.token)
        .json(&json!([{"_user_id": "USER/9", "plan": "pro"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // The user id travels in the path, percent-encoded.
    let response = client
        .delete(format!("{contacts}/USER%2F9"))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-ratelimit-limit"], "77");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"entity": {"successful": 1, "failed": 0, "items": [{"status": "success", "_user_id": "USER/9"}]}})
    );

    // Same topic, same key, in order: the upsert, then the delete.
    let published = read_topic(&topics.topics.contacts, 2).await;
    assert_eq!(published[0].0, published[1].0);
    assert_eq!(published[0].0, format!("{}/web/USER/9", tenant.project));
    assert!(matches!(published[0].1.op, Operation::UpsertContact { .. }));
    assert_eq!(published[1].1.op, Operation::DeleteContact);

    gateway.stop().await;
    topics.delete().await;
}
