//! Dead letters as read from the dead-letter topic (by assignment, never joining a
//! group), and `dlq list`: the oldest ones, marked redriven or not.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use ingest_types::topics::dead_letter_headers;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use super::record::{self, REDRIVE_GROUP};
use crate::connect::Kafka;

/// How long reading a topic up to its high watermarks may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One message of the dead-letter topic.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Partition and offset on the dead-letter topic.
    pub partition: i32,
    pub offset: i64,
    /// When it was written to the dead-letter topic.
    pub timestamp: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub origin_topic: Option<String>,
    pub origin_partition: Option<i32>,
    pub origin_offset: Option<i64>,
    /// Key and payload as text (invalid UTF-8 replaced by U+FFFD).
    pub key: Option<String>,
    pub payload: Option<String>,
    /// Whether `dlq redrive` already re-published it.
    pub redriven: bool,
    #[serde(skip)]
    pub(super) raw_key: Option<Vec<u8>>,
    #[serde(skip)]
    pub(super) raw_payload: Option<Vec<u8>>,
    /// Headers other than the four dead-letter headers, kept on redrive.
    #[serde(skip)]
    pub(super) other_headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DeadLetter {
    fn from_message(m: &BorrowedMessage<'_>) -> Self {
        let mut header = BTreeMap::new();
        let mut other_headers = Vec::new();
        if let Some(headers) = m.headers() {
            for h in headers.iter() {
                let dlq = [
                    dead_letter_headers::REASON,
                    dead_letter_headers::TOPIC,
                    dead_letter_headers::PARTITION,
                    dead_letter_headers::OFFSET,
                ];
                if dlq.contains(&h.key) {
                    let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                    header.insert(h.key, value);
                } else {
                    other_headers.push((h.key.to_owned(), h.value.map(<[u8]>::to_vec)));
                }
            }
        }
        let text = |name: &str| header.get(name).cloned().flatten();
        let text_bytes = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        Self {
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis),
            reason: text(dead_letter_headers::REASON),
            origin_topic: text(dead_letter_headers::TOPIC),
            origin_partition: text(dead_letter_headers::PARTITION).and_then(|v| v.parse().ok()),
            origin_offset: text(dead_letter_headers::OFFSET).and_then(|v| v.parse().ok()),
            key: text_bytes(m.key()),
            payload: text_bytes(m.payload()),
            redriven: false,
            raw_key: m.key().map(<[u8]>::to_vec),
            raw_payload: m.payload().map(<[u8]>::to_vec),
            other_headers,
        }
    }
}

/// Reads the dead-letter `topic` from the `[start, end)` range of each planned
/// partition; keeps the messages `keep` accepts, at most `limit` per partition.
pub fn read(
    consumer: &BaseConsumer,
    topic: &str,
    plan: &BTreeMap<i32, (i64, i64)>,
    keep: impl Fn(i32, i64) -> bool,
    limit: Option<usize>,
) -> anyhow::Result<Vec<DeadLetter>> {
    let mut letters = Vec::new();
    let mut tpl = TopicPartitionList::new();
    let mut open: BTreeMap<i32, (i64, usize)> = BTreeMap::new();
    for (&p, &(start, end)) in plan {
        if start < end && limit != Some(0) {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            open.insert(p, (end, 0));
        }
    }
    if open.is_empty() {
        return Ok(letters);
    }
    consumer
        .assign(&tpl)
        .with_context(|| format!("assigning the partitions of {topic}"))?;
    let deadline = Instant::now() + READ_TIMEOUT;
    while !open.is_empty() {
        if Instant::now() >= deadline {
            bail!(
                "timed out after {READ_TIMEOUT:?} reading {topic} (partitions {:?} not read to the end)",
                open.keys().collect::<Vec<_>>()
            );
        }
        let message = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
                continue;
            }
            Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
            Some(Ok(m)) => m,
        };
        let (p, o) = (message.partition(), message.offset());
        let Some((end, kept)) = open.get_mut(&p) else {
            continue;
        };
        if o >= *end {
            open.remove(&p);
            continue;
        }
        if keep(p, o) {
            letters.push(DeadLetter::from_message(&message));
            *kept += 1;
        }
        if o + 1 >= *end || limit.is_some_and(|l| *kept >= l) {
            open.remove(&p);
        }
    }
    consumer.unassign()?;
    letters.sort_by_key(|l| (l.partition, l.offset));
    Ok(letters)
}

#[derive(Debug, Serialize)]
pub struct DlqList {
    pub topic: String,
    /// Letters on the topic (high minus low watermark, over every partition).
    pub total: i64,
    /// How many of those were redriven.
    pub redriven: i64,
    /// The oldest `--limit` letters, by partition and offset.
    pub letters: Vec<DeadLetter>,
}

/// `dlq list`: the oldest `limit` dead letters, marked redriven or not.
pub fn list(kafka: &Kafka, limit: usize) -> anyhow::Result<DlqList> {
    let topic = &kafka.topics.dead_letter;
    let consumer = kafka.consumer(REDRIVE_GROUP)?;
    let watermarks = kafka.watermarks(&consumer, topic)?;
    let progress = record::read(&consumer, topic, watermarks.keys().copied())?;
    let mut letters = read(&consumer, topic, &watermarks, |_, _| true, Some(limit))?;
    // Up to `limit` per partition were read; keep the oldest `limit` overall.
    letters.sort_by_key(|l| (l.timestamp, l.partition, l.offset));
    letters.truncate(limit);
    letters.sort_by_key(|l| (l.partition, l.offset));
    for l in &mut letters {
        l.redriven = progress
            .get(&l.partition)
            .is_some_and(|p| p.redriven(l.offset));
    }
    let total = watermarks.values().map(|(low, high)| high - low).sum();
    let redriven = watermarks
        .iter()
        .map(|(p, &(low, high))| progress.get(p).map_or(0, |pr| pr.count_redriven(low, high)))
        .sum();
    Ok(DlqList {
        topic: topic.clone(),
        total,
        redriven,
        letters,
    })
}
