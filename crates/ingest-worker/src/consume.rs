//! The consume loop: read a batch (bounded by count and time), persist it in one
//! transaction (each message's offset is its write's version), dead-letter what can
//! never be persisted, and only then commit the batch's offsets. A crash anywhere before
//! the commit means redelivery, and the effects are idempotent, so nothing is lost or
//! doubled.
//!
//! Several writers share the partitions a worker owns (partition number modulo the
//! number of writers): each read batch is split between them, and each writes and
//! commits its part on its own, one part after another, so every partition's (and so
//! every user's) order holds. A writer is what one more worker process would be, minus
//! the process: one transaction's statements run one after another on one PostgreSQL
//! backend, and more writers keep more of the machine busy (BENCHMARKS.md).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ingest_types::{Envelope, Operation};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::DeadLetters;
use crate::metrics::{
    BATCH_SIZE_MESSAGES, COMMIT_FAILURES_TOTAL, DB_RETRIES_TOTAL, DB_WRITE_DURATION_SECONDS,
    END_TO_END_LATENCY_SECONDS, ERASED_EVENTS_TOTAL, ERASURES_TOTAL, ERASURE_DURATION_SECONDS,
    MESSAGES_TOTAL,
};
use crate::persist::{self, is_permanent, Batch};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct ConsumeLoop {
    pub consumer: Arc<StreamConsumer>,
    pub pool: PgPool,
    pub dead_letters: DeadLetters,
    pub batch_max_messages: usize,
    pub batch_max_wait: Duration,
    /// Writers sharing the partitions.
    pub writers: std::num::NonZeroUsize,
}

/// The batch was given up because shutdown began; its offsets stay uncommitted.
struct Abandoned;

/// A batch read and decoded, ready to persist.
struct Prepared {
    messages: Vec<OwnedMessage>,
    /// `(index in messages, envelope)` of the messages that decoded.
    decoded: Vec<(usize, Envelope)>,
    /// `(index in messages, reason)` of those that did not.
    undecodable: Vec<(usize, String)>,
    batch: Batch,
}

impl Prepared {
    fn new(messages: Vec<OwnedMessage>) -> Self {
        let mut decoded = Vec::with_capacity(messages.len());
        let mut undecodable = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            match Envelope::decode(message.payload().unwrap_or_default()) {
                Ok(envelope) => decoded.push((i, envelope)),
                Err(err) => undecodable.push((i, err.to_string())),
            }
        }
        let batch = Batch::from_envelopes(decoded.iter().map(|(i, e)| (messages[*i].offset(), e)))
            .locking_partitions(decoded.iter().map(|(i, _)| partition_of(&messages[*i])));
        Self {
            messages,
            decoded,
            undecodable,
            batch,
        }
    }
}

/// A message's partition, for [`Batch::locking_partitions`].
fn partition_of(message: &OwnedMessage) -> (&str, i32) {
    (message.topic(), message.partition())
}

/// The writer of a partition's messages: always the same one, so their order holds.
fn writer_of(partition: i32, writers: usize) -> usize {
    partition.unsigned_abs() as usize % writers
}

