//! The worker draining a backlog: how fast one worker turns the messages already in the
//! topic into rows. Progress is read from the worker's own metrics (cheap), the end
//! result from the database (exact).

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

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
    /// Rows of the project in `events` at the end; must equal `backlog`.
    pub rows_in_database: u64,
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

pub async fn drain(
    metrics_url: &str,
    brokers: &str,
    topic: &str,
    pool: &PgPool,
    project: &str,
    timeout: Duration,
) -> anyhow::Result<DrainReport> {
    let backlog = backlog(brokers, topic)?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let (mut t10, mut t90) = (None, None);
    let mut last_print = Instant::now();
    loop {
        anyhow::ensure!(
            started.elapsed() < timeout,
            "the worker did not drain {backlog} messages within {timeout:?}"
        );
        let done = match client.get(metrics_url).send().await {
            Ok(answer) => persisted(&answer.text().await.unwrap_or_default()),
            Err(_) => 0, // not up yet
        };
        let t = started.elapsed().as_secs_f64();
        if t10.is_none() && done * 10 >= backlog {
            t10 = Some(t);
        }
        if t90.is_none() && done * 10 >= backlog * 9 {
            t90 = Some(t);
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
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE project = $1")
        .bind(project)
        .fetch_one(pool)
        .await
        .context("counting rows")?;
    let steady = match (t10, t90) {
        (Some(a), Some(b)) if b > a => backlog as f64 * 0.8 / (b - a),
        _ => backlog as f64 / total_s,
    };
    Ok(DrainReport {
        topic: topic.to_owned(),
        backlog,
        total_s,
        steady_rows_per_sec: steady,
        rows_per_sec_overall: backlog as f64 / total_s,
        rows_in_database: rows as u64,
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
}
