//! Erasure of a user on the real stack (HTTP -> gateway -> Kafka -> worker -> PostgreSQL):
//! events and contact writes for the user posted concurrently with
//! `DELETE /stream/users/{user_id}` end with exactly those the gateway received after the
//! erasure stored; and an erasure reaches writes still in Kafka when it runs.
//!
//! "Received after" is read off the envelopes themselves (every accepted write's
//! `received_at` on the topics, against the erasure's `accepted_at`), so the expected
//! set is exact, not guessed from when requests were sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ingest_testkit::{
    kafka_brokers, migrated_pool, unique, wait_for, Tenant, TestGateway, TestTopics, TestWorker,
};
use ingest_types::{Envelope, Operation};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use sqlx::PgPool;

/// Every envelope on `topic` now (all partitions, up to their high watermarks).
fn envelopes(topic: &str) -> Vec<Envelope> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("erasure-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut remaining = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        if high > low {
            remaining.insert(p.id(), high);
            assignment
                .add_partition_offset(topic, p.id(), Offset::Offset(low))
                .unwrap();
        }
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !remaining.is_empty() {
        assert!(std::time::Instant::now() < deadline, "reading {topic}");
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.unwrap();
        if message.offset() + 1 >= remaining[&message.partition()] {
            remaining.remove(&message.partition());
        }
        out.push(Envelope::decode(message.payload().unwrap()).unwrap());
    }
    out
}

/// What a client was answered `success` for, by id (events) or attribute key (contacts).
#[derive(Default)]
struct Accepted {
    events: BTreeSet<String>,
    contact_keys: BTreeSet<String>,
}

/// Posts batches for users `U` (erased) and `V` (control) until `stop`: events with
/// unique ids, and upserts of `U` each setting an attribute of its own (`k<task>_<n>`),
/// so the stored contact tells exactly which upserts it holds.
async fn post_until(
    gateway_url: String,
    project: String,
    token: String,
    task: usize,
    stop: Arc<AtomicBool>,
) -> Accepted {
    let client = reqwest::Client::new();
    let mut accepted = Accepted::default();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let events: Vec<Value> = (0..10)
            .map(|i| {
                json!({"_user_id": if i % 5 == 4 { "V" } else { "U" },
                       "_event_id": format!("t{task}-{n}-{i}"), "_event_type": "view"})
            })
            .collect();
        let url = ingest_testkit::stream_url(&gateway_url, &project, "web", "events");
        let response = client
            .post(&url)
            .bearer_auth(&token)
            .json(&events)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let answer: Value = response.json().await.unwrap();
        for (item, sent) in answer["entity"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&events)
        {
            assert_eq!(item["status"], "success", "{item}");
            accepted
                .events
                .insert(sent["_event_id"].as_str().unwrap().to_owned());
        }
        let key = format!("k{task}_{n}");
        let url = ingest_testkit::stream_url(&gateway_url, &project, "web", "contacts");
        let response = client
            .post(&url)
            .bearer_auth(&token)
            .json(&json!([{"_user_id": "U", key.clone(): n}]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        accepted.contact_keys.insert(key);
    }
    accepted
}

/// Asserts two id lists are equal, showing only what differs.
fn same_ids(got: &[String], want: &[String], what: &str) {
    let (got_set, want_set): (BTreeSet<&String>, BTreeSet<&String>) =
        (got.iter().collect(), want.iter().collect());
    let extra: Vec<_> = got_set.difference(&want_set).take(10).collect();
    let missing: Vec<_> = want_set.difference(&got_set).take(10).collect();
    assert!(
        extra.is_empty() && missing.is_empty() && got.len() == want.len(),
        "{what}: {} stored, {} expected; stored but not expected (first 10): {extra:?}; \
         expected but not stored: {missing:?}",
        got.len(),
        want.len()
    );
}

/// A `POST` whose head and first body bytes go out now and the rest when `rest` is
/// sent: the gateway receives the request (and stamps its `received_at`) now, and
/// publishes its items only once the body is complete. Returns the answer's status.
async fn slow_post(
    base_url: &str,
    path: String,
    token: &str,
    body: Value,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<u16>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string().into_bytes();
    let address = base_url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    stream.flush().await.unwrap();
    let (rest, go) = tokio::sync::oneshot::channel::<()>();
    let answered = tokio::spawn(async move {
        go.await.unwrap();
        stream.write_all(&body[10..]).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        answer.split(' ').nth(1).unwrap().parse().unwrap()
    });
    (rest, answered)
}

/// `DELETE /stream/users/U`; returns the answer's status and `accepted_at`.
async fn erase_u(gateway: &TestGateway, tenant: &Tenant, query: &str) -> (u16, DateTime<Utc>) {
    let url = format!(
        "{}{query}",
        gateway.stream_url(&tenant.project, "web", "users/U")
    );
    let response = reqwest::Client::new()
        .delete(&url)
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert!(status == 200 || status == 202, "{status} {body}");
    let accepted_at = body["accepted_at"].as_str().unwrap().parse().unwrap();
    (status, accepted_at)
}

/// `GET /stream/users/U/erasure`.
async fn erasure_status(gateway: &TestGateway, tenant: &Tenant) -> Value {
    let response = reqwest::Client::new()
        .get(gateway.stream_url(&tenant.project, "web", "users/U/erasure"))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// What PostgreSQL holds for the tenant: event ids per user, and `U`'s contact.
async fn stored(pool: &PgPool, project: &str) -> (Vec<String>, Vec<String>, Option<Value>) {
    let ids = |user: &'static str| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT event_id FROM events WHERE project = $1 AND user_id = $2 ORDER BY event_id",
        )
        .bind(project)
        .bind(user)
        .fetch_all(pool)
        .await
        .unwrap()
    };
    let contact =
        sqlx::query_scalar("SELECT attributes FROM contacts WHERE project = $1 AND user_id = 'U'")
            .bind(project)
            .fetch_optional(pool)
            .await
            .unwrap();
    (ids("U").await, ids("V").await, contact)
}

