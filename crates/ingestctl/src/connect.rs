//! The connections every subject shares: the PostgreSQL pool, and the Kafka clients of
//! the dead-letter and replay commands with what they read of a topic's layout.
//!
//! Every Kafka consumer made here assigns partitions explicitly: none ever joins a
//! consumer group (so none takes partitions away from a running worker), and none
//! commits except on purpose (`enable.auto.commit=false`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use ingest_types::Topics;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureProducer;
use rdkafka::Offset;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// Timeout of one request to the cluster (metadata, watermarks, offsets).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection to `database_url`: every command runs its statements one after another.
pub async fn pool(database_url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await
        .context("connecting to the database (is DATABASE_URL right, and is PostgreSQL up?)")
}

/// Where the cluster is and which topics are ours; clients are made per command.
pub struct Kafka {
    brokers: String,
    pub topics: Topics,
}

impl Kafka {
    pub fn new(brokers: &str, prefix: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            topics: Topics::with_prefix(prefix),
        }
    }

    /// A consumer that only ever assigns partitions (it never joins `group`; the group
    /// id is needed to read and commit that group's offsets).
    pub fn consumer(&self, group: &str) -> anyhow::Result<BaseConsumer> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create()
            .context("creating the kafka consumer")
    }

    /// An idempotent producer that waits for every in-sync replica.
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .create()
            .context("creating the kafka producer")
    }

    /// The topic's partition ids, sorted.
    fn partitions(&self, consumer: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .with_context(|| {
                format!(
                    "reading metadata of topic {topic} from kafka at {} (is KAFKA_BROKERS right, and is kafka up?)",
                    self.brokers
                )
            })?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            bail!("topic {topic} does not exist (is --topic-prefix right?)");
        };
        if let Some(err) = t.error() {
            let code = RDKafkaErrorCode::from(err);
            if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                bail!("topic {topic} does not exist (is --topic-prefix right?)");
            }
            bail!("reading metadata of topic {topic}: {code}");
        }
        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        if ids.is_empty() {
            bail!("topic {topic} does not exist (is --topic-prefix right?)");
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Low and high watermark of every partition of `topic`.
    pub fn watermarks(
        &self,
        consumer: &BaseConsumer,
        topic: &str,
    ) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
        self.partitions(consumer, topic)?
            .into_iter()
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                    .map(|w| (p, w))
                    .with_context(|| format!("reading the offsets of {topic} partition {p}"))
            })
            .collect()
    }
}

/// A concrete offset; `None` for the logical ones (beginning, end, invalid, ...).
pub fn offset_of(offset: Offset) -> Option<i64> {
    match offset {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}
