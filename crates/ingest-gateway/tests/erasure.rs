//! Erasing a user through the gateway, against the real broker and database:
//! `DELETE /stream/users/{user_id}` publishes one `EraseUser` envelope, and
//! `GET /stream/users/{user_id}/erasure` reads what workers recorded in `user_erasures`
//! (rows are inserted here directly: no worker runs in these tests).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ingest_testkit::{
    database_addr, kafka_brokers, migrated_pool, unique, wait_for, wait_for_fresh_window,
    CuttableProxy, Tenant, TestGateway, TestTopics,
};
use ingest_types::{Envelope, Operation};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use reqwest::{Client, Response};
use serde_json::{json, Value};
use sqlx::PgPool;

/// The URL of a user's erasure (`DELETE`), or of its status with `/erasure` appended.
fn user_url(gateway: &TestGateway, tenant: &Tenant, encoded_user_id: &str) -> String {
    gateway.stream_url(
        &tenant.project,
        &tenant.datasource,
        &format!("users/{encoded_user_id}"),
    )
}

/// Reads the messages of `topic` (all partitions, from the start): `count` of them, then
/// checks that no further one arrives within `quiet`.
async fn read_exactly(topic: &str, count: usize, quiet: Duration) -> Vec<(String, Envelope)> {
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
    if let Ok(extra) = tokio::time::timeout(quiet, consumer.recv()).await {
        let extra = extra.unwrap();
        panic!(
            "more than {count} message(s) on {topic}: {:?}",
            Envelope::decode(extra.payload().unwrap())
        );
    }
    out
}

/// `accepted_at` and `completed_at` are RFC 3339 in UTC, to the microsecond, with `Z`.
fn parse_micros(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    assert_eq!(text.len(), "2026-12-02T15:52:56.123456Z".len(), "{text}");
    assert!(text.ends_with('Z') && text.as_bytes()[19] == b'.', "{text}");
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

async fn get(client: &Client, url: &str, token: &str) -> Response {
    client.get(url).bearer_auth(token).send().await.unwrap()
}

async fn delete(client: &Client, url: &str, token: &str) -> Response {
    client.delete(url).bearer_auth(token).send().await.unwrap()
}

#[tokio::test]
async fn delete_publishes_one_erasure_keyed_like_the_users_contact_writes() {
    let topics = TestTopics::create(2).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&migrated_pool().await).await;
    let client = Client::new();

    let before = Utc::now();
    let response = client
        .delete(user_url(&gateway, &tenant, "USER%2F9%20%C3%A9"))
        .bearer_auth(&tenant.token)
        .header("x-request-id", "req-erase-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-request-id"], "req-erase-1");
    assert_eq!(response.headers()["x-ratelimit-limit"], "600");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user_id"], "USER/9 é");
    assert_eq!(body["status"], "accepted");
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    let accepted_at = parse_micros(&body["accepted_at"]);
    assert!(
        before - chrono::Duration::microseconds(1) <= accepted_at && accepted_at <= Utc::now(),
        "{accepted_at}"
    );

    // One message, on the contacts topic, with the key of the user's contact writes; the
    // answer's `accepted_at` is the envelope's `received_at`, exactly.
    let published = read_exactly(&topics.topics.contacts, 1, Duration::from_secs(2)).await;
    let (key, envelope) = &published[0];
    assert_eq!(key, &format!("{}/web/USER/9 é", tenant.project));
    assert_eq!(envelope.op, Operation::EraseUser);
    assert_eq!(
        (envelope.project.as_str(), envelope.datasource.as_str()),
        (tenant.project.as_str(), "web")
    );
    assert_eq!(envelope.user_id, "USER/9 é");
    assert_eq!(envelope.received_at, accepted_at);
    assert_eq!(envelope.request_id, "req-erase-1");
    assert_eq!(envelope.sync_id, None);
    read_exactly(&topics.topics.events, 0, Duration::from_millis(500)).await;

    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn an_invalid_user_id_is_422_with_the_one_item_batch_answer() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&migrated_pool().await).await;
    let client = Client::new();

    let too_long = "x".repeat(257);
    for (encoded, decoded) in [
        ("a%01b", "a\u{1}b".to_owned()),
        ("a%C2%85", "a\u{85}".to_owned()),
        (too_long.as_str(), too_long.clone()),
    ] {
        let expected = json!({"entity": {"successful": 0, "failed": 1, "items": [
            {"status": "error", "_user_id": decoded, "errors": {"_user_id": ["Invalid format"]}},
        ]}});
        let url = user_url(&gateway, &tenant, encoded);
        let response = delete(&client, &url, &tenant.token).await;
        assert_eq!(response.status(), 422, "DELETE {encoded}");
        assert!(response.headers().contains_key("x-ratelimit-remaining"));
        assert_eq!(response.json::<Value>().await.unwrap(), expected);
        let response = get(&client, &format!("{url}/erasure"), &tenant.token).await;
        assert_eq!(response.status(), 422, "GET {encoded}");
        assert!(response.headers().contains_key("x-ratelimit-remaining"));
        assert_eq!(response.json::<Value>().await.unwrap(), expected);
    }
    // 256 characters is still an id.
    let longest = "é".repeat(256);
    let response = delete(
        &client,
        &user_url(&gateway, &tenant, &longest),
        &tenant.token,
    )
    .await;
    assert_eq!(response.status(), 202);
    // Nothing invalid was published.
    let published = read_exactly(&topics.topics.contacts, 1, Duration::from_secs(1)).await;
    assert_eq!(published[0].1.user_id, longest);

    // No id at all: no such route. Undecodable: 400.
    let response = delete(&client, &user_url(&gateway, &tenant, ""), &tenant.token).await;
    assert_eq!(response.status(), 404);
    let response = delete(&client, &user_url(&gateway, &tenant, "%FF"), &tenant.token).await;
    assert_eq!(response.status(), 400);
    assert!(response.json::<Value>().await.unwrap()["message"].is_string());
    // Another method on the paths: 405 with `Allow`.
    let response = client
        .post(user_url(&gateway, &tenant, "u"))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "DELETE");

    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn the_erasures_rate_limit_counts_both_endpoints_and_only_them() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&migrated_pool().await).await;
    tenant.set_limit("web", "erasures", 3).await;
    let client = Client::new();
    let url = user_url(&gateway, &tenant, "u1");
    let stream = format!(
        "{}/v1/project/{}/datasource/web/stream",
        gateway.base_url, tenant.project
    );
    let body: Value = get(&client, &stream, &tenant.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["rate_limits"]["erasures"], 3, "{body}");
    wait_for_fresh_window(Duration::from_secs(20)).await;

    let answers = [
        delete(&client, &url, &tenant.token).await,
        get(&client, &format!("{url}/erasure"), &tenant.token).await,
        delete(&client, &user_url(&gateway, &tenant, "a%01"), &tenant.token).await,
    ];
    for (i, (response, status)) in answers.iter().zip([202, 200, 422]).enumerate() {
        assert_eq!(response.status(), status, "request {i}");
        let h = response.headers();
        assert_eq!(h["x-ratelimit-limit"], "3", "request {i}");
        assert_eq!(
            h["x-ratelimit-remaining"],
            (2 - i).to_string().as_str(),
            "request {i}"
        );
    }
    // The fourth, DELETE or GET: 429, empty body, Retry-After; nothing published.
    for response in [
        delete(&client, &url, &tenant.token).await,
        get(&client, &format!("{url}/erasure"), &tenant.token).await,
    ] {
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert!(response.bytes().await.unwrap().is_empty());
    }
    read_exactly(&topics.topics.contacts, 1, Duration::from_secs(1)).await;
    // Other endpoints have limits of their own.
    let response = delete(
        &client,
        &gateway.stream_url(&tenant.project, "web", "contacts/u1"),
        &tenant.token,
    )
    .await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-ratelimit-limit"], "600");

    gateway.stop().await;
    topics.delete().await;
}

