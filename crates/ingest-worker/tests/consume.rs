//! The worker against the real broker and database: envelopes become rows, a poison
//! message goes to the dead-letter topic without blocking its partition, and offsets
//! are committed once the rows are in.

use std::time::Duration;

use chrono::Utc;
use ingest_testkit::{
    kafka_brokers, metrics_text, migrated_pool, unique, wait_for, TestTopics, TestWorker,
};
use ingest_types::{Envelope, Operation, ENVELOPE_VERSION};
use ingest_worker::dead_letter::{HEADER_OFFSET, HEADER_REASON, HEADER_TOPIC};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::json;

#[tokio::test]
async fn envelopes_become_rows_and_poison_goes_to_the_dead_letter_topic() {
    let pool = migrated_pool().await;
    // One partition, so the poison message sits between good ones.
    let topics = TestTopics::create(1).await;
    let project = unique("p");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    let send = |topic: String, payload: Vec<u8>| {
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(&topic).key("k").payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    };
    let event = |id: &str| Envelope {
        v: ENVELOPE_VERSION,
        project: project.clone(),
        datasource: "ds".into(),
        user_id: "u1".into(),
        received_at: Utc::now(),
        request_id: "r".into(),
        sync_id: None,
        op: Operation::AppendEvent {
            event_id: id.into(),
            event_type: "t".into(),
            event_date: Utc::now(),
            parameters: Default::default(),
        },
    };
    send(topics.topics.events.clone(), event("before").encode()).await;
    send(topics.topics.events.clone(), b"{not an envelope".to_vec()).await;
    send(topics.topics.events.clone(), event("after").encode()).await;
    let contact = Envelope {
        op: Operation::UpsertContact {
            attributes: json!({"plan": "pro"}).as_object().unwrap().clone(),
        },
        ..event("unused")
    };
    send(topics.topics.contacts.clone(), contact.encode()).await;

    let worker = TestWorker::spawn(&topics, &[]).await;
    let events = wait_for(
        "both good events in the database",
        Duration::from_secs(60),
        || async {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT event_id FROM events WHERE project = $1 ORDER BY event_id",
            )
            .bind(&project)
            .fetch_all(&pool)
            .await
            .unwrap();
            (ids.len() == 2).then_some(ids)
        },
    )
    .await;
    assert_eq!(events, ["after", "before"]);
    let plan: String = wait_for(
        "the contact in the database",
        Duration::from_secs(30),
        || async {
            sqlx::query_scalar(
                "SELECT attributes->>'plan' FROM contacts WHERE project = $1 AND user_id = 'u1'",
            )
            .bind(&project)
            .fetch_optional(&pool)
            .await
            .unwrap()
        },
    )
    .await;
    assert_eq!(plan, "pro");

    // The poison message is on the dead-letter topic with its reason and origin.
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&[&topics.topics.dead_letter]).unwrap();
    let dead = tokio::time::timeout(Duration::from_secs(30), reader.recv())
        .await
        .expect("a dead letter")
        .unwrap();
    assert_eq!(dead.payload().unwrap(), b"{not an envelope");
    let header = |name: &str| {
        let headers = dead.headers().expect("dead letter has headers");
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| panic!("header {name} missing"))
    };
    assert_eq!(header(HEADER_TOPIC), topics.topics.events);
    assert_eq!(header(HEADER_OFFSET), "1");
    assert!(
        header(HEADER_REASON).contains("not valid JSON"),
        "{}",
        header(HEADER_REASON)
    );

    // Offsets for every consumed message are committed (next offset 3 on events).
    let group_view: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", format!("{}-group", topics.prefix))
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(&topics.topics.events, 0);
    wait_for(
        "the events offset committed",
        Duration::from_secs(30),
        || {
            let committed = group_view
                .committed_offsets(wanted.clone(), Duration::from_secs(5))
                .unwrap();
            let offset = committed
                .find_partition(&topics.topics.events, 0)
                .unwrap()
                .offset();
            std::future::ready((offset == Offset::Offset(3)).then_some(()))
        },
    )
    .await;

    let metrics = metrics_text(&worker.ops_url).await;
    assert!(
        metrics.contains("ingest_worker_messages_total"),
        "{metrics}"
    );
    // Lag per partition, refreshed every 5 s: everything committed, so 0.
    let lag_line = format!(
        "ingest_worker_consumer_lag_messages{{topic=\"{}\",partition=\"0\"}} 0",
        topics.topics.events
    );
    wait_for(
        "the events partition to report zero lag",
        Duration::from_secs(20),
        || async {
            let text = metrics_text(&worker.ops_url).await;
            text.contains(&lag_line).then_some(())
        },
    )
    .await;
    let ready = reqwest::get(format!("{}/readyz", worker.ops_url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    worker.stop().await;
    topics.delete().await;
}
