//! Resident memory of other processes (the gateway, the worker), sampled from
//! `/proc/<pid>/status` while a run goes on: is memory flat over a soak?

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemorySeries {
    pub name: String,
    pub pid: u32,
    /// `(seconds since the run started, RSS in MiB)`.
    pub samples: Vec<(f64, f64)>,
    pub first_mib: f64,
    pub last_mib: f64,
    pub max_mib: f64,
    /// Least-squares slope over the second half of the samples (after warm-up growth).
    pub slope_mib_per_min: f64,
}

/// `name=pid` as given on the command line.
pub fn parse_watch(arg: &str) -> Result<(String, u32), String> {
    let (name, pid) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PID, got {arg:?}"))?;
    let pid = pid.parse().map_err(|_| format!("not a pid: {pid:?}"))?;
    Ok((name.to_owned(), pid))
}

pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A watched process: name, pid, `(seconds, MiB)` samples.
type Watched = (String, u32, Vec<(f64, f64)>);

/// Samples every watched process every `every` until `stop` is cancelled.
pub async fn watch(
    targets: Vec<(String, u32)>,
    every: Duration,
    stop: CancellationToken,
) -> Vec<MemorySeries> {
    let started = Instant::now();
    let mut series: Vec<Watched> = targets
        .into_iter()
        .map(|(name, pid)| (name, pid, Vec::new()))
        .collect();
    if series.is_empty() {
        return Vec::new();
    }
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => break,
        }
        let t = started.elapsed().as_secs_f64();
        for (_, pid, samples) in &mut series {
            if let Some(mib) = rss_mib(*pid) {
                samples.push((t, mib));
            }
        }
    }
    series
        .into_iter()
        .map(|(name, pid, samples)| summarize(name, pid, samples))
        .collect()
}

pub fn summarize(name: String, pid: u32, samples: Vec<(f64, f64)>) -> MemorySeries {
    let first_mib = samples.first().map_or(0.0, |s| s.1);
    let last_mib = samples.last().map_or(0.0, |s| s.1);
    let max_mib = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let tail = &samples[samples.len() / 2..];
    MemorySeries {
        name,
        pid,
        first_mib,
        last_mib,
        max_mib,
        slope_mib_per_min: slope(tail) * 60.0,
        samples,
    }
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if var == 0.0 {
        0.0
    } else {
        cov / var
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_a_flat_series() {
        let rising: Vec<_> = (0..10).map(|i| (i as f64, 2.0 * i as f64 + 5.0)).collect();
        assert!((slope(&rising) - 2.0).abs() < 1e-9);
        let flat: Vec<_> = (0..10).map(|i| (i as f64, 7.0)).collect();
        assert_eq!(slope(&flat), 0.0);
        let s = summarize("g".into(), 1, rising);
        assert_eq!(s.first_mib, 5.0);
        assert_eq!(s.max_mib, 23.0);
        assert!((s.slope_mib_per_min - 120.0).abs() < 1e-6);
    }

    #[test]
    fn reads_its_own_rss_and_parses_targets() {
        assert!(rss_mib(std::process::id()).unwrap() > 0.0);
        assert_eq!(parse_watch("gateway=42").unwrap(), ("gateway".into(), 42));
        assert!(parse_watch("gateway").is_err());
    }
}
