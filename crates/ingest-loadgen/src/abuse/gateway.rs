//! The gateway seen from outside while it is attacked: resident memory and open file
//! descriptors sampled from `/proc`, and what its log said.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::procwatch;

/// What the gateway logs when it runs out of file descriptors (`EMFILE`).
pub const EMFILE: &str = "Too many open files";

/// One look at the gateway.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the scenario started.
    pub t_s: f64,
    pub rss_mib: f64,
    pub fds: u64,
}

/// The gateway's memory and descriptors over one scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GatewayReport {
    pub pid: u32,
    /// RSS right before the attack started.
    pub rss_idle_mib: f64,
    /// Highest RSS from the attack's start to the end of the scenario.
    pub rss_peak_mib: f64,
    /// RSS at the end of the scenario (the wait after the attack).
    pub rss_after_mib: f64,
    pub fds_idle: u64,
    pub fds_peak: u64,
    pub fds_after: u64,
    /// The gateway's soft limit on open files.
    pub fd_limit: Option<u64>,
    /// Lines of the gateway's log, written during the scenario, that contain
    /// "Too many open files" (`None`: no log was given).
    pub emfile_log_lines: Option<u64>,
    /// The first such line, for the record.
    pub emfile_example: Option<String>,
    /// Whether the gateway process still lived at the end.
    pub alive_after: bool,
    pub attack_start_s: f64,
    pub attack_end_s: f64,
    pub samples: Vec<Sample>,
}

/// Samples the gateway until stopped; marks when the attack started and ended.
pub struct Watch {
    pid: u32,
    started: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    log: Option<(PathBuf, u64)>,
}

impl Watch {
    /// Starts sampling `pid` every `every`; remembers where `log` ends now, so that only
    /// what the gateway logs from now on is searched.
    pub fn start(pid: u32, log: Option<PathBuf>, every: Duration) -> Self {
        let started = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (samples, stop) = (samples.clone(), stop.clone());
            async move {
                let mut ticker = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        () = stop.cancelled() => break,
                    }
                    if let Some(sample) = sample(pid, started) {
                        samples.lock().expect("samples lock").push(sample);
                    }
                }
            }
        });
        let log = log.map(|path| {
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            (path, len)
        });
        Self {
            pid,
            started,
            samples,
            stop,
            task,
            log,
        }
    }

    /// Seconds since the watch started.
    pub fn now_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// A cheap handle for progress lines.
    pub fn samples(&self) -> Arc<Mutex<Vec<Sample>>> {
        self.samples.clone()
    }

    /// Stops sampling and summarizes: idle right before `attack_start_s`, peak from then
    /// on.
    pub async fn finish(self, attack_start_s: f64, attack_end_s: f64) -> GatewayReport {
        // One last look, so the figure "after" is taken right at the end.
        if let Some(last) = sample(self.pid, self.started) {
            self.samples.lock().expect("samples lock").push(last);
        }
        self.stop.cancel();
        let _ = self.task.await;
        let samples = std::mem::take(&mut *self.samples.lock().expect("samples lock"));
        let (emfile_log_lines, emfile_example) = match &self.log {
            Some((path, from)) => match scan_log(path, *from, EMFILE) {
                Ok((count, example)) => (Some(count), example),
                Err(err) => {
                    eprintln!("cannot read {}: {err}", path.display());
                    (None, None)
                }
            },
            None => (None, None),
        };
        summarize(
            self.pid,
            samples,
            attack_start_s,
            attack_end_s,
            emfile_log_lines,
            emfile_example,
        )
    }
}

fn summarize(
    pid: u32,
    samples: Vec<Sample>,
    attack_start_s: f64,
    attack_end_s: f64,
    emfile_log_lines: Option<u64>,
    emfile_example: Option<String>,
) -> GatewayReport {
    let (idle, during): (Vec<Sample>, Vec<Sample>) =
        samples.iter().partition(|s| s.t_s < attack_start_s);
    let idle = idle.last();
    let last = samples.last();
    GatewayReport {
        pid,
        rss_idle_mib: idle.map_or(0.0, |s| s.rss_mib),
        rss_peak_mib: during.iter().map(|s| s.rss_mib).fold(0.0, f64::max),
        rss_after_mib: last.map_or(0.0, |s| s.rss_mib),
        fds_idle: idle.map_or(0, |s| s.fds),
        fds_peak: during.iter().map(|s| s.fds).max().unwrap_or(0),
        fds_after: last.map_or(0, |s| s.fds),
        fd_limit: fd_limit(pid),
        emfile_log_lines,
        emfile_example,
        alive_after: procwatch::rss_mib(pid).is_some(),
        attack_start_s,
        attack_end_s,
        samples,
    }
}

/// RSS and open descriptors of `pid` now; `None` once the process is gone.
fn sample(pid: u32, started: Instant) -> Option<Sample> {
    let rss_mib = procwatch::rss_mib(pid)?;
    Some(Sample {
        t_s: started.elapsed().as_secs_f64(),
        rss_mib,
        fds: open_fds(pid).unwrap_or(0),
    })
}

/// How many file descriptors `pid` has open.
pub fn open_fds(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(dir.count() as u64)
}

/// The soft limit on open files of `pid` (`/proc/<pid>/limits`).
pub fn fd_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Lines containing `needle` in `path` from byte `from` on, and the first of them.
fn scan_log(path: &Path, from: u64, needle: &str) -> std::io::Result<(u64, Option<String>)> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let text = String::from_utf8_lossy(&text);
    let mut matching = text.lines().filter(|l| l.contains(needle));
    let first = matching.next().map(|l| l.chars().take(300).collect());
    let count = u64::from(first.is_some()) + matching.count() as u64;
    Ok((count, first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_descriptors_and_limit() {
        let me = std::process::id();
        assert!(open_fds(me).unwrap() >= 3);
        assert!(fd_limit(me).unwrap() >= 3);
    }

    #[test]
    fn scans_only_what_was_logged_after_the_start() {
        let dir = std::env::temp_dir().join(format!("abuse-log-{}", std::process::id()));
        std::fs::write(&dir, "accept error: Too many open files\nok\n").unwrap();
        let from = std::fs::metadata(&dir).unwrap().len();
        let mut text = std::fs::read_to_string(&dir).unwrap();
        text.push_str(
            "fine\naccept error: Too many open files (os error 24)\nx Too many open files\n",
        );
        std::fs::write(&dir, text).unwrap();
        let (count, first) = scan_log(&dir, from, EMFILE).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(count, 2);
        assert_eq!(
            first.as_deref(),
            Some("accept error: Too many open files (os error 24)")
        );
    }

    #[test]
    fn idle_is_before_the_attack_and_peak_from_it_on() {
        let s = |t_s, rss_mib, fds| Sample { t_s, rss_mib, fds };
        let samples = vec![
            s(0.0, 50.0, 20),
            s(1.0, 52.0, 21),
            s(2.0, 900.0, 1020),
            s(3.0, 400.0, 500),
            s(4.0, 60.0, 22),
        ];
        let r = summarize(u32::MAX, samples, 1.5, 3.5, Some(0), None);
        assert_eq!(r.rss_idle_mib, 52.0);
        assert_eq!(r.rss_peak_mib, 900.0);
        assert_eq!(r.rss_after_mib, 60.0);
        assert_eq!((r.fds_idle, r.fds_peak, r.fds_after), (21, 1020, 22));
        assert!(!r.alive_after);
    }
}
