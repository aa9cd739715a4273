//! Publishing to Kafka. A batch counts as accepted only when the broker acknowledged
//! every one of its messages with all in-sync replicas (`acks=all`, idempotent producer).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingest_types::{Envelope, Topics};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use tokio::sync::Notify;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka refused to enqueue a message: {0}")]
    Enqueue(#[source] KafkaError),
    #[error("kafka did not acknowledge a message: {0}")]
    Delivery(#[source] KafkaError),
    #[error("no acknowledgement within {0:?}")]
    TimedOut(Duration),
}

/// The producer settings of the gateway, in one place: the publisher uses them, and so
/// does the load generator's bare-producer ceiling, so both measure the same thing.
pub fn producer_config(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka_brokers)
        // Acknowledged only once every in-sync replica has the message; on a replicated
        // topic with `min.insync.replicas=2` a partition with fewer replicas in sync
        // refuses it (NOT_ENOUGH_REPLICAS) rather than acknowledging it.
        .set("acks", "all")
        // Retries (of errors Kafka marks retriable: leader changes, NOT_ENOUGH_REPLICAS,
        // request timeouts) then never write a message twice or out of order.
        .set("enable.idempotence", "true")
        // librdkafka retries retriable errors until this time has passed since the
        // message was handed to it, then fails the message; the request-level timeout
        // of `Publisher` is a little longer so it sees that failure (503, never 202).
        .set(
            "message.timeout.ms",
            config.publish_timeout.as_millis().to_string(),
        )
        .set("linger.ms", config.linger_ms.to_string())
        .set("compression.type", &config.compression)
        // Bounded buffering: when the broker cannot keep up, sends fail fast with
        // QueueFull (503) instead of the process growing without bound.
        .set(
            "queue.buffering.max.kbytes",
            config.queue_max_kbytes.to_string(),
        );
    client
}

/// The acknowledgements one `publish_all` waits for. Every message of the batch carries
/// it (the delivery opaque); librdkafka's delivery report for a message, on the
/// producer's polling thread, counts it down, and the last one wakes the request. One
/// shared counter per batch instead of a channel and a future per message.
struct Batch {
    pending: AtomicUsize,
    /// The first message that was not acknowledged, if any.
    failed: Mutex<Option<KafkaError>>,
    done: Notify,
}

impl Batch {
    fn new(messages: usize) -> Self {
        Self {
            pending: AtomicUsize::new(messages),
            failed: Mutex::new(None),
            done: Notify::new(),
        }
    }

    fn settle(&self, outcome: Result<(), KafkaError>) {
        if let Err(err) = outcome {
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            failed.get_or_insert(err);
        }
        // AcqRel: the waiter that sees zero also sees every failure recorded before.
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Stores a permit when the waiter is not parked yet: no lost wake-up.
            self.done.notify_one();
        }
    }

    async fn all_settled(&self) {
        while self.pending.load(Ordering::Acquire) != 0 {
            self.done.notified().await;
        }
    }
}

/// Routes each delivery report to its batch.
struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<Batch>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<Batch>) {
        batch.settle(result.as_ref().map(|_| ()).map_err(|(err, _)| err.clone()));
    }
}

#[derive(Clone)]
pub struct Publisher {
    producer: Arc<ThreadedProducer<DeliveryContext>>,
    topics: Topics,
    timeout: Duration,
}

impl Publisher {
    pub fn new(config: &Config) -> Result<Self, KafkaError> {
        let producer: ThreadedProducer<DeliveryContext> =
            producer_config(config).create_with_context(DeliveryContext)?;
        Ok(Self {
            producer: Arc::new(producer),
            topics: config.topics.clone(),
            timeout: config.publish_timeout + Duration::from_millis(500),
        })
    }

    /// Publishes every envelope and waits for all acknowledgements. `Ok` means the
    /// broker has every one of them; any error means the caller must not report
    /// the batch as accepted (some messages may still land: retries are idempotent).
    pub async fn publish_all(&self, envelopes: &[Envelope]) -> Result<(), PublishError> {
        let batch = Arc::new(Batch::new(envelopes.len()));
        for envelope in envelopes {
            let key = envelope.key();
            let payload = envelope.encode();
            let record =
                BaseRecord::with_opaque_to(self.topics.for_operation(&envelope.op), batch.clone())
                    .key(&key)
                    .payload(&payload);
            // On a refusal the messages already handed over still report to `batch`;
            // nobody waits for them any more.
            self.producer
                .send(record)
                .map_err(|(err, _)| PublishError::Enqueue(err))?;
        }
        tokio::time::timeout(self.timeout, batch.all_settled())
            .await
            .map_err(|_| PublishError::TimedOut(self.timeout))?;
        let failed = batch
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match failed {
            Some(err) => Err(PublishError::Delivery(err)),
            None => Ok(()),
        }
    }

    /// Messages handed to the producer and not yet acknowledged or failed.
    pub fn queue_depth(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Whether the broker answers a metadata request in time and the producer has not
    /// met a fatal error (readiness). The idempotent producer raises a fatal error only
    /// when it can no longer keep its no-duplicates, in-order promise (not for leader
    /// changes or missing replicas, which it retries); it cannot publish again, so the
    /// instance reports itself not ready and is replaced.
    pub async fn broker_reachable(&self) -> bool {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::error!(?code, %reason, "the Kafka producer met a fatal error; not ready");
            return false;
        }
        let producer = Arc::clone(&self.producer);
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Timeout::After(Duration::from_secs(2)))
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Waits (bounded) for messages still in the producer's queue; called on shutdown.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }
}
