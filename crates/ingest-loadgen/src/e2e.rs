//! End-to-end latency, sampled: for some accepted requests, the time from the gateway's
//! 202 to the item being visible in PostgreSQL, found by polling with the primary key.
//!
//! The poller looks every `poll_interval`, so each figure is late by at most that much.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::stats::{self, Percentiles};
use crate::workload::Sample;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct E2eReport {
    /// Nested, not flattened: with serde_json's `arbitrary_precision` (on in this
    /// workspace) a flattened struct cannot read its numbers back.
    pub latency: Percentiles,
    /// Samples not visible by the end of the grace period.
    pub unseen: u64,
    pub poll_interval_ms: u64,
    /// The latency of the samples accepted in each minute of the run (from the first
    /// sample), in order: a long run must hold its limit in every one.
    #[serde(default)]
    pub per_minute: Vec<MinuteLatency>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinuteLatency {
    /// Minutes since the first sample.
    pub minute: u64,
    pub samples: u64,
    pub p99_ms: f64,
}

pub struct Sampler {
    tx: mpsc::UnboundedSender<(Sample, Instant)>,
}

impl Sampler {
    /// An item the gateway accepted at `accepted_at`.
    pub fn sample(&self, sample: Sample, accepted_at: Instant) {
        let _ = self.tx.send((sample, accepted_at));
    }
}

/// Starts the poller. Cancel `done` when no more samples come; the poller then waits up
/// to `grace` for the pending ones and returns its report.
pub fn start(
    pool: PgPool,
    project: String,
    datasource: String,
    poll_interval: Duration,
    grace: Duration,
    done: CancellationToken,
) -> (
    Sampler,
    tokio::task::JoinHandle<Result<E2eReport, sqlx::Error>>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Sample, Instant)>();
    let task = tokio::spawn(async move {
        let mut histogram: Histogram<u64> = stats::histogram();
        // Per minute of acceptance, from the first sample.
        let mut minutes: Vec<Histogram<u64>> = Vec::new();
        let mut first: Option<Instant> = None;
        // (sample, accepted at, next look)
        let mut pending: Vec<(Sample, Instant, Instant)> = Vec::new();
        let mut deadline: Option<Instant> = None;
        loop {
            while let Ok((sample, accepted_at)) = rx.try_recv() {
                first.get_or_insert(accepted_at);
                pending.push((sample, accepted_at, accepted_at));
            }
            let now = Instant::now();
            let due: Vec<usize> = (0..pending.len())
                .filter(|&i| pending[i].2 <= now)
                .collect();
            if !due.is_empty() {
                let samples: Vec<&Sample> = due.iter().map(|&i| &pending[i].0).collect();
                let seen = visible(&pool, &project, &datasource, &samples).await?;
                let now = Instant::now();
                let mut found = vec![false; pending.len()];
                for (&i, seen) in due.iter().zip(seen) {
                    let accepted_at = pending[i].1;
                    if seen {
                        let latency = now.duration_since(accepted_at);
                        stats::record(&mut histogram, latency);
                        let minute = first.map_or(0, |f| {
                            accepted_at.saturating_duration_since(f).as_secs() / 60
                        }) as usize;
                        if minutes.len() <= minute {
                            minutes.resize_with(minute + 1, stats::histogram);
                        }
                        stats::record(&mut minutes[minute], latency);
                        found[i] = true;
                    } else {
                        pending[i].2 = next_look(accepted_at, now, poll_interval);
                    }
                }
                let mut found = found.into_iter();
                pending.retain(|_| !found.next().unwrap_or(false));
            }
            if done.is_cancelled() {
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + grace);
                if rx.is_empty() && (pending.is_empty() || Instant::now() >= deadline) {
                    break;
                }
            }
            tokio::time::sleep(poll_interval).await;
        }
        Ok(E2eReport {
            latency: Percentiles::of(&histogram),
            unseen: pending.len() as u64,
            poll_interval_ms: poll_interval.as_millis() as u64,
            per_minute: minutes
                .iter()
                .enumerate()
                .map(|(minute, h)| MinuteLatency {
                    minute: minute as u64,
                    samples: h.len(),
                    p99_ms: Percentiles::of(h).p99_ms,
                })
                .collect(),
        })
    });
    (Sampler { tx }, task)
}

/// When to look for a sample again that was not visible at `now`: after `poll`, or after
/// a twentieth of its age if that is longer. Each figure is then late by at most 5% (or
/// `poll`), and an overloaded pipeline's growing pile of pending samples does not turn
/// into thousands of lookups a second that load the database being measured.
fn next_look(accepted_at: Instant, now: Instant, poll: Duration) -> Instant {
    now + poll.max(now.duration_since(accepted_at) / 20)
}

/// Which of `pending` are visible now, in order.
///
/// One lookup by primary key per sample, not one query for all: given a list, the planner
/// chose its plan from the statistics, which lag far behind a table growing from empty
/// under load, and scanned every row of the project (over a second with a few million
/// rows, counted as the pipeline's latency). Equality on the whole key is an index probe
/// whatever the statistics say.
async fn visible(
    pool: &PgPool,
    project: &str,
    datasource: &str,
    pending: &[&Sample],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut seen = Vec::with_capacity(pending.len());
    for sample in pending {
        let query = match sample {
            // Through the deduplication keys (written in the same transaction as the
            // rows): `events` is partitioned by receipt day and has no index on event ids.
            Sample::Event { event_id } => sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM event_ids
                                 WHERE project = $1 AND datasource = $2
                                   AND event_key = ingest_event_key($3))",
            )
            .bind(project)
            .bind(datasource)
            .bind(event_id),
            // Visible once the user's row carries this write or a later one.
            Sample::Contact { user_id, seq } => sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM contacts
                                 WHERE project = $1 AND datasource = $2 AND user_id = $3
                                   AND (attributes->>'lg_seq')::bigint >= $4)",
            )
            .bind(project)
            .bind(datasource)
            .bind(user_id)
            .bind(*seq),
        };
        seen.push(query.fetch_one(pool).await?);
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_sample_is_looked_for_less_often() {
        let poll = Duration::from_millis(20);
        let accepted = Instant::now();
        let at = |ms| accepted + Duration::from_millis(ms);
        assert_eq!(next_look(accepted, at(100), poll), at(120));
        assert_eq!(next_look(accepted, at(1_000), poll), at(1_050));
        assert_eq!(next_look(accepted, at(20_000), poll), at(21_000));
    }

    #[test]
    fn reports_read_back_what_they_wrote() {
        let report = E2eReport {
            latency: Percentiles {
                count: 3,
                mean_ms: 1.5,
                p50_ms: 1.25,
                p90_ms: 2.0,
                p99_ms: 2.5,
                p999_ms: 2.5,
                max_ms: 3.0,
            },
            unseen: 1,
            poll_interval_ms: 20,
            per_minute: vec![MinuteLatency {
                minute: 0,
                samples: 3,
                p99_ms: 2.5,
            }],
        };
        let text = serde_json::to_string(&report).unwrap();
        let back: E2eReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back.latency.p99_ms, 2.5);
        assert_eq!(back.unseen, 1);
        assert_eq!(back.per_minute[0].samples, 3);
    }
}
