//! The gateway's edge against clients that misbehave, over raw TCP against a real gateway:
//! the token is checked before any body byte is read; slow heads, slow bodies and idle
//! connections are closed; connections and in-flight body bytes are capped; look-ups of
//! unknown tokens are bounded; every answer has a JSON body.

use std::time::{Duration, Instant};

use ingest_testkit::{migrated_pool, Tenant, TestGateway, TestTopics};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(gateway: &TestGateway) -> String {
    gateway.base_url.trim_start_matches("http://").to_owned()
}

/// A POST head for `path` declaring `length` body bytes, with `token` if any.
fn post_head(path: &str, token: Option<&str>, length: usize) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

fn events_path(tenant: &Tenant) -> String {
    format!(
        "/v1/project/{}/datasource/{}/stream/events",
        tenant.project, tenant.datasource
    )
}

/// Reads what the server sends until it closes the connection or `within` passes; returns
/// the text and whether the connection was closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&received).into(), true),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into(), false),
        }
    }
}

/// The status code of the first answer in `text`.
fn status(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn requests_are_refused_from_their_head_without_reading_the_body() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&migrated_pool().await).await;
    let other = Tenant::create(&migrated_pool().await).await;
    // No token, an unknown token, a token of another project: each answered at once
    // although the 1 MiB body never comes.
    for (token, expected) in [
        (None, 401),
        (Some("ingk_".to_owned() + &"0".repeat(64)), 401),
        (Some(other.token.clone()), 404),
    ] {
        let mut stream = TcpStream::connect(addr(&gateway)).await.unwrap();
        let head = post_head(&events_path(&tenant), token.as_deref(), 1 << 20);
        stream.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let (text, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        assert_eq!(status(&text), expected, "{text}");
        assert!(started.elapsed() < Duration::from_secs(2), "{text}");
        assert!(text.contains("{\"message\":"), "{text}");
    }
    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn slow_heads_slow_bodies_and_idle_connections_are_closed() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(
        &topics,
        &[
            ("INGEST_HEADER_TIMEOUT_MS", "1000"),
            ("INGEST_BODY_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    let tenant = Tenant::create(&migrated_pool().await).await;
    let timeout = Duration::from_secs(4);

    // Slowloris: a head that never ends.
    let mut slow_head = TcpStream::connect(addr(&gateway)).await.unwrap();
    slow_head
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut slow_head, timeout).await;
    assert!(
        closed,
        "a head incomplete after the timeout must close the connection"
    );

    // A connection that never sends anything.
    let mut silent = TcpStream::connect(addr(&gateway)).await.unwrap();
    let (_, closed) = read_until_closed(&mut silent, timeout).await;
    assert!(closed, "a silent connection must be closed");

    // A body that stops half-way: 408 with a JSON body, then the connection is closed.
    let mut slow_body = TcpStream::connect(addr(&gateway)).await.unwrap();
    let head = post_head(&events_path(&tenant), Some(&tenant.token), 1000);
    slow_body.write_all(head.as_bytes()).await.unwrap();
    slow_body.write_all(b"[{\"_user_id\":").await.unwrap();
    let (text, closed) = read_until_closed(&mut slow_body, timeout).await;
    assert_eq!(status(&text), 408, "{text}");
    assert!(text.contains("{\"message\":"), "{text}");
    assert!(closed);

    // Keep-alive: after an answer, an idle connection is closed after the same timeout.
    let mut idle = TcpStream::connect(addr(&gateway)).await.unwrap();
    idle.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (text, closed) = read_until_closed(&mut idle, timeout).await;
    assert_eq!(status(&text), 200);
    assert!(closed, "an idle keep-alive connection must be closed");
    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_and_the_gateway_keeps_serving() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[("INGEST_MAX_CONNECTIONS", "4")]).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr(&gateway)).await.unwrap());
    }
    // Let the gateway accept the four.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(addr(&gateway)).await.unwrap();
    let (_, closed) = read_until_closed(&mut extra, Duration::from_secs(2)).await;
    assert!(closed, "the fifth connection must be closed at once");
    // One slot freed: served again.
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let response = reqwest::get(format!("{}/openapi.json", gateway.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(held);
    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn the_body_budget_sheds_with_503_per_datasource() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(
        &topics,
        &[
            ("INGEST_DATASOURCE_BODY_BUDGET_MBYTES", "1"),
            ("INGEST_BODY_TIMEOUT_MS", "5000"),
        ],
    )
    .await;
    let pool = migrated_pool().await;
    let greedy = Tenant::create(&pool).await;
    let polite = Tenant::create(&pool).await;
    // One stalled body of 1,000,000 bytes holds most of the greedy datasource's 1 MiB.
    let mut stalled = TcpStream::connect(addr(&gateway)).await.unwrap();
    let head = post_head(&events_path(&greedy), Some(&greedy.token), 1_000_000);
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(b"[").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let client = reqwest::Client::new();
    let item =
        json!([{"_user_id": "u", "_event_id": "e", "_event_type": "t", "pad": "x".repeat(60_000)}]);
    let started = Instant::now();
    let refused = client
        .post(format!("{}{}", gateway.base_url, events_path(&greedy)))
        .bearer_auth(&greedy.token)
        .json(&item)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(started.elapsed() < Duration::from_secs(2));
    let body: Value = refused.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("too much data"));
    // Another datasource is served as usual.
    let served = client
        .post(format!("{}{}", gateway.base_url, events_path(&polite)))
        .bearer_auth(&polite.token)
        .json(&json!([{"_user_id": "u", "_event_id": "e", "_event_type": "t"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 202);
    drop(stalled);
    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn unknown_token_floods_are_bounded_per_address_and_cached() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(
        &topics,
        &[
            ("INGEST_LOOKUPS_PER_ADDR_PER_SEC", "1"),
            ("INGEST_LOOKUPS_PER_ADDR_BURST", "3"),
        ],
    )
    .await;
    let pool = migrated_pool().await;
    let tenant = Tenant::create(&pool).await;
    let client = reqwest::Client::new();
    let url = format!("{}{}", gateway.base_url, events_path(&tenant));
    let send = |token: String| client.post(&url).bearer_auth(token).body("[]").send();

    // The same unknown token again and again: one look-up, then the cache answers 401.
    let unknown = ingest_types::tenancy::NewToken::generate();
    for _ in 0..10 {
        assert_eq!(send(unknown.secret.clone()).await.unwrap().status(), 401);
    }
    // Different unknown tokens: past the burst (3, one spent above), 429 with no query.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = send(ingest_types::tenancy::NewToken::generate().secret)
            .await
            .unwrap();
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 429, 429]);
    // Known tokens are cached, so the address's spent quota does not touch them.
    // (This one was looked up by no request yet, nor its datasource: wait until two
    // look-ups are allowed again.)
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let ok = send(tenant.token.clone()).await.unwrap();
    assert_eq!(
        ok.status(),
        400,
        "the token is known; the empty batch is the error"
    );
    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn every_router_and_path_error_is_json() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&migrated_pool().await).await;
    let client = reqwest::Client::new();
    let base = format!(
        "{}/v1/project/{}/datasource/{}/stream",
        gateway.base_url, tenant.project, tenant.datasource
    );
    let cases = [
        (client.delete(format!("{base}/contacts/")), 404),
        (client.get(format!("{}/nowhere", gateway.base_url)), 404),
        (client.delete(format!("{base}/contacts/%C3%28")), 400),
        (client.put(format!("{base}/events")), 405),
        (
            client
                .post(format!("{base}/events"))
                .body(b"[{\"_user_id\":\"a\xffb\"}]".to_vec()),
            400,
        ),
    ];
    for (request, expected) in cases {
        let response = request.bearer_auth(&tenant.token).send().await.unwrap();
        let url = response.url().to_string();
        assert_eq!(response.status(), expected, "{url}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{url}"
        );
        if expected == 405 {
            assert!(response.headers().contains_key("allow"), "{url}");
        }
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].is_string(), "{url}: {body}");
        if url.ends_with("/events") && expected == 400 {
            assert!(
                body["message"].as_str().unwrap().contains("UTF-8"),
                "{body}"
            );
        }
    }
    gateway.stop().await;
    topics.delete().await;
}