/// The state the erasure must leave, computed from the envelopes on the topics: `U`'s
/// events and upserts received after `erased_through`, all of `V`'s events.
fn expected(
    topics: &TestTopics,
    project: &str,
    erased_through: DateTime<Utc>,
) -> (Vec<String>, Vec<String>, Option<Value>, usize) {
    let (mut u, mut v, mut contact, mut erased) = (Vec::new(), Vec::new(), None, 0);
    for e in envelopes(&topics.topics.events)
        .into_iter()
        .filter(|e| e.project == project)
    {
        let Operation::AppendEvent { event_id, .. } = e.op else {
            panic!("not an event on the events topic")
        };
        match (e.user_id.as_str(), e.received_at > erased_through) {
            ("U", true) => u.push(event_id),
            ("U", false) => erased += 1,
            _ => v.push(event_id),
        }
    }
    for e in envelopes(&topics.topics.contacts)
        .into_iter()
        .filter(|e| e.project == project)
    {
        if let Operation::UpsertContact { attributes } = e.op {
            if e.received_at > erased_through {
                contact
                    .get_or_insert_with(serde_json::Map::new)
                    .extend(attributes);
            }
        }
    }
    u.sort();
    v.sort();
    (u, v, contact.map(Value::Object), erased)
}

#[tokio::test]
async fn writes_posted_concurrently_with_an_erasure_end_with_exactly_the_later_ones_stored() {
    let pool = migrated_pool().await;
    let topics = TestTopics::create(4).await;
    let gateway = TestGateway::spawn(&topics, &[("INGEST_SYNC_WAIT_MS", "20000")]).await;
    // Batches that fill for 200 ms: when the erasure is consumed, the events received
    // just before it are mostly not stored yet (some are in its own batch), while older
    // ones are: both paths of the erasure are taken.
    let worker = TestWorker::spawn(
        &topics,
        &[
            ("INGEST_WORKER_BATCH_MAX_MESSAGES", "5000"),
            ("INGEST_WORKER_BATCH_MAX_WAIT_MS", "200"),
        ],
    )
    .await;
    let tenant = Tenant::create(&pool).await;
    for endpoint in ["events", "contacts"] {
        tenant.set_limit("web", endpoint, 1_000_000).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|task| {
            tokio::spawn(post_until(
                gateway.base_url.clone(),
                tenant.project.clone(),
                tenant.token.clone(),
                task,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // A request received before the erasure whose body arrives after the erasure has
    // completed: its events reach Kafka, and the worker, after every other trace of the
    // user is gone (as do a lagging partition's, a replay's or a redriven letter's).
    let (rest, slow_answer) = slow_post(
        &gateway.base_url,
        format!(
            "/v1/project/{}/datasource/web/stream/events",
            tenant.project
        ),
        &tenant.token,
        json!([{"_user_id": "U", "_event_id": "slow-1", "_event_type": "view"},
               {"_user_id": "U", "_event_id": "slow-2", "_event_type": "view"}]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, accepted_at) = erase_u(&gateway, &tenant, "?_sync").await;
    assert_eq!(status, 200, "?_sync: answered once the erasure completed");
    rest.send(()).unwrap();
    assert_eq!(slow_answer.await.unwrap(), 202);
    let done = erasure_status(&gateway, &tenant).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["accepted_at"],
        json!(accepted_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut accepted = Accepted::default();
    for client in clients {
        let a = client.await.unwrap();
        accepted.events.extend(a.events);
        accepted.contact_keys.extend(a.contact_keys);
    }

    let (want_u, want_v, want_contact, erased) = expected(&topics, &tenant.project, accepted_at);
    assert_eq!(
        want_u.len() + want_v.len() + erased,
        accepted.events.len() + 2,
        "every accepted event is on the topic once"
    );
    assert!(
        erased > 0 && !want_u.is_empty(),
        "events on both sides of the erasure"
    );
    wait_for("the worker to drain", Duration::from_secs(60), || async {
        let got = stored(&pool, &tenant.project).await;
        (got.1.len() >= want_v.len() && got.0.len() >= want_u.len()).then_some(())
    })
    .await;
    // A moment more: anything wrongly stored late would show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = stored(&pool, &tenant.project).await;
    let done = erasure_status(&gateway, &tenant).await;
    let stored_then_deleted = done["events_erased"].as_u64().unwrap() as usize;
    eprintln!(
        "U's events: {erased} received up to the erasure ({stored_then_deleted} stored, then \
         deleted by it; {} dropped in flight), {} after it",
        erased.saturating_sub(stored_then_deleted),
        want_u.len()
    );
    same_ids(&got.1, &want_v, "V's events (untouched)");
    same_ids(
        &got.0,
        &want_u,
        "U's events (exactly those received after the erasure)",
    );
    let keys = |c: &Option<Value>| -> Vec<String> {
        c.as_ref()
            .map(|c| c.as_object().unwrap().keys().cloned().collect())
            .unwrap_or_default()
    };
    same_ids(
        &keys(&got.2),
        &keys(&want_contact),
        "U's contact attributes (exactly the later upserts)",
    );
    assert_eq!(got.2, want_contact);
    let keys: BTreeSet<String> = keys(&got.2).into_iter().collect();
    assert!(keys.is_subset(&accepted.contact_keys));

    gateway.stop().await;
    worker.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn an_erasure_reaches_writes_still_in_kafka() {
    let pool = migrated_pool().await;
    let topics = TestTopics::create(2).await;
    let gateway = TestGateway::spawn(&topics, &[("INGEST_SYNC_WAIT_MS", "1000")]).await;
    let tenant = Tenant::create(&pool).await;
    let client = reqwest::Client::new();
    let post = |endpoint: &'static str, body: Value| {
        let request = client
            .post(gateway.stream_url(&tenant.project, "web", endpoint))
            .bearer_auth(&tenant.token)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 202);
        }
    };

    // No worker yet: everything waits in Kafka.
    post("contacts", json!([{"_user_id": "U", "plan": "pro"}])).await;
    post(
        "events",
        json!([{"_user_id": "U", "_event_id": "before", "_event_type": "view"},
               {"_user_id": "V", "_event_id": "other", "_event_type": "view"}]),
    )
    .await;
    let (status, accepted_at) = erase_u(&gateway, &tenant, "?_sync").await;
    assert_eq!(status, 202, "no worker: not completed within the wait");
    let pending = erasure_status(&gateway, &tenant).await;
    assert_eq!(
        pending["status"], "none",
        "not recorded by any worker yet: {pending}"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    post(
        "events",
        json!([{"_user_id": "U", "_event_id": "after", "_event_type": "view"},
               // The same id again: a retry accepted after the erasure is stored.
               {"_user_id": "U", "_event_id": "before", "_event_type": "view"}]),
    )
    .await;
    post("contacts", json!([{"_user_id": "U", "plan": "free"}])).await;

    let worker = TestWorker::spawn(&topics, &[]).await;
    let status = wait_for(
        "the erasure to complete",
        Duration::from_secs(60),
        || async {
            let status = erasure_status(&gateway, &tenant).await;
            (status["status"] == "completed").then_some(status)
        },
    )
    .await;
    assert_eq!(
        status["accepted_at"],
        json!(accepted_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    );
    assert_eq!(
        status["events_erased"], 0,
        "no copy received up to the erasure was left to delete: dropped in flight, or spared as the retry received after it"
    );
    let got = wait_for("the later writes", Duration::from_secs(60), || async {
        let got = stored(&pool, &tenant.project).await;
        (got.0.len() == 2 && got.2.is_some()).then_some(got)
    })
    .await;
    assert_eq!(got.0, vec!["after", "before"]);
    assert_eq!(got.1, vec!["other"]);
    assert_eq!(got.2, Some(json!({"plan": "free"})));
    let received: DateTime<Utc> = sqlx::query_scalar(
        "SELECT received_at FROM events WHERE project = $1 AND event_id = 'before'",
    )
    .bind(&tenant.project)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(received > accepted_at, "the retry's copy");

    gateway.stop().await;
    worker.stop().await;
    topics.delete().await;
}
