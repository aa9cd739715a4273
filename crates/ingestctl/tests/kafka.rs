//! `ingestctl dlq` and `ingestctl replay` against the real broker (and, for replay, a
//! real worker and database). Every test has topics of its own (`TestTopics`), so tests
//! run in parallel and again.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ingest_testkit::{kafka_brokers, migrated_pool, unique, wait_for, TestTopics, TestWorker};
use ingest_types::topics::dead_letter_headers::{OFFSET, PARTITION, REASON, TOPIC};
use ingest_types::{Envelope, Operation, ENVELOPE_VERSION};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(10);

fn run(prefix: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ingestctl"))
        .args(args)
        .args(["--topic-prefix", prefix])
        .env("KAFKA_BROKERS", kafka_brokers())
        .output()
        .expect("running ingestctl")
}

fn ok(prefix: &str, args: &[&str]) -> String {
    let out = run(prefix, args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{args:?} failed: {stderr}\n{stdout}");
    stdout
}

fn ok_json(prefix: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let stdout = ok(prefix, &args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}

/// Runs a command that must fail with exactly one stderr line `error: <message>`.
fn fails(prefix: &str, args: &[&str], message: &str) {
    let out = run(prefix, args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr, format!("error: {message}\n"), "{args:?}");
    assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
}

fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap()
}

/// Writes a dead letter the way the worker does: original key and payload, and the
/// four dead-letter headers.
async fn dead_letter(
    producer: &FutureProducer,
    topics: &TestTopics,
    key: &str,
    payload: &str,
    reason: &str,
    origin: (&str, i32, i64),
) {
    let (partition, offset) = (origin.1.to_string(), origin.2.to_string());
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: TOPIC,
            value: Some(origin.0),
        })
        .insert(Header {
            key: PARTITION,
            value: Some(&partition),
        })
        .insert(Header {
            key: OFFSET,
            value: Some(&offset),
        });
    producer
        .send(
            FutureRecord::to(&topics.topics.dead_letter)
                .key(key)
                .payload(payload)
                .headers(headers),
            TIMEOUT,
        )
        .await
        .unwrap();
}

fn consumer(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap()
}

/// Every message of `topic` partition `partition`, read by assignment.
fn read_all(topic: &str, partition: i32) -> Vec<OwnedMessage> {
    let consumer = consumer(&unique("reader"));
    let (_, high) = consumer
        .fetch_watermarks(topic, partition, TIMEOUT)
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut messages = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (messages.len() as i64) < high {
        assert!(std::time::Instant::now() < deadline, "reading {topic}");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            messages.push(m.unwrap().detach());
        }
    }
    messages
}

fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn letters(list: &Value) -> Vec<(String, bool)> {
    list["letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                format!("{}:{}", l["partition"], l["offset"]),
                l["redriven"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn redriven(report: &Value) -> Vec<String> {
    report["redriven"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}:{}", r["partition"], r["offset"]))
        .collect()
}

#[tokio::test]
async fn dlq_list_and_redrive() {
    let topics = TestTopics::create(1).await;
    let prefix = topics.prefix.as_str();
    let (contacts, events) = (&topics.topics.contacts, &topics.topics.events);
    let producer = producer();
    let empty = ok(prefix, &["dlq", "list"]);
    assert_eq!(
        empty,
        format!("no dead letters in {}\n", topics.topics.dead_letter)
    );

    dead_letter(
        &producer,
        &topics,
        "user-a",
        r#"{"event":"a"}"#,
        "violates foreign key",
        (events, 0, 7),
    )
    .await;
    dead_letter(
        &producer,
        &topics,
        "user-b",
        "not json",
        "payload is not valid JSON",
        (contacts, 0, 3),
    )
    .await;

    let list = ok_json(prefix, &["dlq", "list"]);
    assert_eq!(list["total"], 2);
    assert_eq!(list["redriven"], 0);
    let a = &list["letters"][0];
    assert_eq!(
        (&a["partition"], &a["offset"], &a["key"], &a["payload"]),
        (
            &json!(0),
            &json!(0),
            &json!("user-a"),
            &json!(r#"{"event":"a"}"#)
        )
    );
    assert_eq!(a["reason"], "violates foreign key");
    assert_eq!(
        (
            &a["origin_topic"],
            &a["origin_partition"],
            &a["origin_offset"]
        ),
        (&json!(events), &json!(0), &json!(7))
    );
    let b = &list["letters"][1];
    assert_eq!(b["offset"], 1);
    assert_eq!(b["reason"], "payload is not valid JSON");
    assert_eq!(b["origin_topic"], json!(contacts));
    assert_eq!(b["origin_offset"], 3);
    assert_eq!(
        letters(&list),
        [("0:0".to_owned(), false), ("0:1".to_owned(), false)]
    );
    let text = ok(prefix, &["dlq", "list"]);
    assert!(text.contains("violates foreign key"), "{text}");
    assert!(text.contains(&format!("{events}:0:7")), "{text}");
    assert!(
        text.contains("2 of 2 dead letters shown (0 redriven)"),
        "{text}"
    );
    assert_eq!(
        ok_json(prefix, &["dlq", "list", "--limit", "1"])["letters"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // One letter, by offset: it goes back to its origin, unchanged plus the header.
    let report = ok_json(prefix, &["dlq", "redrive", "--offset", "0:0"]);
    assert_eq!(redriven(&report), ["0:0"]);
    assert_eq!(report["redriven"][0]["topic"], json!(events));
    assert_eq!(report["committed"], json!({"0": 1}));
    let back = read_all(events, 0);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].key(), Some(&b"user-a"[..]));
    assert_eq!(back[0].payload(), Some(&br#"{"event":"a"}"#[..]));
    assert_eq!(
        header(&back[0], "ingest-redriven-from").as_deref(),
        Some("0:0")
    );
    assert_eq!(header(&back[0], REASON), None);
    assert!(read_all(contacts, 0).is_empty());

    // --all: only the other one; then nothing.
    let report = ok_json(prefix, &["dlq", "redrive", "--all"]);
    assert_eq!(redriven(&report), ["0:1"]);
    let back = read_all(contacts, 0);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].key(), Some(&b"user-b"[..]));
    assert_eq!(back[0].payload(), Some(&b"not json"[..]));
    assert_eq!(
        header(&back[0], "ingest-redriven-from").as_deref(),
        Some("0:1")
    );
    assert!(redriven(&ok_json(prefix, &["dlq", "redrive", "--all"])).is_empty());
    let text = ok(prefix, &["dlq", "redrive", "--all"]);
    assert!(text.contains("nothing to redrive"), "{text}");
    assert_eq!(read_all(events, 0).len(), 1);
    assert_eq!(read_all(contacts, 0).len(), 1);

    let list = ok_json(prefix, &["dlq", "list"]);
    assert_eq!(
        letters(&list),
        [("0:0".to_owned(), true), ("0:1".to_owned(), true)]
    );
    assert_eq!(list["redriven"], 2);

    // A later letter first: the one it skips is still pending for --all.
    for n in 2..4 {
        let key = format!("user-{n}");
        dead_letter(&producer, &topics, &key, "{}", "boom", (events, 0, n)).await;
    }
    fails(
        prefix,
        &["dlq", "redrive", "--offset", "0:0"],
        "dead letter 0:0 was already redriven",
    );
    assert_eq!(
        redriven(&ok_json(prefix, &["dlq", "redrive", "--offset", "0:3"])),
        ["0:3"]
    );
    assert_eq!(
        letters(&ok_json(prefix, &["dlq", "list"]))[2..],
        [("0:2".to_owned(), false), ("0:3".to_owned(), true)]
    );
    assert_eq!(
        redriven(&ok_json(prefix, &["dlq", "redrive", "--all"])),
        ["0:2"]
    );
    assert!(letters(&ok_json(prefix, &["dlq", "list"]))
        .iter()
        .all(|(_, r)| *r));
    assert_eq!(read_all(events, 0).len(), 3);

    // Bad input.
    fails(
        prefix,
        &["dlq", "redrive", "--offset", "x"],
        r#"invalid --offset "x": expected <partition>:<offset>, e.g. 0:42"#,
    );
    fails(
        prefix,
        &["dlq", "redrive"],
        "choose the dead letters to redrive: --all, or --offset <partition>:<offset> (repeatable)",
    );
    fails(
        prefix,
        &["dlq", "redrive", "--all", "--offset", "0:1"],
        "--all and --offset cannot be combined",
    );
    fails(
        prefix,
        &["dlq", "redrive", "--offset", "0:9"],
        &format!(
            "no dead letter at 0:9 (partition 0 of {} holds offsets 0 to 3)",
            topics.topics.dead_letter
        ),
    );
    fails(
        prefix,
        &["dlq", "redrive", "--offset", "3:0"],
        &format!(
            "{} has no partition 3 (it has 0)",
            topics.topics.dead_letter
        ),
    );
    let missing = unique("missing");
    fails(
        &missing,
        &["dlq", "list"],
        &format!("topic {missing}.dlq does not exist (is --topic-prefix right?)"),
    );
    topics.delete().await;
}

type Offsets = BTreeMap<(String, i32), Option<i64>>;

/// The group's committed offset on every partition of the contacts and events topics.
fn committed(topics: &TestTopics, group: &str) -> Offsets {
    let consumer = consumer(group);
    let mut tpl = TopicPartitionList::new();
    for topic in topics.topics.consumed() {
        tpl.add_partition_range(topic, 0, 1);
    }
    let committed = consumer.committed_offsets(tpl, TIMEOUT).unwrap();
    committed
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            ((e.topic().to_owned(), e.partition()), offset)
        })
        .collect()
}

/// The high watermark of every partition of the contacts and events topics.
fn ends(topics: &TestTopics) -> Offsets {
    let consumer = consumer(&unique("ends"));
    let mut ends = BTreeMap::new();
    for topic in topics.topics.consumed() {
        for p in 0..2 {
            let (_, high) = consumer.fetch_watermarks(topic, p, TIMEOUT).unwrap();
            ends.insert((topic.to_owned(), p), (high > 0).then_some(high));
        }
    }
    ends
}

type ContactRow = (String, String, i64, DateTime<Utc>, DateTime<Utc>);
type TombstoneRow = (String, i64, DateTime<Utc>);
type EventRow = (
    String,
    String,
    String,
    DateTime<Utc>,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);

/// Every row of the project, in a fixed order.
async fn snapshot(
    pool: &sqlx::PgPool,
    project: &str,
) -> (Vec<ContactRow>, Vec<TombstoneRow>, Vec<EventRow>) {
    let contacts = sqlx::query_as(
        "SELECT user_id, attributes::text, version, created_at, updated_at
           FROM contacts WHERE project = $1 ORDER BY user_id",
    )
    .bind(project)
    .fetch_all(pool)
    .await
    .unwrap();
    let tombstones = sqlx::query_as(
        "SELECT user_id, version, deleted_at
           FROM contact_tombstones WHERE project = $1 ORDER BY user_id",
    )
    .bind(project)
    .fetch_all(pool)
    .await
    .unwrap();
    let events = sqlx::query_as(
        "SELECT event_id, user_id, event_type, event_date, parameters::text, received_at, inserted_at
           FROM events WHERE project = $1 ORDER BY event_id",
    )
    .bind(project)
    .fetch_all(pool)
    .await
    .unwrap();
    (contacts, tombstones, events)
}

#[tokio::test]
async fn replay_rewinds_the_group_and_leaves_the_database_identical() {
    let pool = migrated_pool().await;
    let topics = TestTopics::create(2).await;
    let prefix = topics.prefix.as_str();
    let group = format!("{prefix}-group");
    let project = unique("p");
    let before = Utc::now() - chrono::Duration::seconds(1);

    let envelope = |user: &str, op: Operation| Envelope {
        v: ENVELOPE_VERSION,
        project: project.clone(),
        datasource: "web".into(),
        user_id: user.into(),
        received_at: Utc::now(),
        request_id: unique("r"),
        sync_id: None,
        op,
    };
    let upsert = |attributes: Value| Operation::UpsertContact {
        attributes: attributes.as_object().unwrap().clone(),
    };
    let mut writes = Vec::new();
    for user in ["u0", "u1", "u2", "u3"] {
        writes.push(envelope(
            user,
            upsert(json!({"plan": "free", "user": user})),
        ));
    }
    writes.push(envelope("u0", upsert(json!({"plan": "pro", "seats": 3}))));
    writes.push(envelope("u1", upsert(json!({"plan": null}))));
    writes.push(envelope("u2", Operation::DeleteContact));
    writes.push(envelope("u3", Operation::DeleteContact));
    writes.push(envelope("u3", upsert(json!({"plan": "back"}))));
    for i in 0..6 {
        writes.push(envelope(
            &format!("u{}", i % 4),
            Operation::AppendEvent {
                event_id: format!("e{i}"),
                event_type: "purchase".into(),
                event_date: Utc::now(),
                parameters: json!({"n": i}).as_object().unwrap().clone(),
            },
        ));
    }
    let producer = producer();
    for env in &writes {
        producer
            .send(
                FutureRecord::to(topics.topics.for_operation(&env.op))
                    .key(&env.key())
                    .payload(&env.encode()),
                TIMEOUT,
            )
            .await
            .unwrap();
    }
    let ends = ends(&topics);

    let worker = TestWorker::spawn(&topics, &[]).await;
    wait_for(
        "the worker to commit every message",
        Duration::from_secs(60),
        || std::future::ready((committed(&topics, &group) == ends).then_some(())),
    )
    .await;
    let rows = snapshot(&pool, &project).await;
    assert_eq!(rows.0.len(), 3, "{:?}", rows.0); // u0, u1, u3 (u2 deleted)
                                                 // u2's delete leaves a tombstone (u3's too, unless its delete and re-creation
                                                 // were folded into one batch).
    assert!(rows.1.iter().any(|t| t.0 == "u2"), "{:?}", rows.1);
    assert_eq!(rows.2.len(), 6, "{:?}", rows.2);

    // While a worker is in the group, its offsets cannot be set.
    let from = before.to_rfc3339();
    let replay = ["replay", "--from", &from, "--group", &group];
    fails(
        prefix,
        &replay,
        &format!("consumer group {group:?} has active members: stop the workers, then replay"),
    );
    assert_eq!(committed(&topics, &group), ends);

    worker.stop().await;
    let dry = ok_json(prefix, &[&replay[..], &["--dry-run"]].concat());
    assert_eq!(dry["dry_run"], true);
    assert_eq!(committed(&topics, &group), ends);

    let report = ok_json(prefix, &replay);
    let set: Offsets = report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let key = (
                p["topic"].as_str().unwrap().to_owned(),
                p["partition"].as_i64().unwrap() as i32,
            );
            assert_eq!(p["old"].as_i64(), ends[&key], "{p}");
            assert_eq!(p["changed"], ends[&key].is_some(), "{p}");
            (key, p["new"].as_i64())
        })
        .collect();
    let rewound: Offsets = ends
        .iter()
        .map(|(k, e)| (k.clone(), e.map(|_| 0)))
        .collect();
    assert_eq!(set, rewound);
    assert_eq!(committed(&topics, &group), rewound);

    // Text output: one line per partition, old -> new.
    let text = ok(
        prefix,
        &["replay", "--from", &from, "--group", &group, "--dry-run"],
    );
    let listed: Vec<(String, i32)> = text
        .lines()
        .filter_map(|l| {
            let mut cells = l.split_whitespace();
            Some((cells.next()?.to_owned(), cells.next()?.parse().ok()?))
        })
        .collect();
    assert_eq!(listed, ends.keys().cloned().collect::<Vec<_>>(), "{text}");

    // The new worker consumes everything again, and changes nothing.
    let worker = TestWorker::spawn(&topics, &[]).await;
    wait_for(
        "the worker to consume everything again",
        Duration::from_secs(60),
        || std::future::ready((committed(&topics, &group) == ends).then_some(())),
    )
    .await;
    worker.stop().await;
    let again = snapshot(&pool, &project).await;
    assert_eq!(again.0, rows.0, "contacts changed");
    assert_eq!(again.2, rows.2, "events changed");
    // Tombstones too: a replayed delete that is not newer leaves its tombstone alone.
    assert_eq!(again.1, rows.1, "tombstones changed");

    fails(
        prefix,
        &["replay", "--from", "yesterday"],
        r#"invalid --from "yesterday": premature end of input (expected RFC 3339, e.g. 2026-11-24T09:00:00Z)"#,
    );
    let nobody = unique("nobody");
    fails(
        prefix,
        &["replay", "--from", &from, "--group", &nobody],
        &format!(
            "consumer group {nobody:?} has no committed offsets on {} or {} (is --group right?)",
            topics.topics.contacts, topics.topics.events
        ),
    );
    topics.delete().await;
}
