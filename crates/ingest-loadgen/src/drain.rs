//! The worker draining a backlog: how fast one worker turns the messages already in the
//! topic into rows. Progress is read from the worker's own metrics (cheap), the end
//! result from the database (exact).
//!
//! On the contacts topic a message is a contact write (upsert, delete or erasure) and
//! many are folded into one row per user, so the rates are contact writes per second
//! (messages persisted) and the database count is the distinct users the writes left
//! behind: contacts stored plus users left only as a tombstone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::procwatch::{self, CpuReport};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrainReport {
    pub topic: String,
    /// Messages in the topic when the drain began (sum of high watermarks).
    pub backlog: u64,
    /// From the start of the drain (worker start-up and group join included).
    pub total_s: f64,
    /// Between 10% and 90% of the backlog persisted: the steady rate.
    pub steady_rows_per_sec: f64,
    pub rows_per_sec_overall: f64,
    /// Events topic: rows of the project in `events` at the end; must equal `backlog`.
    /// Contacts topic: distinct users of the project stored or tombstoned at the end
    /// (`contacts_stored + contacts_tombstoned`), at most `backlog`.
    pub rows_in_database: u64,
    /// The table counted: `events` or `contacts`.
    #[serde(default)]
    pub table: String,
    /// Contacts topic: rows of the project in `contacts`.
    #[serde(default)]
    pub contacts_stored: u64,
    /// Contacts topic: users of the project with a tombstone and no row.
    #[serde(default)]
    pub contacts_tombstoned: u64,
    /// CPU of the watched processes between 10% and 90% of the backlog (the steady
    /// window), when any was watched.
    #[serde(default)]
    pub cpu: Option<CpuReport>,
    /// Microseconds of CPU per event (or write) in the steady window, per watched process.
    #[serde(default)]
    pub cpu_us_per_row: BTreeMap<String, f64>,
}

/// What a drain waits for and watches.
#[derive(Debug, Clone, Default)]
pub struct DrainOptions {
    /// The messages to wait for, when known (e.g. what a load just put into a topic that
    /// holds earlier rounds, before the worker started: reading the group's lag after
    /// its start would miss what it consumed meanwhile).
    /// Without it, every message of the topic.
    pub backlog: Option<u64>,
    /// Processes whose CPU is measured over the steady window (NAME, PID).
    pub watch: Vec<(String, u32)>,
}

/// Whether `topic` carries contact writes (`<prefix>.contacts`).
pub fn is_contacts_topic(topic: &str) -> bool {
    topic == "contacts" || topic.ends_with(".contacts")
}

/// Messages in `topic`: sum over partitions of high minus low watermark.
pub fn backlog(brokers: &str, topic: &str) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let timeout = Timeout::After(Duration::from_secs(10));
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    anyhow::ensure!(partitions > 0, "topic {topic} not found");
    let mut total = 0;
    for p in 0..partitions as i32 {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        total += (high - low).max(0) as u64;
    }
    Ok(total)
}

/// Messages of `topics` not yet committed by consumer group `group`.
pub fn group_lag(brokers: &str, group: &str, topics: &[String]) -> anyhow::Result<u64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                list.add_partition(topic, p.id());
            }
        }
    }
    let committed = consumer.committed_offsets(list.clone(), timeout)?;
    let mut lag = 0;
    for element in list.elements() {
        let (low, high) =
            consumer.fetch_watermarks(element.topic(), element.partition(), timeout)?;
        let done = committed
            .find_partition(element.topic(), element.partition())
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(low);
        lag += (high - done.max(low)).max(0) as u64;
    }
    Ok(lag)
}

