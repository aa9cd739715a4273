//! Other processes seen from `/proc` while a run goes on: resident memory of the gateway
//! and the worker, sampled from `/proc/<pid>/status` (is memory flat over a soak?), and
//! the CPU time each watched process (with its children: PostgreSQL's backends) and the
//! whole machine spent over the measured window (where does the CPU go?).

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

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on every Linux this
/// runs on; reading it from `sysconf` would take `unsafe` for one constant).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds (user + system) spent by `pid` and its live descendants, plus the
/// children it has reaped.
pub fn cpu_seconds_tree(pid: u32) -> Option<f64> {
    let stats: Vec<(u32, u32, f64)> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let (ppid, ticks) = stat_ticks(p, p == pid)?;
            Some((p, ppid, ticks))
        })
        .collect();
    stats.iter().find(|s| s.0 == pid)?;
    let mut tree = vec![pid];
    let mut total = 0.0;
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for (p, ppid, ticks) in &stats {
            if *p == parent {
                total += ticks;
            }
            if *ppid == parent && *p != parent {
                tree.push(*p);
            }
        }
        i += 1;
    }
    Some(total / TICKS_PER_SEC)
}

/// `(ppid, utime + stime [+ cutime + cstime])` from `/proc/<pid>/stat`.
fn stat_ticks(pid: u32, with_children: bool) -> Option<(u32, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after it.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let ppid = fields.get(1)?.parse().ok()?;
    let mut ticks = field(14)? + field(15)?;
    if with_children {
        ticks += field(16)? + field(17)?;
    }
    Some((ppid, ticks))
}

/// `(busy, total)` CPU seconds of the whole machine since boot, from `/proc/stat`.
pub fn machine_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4).unwrap_or(&0.0);
    Some(((total - idle) / TICKS_PER_SEC, total / TICKS_PER_SEC))
}

/// CPU times at one instant: each watched process's tree, this process, the machine.
#[derive(Debug, Clone)]
pub struct CpuMark {
    at: Instant,
    processes: Vec<(String, u32, Option<f64>)>,
    machine: Option<(f64, f64)>,
}

pub fn cpu_mark(targets: &[(String, u32)]) -> CpuMark {
    let mut processes: Vec<_> = targets
        .iter()
        .map(|(name, pid)| (name.clone(), *pid, cpu_seconds_tree(*pid)))
        .collect();
    let own = std::process::id();
    processes.push((
        "load generator".into(),
        own,
        stat_ticks(own, false).map(|t| t.1 / TICKS_PER_SEC),
    ));
    CpuMark {
        at: Instant::now(),
        processes,
        machine: machine_cpu_seconds(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CpuUse {
    pub name: String,
    pub pid: u32,
    pub cpu_s: f64,
    /// Cores busy on average: CPU seconds per second of the window.
    pub cores: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CpuReport {
    pub window_s: f64,
    pub processes: Vec<CpuUse>,
    /// Cores busy on the whole machine (every process, the kernel included).
    pub machine_busy_cores: Option<f64>,
    pub machine_cores: Option<f64>,
}

impl CpuReport {
    pub fn between(start: &CpuMark, end: &CpuMark) -> Self {
        let window_s = end.at.duration_since(start.at).as_secs_f64().max(1e-9);
        let processes = start
            .processes
            .iter()
            .zip(&end.processes)
            .filter_map(|((name, pid, a), (_, _, b))| {
                let cpu_s = (b.as_ref()? - a.as_ref()?).max(0.0);
                Some(CpuUse {
                    name: name.clone(),
                    pid: *pid,
                    cpu_s,
                    cores: cpu_s / window_s,
                })
            })
            .collect();
        let machine = start.machine.zip(end.machine);
        Self {
            window_s,
            processes,
            machine_busy_cores: machine.map(|(a, b)| (b.0 - a.0) / window_s),
            machine_cores: machine.map(|(a, b)| (b.1 - a.1) / window_s),
        }
    }

    /// Microseconds of CPU `name` spent per unit of work (`units` in the window).
    pub fn micros_per(&self, name: &str, units: u64) -> Option<f64> {
        let process = self.processes.iter().find(|p| p.name == name)?;
        (units > 0).then(|| process.cpu_s * 1e6 / units as f64)
    }
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
    fn cpu_of_a_busy_child_counts_for_its_parent() {
        let start = cpu_mark(&[("me".into(), std::process::id())]);
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        // While the child runs, it is a live descendant; once reaped, its time moves to
        // our cutime.
        std::thread::sleep(Duration::from_millis(200));
        let live = cpu_seconds_tree(std::process::id()).unwrap();
        child.wait().unwrap();
        let end = cpu_mark(&[("me".into(), std::process::id())]);
        let report = CpuReport::between(&start, &end);
        let me = &report.processes[0];
        assert!(me.cpu_s >= 0.1, "tree CPU {} s (live {live} s)", me.cpu_s);
        assert!(report.machine_busy_cores.unwrap() > 0.0);
        assert!(report.micros_per("me", 1000).unwrap() > 0.0);
    }

    #[test]
    fn reads_its_own_rss_and_parses_targets() {
        assert!(rss_mib(std::process::id()).unwrap() > 0.0);
        assert_eq!(parse_watch("gateway=42").unwrap(), ("gateway".into(), 42));
        assert!(parse_watch("gateway").is_err());
    }
}