impl ConsumeLoop {
    /// Stages, so that reading and decoding the next batch overlaps with writing the
    /// current one: this task fills batches, splits each between the writers and hands
    /// every writer its part, in order; each writer task persists and commits its parts
    /// one at a time. A hand-over holds one part, so at most three parts of a writer are
    /// uncommitted at any time (all are redelivered after a crash, and redelivery is
    /// harmless).
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let writers = this.writers.get();
        let (mut hand_overs, mut tasks) = (Vec::new(), Vec::new());
        for _ in 0..writers {
            let (ready, parts) = tokio::sync::mpsc::channel::<Prepared>(1);
            hand_overs.push(ready);
            tasks.push(tokio::spawn(this.clone().write(parts, shutdown.clone())));
        }
        'read: while let Some(messages) = this.next_batch(&shutdown).await {
            let mut parts: Vec<Vec<OwnedMessage>> = (0..writers).map(|_| Vec::new()).collect();
            for message in messages {
                parts[writer_of(message.partition(), writers)].push(message);
            }
            for (hand_over, part) in hand_overs.iter().zip(parts) {
                if !part.is_empty() && hand_over.send(Prepared::new(part)).await.is_err() {
                    break 'read; // the writer stopped: shutdown
                }
            }
        }
        drop(hand_overs);
        for task in tasks {
            let _ = task.await;
        }
        tracing::info!("consume loop stopped");
    }

    /// One writer: persists and commits the parts handed to it, in order.
    async fn write(
        self: Arc<Self>,
        mut parts: tokio::sync::mpsc::Receiver<Prepared>,
        shutdown: CancellationToken,
    ) {
        while let Some(prepared) = parts.recv().await {
            if shutdown.is_cancelled() {
                // Not started: left uncommitted, redelivered to whoever owns it next.
                break;
            }
            if self.handle(&prepared, &shutdown).await.is_err() {
                tracing::info!(
                    messages = prepared.messages.len(),
                    "shutdown: in-flight batch abandoned, it will be redelivered"
                );
                break;
            }
            self.commit(&prepared.messages);
        }
    }

    /// Waits for a first message, then fills the batch until it is full or the wait is over.
    /// `None` when shutdown began.
    async fn next_batch(&self, shutdown: &CancellationToken) -> Option<Vec<OwnedMessage>> {
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                received = self.consumer.recv() => match received {
                    Ok(message) => { batch.push(message.detach()); break; }
                    Err(err) => {
                        tracing::warn!(error = %err, "kafka consume error");
                        tokio::time::sleep(BACKOFF_START).await;
                    }
                },
            }
        }
        let deadline = tokio::time::Instant::now() + self.batch_max_wait;
        while batch.len() < self.batch_max_messages {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message.detach()),
                Ok(Err(err)) => tracing::warn!(error = %err, "kafka consume error"),
                Err(_elapsed) => break,
            }
        }
        Some(batch)
    }

    async fn handle(
        &self,
        prepared: &Prepared,
        shutdown: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let messages = &prepared.messages;
        for (i, reason) in &prepared.undecodable {
            self.dead_letter(&messages[*i], reason, shutdown).await?;
        }
        let decoded = &prepared.decoded;
        if decoded.is_empty() {
            return Ok(());
        }
        metrics::histogram!(BATCH_SIZE_MESSAGES).record(decoded.len() as f64);
        // Erasures are recorded before the batch (so it drops what they erase) and
        // completed after it (see crate::persist::erasure).
        let erasures: Vec<&Envelope> = decoded
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e.op == Operation::EraseUser)
            .collect();
        let started = Instant::now();
        for erasure in &erasures {
            self.retrying("recording an erasure", shutdown, || {
                persist::erasure::record(&self.pool, erasure)
            })
            .await?;
        }
        self.persist_batch(prepared, shutdown).await?;
        for erasure in &erasures {
            let deleted = self
                .retrying("completing an erasure", shutdown, || {
                    persist::erasure::complete(&self.pool, erasure)
                })
                .await?;
            metrics::counter!(ERASURES_TOTAL).increment(1);
            metrics::counter!(ERASED_EVENTS_TOTAL).increment(deleted);
            metrics::histogram!(ERASURE_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
            tracing::info!(
                project = %erasure.project,
                datasource = %erasure.datasource,
                request_id = %erasure.request_id,
                erased_through = %erasure.received_at,
                events_deleted = deleted,
                "user erased"
            );
        }
        Ok(())
    }

    /// Persists the batch; when that fails for good, isolates and dead-letters the
    /// messages that can never be written.
    async fn persist_batch(
        &self,
        prepared: &Prepared,
        shutdown: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let (messages, decoded) = (&prepared.messages, &prepared.decoded);
        match self.persist_retrying(&prepared.batch, shutdown).await? {
            Ok(()) => self.record_persisted(decoded.iter().map(|(i, e)| (&messages[*i], e))),
            Err(err) => {
                // Something in the batch can never be written: find it by writing each
                // message alone, in order (so per-user order holds), and dead-letter it.
                tracing::warn!(error = %err, "batch hit a permanent database error; isolating the bad messages");
                for (i, envelope) in decoded {
                    let message = &messages[*i];
                    let single = Batch::from_envelopes([(message.offset(), envelope)])
                        .locking_partitions([partition_of(message)]);
                    match self.persist_retrying(&single, shutdown).await? {
                        Ok(()) => self.record_persisted([(message, envelope)]),
                        Err(err) => {
                            self.dead_letter(
                                message,
                                &format!("database rejected the item: {err}"),
                                shutdown,
                            )
                            .await?
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs an erasure step until it succeeds or shutdown begins. Its statements cannot
    /// fail for good on valid input (ids and a time, all validated by the gateway), so
    /// every failure is retried, with capped exponential backoff.
    async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        shutdown: &CancellationToken,
        mut step: F,
    ) -> Result<T, Abandoned>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let mut backoff = BACKOFF_START;
        loop {
            match step().await {
                Ok(value) => return Ok(value),
                Err(err) => {
                    metrics::counter!(DB_RETRIES_TOTAL).increment(1);
                    tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "{what} failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(Abandoned),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Persists, retrying transient failures with capped exponential backoff until they
    /// pass or shutdown begins. The inner `Err` is a permanent failure.
    async fn persist_retrying(
        &self,
        batch: &Batch,
        shutdown: &CancellationToken,
    ) -> Result<Result<(), sqlx::Error>, Abandoned> {
        let mut backoff = BACKOFF_START;
        loop {
            let started = Instant::now();
            match batch.persist(&self.pool).await {
                Ok(()) => {
                    metrics::histogram!(DB_WRITE_DURATION_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    return Ok(Ok(()));
                }
                Err(err) if is_permanent(&err) => return Ok(Err(err)),
                Err(err) => {
                    metrics::counter!(DB_RETRIES_TOTAL).increment(1);
                    tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "database write failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(Abandoned),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        reason: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let mut backoff = BACKOFF_START;
        loop {
            match self.dead_letters.send(message, reason).await {
                Ok(()) => {
                    tracing::warn!(
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        reason,
                        "message dead-lettered"
                    );
                    metrics::counter!(MESSAGES_TOTAL, "topic" => message.topic().to_owned(), "outcome" => "dead_lettered").increment(1);
                    return Ok(());
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot publish to the dead-letter topic; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(Abandoned),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn record_persisted<'a>(
        &self,
        persisted: impl IntoIterator<Item = (&'a OwnedMessage, &'a Envelope)>,
    ) {
        let now = Utc::now();
        for (message, envelope) in persisted {
            metrics::counter!(MESSAGES_TOTAL, "topic" => message.topic().to_owned(), "outcome" => "persisted").increment(1);
            let latency = (now - envelope.received_at)
                .num_microseconds()
                .unwrap_or(0)
                .max(0);
            metrics::histogram!(END_TO_END_LATENCY_SECONDS).record(latency as f64 / 1e6);
        }
    }

    /// Commits, per partition, the offset after the highest message of the batch.
    fn commit(&self, messages: &[OwnedMessage]) {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for m in messages {
            let entry = next.entry((m.topic(), m.partition())).or_insert(0);
            *entry = (*entry).max(m.offset() + 1);
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(err) = list.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::error!(error = %err, "cannot build the offset list");
                return;
            }
        }
        // A failed commit (for example during a rebalance) means these messages will be
        // delivered again; the writes are idempotent, so that is safe.
        if let Err(err) = self.consumer.commit(&list, CommitMode::Sync) {
            metrics::counter!(COMMIT_FAILURES_TOTAL).increment(1);
            tracing::warn!(error = %err, "offset commit failed; the batch will be redelivered");
        }
    }
}
