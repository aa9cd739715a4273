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
/// Two queries however many samples are due (events, contacts), each an index probe per
/// sample: one lookup per sample made the sampler itself a load on the database it
/// measures (about 5,000 lookups a second, 0.3 of a core of PostgreSQL, at 22,500
/// events/s with the pipeline a minute behind). The probes are `LATERAL ... LIMIT 1`, a
/// nested loop whatever the statistics say: given a list to join, the planner chose its
/// plan from statistics that lag far behind a table growing from empty under load, and
/// scanned every row of the project (and the sampler's sessions run with
/// `enable_seqscan = off`, see `connect_sampler`).
async fn visible(
    pool: &PgPool,
    project: &str,
    datasource: &str,
    pending: &[&Sample],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut seen = vec![false; pending.len()];
    let (mut events, mut event_at) = (Vec::new(), Vec::new());
    let (mut users, mut seqs, mut contact_at) = (Vec::new(), Vec::new(), Vec::new());
    for (i, sample) in pending.iter().enumerate() {
        match sample {
            Sample::Event { event_id } => {
                events.push(ingest_worker::persist::event_key(event_id));
                event_at.push(i);
            }
            Sample::Contact { user_id, seq } => {
                users.push(user_id.as_str());
                seqs.push(*seq);
                contact_at.push(i);
            }
        }
    }
    if !events.is_empty() {
        // Through the deduplication keys (written in the same transaction as the rows):
        // `events` is partitioned by receipt day and has no index on event ids.
        let found: Vec<i64> = sqlx::query_scalar(
            "SELECT k.ord FROM UNNEST($3::uuid[]) WITH ORDINALITY AS k(event_key, ord),
                    LATERAL (SELECT 1 FROM event_ids i
                              WHERE i.project = $1 AND i.datasource = $2
                                AND i.event_key = k.event_key LIMIT 1) AS f",
        )
        .bind(project)
        .bind(datasource)
        .bind(&events)
        .fetch_all(pool)
        .await?;
        for ord in found {
            seen[event_at[ord as usize - 1]] = true;
        }
    }
    if !users.is_empty() {
        // Visible once the user's row carries this write or a later one.
        let found: Vec<i64> = sqlx::query_scalar(
            "SELECT k.ord FROM UNNEST($3::text[], $4::bigint[]) WITH ORDINALITY AS k(user_id, seq, ord),
                    LATERAL (SELECT 1 FROM contacts c
                              WHERE c.project = $1 AND c.datasource = $2 AND c.user_id = k.user_id
                                AND (c.attributes->>'lg_seq')::bigint >= k.seq LIMIT 1) AS f",
        )
        .bind(project)
        .bind(datasource)
        .bind(&users)
        .bind(&seqs)
        .fetch_all(pool)
        .await?;
        for ord in found {
            seen[contact_at[ord as usize - 1]] = true;
        }
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