/// Sum of `ingest_worker_messages_total{outcome="persisted"}` in a scrape.
pub fn persisted(exposition: &str) -> u64 {
    exposition
        .lines()
        .filter(|l| {
            l.starts_with("ingest_worker_messages_total{") && l.contains("outcome=\"persisted\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `metrics_urls`: every worker's metrics endpoint (their persisted counts add up).
pub async fn drain(
    metrics_urls: &[String],
    brokers: &str,
    topic: &str,
    pool: &PgPool,
    project: &str,
    timeout: Duration,
    options: &DrainOptions,
) -> anyhow::Result<DrainReport> {
    let backlog = match options.backlog {
        Some(n) => n,
        None => backlog(brokers, topic)?,
    };
    let (mut cpu_start, mut cpu) = (None, None);
    // A scrape that never answers must not stall the wait: each one gives up after 5 s.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let started = Instant::now();
    let (mut t10, mut t90) = (None, None);
    let mut last_print = Instant::now();
    loop {
        anyhow::ensure!(
            started.elapsed() < timeout,
            "the worker did not drain {backlog} messages within {timeout:?}"
        );
        let mut done = 0;
        for url in metrics_urls {
            done += match client.get(url).send().await {
                Ok(answer) => persisted(&answer.text().await.unwrap_or_default()),
                Err(_) => 0, // not up yet
            };
        }
        let t = started.elapsed().as_secs_f64();
        if t10.is_none() && done * 10 >= backlog {
            t10 = Some(t);
            cpu_start = Some((procwatch::cpu_mark(&options.watch), done));
        }
        if t90.is_none() && done * 10 >= backlog * 9 {
            t90 = Some(t);
            if let Some((start, from)) = &cpu_start {
                let report = CpuReport::between(start, &procwatch::cpu_mark(&options.watch));
                cpu = Some((report, done.saturating_sub(*from)));
            }
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            eprintln!("[{t:>5.0}s drain] {done} / {backlog} persisted");
            last_print = Instant::now();
        }
        if done >= backlog {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total_s = started.elapsed().as_secs_f64();
    let (table, rows, stored, tombstoned) = if is_contacts_topic(topic) {
        // Statistics first: taken while the tables were nearly empty, they made the
        // planner join every tombstone against a scan of `contacts` (a count that ran
        // for over ten minutes after a 6.9M-write drain).
        sqlx::query("ANALYZE contacts, contact_tombstones")
            .execute(pool)
            .await?;
        let (stored, tombstoned): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM contacts WHERE project = $1),
                    (SELECT count(*) FROM contact_tombstones t
                      WHERE t.project = $1 AND NOT EXISTS (
                            SELECT 1 FROM contacts c
                             WHERE c.project = t.project AND c.datasource = t.datasource
                               AND c.user_id = t.user_id))",
        )
        .bind(project)
        .fetch_one(pool)
        .await
        .context("counting contacts")?;
        (
            "contacts",
            stored + tombstoned,
            stored as u64,
            tombstoned as u64,
        )
    } else {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE project = $1")
            .bind(project)
            .fetch_one(pool)
            .await
            .context("counting rows")?;
        ("events", rows, 0, 0)
    };
    let steady = match (t10, t90) {
        (Some(a), Some(b)) if b > a => backlog as f64 * 0.8 / (b - a),
        _ => backlog as f64 / total_s,
    };
    let mut cpu_us_per_row = BTreeMap::new();
    if let Some((report, rows)) = &cpu {
        for (name, _) in &options.watch {
            if let Some(us) = report.micros_per(name, *rows) {
                cpu_us_per_row.insert(name.clone(), us);
            }
        }
    }
    Ok(DrainReport {
        cpu: cpu.map(|(report, _)| report),
        cpu_us_per_row,
        topic: topic.to_owned(),
        backlog,
        total_s,
        steady_rows_per_sec: steady,
        rows_per_sec_overall: backlog as f64 / total_s,
        rows_in_database: rows as u64,
        table: table.to_owned(),
        contacts_stored: stored,
        contacts_tombstoned: tombstoned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_persisted_over_topics() {
        let text = "# TYPE ingest_worker_messages_total counter\n\
            ingest_worker_messages_total{topic=\"a\",outcome=\"persisted\"} 10\n\
            ingest_worker_messages_total{topic=\"b\",outcome=\"persisted\"} 5\n\
            ingest_worker_messages_total{topic=\"b\",outcome=\"dead_lettered\"} 7\n";
        assert_eq!(persisted(text), 15);
    }

    #[test]
    fn knows_the_contacts_topic() {
        assert!(is_contacts_topic("ingest.contacts"));
        assert!(is_contacts_topic("bench.contacts"));
        assert!(!is_contacts_topic("ingest.events"));
    }
}
