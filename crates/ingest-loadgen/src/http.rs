//! The HTTP load: batches posted over many connections, either open-loop at a fixed
//! offered rate or closed-loop as fast as answers come back.
//!
//! Open loop corrects for coordinated omission the way wrk2 does: every request has an
//! intended send time on a fixed schedule, and its latency is measured from that time,
//! so a stall delays the schedule's requests and shows in the percentiles instead of
//! silently lowering the offered rate. Closed loop reports service time (send → answer):
//! its point is the peak rate, not the latency.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::e2e::{E2eReport, Sampler};
use crate::procwatch::{self, CpuReport, MemorySeries};
use crate::stats::{self, Percentiles};
use crate::workload::{Batch, Workload};

#[derive(Debug, Clone)]
pub struct Target {
    /// e.g. `http://127.0.0.1:8080`
    pub base_url: String,
    pub project: String,
    pub datasource: String,
    pub token: String,
}

impl Target {
    fn url(&self, endpoint: &str) -> String {
        format!(
            "{}/v1/project/{}/datasource/{}/stream/{endpoint}",
            self.base_url.trim_end_matches('/'),
            self.project,
            self.datasource
        )
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub connections: usize,
    /// Offered items per second (open loop); `None` for closed loop at max.
    pub rate: Option<f64>,
    pub duration: Duration,
    /// Sent but not counted, before the measured `duration`.
    pub warmup: Duration,
    pub timeout: Duration,
    /// Sample one accepted request in this many for end-to-end latency.
    pub e2e_every: u64,
    pub progress: bool,
    /// Source address of the client's connections (`None`: the system's choice).
    pub local_address: Option<IpAddr>,
    /// Processes (and their children) whose CPU time over the measured window is
    /// reported, besides the load generator's own and the machine's.
    pub cpu_watch: Vec<(String, u32)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    /// `open` (fixed offered rate) or `closed` (as fast as answers come back).
    pub mode: String,
    pub workload: serde_json::Value,
    pub connections: usize,
    pub duration_s: f64,
    pub offered_items_per_sec: Option<f64>,
    pub requests: u64,
    pub requests_per_sec: f64,
    pub items_sent: u64,
    /// Bytes of request bodies sent (deletes have none).
    #[serde(default)]
    pub body_bytes_sent: u64,
    /// Items of `POST` bodies (without deletes), for the mean item size.
    #[serde(default)]
    pub body_items_sent: u64,
    /// Items made invalid on purpose (`--invalid-share`); they should come back failed.
    pub invalid_items_sent: u64,
    pub accepted_items: u64,
    pub accepted_items_per_sec: f64,
    pub failed_items: u64,
    /// Answers by status code; `error` counts requests that got no answer.
    pub statuses: BTreeMap<String, u64>,
    /// Open loop: scheduled requests never sent because too many were already waiting.
    pub not_sent: u64,
    pub latency: Percentiles,
    /// What `latency` measures.
    pub latency_basis: String,
    pub e2e: Option<E2eReport>,
    pub memory: Vec<MemorySeries>,
    /// CPU time over the measured window: watched processes, load generator, machine.
    #[serde(default)]
    pub cpu: Option<CpuReport>,
}

/// What one request came back with.
struct Outcome {
    status: Option<u16>,
    accepted: u64,
    failed: u64,
}

#[derive(Default)]
struct Window {
    requests: u64,
    accepted: u64,
    errors: u64,
}

struct Shared {
    latency: Histogram<u64>,
    window_latency: Histogram<u64>,
    window: Window,
    statuses: BTreeMap<String, u64>,
    requests: u64,
    items_sent: u64,
    body_bytes_sent: u64,
    body_items_sent: u64,
    invalid_sent: u64,
    accepted: u64,
    failed: u64,
    not_sent: u64,
}

struct Run {
    client: reqwest::Client,
    target: Target,
    workload: Workload,
    authorization: String,
    measure_from: Instant,
    shared: Mutex<Shared>,
    seq: AtomicU64,
    e2e_every: u64,
    sampler: Option<Sampler>,
}

impl Run {
    /// Builds, sends and records the next batch; `intended` is when it should have left.
    async fn request(&self, intended: Instant) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let batch = self.workload.batch(seq, &mut rand::rng());
        let outcome = self.send(&batch).await;
        let done = Instant::now();
        let measured = intended >= self.measure_from;
        // Samples from the warm-up would carry its start-up effects into the figures.
        if let (true, Some(sampler), Some(sample), Some(200 | 202)) =
            (measured, &self.sampler, &batch.sample, outcome.status)
        {
            if seq % self.e2e_every == 0 {
                sampler.sample(sample.clone(), done);
            }
        }
        let mut shared = self.shared.lock().expect("stats lock");
        let latency = done.duration_since(intended);
        stats::record(&mut shared.window_latency, latency);
        shared.window.requests += 1;
        shared.window.accepted += outcome.accepted;
        shared.window.errors += u64::from(outcome.status.is_none());
        if measured {
            stats::record(&mut shared.latency, latency);
            shared.requests += 1;
            shared.items_sent += batch.items as u64;
            if batch.delete.is_none() {
                shared.body_bytes_sent += batch.body.len() as u64;
                shared.body_items_sent += batch.items as u64;
            }
            shared.invalid_sent += batch.invalid as u64;
            shared.accepted += outcome.accepted;
            shared.failed += outcome.failed;
            let key = outcome
                .status
                .map_or_else(|| "error".to_owned(), |s| s.to_string());
            *shared.statuses.entry(key).or_default() += 1;
        }
    }

