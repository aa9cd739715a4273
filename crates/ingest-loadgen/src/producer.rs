//! `ingest-loadgen producer`: load through the client library (`ingest-client`), the way
//! an application would send it. N producer tasks call `track()` with realistic, varied
//! events — the client generates their ids, users are skewed, parameters vary in number
//! and size, all from a seeded RNG — as fast as `track()` takes them (closed loop) or at
//! a total rate; the client batches, retries and reports.
//!
//! It measures the client and the pipeline behind it together: accepted events per
//! second sustained over the measured window (outcomes arriving after the warm-up and
//! before the end), what failed, the delivery latency (enqueue → outcome, sampled), and
//! the client's own counters. The gateway benchmarks (`http`) keep their pre-built
//! bodies: batching in the load generator would change what they measure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingest_client::{Client, Outcome, Overflow, Stats, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::stats::{self, Percentiles};

#[derive(Debug, clap::Args)]
pub struct ProducerLoadArgs {
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long)]
    project: String,
    #[arg(long)]
    datasource: String,
    /// API token (`ingestctl token create`).
    #[arg(long, env = "INGEST_LOADGEN_TOKEN", hide_env_values = true)]
    token: String,
    /// Producer tasks calling `track()`.
    #[arg(long, default_value_t = 8)]
    producers: usize,
    /// Total offered events per second (open loop). Without it: as fast as `track()`
    /// takes them.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured duration, e.g. 30s, 2m.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    duration: Duration,
    /// Load sent before measuring starts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    warmup: Duration,
    /// Seed of the event generator (producer i uses seed + i).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Distinct users (a fifth of them send four fifths of the events).
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Longest string parameter, in characters (at most 1024, the server's limit).
    #[arg(long, default_value_t = 512)]
    max_param_chars: usize,
    /// The client's `max_in_flight` (concurrent event requests).
    #[arg(long, default_value_t = 4)]
    max_in_flight: usize,
    /// The client's `max_batch_items`.
    #[arg(long, default_value_t = 100)]
    max_batch_items: usize,
    /// The client's `max_queue_items`.
    #[arg(long, default_value_t = 10_000)]
    max_queue_items: usize,
    /// The client's `gzip`.
    #[arg(long)]
    gzip: bool,
    /// The client's `sync` (`?_sync`: accepted once in the database).
    #[arg(long)]
    sync: bool,
    /// How long `close()` may take to deliver what is queued at the end.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    close_timeout: Duration,
    #[arg(long)]
    pub json_out: Option<std::path::PathBuf>,
    /// No per-second progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Serialize)]
pub struct ProducerReport {
    /// `closed` (as fast as `track()` takes them) or `open` (a fixed total rate).
    pub mode: String,
    pub producers: usize,
    pub offered_events_per_sec: Option<f64>,
    pub duration_s: f64,
    pub seed: u64,
    pub users: u64,
    pub client: ClientOptions,
    /// Events enqueued in the measured window, and per second.
    pub enqueued: u64,
    pub enqueued_per_sec: f64,
    /// Accepted outcomes reported in the measured window, and per second.
    pub accepted: u64,
    pub accepted_per_sec: f64,
    /// Outcomes of the whole run (warm-up and drain included).
    pub total_accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    pub dropped: u64,
    /// Mean JSON size of the generated events, in bytes.
    pub mean_event_bytes: f64,
    /// Enqueue → outcome, one event in 64.
    pub delivery_latency: Percentiles,
    /// How long `close()` took to deliver what was queued at the end.
    pub close_s: f64,
    pub close_timed_out: bool,
    /// The client's counters after `close()`.
    pub stats: Stats,
}

#[derive(Debug, Serialize)]
pub struct ClientOptions {
    pub max_in_flight: usize,
    pub max_batch_items: usize,
    pub max_queue_items: usize,
    pub gzip: bool,
    pub sync: bool,
}

/// Outcome counts, fed by the client's `on_delivery`.
#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    accepted_in_window: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// The first few refusals, for the log.
    examples: Mutex<Vec<String>>,
}

const EVENT_TYPES: [(&str, u32); 7] = [
    ("page_view", 55),
    ("search", 15),
    ("add_to_cart", 12),
    ("scroll", 8),
    ("purchase", 5),
    ("signup", 3),
    ("video_progress", 2),
];

