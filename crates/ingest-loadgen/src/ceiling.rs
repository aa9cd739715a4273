//! What the machine allows, measured the same way as the pipeline:
//!
//! - the **producer ceiling**: a bare rdkafka producer with exactly the gateway's producer
//!   settings ([`ingest_gateway::publish::producer_config`]) publishing the envelope bytes
//!   the gateway would publish for the same items, in batches awaited like requests;
//! - the **COPY ceiling**: the same event rows written into the same `events` table with
//!   PostgreSQL's `COPY`, over one connection like one worker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use futures::future::join_all;
use ingest_types::{Envelope, Operation};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::workload::Workload;

/// `(key, payload)` of each message of one request's worth of envelopes.
type EncodedBatch = Vec<(String, Vec<u8>)>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProducerReport {
    pub topic: String,
    pub partitions: i32,
    pub batch_size: usize,
    pub concurrency: usize,
    pub duration_s: f64,
    pub messages: u64,
    pub messages_per_sec: f64,
    pub payload_mib_per_sec: f64,
    pub failed: u64,
    /// The producer settings used (those of the gateway for the same environment).
    pub settings: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyReport {
    pub table: String,
    pub rows: u64,
    pub rows_per_copy: usize,
    pub duration_s: f64,
    pub rows_per_sec: f64,
}

/// Publishes pre-encoded event envelopes to a scratch topic with the same partition count
/// as the events topic, `concurrency` batches in flight, each awaited whole like a request.
pub async fn producer(
    gateway: &ingest_gateway::config::Config,
    workload: &Workload,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<ProducerReport> {
    let client_config = ingest_gateway::publish::producer_config(gateway);
    let producer: FutureProducer = client_config.create().context("creating the producer")?;
    let metadata = producer
        .client()
        .fetch_metadata(
            Some(&gateway.topics.events),
            Timeout::After(Duration::from_secs(10)),
        )
        .context("reading the events topic's metadata")?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32);
    anyhow::ensure!(
        partitions > 0,
        "topic {} not found: is the stack up?",
        gateway.topics.events
    );
    let topic = format!("{}.ceiling-{}", gateway.topics.events, workload.run_id);
    let admin: AdminClient<DefaultClientContext> = client_config.create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &options,
        )
        .await?
    {
        result.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }

    // The envelope bytes, encoded before the clock starts: 1000 batches, reused in turn.
    let received_at = Utc::now();
    let mut rng = rand::rng();
    let batches: Arc<Vec<EncodedBatch>> = Arc::new(
        (0..1000)
            .map(|seq| {
                let batch = workload.batch(seq, &mut rng);
                workload
                    .envelopes(&batch, "ceiling", "ceiling", received_at)
                    .iter()
                    .map(|e: &Envelope| (e.key(), e.encode()))
                    .collect()
            })
            .collect(),
    );

    let messages = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let measure_from = started + warmup;
    let end = measure_from + duration;
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (producer, topic, batches) = (producer.clone(), topic.clone(), batches.clone());
            let (messages, bytes, failed, next) = (
                messages.clone(),
                bytes.clone(),
                failed.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < end {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize % batches.len();
                    let batch = &batches[i];
                    let begun = Instant::now();
                    let mut deliveries = Vec::with_capacity(batch.len());
                    let mut size = 0;
                    for (key, payload) in batch {
                        size += payload.len();
                        let record = FutureRecord::to(&topic).key(key).payload(payload);
                        match producer.send_result(record) {
                            Ok(delivery) => deliveries.push(delivery),
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    let acked = join_all(deliveries)
                        .await
                        .into_iter()
                        .filter(|d| matches!(d, Ok(Ok(_))))
                        .count() as u64;
                    if begun >= measure_from {
                        messages.fetch_add(acked, Ordering::Relaxed);
                        bytes.fetch_add(size as u64, Ordering::Relaxed);
                        failed.fetch_add(batch.len() as u64 - acked, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let _ = admin.delete_topics(&[&topic], &options).await;

    let secs = duration.as_secs_f64();
    let messages = messages.load(Ordering::Relaxed);
    let settings = [
        "acks",
        "enable.idempotence",
        "linger.ms",
        "compression.type",
    ]
    .iter()
    .filter_map(|k| client_config.get(k).map(|v| (k.to_string(), v.to_owned())))
    .collect();
    Ok(ProducerReport {
        topic,
        partitions,
        batch_size: workload.batch_size,
        concurrency,
        duration_s: secs,
        messages,
        messages_per_sec: messages as f64 / secs,
        payload_mib_per_sec: bytes.load(Ordering::Relaxed) as f64 / secs / (1024.0 * 1024.0),
        failed: failed.load(Ordering::Relaxed),
        settings,
    })
}

/// Writes `rows` event rows with `COPY ... FROM STDIN (FORMAT csv)`, `rows_per_copy` per
/// transaction, into `events` under `project`. The CSV is built before the clock starts.
pub async fn copy(
    pool: &PgPool,
    workload: &Workload,
    project: &str,
    rows: u64,
    rows_per_copy: usize,
) -> anyhow::Result<CopyReport> {
    let received_at = Utc::now();
    let mut rng = rand::rng();
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut chunk = Vec::new();
    let mut in_chunk = 0;
    let mut seq = 0;
    let mut total = 0;
    while total < rows {
        let batch = workload.batch(seq, &mut rng);
        seq += 1;
        for envelope in workload.envelopes(&batch, project, "copy", received_at) {
            if total == rows {
                break;
            }
            csv_row(&mut chunk, &envelope);
            total += 1;
            in_chunk += 1;
            if in_chunk == rows_per_copy {
                chunks.push(std::mem::take(&mut chunk));
                in_chunk = 0;
            }
        }
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }

    let mut connection = pool.acquire().await?;
    let started = Instant::now();
    for chunk in &chunks {
        use sqlx::Connection;
        let mut tx = connection.begin().await?;
        let mut copy = tx
            .copy_in_raw(
                "COPY events (project, datasource, event_id, user_id, event_type, event_date,
                              parameters, received_at) FROM STDIN (FORMAT csv)",
            )
            .await?;
        copy.send(chunk.as_slice()).await?;
        copy.finish().await?;
        tx.commit().await?;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(CopyReport {
        table: "events".into(),
        rows: total,
        rows_per_copy,
        duration_s: secs,
        rows_per_sec: total as f64 / secs,
    })
}

/// One `events` row in CSV, every field quoted.
fn csv_row(out: &mut Vec<u8>, envelope: &Envelope) {
    let Operation::AppendEvent {
        event_id,
        event_type,
        event_date,
        parameters,
    } = &envelope.op
    else {
        return;
    };
    let fields = [
        envelope.project.clone(),
        envelope.datasource.clone(),
        event_id.clone(),
        envelope.user_id.clone(),
        event_type.clone(),
        event_date.to_rfc3339(),
        serde_json::to_string(parameters).expect("JSON map serializes"),
        envelope.received_at.to_rfc3339(),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Kind;

    #[test]
    fn csv_rows_quote_json() {
        let workload = Workload::new(Kind::Events, 2, 300, 0.0, 10);
        let batch = workload.batch(0, &mut rand::rng());
        let envelopes = workload.envelopes(&batch, "p", "d", Utc::now());
        let mut out = Vec::new();
        csv_row(&mut out, &envelopes[0]);
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with("\"p\",\"d\","), "{line}");
        assert!(
            line.contains("\"\"path\"\":\"\"/catalog/item/0\"\""),
            "{line}"
        );
        assert!(line.ends_with("\"\n"));
    }
}
