//! The pipeline's sustained rate: the highest offered rate (open loop) at which every
//! item is accepted and accept → visible in PostgreSQL stays under a p99 limit. The search
//! climbs from a low rate by a fixed factor until a step fails (so the machine meets the
//! load the way it would in service, not a first step near the limit on a cold stack),
//! then bisects between the last pass and the failure, then holds the rate found for a
//! longer confirmation run.
//!
//! A step passes when the gateway accepted what was offered (≥ 99.5%, nothing refused,
//! no scheduled request left unsent), no sample stayed invisible, and the sampled
//! accept → visible p99 is under the limit. Between steps the worker is let catch up
//! (its persisted messages reach the topics' message count), so a failed step's backlog
//! never counts against the next one. If the confirmation fails, the rate is lowered by
//! a tenth and confirmed again, at most twice.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::e2e;
use crate::http::{self, LoadOptions, LoadReport, Target};
use crate::workload::Workload;

#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub connections: usize,
    /// First rate tried (items/s).
    pub start_rate: f64,
    /// The highest rate tried (e.g. what the worker drains alone).
    pub max_rate: f64,
    /// Each passing step of the climb offers this many times the last one.
    pub growth: f64,
    pub step: Duration,
    pub confirm: Duration,
    pub warmup: Duration,
    pub p99_limit: Duration,
    /// Stop bisecting when the bracket is narrower than this share of its upper end.
    pub precision: f64,
    pub max_steps: usize,
    /// Confirmation runs at most (each failed one lowers the rate by a tenth).
    pub confirmations: usize,
    /// A run at the start rate before the first step, not judged: the first run after a
    /// start pays for cold caches (p99 over a second at 6,000 events/s, BENCHMARKS.md).
    pub warm_up_run: Duration,
    pub e2e_every: u64,
    /// The workers' consumer group and the topics it consumes: to wait for catch-up.
    pub group: String,
    pub brokers: String,
    pub topics: Vec<String>,
    pub catch_up_timeout: Duration,
    pub cpu_watch: Vec<(String, u32)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub offered_items_per_sec: f64,
    pub duration_s: f64,
    pub passed: bool,
    /// Why a step failed (empty when it passed).
    pub reason: String,
    pub report: LoadReport,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchReport {
    pub workload: serde_json::Value,
    pub p99_limit_ms: f64,
    pub steps: Vec<Step>,
    /// Items/s accepted in the confirmation run that passed (0 when none did): the
    /// offered rate, less the items a contacts delete request does not carry.
    pub sustained_items_per_sec: f64,
    /// The passing confirmation run, with its CPU breakdown.
    pub confirmed: Option<Step>,
}

/// Why a step at `offered` items/s fails, or `None` when it passes.
pub fn verdict(report: &LoadReport, p99_limit_ms: f64) -> Option<String> {
    let refused: u64 = report
        .statuses
        .iter()
        .filter(|(status, _)| !matches!(status.as_str(), "200" | "202"))
        .map(|(_, n)| n)
        .sum();
    if refused > 0 {
        return Some(format!("answers other than 2xx: {:?}", report.statuses));
    }
    if report.not_sent > 0 {
        return Some(format!(
            "{} scheduled requests not sent (connections saturated)",
            report.not_sent
        ));
    }
    // Items actually sent: a contacts delete is a request of one item, so a contacts
    // run sends fewer items than its offered rate (requests × batch size).
    let sent = report.items_sent.saturating_sub(report.invalid_items_sent);
    if (report.accepted_items as f64) < 0.995 * sent as f64 {
        return Some(format!(
            "accepted {} of {sent} items sent",
            report.accepted_items
        ));
    }
    let Some(e2e) = &report.e2e else {
        return Some("no end-to-end samples".into());
    };
    if e2e.unseen > 0 {
        return Some(format!("{} samples not visible within 30 s", e2e.unseen));
    }
    if e2e.latency.count == 0 {
        return Some("no end-to-end samples".into());
    }
    if e2e.latency.p99_ms >= p99_limit_ms {
        return Some(format!(
            "accept → visible p99 {:.0} ms ≥ {p99_limit_ms:.0} ms",
            e2e.latency.p99_ms
        ));
    }
    // A long run holds the limit in every minute, not only over the whole run.
    if let Some(m) = e2e.per_minute.iter().find(|m| m.p99_ms >= p99_limit_ms) {
        return Some(format!(
            "accept → visible p99 {:.0} ms ≥ {p99_limit_ms:.0} ms in minute {}",
            m.p99_ms, m.minute
        ));
    }
    None
}

/// The next rate to try, or `None` when the bracket `(pass, fail)` is narrow enough.
pub fn next_rate(pass: f64, fail: f64, precision: f64) -> Option<f64> {
    ((fail - pass) > precision * fail).then_some((pass + fail) / 2.0)
}

/// Where the search stands: the highest rate that passed, the lowest that failed.
#[derive(Debug, Clone, Copy)]
pub struct Bracket {
    pub pass: f64,
    pub fail: Option<f64>,
}