/// One realistic event: a skewed user, a weighted type, 0–8 parameters of varied kinds
/// and sizes. No `_event_id`: the client generates one (UUID v7), as applications let it.
pub fn event(rng: &mut StdRng, users: u64, max_param_chars: usize) -> Value {
    let users = users.max(1);
    // A fifth of the users send four fifths of the events.
    let user = if rng.random_bool(0.8) {
        rng.random_range(0..(users / 5).max(1))
    } else {
        rng.random_range(0..users)
    };
    let mut pick = rng.random_range(0..EVENT_TYPES.iter().map(|(_, w)| w).sum::<u32>());
    let event_type = EVENT_TYPES
        .iter()
        .find(|(_, weight)| {
            let hit = pick < *weight;
            pick = pick.saturating_sub(*weight);
            hit
        })
        .map_or("page_view", |(name, _)| name);
    let mut parameters = Map::new();
    let count = rng.random_range(0..=8);
    for _ in 0..count {
        let (name, value) = match rng.random_range(0..10) {
            0 => (
                "path",
                Value::String(format!("/catalog/{}", text(rng, max_param_chars))),
            ),
            1 => (
                "referrer",
                Value::String(format!("https://www.example.com/{}", text(rng, 40))),
            ),
            2 => ("query", Value::String(text(rng, max_param_chars))),
            3 => (
                "sku",
                Value::String(format!("SKU-{:06}", rng.random_range(0..1_000_000))),
            ),
            4 => ("price", json!(rng.random_range(1..100_000) as f64 / 100.0)),
            5 => ("quantity", json!(rng.random_range(1..10))),
            6 => ("logged_in", json!(rng.random_bool(0.6))),
            7 => (
                "tags",
                Value::Array(
                    (0..rng.random_range(1..6))
                        .map(|_| Value::String(text(rng, 16)))
                        .collect(),
                ),
            ),
            8 => ("duration_ms", json!(rng.random_range(0..600_000))),
            _ => ("note", Value::String(text(rng, max_param_chars))),
        };
        parameters.insert(name.to_owned(), value);
    }
    let mut event = Map::new();
    event.insert("_user_id".into(), Value::String(format!("user-{user}")));
    event.insert("_event_type".into(), Value::String(event_type.to_owned()));
    if !parameters.is_empty() {
        event.insert("_event_parameters".into(), Value::Object(parameters));
    }
    Value::Object(event)
}

