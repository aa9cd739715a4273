//! The token flood: well-formed but unknown tokens (`ingk_` + 64 random hex digits) as
//! fast as a few hundred connections get answers, each a small valid batch. Every
//! unknown token the gateway does not remember costs it a PostgreSQL look-up; the
//! gateway's own counter of those is read before and after.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use ingest_gateway::metrics::AUTH_CACHE_MISSES_TOTAL;
use ingest_types::tenancy::TOKEN_PREFIX;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::Sources;
use crate::stats::{self, Percentiles};

/// How the flood went.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FloodReport {
    pub connections: usize,
    pub duration_s: f64,
    pub requests: u64,
    /// Requests that got an answer, any status.
    pub answered: u64,
    pub answered_per_sec: f64,
    /// Answers by status code; `connect error`, `timeout` and `error` count requests
    /// without one.
    pub statuses: BTreeMap<String, u64>,
    /// Send → answer, of the answered requests.
    pub latency: Percentiles,
    /// Token look-ups that went to PostgreSQL during the flood (the gateway's
    /// `ingest_gateway_auth_cache_misses_total{kind="token"}`); `None` when its metrics
    /// could not be read.
    pub token_lookups_in_db: Option<u64>,
    pub token_lookups_in_db_per_sec: Option<f64>,
}

/// Live counters, shared by the flood's tasks and the progress line.
#[derive(Default)]
pub struct Counters {
    requests: AtomicU64,
    answered: AtomicU64,
    statuses: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Option<Histogram<u64>>>,
}

impl Counters {
    pub fn progress(&self) -> String {
        format!(
            "flood: {} requests, {} answered",
            self.requests.load(Ordering::Relaxed),
            self.answered.load(Ordering::Relaxed)
        )
    }
}

/// Where and what the flood sends.
pub struct Flood {
    /// The endpoint's full URL.
    pub url: String,
    /// The gateway's Prometheus metrics.
    pub metrics_url: String,
    pub sources: Sources,
    pub connections: usize,
    pub timeout: Duration,
    /// A small valid batch, sent with every request.
    pub body: Bytes,
}

impl Flood {
    /// Floods until `end` (requests in flight then finish, within `timeout`).
    pub async fn run(&self, end: Instant, counters: Arc<Counters>) -> anyhow::Result<FloodReport> {
        let scraper = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let before = token_lookups(&scraper, &self.metrics_url).await;
        let started = Instant::now();
        // One client (connection pool) per source address.
        let per_address = self.sources.per_address.max(1);
        let clients = (0..self.connections.div_ceil(per_address))
            .map(|k| {
                reqwest::Client::builder()
                    .local_address(IpAddr::V4(self.sources.address(k * per_address)))
                    .pool_max_idle_per_host(per_address)
                    .tcp_nodelay(true)
                    .timeout(self.timeout)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut tasks = JoinSet::new();
        for i in 0..self.connections {
            let client = clients[i / per_address].clone();
            let (url, body, counters) = (self.url.clone(), self.body.clone(), counters.clone());
            tasks.spawn(async move {
                while Instant::now() < end {
                    let sent = Instant::now();
                    let outcome = client
                        .post(&url)
                        .header(reqwest::header::AUTHORIZATION, unknown_token())
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    counters.requests.fetch_add(1, Ordering::Relaxed);
                    let key = match outcome {
                        Ok(answer) => {
                            let status = answer.status().as_u16();
                            let _ = answer.bytes().await;
                            counters.answered.fetch_add(1, Ordering::Relaxed);
                            let mut latency = counters.latency.lock().expect("flood lock");
                            stats::record(
                                latency.get_or_insert_with(stats::histogram),
                                sent.elapsed(),
                            );
                            status.to_string()
                        }
                        Err(err) if err.is_connect() => "connect error".to_owned(),
                        Err(err) if err.is_timeout() => "timeout".to_owned(),
                        Err(_) => "error".to_owned(),
                    };
                    let refused = key == "connect error";
                    *counters
                        .statuses
                        .lock()
                        .expect("flood lock")
                        .entry(key)
                        .or_default() += 1;
                    if refused {
                        // Failed at once: do not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let duration_s = started.elapsed().as_secs_f64();
        let after = token_lookups(&scraper, &self.metrics_url).await;
        let token_lookups_in_db = match (before, after) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        };
        let answered = counters.answered.load(Ordering::Relaxed);
        let latency = counters.latency.lock().expect("flood lock");
        Ok(FloodReport {
            connections: self.connections,
            duration_s,
            requests: counters.requests.load(Ordering::Relaxed),
            answered,
            answered_per_sec: answered as f64 / duration_s,
            statuses: counters.statuses.lock().expect("flood lock").clone(),
            latency: latency.as_ref().map(Percentiles::of).unwrap_or_default(),
            token_lookups_in_db,
            token_lookups_in_db_per_sec: token_lookups_in_db.map(|n| n as f64 / duration_s),
        })
    }
}

/// `Bearer ingk_<64 random hex digits>`: well-formed, never issued.
fn unknown_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    let mut token = format!("Bearer {TOKEN_PREFIX}");
    for b in bytes {
        let _ = write!(token, "{b:02x}");
    }
    token
}

/// The gateway's count of token look-ups that went to the database, or `None` when its
/// metrics cannot be read.
async fn token_lookups(client: &reqwest::Client, url: &str) -> Option<u64> {
    let answer = client.get(url).send().await.ok()?.error_for_status().ok()?;
    let text = answer.text().await.ok()?;
    parse_token_lookups(&text)
}

/// Sums `ingest_gateway_auth_cache_misses_total` over its series with `kind="token"`;
/// 0 when there is none yet (the counter appears with its first increment).
fn parse_token_lookups(metrics: &str) -> Option<u64> {
    if !metrics.contains("# ") && !metrics.contains("ingest_gateway_") {
        return None; // not a Prometheus exposition at all
    }
    let total = metrics
        .lines()
        .filter(|l| l.starts_with(AUTH_CACHE_MISSES_TOTAL) && l.contains("kind=\"token\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_well_formed() {
        let header = unknown_token();
        let token = header.strip_prefix("Bearer ").unwrap();
        assert!(
            ingest_types::tenancy::is_well_formed_token(token),
            "{token}"
        );
        assert_ne!(unknown_token(), header);
    }

    #[test]
    fn reads_token_lookups_from_prometheus_text() {
        let text = "# HELP ingest_gateway_auth_cache_misses_total x\n\
            # TYPE ingest_gateway_auth_cache_misses_total counter\n\
            ingest_gateway_auth_cache_misses_total{kind=\"token\"} 1234\n\
            ingest_gateway_auth_cache_misses_total{kind=\"datasource\"} 7\n";
        assert_eq!(parse_token_lookups(text), Some(1234));
        assert_eq!(
            parse_token_lookups("# HELP other\nother_total 3\n"),
            Some(0)
        );
        assert_eq!(parse_token_lookups("<html>not found</html>"), None);
    }
}
