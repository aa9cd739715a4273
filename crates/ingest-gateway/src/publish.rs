//! Publishing to Kafka. A batch counts as accepted only when the broker acknowledged
//! every one of its messages with all in-sync replicas (`acks=all`, idempotent producer).

use std::time::Duration;

use futures::future::join_all;
use ingest_types::{Envelope, Topics};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka refused to enqueue a message: {0}")]
    Enqueue(#[source] KafkaError),
    #[error("kafka did not acknowledge a message: {0}")]
    Delivery(#[source] KafkaError),
    #[error("the delivery was cancelled (producer shutting down)")]
    Cancelled,
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

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topics: Topics,
    timeout: Duration,
}

impl Publisher {
    pub fn new(config: &Config) -> Result<Self, KafkaError> {
        let producer: FutureProducer = producer_config(config).create()?;
        Ok(Self {
            producer,
            topics: config.topics.clone(),
            timeout: config.publish_timeout + Duration::from_millis(500),
        })
    }

    /// Publishes every envelope and waits for all acknowledgements. `Ok` means the
    /// broker has every one of them; any error means the caller must not report
    /// the batch as accepted (some messages may still land: retries are idempotent).
    pub async fn publish_all(&self, envelopes: &[Envelope]) -> Result<(), PublishError> {
        let mut deliveries = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let key = envelope.key();
            let payload = envelope.encode();
            let record = FutureRecord::to(self.topics.for_operation(&envelope.op))
                .key(&key)
                .payload(&payload);
            let delivery = self
                .producer
                .send_result(record)
                .map_err(|(err, _)| PublishError::Enqueue(err))?;
            deliveries.push(delivery);
        }
        let outcomes = tokio::time::timeout(self.timeout, join_all(deliveries))
            .await
            .map_err(|_| PublishError::TimedOut(self.timeout))?;
        for outcome in outcomes {
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err((err, _))) => return Err(PublishError::Delivery(err)),
                Err(_cancelled) => return Err(PublishError::Cancelled),
            }
        }
        Ok(())
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
        let producer = self.producer.clone();
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
