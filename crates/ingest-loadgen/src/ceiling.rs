//! What the machine allows, measured the same way as the pipeline:
//!
//! - the **producer ceiling**: a bare rdkafka producer with exactly the gateway's producer
//!   settings ([`ingest_gateway::publish::producer_config`]) publishing the envelope bytes
//!   the gateway would publish for the same items, in batches awaited like requests;
//! - the **COPY ceiling**: the same event rows written into the same `events` table with
//!   PostgreSQL's `COPY`, over one connection like one worker;
//! - the **contacts ceiling**: the same contact writes upserted into the same `contacts`
//!   table with the best set-based statements found, with the worker's semantics
//!   (attributes merged, `null` removes, versions advanced, deletes leave tombstones),
//!   over one connection, in chunks like the worker's batches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use futures::future::join_all;
use ingest_types::Envelope;
use ingest_worker::persist::{Batch, ContactWrite, COPY_EVENTS, DELETE_CONTACTS, MERGE_CONTACTS};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::workload::{Kind, Workload};

/// `(key, payload)` of each message of one request's worth of envelopes.
type EncodedBatch = Vec<(String, Vec<u8>)>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProducerReport {
    pub topic: String,
    pub partitions: i32,
    /// Replicas per partition of the scratch topic: those of the events topic.
    #[serde(default)]
    pub replication_factor: i32,
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
/// and replication factor as the events topic (its `min.insync.replicas` is the broker's
/// default, as the events topic's is when created by `scripts/stack.sh`), `concurrency`
/// batches in flight, each awaited whole like a request.
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
    let events = metadata.topics().first();
    let partitions = events.map_or(0, |t| t.partitions().len() as i32);
    let replication_factor = events
        .and_then(|t| t.partitions().first())
        .map_or(1, |p| p.replicas().len().max(1) as i32);
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
                TopicReplication::Fixed(replication_factor),
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
        replication_factor,
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

/// Writes `rows` event rows with the worker's own `COPY` statement and CSV encoding
/// ([`ingest_worker::persist::COPY_EVENTS`]), `rows_per_copy` per transaction, into
/// `events` under `project`/`datasource`. The CSV is built before the clock starts. With
/// `rollback`, every transaction is rolled back instead of committed: the rows go through
/// the same heap and indexes (a table's size is measured as it is) and leave nothing.
pub async fn copy(
    pool: &PgPool,
    workload: &Workload,
    (project, datasource): (&str, &str),
    rows: u64,
    rows_per_copy: usize,
    rollback: bool,
) -> anyhow::Result<CopyReport> {
    anyhow::ensure!(
        workload.kind == Kind::Events,
        "the COPY ceiling writes events: use --kind events"
    );
    let chunks = copy_chunks(workload, (project, datasource), rows, rows_per_copy);
    let mut connection = pool.acquire().await?;
    let started = Instant::now();
    for chunk in &chunks {
        use sqlx::Connection;
        let mut tx = connection.begin().await?;
        let mut copy = tx.copy_in_raw(COPY_EVENTS).await?;
        copy.send(chunk.as_slice()).await?;
        copy.finish().await?;
        if rollback {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(CopyReport {
        table: "events".into(),
        rows,
        rows_per_copy,
        duration_s: secs,
        rows_per_sec: rows as f64 / secs,
    })
}

/// The first `rows` envelopes of the workload's batches, as the gateway would publish them
/// (valid items only) under `project`/`datasource`.
pub(crate) fn generated_envelopes(
    workload: &Workload,
    project: &str,
    datasource: &str,
    rows: u64,
) -> Vec<Envelope> {
    let received_at = Utc::now();
    let mut rng = rand::rng();
    let mut envelopes: Vec<Envelope> = Vec::with_capacity(rows as usize);
    let mut seq = 0;
    while (envelopes.len() as u64) < rows {
        let batch = workload.batch(seq, &mut rng);
        seq += 1;
        envelopes.extend(workload.envelopes(&batch, project, datasource, received_at));
    }
    envelopes.truncate(rows as usize);
    envelopes
}

/// `rows` event rows as COPY input, `rows_per_copy` to a chunk.
fn copy_chunks(
    workload: &Workload,
    (project, datasource): (&str, &str),
    rows: u64,
    rows_per_copy: usize,
) -> Vec<Vec<u8>> {
    generated_envelopes(workload, project, datasource, rows)
        .chunks(rows_per_copy.max(1))
        .map(|chunk| {
            let batch = Batch::from_envelopes(chunk.iter().enumerate().map(|(i, e)| (i as i64, e)));
            batch.events_csv().to_vec()
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactsReport {
    pub table: String,
    /// Contact writes (messages) generated; each chunk is folded per user first, as the
    /// worker folds a batch.
    pub writes: u64,
    pub writes_per_chunk: usize,
    /// Rows the statements were given after the fold (one per user and chunk).
    pub folded_rows: u64,
    /// Every method tried, fastest first; the first is the ceiling.
    pub methods: Vec<ContactsMethodReport>,
    /// Writes per second of the fastest method.
    pub writes_per_sec: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactsMethodReport {
    pub method: String,
    pub duration_s: f64,
    pub writes_per_sec: f64,
}

/// How a chunk of folded contact writes is upserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ContactsMethod {
    /// One `MERGE ... USING UNNEST(<column arrays>)` per chunk (the worker's statement).
    Unnest,
    /// `COPY` into a temporary table, then one `MERGE ... USING` it per chunk.
    CopyMerge,
    /// `Unnest` planned with nested loops only (index probes, no hash of `contacts`).
    UnnestNestloop,
    /// `CopyMerge` planned with nested loops only.
    CopyMergeNestloop,
}

impl ContactsMethod {
    fn name(self) -> &'static str {
        match self {
            ContactsMethod::Unnest => "merge-unnest",
            ContactsMethod::CopyMerge => "copy-merge",
            ContactsMethod::UnnestNestloop => "merge-unnest-nestloop",
            ContactsMethod::CopyMergeNestloop => "copy-merge-nestloop",
        }
    }

    fn nested_loops_only(self) -> bool {
        matches!(
            self,
            ContactsMethod::UnnestNestloop | ContactsMethod::CopyMergeNestloop
        )
    }
}

/// One chunk's folded writes as column arrays (and as CSV for the temporary table).
#[derive(Debug, Default)]
struct ContactChunk {
    deletes: (Vec<String>, Vec<String>, Vec<String>, Vec<i64>),
    project: Vec<String>,
    datasource: Vec<String>,
    user_id: Vec<String>,
    version: Vec<i64>,
    patch: Vec<String>,
    replace: Vec<bool>,
    csv: Vec<u8>,
}

/// `rows` contact writes (`Workload::batch` + `Workload::envelopes`, kind contacts), cut
/// into chunks of `per_chunk`, each folded per user as the worker folds a batch. The
/// versions are the writes' positions, as offsets are in the worker.
fn contact_chunks(
    workload: &Workload,
    project: &str,
    rows: u64,
    per_chunk: usize,
) -> Vec<ContactChunk> {
    let per_chunk = per_chunk.max(1);
    generated_envelopes(workload, project, "contacts", rows)
        .chunks(per_chunk)
        .enumerate()
        .map(|(n, chunk)| {
            let first = (n * per_chunk) as i64;
            let batch =
                Batch::from_envelopes(chunk.iter().enumerate().map(|(i, e)| (first + i as i64, e)));
            let mut out = ContactChunk::default();
            for ((p, d, u), write, version) in batch.contact_rows() {
                let (attributes, replace) = match write {
                    ContactWrite::Delete => {
                        out.deletes.0.push(p.to_owned());
                        out.deletes.1.push(d.to_owned());
                        out.deletes.2.push(u.to_owned());
                        out.deletes.3.push(version);
                        continue;
                    }
                    ContactWrite::Merge(a) => (a, false),
                    ContactWrite::Replace(a) => (a, true),
                };
                let patch = serde_json::to_string(&*attributes).expect("a JSON map");
                for (i, field) in [p, d, u, &version.to_string(), &patch, &replace.to_string()]
                    .into_iter()
                    .enumerate()
                {
                    if i > 0 {
                        out.csv.push(b',');
                    }
                    out.csv.push(b'"');
                    out.csv
                        .extend_from_slice(field.replace('"', "\"\"").as_bytes());
                    out.csv.push(b'"');
                }
                out.csv.push(b'\n');
                out.project.push(p.to_owned());
                out.datasource.push(d.to_owned());
                out.user_id.push(u.to_owned());
                out.version.push(version);
                out.patch.push(patch);
                out.replace.push(replace);
            }
            out
        })
        .collect()
}

/// The temporary table of [`ContactsMethod::CopyMerge`], and its merge: the worker's
/// statement with the table in place of the column arrays.
const CONTACT_PATCHES: &str = "CREATE TEMPORARY TABLE IF NOT EXISTS contact_patches (
        project text, datasource text, user_id text, version bigint, patch jsonb,
        replace boolean) ON COMMIT DELETE ROWS";
const MERGE_CONTACT_PATCHES: &str = "MERGE INTO contacts c
     USING (SELECT m.*, t.version AS tombstone
              FROM contact_patches m
              LEFT JOIN contact_tombstones t
                ON t.project = m.project AND t.datasource = m.datasource
               AND t.user_id = m.user_id) m
        ON c.project = m.project AND c.datasource = m.datasource
       AND c.user_id = m.user_id
     WHEN MATCHED AND c.version < m.version THEN UPDATE
          SET attributes = CASE WHEN m.replace THEN jsonb_strip_nulls(m.patch)
                                ELSE jsonb_strip_nulls(c.attributes || m.patch) END,
              version = m.version, updated_at = now(),
              created_at = CASE WHEN m.replace THEN now() ELSE c.created_at END
     WHEN NOT MATCHED AND (m.tombstone IS NULL OR m.tombstone < m.version) THEN
          INSERT (project, datasource, user_id, attributes, version)
          VALUES (m.project, m.datasource, m.user_id, jsonb_strip_nulls(m.patch), m.version)";

/// Deletes what a contacts ceiling wrote under `project` (rows and tombstones).
pub async fn contacts_cleanup(pool: &PgPool, project: &str) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM contacts WHERE project = $1")
        .bind(project)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM contact_tombstones WHERE project = $1")
        .bind(project)
        .execute(pool)
        .await?;
    sqlx::query("VACUUM contacts, contact_tombstones")
        .execute(pool)
        .await?;
    Ok(())
}

/// Upserts `rows` contact writes into `contacts` under `project` with each of `methods`
/// in turn (the table emptied of the project's rows before each), one transaction per
/// chunk of `per_chunk` writes, over one connection. The chunks are built and folded
/// before the clock starts.
pub async fn contacts(
    pool: &PgPool,
    workload: &Workload,
    project: &str,
    rows: u64,
    per_chunk: usize,
    methods: &[ContactsMethod],
) -> anyhow::Result<ContactsReport> {
    use sqlx::Connection;
    anyhow::ensure!(
        workload.kind == Kind::Contacts,
        "the contacts ceiling writes contacts: use --kind contacts"
    );
    let chunks = contact_chunks(workload, project, rows, per_chunk);
    let folded_rows = chunks
        .iter()
        .map(|c| (c.project.len() + c.deletes.0.len()) as u64)
        .sum();
    let mut results = Vec::new();
    for &method in methods {
        contacts_cleanup(pool, project).await?;
        let mut connection = pool.acquire().await?;
        sqlx::query(CONTACT_PATCHES)
            .execute(&mut *connection)
            .await?;
        let planner = if method.nested_loops_only() {
            "SET enable_hashjoin = off; SET enable_mergejoin = off"
        } else {
            "RESET enable_hashjoin; RESET enable_mergejoin"
        };
        sqlx::Executor::execute(&mut *connection, planner).await?;
        eprintln!("contacts ceiling: {} ...", method.name());
        let started = Instant::now();
        for chunk in &chunks {
            let mut tx = connection.begin().await?;
            if !chunk.deletes.0.is_empty() {
                sqlx::query(DELETE_CONTACTS)
                    .bind(&chunk.deletes.0)
                    .bind(&chunk.deletes.1)
                    .bind(&chunk.deletes.2)
                    .bind(&chunk.deletes.3)
                    .execute(&mut *tx)
                    .await?;
            }
            if !chunk.project.is_empty() {
                match method {
                    ContactsMethod::Unnest | ContactsMethod::UnnestNestloop => {
                        sqlx::query(MERGE_CONTACTS)
                            .bind(&chunk.project)
                            .bind(&chunk.datasource)
                            .bind(&chunk.user_id)
                            .bind(&chunk.version)
                            .bind(&chunk.patch)
                            .bind(&chunk.replace)
                            .execute(&mut *tx)
                            .await?;
                    }
                    ContactsMethod::CopyMerge | ContactsMethod::CopyMergeNestloop => {
                        let mut copy = tx
                            .copy_in_raw("COPY contact_patches FROM STDIN (FORMAT csv)")
                            .await?;
                        copy.send(chunk.csv.as_slice()).await?;
                        copy.finish().await?;
                        sqlx::query(MERGE_CONTACT_PATCHES).execute(&mut *tx).await?;
                    }
                }
            }
            tx.commit().await?;
        }
        let secs = started.elapsed().as_secs_f64();
        sqlx::Executor::execute(
            &mut *connection,
            "RESET enable_hashjoin; RESET enable_mergejoin",
        )
        .await?;
        eprintln!(
            "contacts ceiling: {}: {:.0} writes/s",
            method.name(),
            rows as f64 / secs
        );
        results.push(ContactsMethodReport {
            method: method.name().to_owned(),
            duration_s: secs,
            writes_per_sec: rows as f64 / secs,
        });
    }
    results.sort_by(|a, b| b.writes_per_sec.total_cmp(&a.writes_per_sec));
    Ok(ContactsReport {
        table: "contacts".into(),
        writes: rows,
        writes_per_chunk: per_chunk,
        folded_rows,
        writes_per_sec: results.first().map_or(0.0, |r| r.writes_per_sec),
        methods: results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_chunks_hold_the_rows_in_the_workers_encoding() {
        let workload = Workload::new(Kind::Events, 100, 300, 0.0, 10)
            .with_shape(crate::workload::Shape::Reference);
        let chunks = copy_chunks(&workload, ("p", "copy"), 250, 100);
        let lines: Vec<usize> = chunks
            .iter()
            .map(|c| c.iter().filter(|&&b| b == b'\n').count())
            .collect();
        assert_eq!(lines, vec![100, 100, 50]);
        let first = String::from_utf8(chunks[0].clone()).unwrap();
        assert!(first.starts_with("\"p\",\"copy\","), "{first}");
        assert!(
            first.contains("\"\"path\"\":\"\"/catalog/item/0\"\""),
            "{first}"
        );
    }

    #[test]
    fn contact_chunks_are_folded_per_user() {
        // The reference shape: every write is of one of the 50 pool users (realistic
        // contacts add new users on top of the pool).
        let workload = Workload::new(Kind::Contacts, 100, 300, 0.0, 50)
            .with_shape(crate::workload::Shape::Reference);
        let chunks = contact_chunks(&workload, "p", 250, 100);
        assert_eq!(chunks.len(), 3);
        for chunk in &chunks {
            // 100 writes over 50 users: at most one row per user.
            assert!(chunk.user_id.len() <= 50, "{}", chunk.user_id.len());
            let distinct: std::collections::BTreeSet<_> = chunk.user_id.iter().collect();
            assert_eq!(distinct.len(), chunk.user_id.len());
            assert_eq!(
                chunk.csv.iter().filter(|&&b| b == b'\n').count(),
                chunk.user_id.len()
            );
        }
        assert!(chunks[2].version.iter().all(|v| (200..250).contains(v)));
        assert!(
            chunks[0].patch[0].contains("\"_email\""),
            "{}",
            chunks[0].patch[0]
        );
    }
}
