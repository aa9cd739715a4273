//! Can a client that is not connected yet still get in? The healthy client keeps its
//! connections alive, so it does not notice a gateway that stops accepting new ones;
//! these probes do: a fresh connection from the healthy client's address at a fixed
//! pace, `GET /openapi.json`, `Connection: close`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use super::attack;
use crate::stats::{self, Percentiles};

/// What the probes of one scenario saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Seconds between two probes.
    pub every_s: f64,
    pub probes: u64,
    /// Outcomes: the status code, or why there was none (`timed out` included).
    pub outcomes: BTreeMap<String, u64>,
    /// Connect → status line; a probe that timed out counts as the timeout.
    pub latency: Percentiles,
}

impl ProbeReport {
    /// Probes answered 200.
    pub fn ok(&self) -> u64 {
        self.outcomes.get("200").copied().unwrap_or(0)
    }
}

/// Probes `target` from `source` every `every` from `from` until `end`, each given
/// `timeout`; returns when the last one is done.
pub async fn run(
    target: SocketAddr,
    source: Ipv4Addr,
    every: Duration,
    timeout: Duration,
    from: Instant,
    end: Instant,
) -> ProbeReport {
    let outcomes = Arc::new(Mutex::new((BTreeMap::new(), stats::histogram())));
    let mut tasks = JoinSet::new();
    let mut at = from;
    while at < end {
        tokio::time::sleep_until(at.into()).await;
        let outcomes = outcomes.clone();
        tasks.spawn(async move {
            let started = Instant::now();
            let outcome = match tokio::time::timeout(timeout, probe(source, target)).await {
                Ok(Ok(Some(status))) => status.to_string(),
                Ok(Ok(None)) => "no status line".to_owned(),
                Ok(Err(err)) => err.to_string(),
                Err(_) => "timed out".to_owned(),
            };
            let mut outcomes = outcomes.lock().expect("probe lock");
            *outcomes.0.entry(outcome).or_default() += 1;
            stats::record(&mut outcomes.1, started.elapsed().min(timeout));
        });
        at += every;
    }
    while tasks.join_next().await.is_some() {}
    let (outcomes, latency) = &*outcomes.lock().expect("probe lock");
    ProbeReport {
        every_s: every.as_secs_f64(),
        probes: outcomes.values().sum(),
        outcomes: outcomes.clone(),
        latency: Percentiles::of(latency),
    }
}

/// One fresh connection and `GET /openapi.json` (on the API port, answered without the
/// database); the status of the answer, if one came.
async fn probe(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<Option<u16>> {
    let mut stream = attack::connect(source, target).await?;
    let request =
        format!("GET /openapi.json HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    Ok(attack::parse_status(&head))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn counts_answers_and_timeouts() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        // Answers the first connection, then keeps the others waiting.
        let server = tokio::spawn(async move {
            let (mut first, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = first.read(&mut buf).await;
            first.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
            let mut held = Vec::new();
            loop {
                held.push(listener.accept().await.unwrap());
            }
        });
        let from = Instant::now();
        let report = run(
            target,
            Ipv4Addr::LOCALHOST,
            Duration::from_millis(100),
            Duration::from_millis(300),
            from,
            from + Duration::from_millis(250),
        )
        .await;
        server.abort();
        assert_eq!(report.probes, 3, "{report:?}");
        assert_eq!(report.ok(), 1, "{report:?}");
        assert_eq!(report.outcomes.get("timed out"), Some(&2), "{report:?}");
        assert!(report.latency.max_ms >= 299.0, "{report:?}");
    }
}