    async fn send(&self, batch: &Batch) -> Outcome {
        let request = match &batch.delete {
            Some(user) => self
                .client
                .delete(format!("{}/{user}", self.target.url(batch.kind.endpoint()))),
            None => self
                .client
                .post(self.target.url(batch.kind.endpoint()))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(batch.body.clone()),
        };
        let answer = request
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .send()
            .await;
        let Ok(answer) = answer else {
            return Outcome {
                status: None,
                accepted: 0,
                failed: 0,
            };
        };
        let status = answer.status().as_u16();
        let body = answer.bytes().await.unwrap_or_default();
        let (accepted, failed) = match status {
            200 | 202 | 422 => (
                count_after(&body, b"\"successful\":"),
                count_after(&body, b"\"failed\":"),
            ),
            _ => (0, batch.items as u64),
        };
        Outcome {
            status: Some(status),
            accepted,
            failed,
        }
    }
}

/// The number after the first `key` in a batch answer (cheaper than parsing 100 items).
fn count_after(body: &[u8], key: &[u8]) -> u64 {
    let Some(at) = body.windows(key.len()).position(|w| w == key) else {
        return 0;
    };
    body[at + key.len()..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0, |n, b| n * 10 + u64::from(b - b'0'))
}

pub async fn run(
    target: Target,
    workload: Workload,
    options: LoadOptions,
    sampler: Option<Sampler>,
) -> anyhow::Result<LoadReport> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.connections)
        .tcp_nodelay(true)
        .timeout(options.timeout)
        .local_address(options.local_address)
        .build()?;
    let started = Instant::now();
    let measure_from = started + options.warmup;
    let end = measure_from + options.duration;
    let run = Arc::new(Run {
        client,
        authorization: format!("Bearer {}", target.token),
        target,
        workload: workload.clone(),
        measure_from,
        shared: Mutex::new(Shared {
            latency: stats::histogram(),
            window_latency: stats::histogram(),
            window: Window::default(),
            statuses: BTreeMap::new(),
            requests: 0,
            items_sent: 0,
            body_bytes_sent: 0,
            body_items_sent: 0,
            invalid_sent: 0,
            accepted: 0,
            failed: 0,
            not_sent: 0,
        }),
        seq: AtomicU64::new(0),
        e2e_every: options.e2e_every.max(1),
        sampler,
    });

    let progress = options.progress.then(|| {
        let run = run.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let (window, p99) = {
                    let mut shared = run.shared.lock().expect("stats lock");
                    let p99 = shared.window_latency.value_at_quantile(0.99) as f64 / 1000.0;
                    shared.window_latency.reset();
                    (std::mem::take(&mut shared.window), p99)
                };
                let phase = if Instant::now() < run.measure_from {
                    "warm-up"
                } else {
                    "measuring"
                };
                eprintln!(
                    "[{:>5.0}s {phase}] {:>6} req/s {:>9} items/s accepted  p99 {:>8.1} ms  no answer {}",
                    started.elapsed().as_secs_f64(),
                    window.requests,
                    window.accepted,
                    p99,
                    window.errors
                );
            }
        })
    });

    // CPU times at the start and the end of the measured window.
    let cpu_marks = {
        let targets = options.cpu_watch.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let start = procwatch::cpu_mark(&targets);
            tokio::time::sleep_until(end.into()).await;
            (start, procwatch::cpu_mark(&targets))
        })
    };
    let mode = match options.rate {
        Some(rate) => {
            open_loop(&run, rate, options.connections, end).await;
            "open"
        }
        None => {
            closed_loop(&run, options.connections, end).await;
            "closed"
        }
    };
    if let Some(progress) = progress {
        progress.abort();
    }

    let cpu = cpu_marks
        .await
        .ok()
        .map(|(start, end)| CpuReport::between(&start, &end));
    let shared = run.shared.lock().expect("stats lock");
    let secs = options.duration.as_secs_f64();
    Ok(LoadReport {
        mode: mode.to_owned(),
        workload: serde_json::to_value(&workload)?,
        connections: options.connections,
        duration_s: secs,
        offered_items_per_sec: options.rate,
        requests: shared.requests,
        requests_per_sec: shared.requests as f64 / secs,
        items_sent: shared.items_sent,
        body_bytes_sent: shared.body_bytes_sent,
        body_items_sent: shared.body_items_sent,
        invalid_items_sent: shared.invalid_sent,
        accepted_items: shared.accepted,
        accepted_items_per_sec: shared.accepted as f64 / secs,
        failed_items: shared.failed,
        statuses: shared.statuses.clone(),
        not_sent: shared.not_sent,
        latency: Percentiles::of(&shared.latency),
        latency_basis: match mode {
            "open" => "intended send time → answer (corrected for coordinated omission)",
            _ => "send → answer (service time)",
        }
        .to_owned(),
        e2e: None,
        memory: Vec::new(),
        cpu,
    })
}