impl Bracket {
    /// Records a step at `rate` and gives the next rate to try, or `None` when done:
    /// upwards by `growth` (capped at `max`) until a step fails, then by bisection.
    pub fn next(
        &mut self,
        rate: f64,
        passed: bool,
        growth: f64,
        max: f64,
        precision: f64,
    ) -> Option<f64> {
        if passed {
            self.pass = self.pass.max(rate);
        } else {
            self.fail = Some(self.fail.map_or(rate, |f| f.min(rate)));
        }
        match self.fail {
            Some(fail) => next_rate(self.pass, fail, precision),
            None if rate >= max => None,
            None => Some((rate * growth).min(max)),
        }
    }
}

pub async fn search(
    target: &Target,
    workload: &Workload,
    pool: &PgPool,
    options: &SearchOptions,
) -> anyhow::Result<SearchReport> {
    let limit_ms = options.p99_limit.as_secs_f64() * 1000.0;
    let mut bracket = Bracket {
        pass: 0.0,
        fail: None,
    };
    let mut rate = options.start_rate.min(options.max_rate);
    let mut steps = Vec::new();
    // A backlog left by an earlier run would count against the first step.
    catch_up(options).await?;
    if !options.warm_up_run.is_zero() {
        let warm = run_step(target, workload, pool, options, rate, options.warm_up_run).await?;
        eprintln!(
            "rate search: warm-up at {rate:.0} items/s for {:?} (not judged): p99 {:.0} ms",
            options.warm_up_run,
            warm.report.e2e.as_ref().map_or(0.0, |e| e.latency.p99_ms)
        );
        catch_up(options).await?;
    }
    for _ in 0..options.max_steps {
        let step = run_step(target, workload, pool, options, rate, options.step).await?;
        eprintln!(
            "rate search: {rate:.0} items/s {} {}",
            if step.passed { "passed" } else { "failed:" },
            step.reason
        );
        let next = bracket.next(
            rate,
            step.passed,
            options.growth,
            options.max_rate,
            options.precision,
        );
        steps.push(step);
        catch_up(options).await?;
        match next {
            Some(next) => rate = next,
            None => break,
        }
    }

    let mut confirmed = None;
    let mut rate = bracket.pass;
    for _ in 0..options.confirmations {
        if rate <= 0.0 {
            break;
        }
        let step = run_step(target, workload, pool, options, rate, options.confirm).await?;
        eprintln!(
            "rate search: confirmation at {rate:.0} items/s for {:?} {} {}",
            options.confirm,
            if step.passed { "passed" } else { "failed:" },
            step.reason
        );
        if let Some(e2e) = &step.report.e2e {
            let minutes: Vec<String> = e2e
                .per_minute
                .iter()
                .map(|m| format!("{:.0}", m.p99_ms))
                .collect();
            eprintln!(
                "rate search: accept → visible p99 per minute (ms): {}",
                minutes.join(" ")
            );
        }
        let passed = step.passed;
        steps.push(step.clone());
        if passed {
            confirmed = Some(step);
            break;
        }
        catch_up(options).await?;
        rate *= 0.9;
    }
    Ok(SearchReport {
        workload: serde_json::to_value(workload)?,
        p99_limit_ms: limit_ms,
        sustained_items_per_sec: confirmed
            .as_ref()
            .map_or(0.0, |s| s.report.accepted_items_per_sec),
        confirmed,
        steps,
    })
}