/// Lowercase text whose length is spread log-uniformly over 1..=max characters (many
/// short strings, a few long ones).
fn text(rng: &mut StdRng, max: usize) -> String {
    let max = max.clamp(1, 1024) as f64;
    let len = max.powf(rng.random_range(0.0..=1.0)).round().max(1.0) as usize;
    (0..len)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

pub async fn run(args: ProducerLoadArgs) -> anyhow::Result<ProducerReport> {
    anyhow::ensure!(args.producers > 0, "--producers must be at least 1");
    let started = Instant::now();
    let measure_from = started + args.warmup;
    let end = measure_from + args.duration;
    let tally = Arc::new(Tally::default());
    let sink = tally.clone();
    let client = Client::builder(&args.url, &args.project, &args.datasource, &args.token)
        .max_in_flight(args.max_in_flight)
        .max_batch_items(args.max_batch_items)
        .max_queue_items(args.max_queue_items)
        .overflow(Overflow::Block)
        .gzip(args.gzip)
        .sync(args.sync)
        .on_delivery(move |outcome: &Outcome| {
            let counter = match &outcome.status {
                Status::Accepted { .. } => {
                    let now = Instant::now();
                    if now >= measure_from && now < end {
                        sink.accepted_in_window.fetch_add(1, Ordering::Relaxed);
                    }
                    &sink.accepted
                }
                Status::Rejected { .. } => &sink.rejected,
                Status::Failed { .. } => &sink.failed,
                Status::Dropped { .. } => &sink.dropped,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if !outcome.is_accepted() {
                let mut examples = sink.examples.lock().expect("examples lock");
                if examples.len() < 5 {
                    examples.push(format!("{:?}", outcome.status));
                }
            }
        })
        .build()?;

    let enqueued_in_window = Arc::new(AtomicU64::new(0));
    let event_bytes = Arc::new(AtomicU64::new(0));
    let generated = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(stats::histogram()));
    let progress = (!args.quiet).then(|| {
        let (client, tally) = (client.clone(), tally.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.tick().await;
            let mut last = 0;
            loop {
                ticker.tick().await;
                let accepted = tally.accepted.load(Ordering::Relaxed);
                let stats = client.stats();
                let phase = if Instant::now() < measure_from {
                    "warm-up"
                } else {
                    "measuring"
                };
                eprintln!(
                    "[{:>5.0}s {phase}] {:>8} accepted/s  queued {:>6}  requests {:>7}  retries {:>5}  failed {}",
                    started.elapsed().as_secs_f64(),
                    accepted - last,
                    stats.queued,
                    stats.requests,
                    stats.retries,
                    stats.failed + stats.dropped + stats.rejected
                );
                last = accepted;
            }
        })
    });

    let period = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.producers as f64 / rate.max(1e-9)));
    let producers: Vec<_> = (0..args.producers)
        .map(|i| {
            let client = client.clone();
            let (enqueued, bytes, generated, latency) = (
                enqueued_in_window.clone(),
                event_bytes.clone(),
                generated.clone(),
                latency.clone(),
            );
            let mut rng = StdRng::seed_from_u64(args.seed.wrapping_add(i as u64));
            let (users, max_chars) = (args.users, args.max_param_chars);
            tokio::spawn(async move {
                let first = Instant::now();
                for k in 0u64.. {
                    if let Some(period) = period {
                        tokio::time::sleep_until(first + period.mul_f64(k as f64)).await;
                    }
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    let event = event(&mut rng, users, max_chars);
                    if k % 64 == 0 {
                        let size = serde_json::to_vec(&event).map_or(0, |v| v.len());
                        bytes.fetch_add(size as u64, Ordering::Relaxed);
                        generated.fetch_add(1, Ordering::Relaxed);
                    }
                    let handle = client.track(event).await;
                    if now >= measure_from {
                        enqueued.fetch_add(1, Ordering::Relaxed);
                    }
                    if k % 64 == 0 {
                        let latency = latency.clone();
                        tokio::spawn(async move {
                            handle.await;
                            let mut histogram = latency.lock().expect("latency lock");
                            stats::record(&mut histogram, now.elapsed());
                        });
                    }
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await?;
    }
    let closing = Instant::now();
    let close = client.close(args.close_timeout).await;
    let close_s = closing.elapsed().as_secs_f64();
    if let Some(progress) = progress {
        progress.abort();
    }
    for example in tally.examples.lock().expect("examples lock").iter() {
        eprintln!("not accepted: {example}");
    }
    let secs = args.duration.as_secs_f64();
    let accepted = tally.accepted_in_window.load(Ordering::Relaxed);
    let enqueued = enqueued_in_window.load(Ordering::Relaxed);
    let sampled = generated.load(Ordering::Relaxed).max(1);
    let latency = Percentiles::of(&latency.lock().expect("latency lock"));
    Ok(ProducerReport {
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        }
        .to_owned(),
        producers: args.producers,
        offered_events_per_sec: args.rate,
        duration_s: secs,
        seed: args.seed,
        users: args.users,
        client: ClientOptions {
            max_in_flight: args.max_in_flight,
            max_batch_items: args.max_batch_items,
            max_queue_items: args.max_queue_items,
            gzip: args.gzip,
            sync: args.sync,
        },
        enqueued,
        enqueued_per_sec: enqueued as f64 / secs,
        accepted,
        accepted_per_sec: accepted as f64 / secs,
        total_accepted: tally.accepted.load(Ordering::Relaxed),
        rejected: tally.rejected.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
        dropped: tally.dropped.load(Ordering::Relaxed),
        mean_event_bytes: event_bytes.load(Ordering::Relaxed) as f64 / sampled as f64,
        delivery_latency: latency,
        close_s,
        close_timed_out: close.timed_out,
        stats: client.stats(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use ingest_types::validate::{self, Specs};
    use ingest_types::ItemKind;

    fn events(seed: u64, n: usize) -> Vec<Value> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| event(&mut rng, 1000, 512)).collect()
    }

    #[test]
    fn generated_events_are_valid_once_the_client_gives_them_an_id() {
        for (i, mut item) in events(3, 2000).into_iter().enumerate() {
            item["_event_id"] = json!(format!("id-{i}"));
            if let Err(errors) =
                validate::validate_item(ItemKind::Event, &item, Utc::now(), &Specs::default())
            {
                panic!("{item} is invalid: {errors:?}");
            }
        }
    }

    #[test]
    fn events_vary_and_the_seed_decides_them() {
        assert_eq!(events(5, 200), events(5, 200));
        assert_ne!(events(5, 200), events(6, 200));
        let sample = events(5, 2000);
        let sizes: Vec<usize> = sample.iter().map(|e| e.to_string().len()).collect();
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(*min < 80 && *max > 1000, "sizes {min}..{max}");
        let users: std::collections::HashSet<_> =
            sample.iter().map(|e| e["_user_id"].clone()).collect();
        assert!(users.len() > 300, "{} users", users.len());
        let types: std::collections::HashSet<_> =
            sample.iter().map(|e| e["_event_type"].clone()).collect();
        assert_eq!(types.len(), EVENT_TYPES.len());
        assert!(
            sample.iter().all(|e| e.get("_event_id").is_none()),
            "the client makes the ids"
        );
    }
}