async fn closed_loop(run: &Arc<Run>, connections: usize, end: Instant) {
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let run = run.clone();
            tokio::spawn(async move {
                while Instant::now() < end {
                    run.request(Instant::now()).await;
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

async fn open_loop(run: &Arc<Run>, items_per_sec: f64, connections: usize, end: Instant) {
    let batch = run.workload.batch_size as f64;
    let interval = Duration::from_secs_f64(batch / items_per_sec.max(1e-9));
    let permits = Arc::new(Semaphore::new(connections));
    // Requests scheduled but waiting for a connection; past this many the schedule is
    // hopeless and further requests are counted as not sent rather than piled up.
    let max_waiting = connections * 100;
    let waiting = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0u64.. {
        let intended = start + interval.mul_f64(i as f64);
        if intended >= end {
            break;
        }
        tokio::time::sleep_until(intended.into()).await;
        if waiting.load(Ordering::Relaxed) >= max_waiting {
            if intended >= run.measure_from {
                run.shared.lock().expect("stats lock").not_sent += 1;
            }
            continue;
        }
        waiting.fetch_add(1, Ordering::Relaxed);
        let (run, permits, waiting) = (run.clone(), permits.clone(), waiting.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            waiting.fetch_sub(1, Ordering::Relaxed);
            run.request(intended).await;
        }));
        if tasks.len() >= 10_000 {
            tasks.retain(|t| !t.is_finished());
        }
    }
    for task in tasks {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counts_from_a_batch_answer() {
        let body = br#"{"entity":{"successful":97,"failed":3,"items":[{"status":"success"}]}}"#;
        assert_eq!(count_after(body, b"\"successful\":"), 97);
        assert_eq!(count_after(body, b"\"failed\":"), 3);
        assert_eq!(count_after(b"{}", b"\"failed\":"), 0);
    }
}