async fn run_step(
    target: &Target,
    workload: &Workload,
    pool: &PgPool,
    options: &SearchOptions,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Step> {
    let done = CancellationToken::new();
    let (sampler, e2e_task) = e2e::start(
        pool.clone(),
        target.project.clone(),
        target.datasource.clone(),
        Duration::from_millis(20),
        Duration::from_secs(30),
        done.clone(),
    );
    let load = LoadOptions {
        connections: options.connections,
        rate: Some(rate),
        duration,
        warmup: options.warmup,
        timeout: Duration::from_secs(30),
        e2e_every: options.e2e_every,
        progress: false,
        local_address: None,
        cpu_watch: options.cpu_watch.clone(),
    };
    // Resident memory of the watched processes every 10 s (does the worker's plateau?).
    let stop_watch = CancellationToken::new();
    let memory = tokio::spawn(crate::procwatch::watch(
        options.cpu_watch.clone(),
        Duration::from_secs(10),
        stop_watch.clone(),
    ));
    let report = http::run(target.clone(), workload.clone(), load, Some(sampler)).await;
    stop_watch.cancel();
    done.cancel();
    let e2e = e2e_task.await??;
    let mut report = report?;
    report.e2e = Some(e2e);
    report.memory = memory.await?;
    let reason = verdict(&report, options.p99_limit.as_secs_f64() * 1000.0);
    Ok(Step {
        offered_items_per_sec: rate,
        duration_s: duration.as_secs_f64(),
        passed: reason.is_none(),
        reason: reason.unwrap_or_default(),
        report,
    })
}

/// Waits until the workers' consumer group has committed every message of the topics:
/// its lag is zero. (The worker's own counters start at its start, so they cannot say
/// whether messages from before it, handled by an earlier worker, are done.)
async fn catch_up(options: &SearchOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let lag = crate::drain::group_lag(&options.brokers, &options.group, &options.topics)?;
        if lag == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < options.catch_up_timeout,
            "the workers did not catch up within {:?} (lag {lag} messages)",
            options.catch_up_timeout
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(accepted: u64, p99_ms: f64, unseen: u64, statuses: &str) -> LoadReport {
        serde_json::from_value(serde_json::json!({
            "mode": "open", "workload": {}, "connections": 64, "duration_s": 30.0,
            "offered_items_per_sec": 1000.0, "requests": 10, "requests_per_sec": 1.0,
            "items_sent": 1000, "invalid_items_sent": 0, "accepted_items": accepted,
            "accepted_items_per_sec": accepted as f64 / 30.0, "failed_items": 0,
            "statuses": serde_json::from_str::<serde_json::Value>(statuses).unwrap(),
            "not_sent": 0,
            "latency": {"count": 1, "mean_ms": 1.0, "p50_ms": 1.0, "p90_ms": 1.0,
                        "p99_ms": 1.0, "p999_ms": 1.0, "max_ms": 1.0},
            "latency_basis": "", "memory": [],
            "e2e": {"latency": {"count": 10, "mean_ms": 1.0, "p50_ms": 1.0, "p90_ms": 1.0,
                                "p99_ms": p99_ms, "p999_ms": 1.0, "max_ms": 1.0},
                    "unseen": unseen, "poll_interval_ms": 20}
        }))
        .unwrap()
    }

    #[test]
    fn a_step_passes_only_when_everything_was_accepted_and_visible_in_time() {
        assert_eq!(
            verdict(&report(1000, 900.0, 0, r#"{"202":10}"#), 1000.0),
            None
        );
        assert!(verdict(&report(1000, 1000.0, 0, r#"{"202":10}"#), 1000.0)
            .unwrap()
            .contains("p99"));
        assert!(verdict(&report(1000, 10.0, 1, r#"{"202":10}"#), 1000.0)
            .unwrap()
            .contains("not visible"));
        assert!(verdict(&report(900, 10.0, 0, r#"{"202":10}"#), 1000.0)
            .unwrap()
            .contains("accepted"));
        assert!(
            verdict(&report(1000, 10.0, 0, r#"{"202":9,"503":1}"#), 1000.0)
                .unwrap()
                .contains("503")
        );
        // Under the limit over the whole run, over it in one minute: fails.
        let mut slow_minute = report(1000, 900.0, 0, r#"{"202":10}"#);
        let e2e = slow_minute.e2e.as_mut().unwrap();
        e2e.per_minute = (0..30)
            .map(|minute| crate::e2e::MinuteLatency {
                minute,
                samples: 100,
                p99_ms: if minute == 17 { 1500.0 } else { 200.0 },
            })
            .collect();
        assert_eq!(
            verdict(&slow_minute, 1000.0).unwrap(),
            "accept → visible p99 1500 ms ≥ 1000 ms in minute 17"
        );
    }

    #[test]
    fn bisection_narrows_the_bracket_and_stops() {
        assert_eq!(next_rate(0.0, 100_000.0, 0.05), Some(50_000.0));
        assert_eq!(next_rate(40_000.0, 50_000.0, 0.05), Some(45_000.0));
        assert_eq!(next_rate(48_000.0, 50_000.0, 0.05), None);
    }

    /// The rates a search tries when every step up to `limit` passes.
    fn rates_tried(start: f64, limit: f64, max: f64) -> Vec<f64> {
        let mut bracket = Bracket {
            pass: 0.0,
            fail: None,
        };
        let (mut rate, mut tried) = (start, vec![]);
        for _ in 0..20 {
            tried.push(rate.round());
            match bracket.next(rate, rate <= limit, 1.25, max, 0.05) {
                Some(next) => rate = next,
                None => break,
            }
        }
        tried
    }

    #[test]
    fn the_search_climbs_until_a_step_fails_then_bisects() {
        assert_eq!(
            rates_tried(10_000.0, 14_000.0, 50_000.0),
            [10_000.0, 12_500.0, 15_625.0, 14_063.0, 13_281.0, 13_672.0]
        );
        // A first step that fails bisects downwards.
        assert_eq!(
            rates_tried(10_000.0, 6_000.0, 50_000.0),
            [10_000.0, 5_000.0, 7_500.0, 6_250.0, 5_625.0, 5_938.0]
        );
        // Every step passing stops at the maximum.
        assert_eq!(
            rates_tried(10_000.0, 1e9, 15_000.0),
            [10_000.0, 12_500.0, 15_000.0]
        );
    }
}