/// Records an erasure as a worker would.
async fn record(
    pool: &PgPool,
    tenant: &Tenant,
    datasource: &str,
    user_id: &str,
    erased_through: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    events_erased: i64,
) {
    sqlx::query(
        "INSERT INTO user_erasures
             (project, datasource, user_id, erased_through, completed_at, events_erased)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&tenant.project)
    .bind(datasource)
    .bind(user_id)
    .bind(erased_through)
    .bind(completed_at)
    .bind(events_erased)
    .execute(pool)
    .await
    .expect("record erasure");
}

#[tokio::test]
async fn the_status_is_what_workers_recorded() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let pool = migrated_pool().await;
    let tenant = Tenant::create(&pool).await;
    tenant.add_datasource("app").await;
    let client = Client::new();
    let status = |encoded: &str| {
        let url = format!("{}/erasure", user_url(&gateway, &tenant, encoded));
        let (client, token) = (client.clone(), tenant.token.clone());
        async move {
            let response = get(&client, &url, &token).await;
            assert_eq!(response.status(), 200, "{url}");
            assert!(response.headers().contains_key("x-ratelimit-remaining"));
            response.json::<Value>().await.unwrap()
        }
    };
    let at = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().to_utc();

    record(
        &pool,
        &tenant,
        "web",
        "running/1",
        at("2026-12-02T10:00:00.123456Z"),
        None,
        0,
    )
    .await;
    record(
        &pool,
        &tenant,
        "web",
        "done",
        at("2026-12-02T11:00:00.5+01:00"),
        Some(at("2026-12-02T10:00:01.000001Z")),
        42,
    )
    .await;
    // Another datasource's erasure is not this one's.
    record(
        &pool,
        &tenant,
        "app",
        "elsewhere",
        at("2026-12-02T10:00:00Z"),
        None,
        0,
    )
    .await;

    assert_eq!(
        status("never").await,
        json!({"user_id": "never", "status": "none", "accepted_at": null,
               "completed_at": null, "events_erased": 0})
    );
    assert_eq!(
        status("running%2F1").await,
        json!({"user_id": "running/1", "status": "in_progress",
               "accepted_at": "2026-12-02T10:00:00.123456Z", "completed_at": null,
               "events_erased": 0})
    );
    assert_eq!(
        status("done").await,
        json!({"user_id": "done", "status": "completed",
               "accepted_at": "2026-12-02T10:00:00.500000Z",
               "completed_at": "2026-12-02T10:00:01.000001Z", "events_erased": 42})
    );
    assert_eq!(status("elsewhere").await["status"], "none");

    // A DELETE is answered before any worker records it: the status does not know it yet,
    // and `accepted_at` tells the two apart.
    let response = delete(&client, &user_url(&gateway, &tenant, "done"), &tenant.token).await;
    assert_eq!(response.status(), 202);
    let accepted_at = parse_micros(&response.json::<Value>().await.unwrap()["accepted_at"]);
    let recorded = status("done").await;
    assert!(parse_micros(&recorded["accepted_at"]) < accepted_at);

    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn sync_answers_202_after_the_wait_and_200_once_the_worker_announces_completion() {
    let topics = TestTopics::create(1).await;
    let pool = migrated_pool().await;
    let tenant = Tenant::create(&pool).await;
    let client = Client::new();
    let url = |gateway: &TestGateway| format!("{}?_sync", user_url(gateway, &tenant, "u%2F1"));

    // No worker: the wait runs out, then the usual 202.
    let gateway = TestGateway::spawn(&topics, &[("INGEST_SYNC_WAIT_MS", "300")]).await;
    let started = Instant::now();
    let response = delete(&client, &url(&gateway), &tenant.token).await;
    assert_eq!(response.status(), 202);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "accepted");
    let published = read_exactly(&topics.topics.contacts, 1, Duration::from_millis(200)).await;
    assert!(published[0].1.sync_id.is_some());
    gateway.stop().await;

    // A worker's announcement (`{"<sync_id>": 1}` on `ingest_committed`, made here by hand
    // with the sync id the envelope carries): 200, completed.
    let gateway = TestGateway::spawn(&topics, &[("INGEST_SYNC_WAIT_MS", "30000")]).await;
    let mut request = {
        let (client, url, token) = (client.clone(), url(&gateway), tenant.token.clone());
        tokio::spawn(async move { delete(&client, &url, &token).await })
    };
    let published = read_exactly(&topics.topics.contacts, 2, Duration::from_millis(200)).await;
    let sync_id = published[1].1.sync_id.clone().expect("a sync id");
    assert_ne!(Some(&sync_id), published[0].1.sync_id.as_ref());
    assert!(!request.is_finished());
    // Announced until answered: the gateway's LISTEN connection is made in the background,
    // and an announcement made before it is not heard.
    let deadline = Instant::now() + Duration::from_secs(10);
    let response = loop {
        sqlx::query("SELECT pg_notify('ingest_committed', $1)")
            .bind(format!(r#"{{"{sync_id}": 1}}"#))
            .execute(&pool)
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(500), &mut request).await {
            Ok(answered) => break answered.unwrap(),
            Err(_) => assert!(
                Instant::now() < deadline,
                "no answer after the announcement"
            ),
        }
    };
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "completed");
    assert_eq!(
        parse_micros(&body["accepted_at"]),
        published[1].1.received_at
    );

    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn the_status_is_503_while_the_database_is_unreachable() {
    let pool = migrated_pool().await;
    let topics = TestTopics::create(1).await;
    let proxy = CuttableProxy::start(database_addr()).await;
    let database_url = proxy.database_url();
    let gateway = TestGateway::spawn(&topics, &[("DATABASE_URL", database_url.as_str())]).await;
    let tenant = Tenant::create(&pool).await;
    let client = Client::new();
    let url = format!("{}/erasure", user_url(&gateway, &tenant, "u1"));
    // Let the creation notifications arrive first: a read racing a change to its own key
    // is (rightly) not cached.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&client, &url, &tenant.token).await.status(), 200);

    proxy.cut();
    // The token is known (cached), the status cannot be read.
    let started = Instant::now();
    let response = get(&client, &url, &tenant.token).await;
    assert_eq!(response.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(5), "bounded");
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(response.headers().contains_key("x-ratelimit-remaining"));
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "cannot read the erasure status right now; retry shortly"})
    );
    // Erasing needs no database: it goes to Kafka.
    let response = delete(&client, &user_url(&gateway, &tenant, "u1"), &tenant.token).await;
    assert_eq!(response.status(), 202);

    proxy.restore();
    wait_for(
        "the gateway to read the database again",
        Duration::from_secs(15),
        || async {
            let status = get(&client, &url, &tenant.token).await.status();
            (status == 200).then_some(())
        },
    )
    .await;

    gateway.stop().await;
    topics.delete().await;
}
