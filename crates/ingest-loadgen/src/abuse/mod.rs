//! `ingest-loadgen abuse <scenario>`: one attack on a running gateway while a healthy
//! client keeps writing, with the gateway's memory and descriptors watched before,
//! during and after. `scripts/bench-abuse.sh` runs every scenario in turn.
//!
//! The attack comes from source addresses of its own (127.0.0.2, 127.0.0.3, … at most
//! `--per-address` connections each), the healthy client from 127.0.0.1, as a real
//! separate client would: a gateway limiting per client address can tell them apart.
//!
//! Timeline of one scenario: the healthy client alone for `--idle` (the gateway's memory
//! then is its "idle" size: serving, not attacked), the attack for `--hold` with the
//! healthy client measured throughout, then `--after` of nothing but sampling (the
//! memory "after").

mod attack;
mod flood;
mod gateway;
mod probe;
pub mod render;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::http::{self, LoadReport};
use crate::stats::Percentiles;
use crate::workload::{Kind, Workload};
use attack::{AttackReport, Payload};
use flood::{Flood, FloodReport};
use gateway::GatewayReport;
use probe::ProbeReport;

/// The gateway's resident memory must stay below this in every scenario.
pub const RSS_LIMIT_MIB: f64 = 512.0;
/// The healthy client's p99 latency must stay below this during every attack.
pub const HEALTHY_P99_LIMIT_MS: f64 = 250.0;
/// After the attack, memory must come back within this factor of its idle size.
pub const RECOVERY_FACTOR: f64 = 2.0;

/// The attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// No attack: the healthy client alone, for reference.
    Baseline,
    /// Request heads without Authorization declaring a 1 MiB body, all of it but one
    /// byte sent, then silence.
    StalledBodyAnon,
    /// The same with the attacker's valid token.
    StalledBodyAuth,
    /// Connections that send nothing.
    Idle,
    /// Request heads sent one byte every few seconds, never finished.
    Slowloris,
    /// Closed-loop requests with random well-formed unknown tokens.
    TokenFlood,
}

impl Scenario {
    fn default_connections(self) -> usize {
        match self {
            Scenario::Baseline => 0,
            Scenario::StalledBodyAnon | Scenario::StalledBodyAuth => 1_000,
            Scenario::Idle => 12_000,
            Scenario::Slowloris => 3_000,
            Scenario::TokenFlood => 300,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::StalledBodyAnon => "stalled-body-anon",
            Scenario::StalledBodyAuth => "stalled-body-auth",
            Scenario::Idle => "idle",
            Scenario::Slowloris => "slowloris",
            Scenario::TokenFlood => "token-flood",
        }
    }
}

#[derive(Debug, Args)]
pub struct AbuseArgs {
    #[arg(value_enum)]
    scenario: Scenario,
    /// Gateway base URL (its public listener, on 127.0.0.0/8).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The gateway's Prometheus metrics, for the token flood [default: <url>/metrics].
    #[arg(long)]
    metrics_url: Option<String>,
    #[arg(long)]
    project: String,
    #[arg(long, default_value = "attacker")]
    attacker_datasource: String,
    /// The attacker's valid token (stalled-body-auth).
    #[arg(long, env = "INGEST_ABUSE_ATTACKER_TOKEN", hide_env_values = true)]
    attacker_token: Option<String>,
    #[arg(long, default_value = "healthy")]
    healthy_datasource: String,
    /// The healthy client's token.
    #[arg(long, env = "INGEST_ABUSE_HEALTHY_TOKEN", hide_env_values = true)]
    healthy_token: String,
    /// Attack connections [default: stalled bodies 1000, idle 12000, slowloris 3000,
    /// token flood 300].
    #[arg(long)]
    connections: Option<usize>,
    /// How long the attack lasts; every attack connection is closed at its end.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    hold: Duration,
    /// How long after the attack the gateway's memory is read "after".
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    after: Duration,
    /// How long the healthy client runs alone before the attack; the gateway's memory
    /// at its end is its "idle" size.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    idle: Duration,
    /// Attack connections opened per second at most.
    #[arg(long, default_value_t = 3000.0)]
    open_rate: f64,
    /// First attack source address; the next ones follow it.
    #[arg(long, default_value = "127.0.0.2")]
    attack_source: Ipv4Addr,
    /// Attack connections per source address at most.
    #[arg(long, default_value_t = 1000)]
    per_address: usize,
    /// Content-Length declared by stalled requests; one byte less is sent.
    #[arg(long, default_value_t = 1_048_576)]
    body_bytes: usize,
    /// Slowloris: one byte of the request head every this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    slowloris_every: Duration,
    /// Token flood: per-request timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    flood_timeout: Duration,
    /// Healthy client: requests per second (open loop, latency from the intended send
    /// time).
    #[arg(long, default_value_t = 50.0)]
    healthy_rate: f64,
    /// Healthy client: events per request.
    #[arg(long, default_value_t = 10)]
    healthy_batch: usize,
    /// Healthy client: per-request timeout; a timeout counts as an error.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    healthy_timeout: Duration,
    /// Healthy client: requests in flight at most.
    #[arg(long, default_value_t = 64)]
    healthy_connections: usize,
    /// Healthy client's source address.
    #[arg(long, default_value = "127.0.0.1")]
    healthy_source: Ipv4Addr,
    /// A fresh connection from the healthy client's address (`GET /openapi.json`) this often
    /// during the attack: can a new client get in?
    #[arg(long, value_parser = humantime::parse_duration, default_value = "200ms")]
    probe_every: Duration,
    /// The gateway's process id (memory and descriptors are read from /proc).
    #[arg(long)]
    gateway_pid: u32,
    /// The gateway's log, searched for "Too many open files".
    #[arg(long)]
    gateway_log: Option<PathBuf>,
    /// How often the gateway's memory and descriptors are sampled.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    sample_every: Duration,
    /// Name of the result [default: scenario-connections, e.g. idle-12000].
    #[arg(long)]
    label: Option<String>,
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// Attack source addresses: `first`, `first + 1`, …, each for `per_address` connections.
#[derive(Debug, Clone, Copy)]
pub struct Sources {
    pub first: Ipv4Addr,
    pub per_address: usize,
}

impl Sources {
    pub fn new(first: Ipv4Addr, per_address: usize) -> Self {
        Self {
            first,
            per_address: per_address.max(1),
        }
    }

    /// The source address of the `i`-th connection.
    pub fn address(&self, i: usize) -> Ipv4Addr {
        let offset = u32::try_from(i / self.per_address).unwrap_or(u32::MAX);
        Ipv4Addr::from(u32::from(self.first).saturating_add(offset))
    }

    /// The addresses `n` connections use, first and last, checked to be loopback
    /// addresses other than `avoid` (the healthy client's).
    fn check(&self, n: usize, avoid: Ipv4Addr) -> anyhow::Result<(Ipv4Addr, Ipv4Addr)> {
        let last = self.address(n.saturating_sub(1));
        if !self.first.is_loopback() || !last.is_loopback() {
            bail!("attack sources {}–{last} leave 127.0.0.0/8", self.first);
        }
        if (self.first..=last).contains(&avoid) {
            bail!(
                "attack sources {}–{last} include the healthy client's {avoid}",
                self.first
            );
        }
        Ok((self.first, last))
    }
}

/// The healthy client during one scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HealthyReport {
    pub source: String,
    pub offered_requests_per_sec: f64,
    pub items_per_request: usize,
    pub timeout_s: f64,
    pub requests: u64,
    /// Answers by status code; `error` counts requests without one (timeouts included).
    pub statuses: BTreeMap<String, u64>,
    /// Scheduled requests never sent because too many were waiting already.
    pub not_sent: u64,
    /// Intended send time → answer (or error).
    pub latency: Percentiles,
    /// Fresh connections from the same address during the attack (the healthy client's
    /// own connections are kept alive, so it does not notice a gateway that stops
    /// accepting new ones).
    pub new_connections: ProbeReport,
}

/// The targets the gateway must meet, per scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Targets {
    pub rss_below_limit: bool,
    pub healthy_p99_below_limit: bool,
    pub no_emfile: bool,
    pub rss_recovered: bool,
    pub gateway_alive: bool,
}

impl Targets {
    fn of(gateway: &GatewayReport, healthy: &HealthyReport) -> Self {
        Self {
            rss_below_limit: gateway.rss_peak_mib < RSS_LIMIT_MIB,
            healthy_p99_below_limit: healthy.requests > 0
                && healthy.latency.p99_ms < HEALTHY_P99_LIMIT_MS,
            no_emfile: gateway.emfile_log_lines == Some(0),
            rss_recovered: gateway.alive_after
                && gateway.rss_after_mib <= RECOVERY_FACTOR * gateway.rss_idle_mib,
            gateway_alive: gateway.alive_after,
        }
    }

    pub fn all_met(&self) -> bool {
        self.rss_below_limit
            && self.healthy_p99_below_limit
            && self.no_emfile
            && self.rss_recovered
            && self.gateway_alive
    }
}

/// One scenario's result (`--json-out`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbuseReport {
    pub scenario: Scenario,
    pub label: String,
    pub connections: usize,
    pub hold_s: f64,
    pub after_s: f64,
    /// First and last attack source address.
    pub attack_sources: String,
    pub gateway: GatewayReport,
    pub healthy: HealthyReport,
    pub attack: Option<AttackReport>,
    pub flood: Option<FloodReport>,
    pub targets: Targets,
}

pub async fn run(args: AbuseArgs) -> anyhow::Result<()> {
    let scenario = args.scenario;
    let connections = args
        .connections
        .unwrap_or_else(|| scenario.default_connections());
    let label = args.label.clone().unwrap_or_else(|| match scenario {
        Scenario::Baseline => scenario.name().to_owned(),
        _ => format!("{}-{connections}", scenario.name()),
    });
    let target = loopback_target(&args.url)?;
    let sources = Sources::new(args.attack_source, args.per_address);
    let (first, last) = sources.check(connections, args.healthy_source)?;
    raise_fd_limit(connections + args.healthy_connections + 256)?;
    let base = args.url.trim_end_matches('/').to_owned();

    eprintln!("{label}: the healthy client alone for {:?}", args.idle);
    let watch = gateway::Watch::start(
        args.gateway_pid,
        args.gateway_log.clone(),
        args.sample_every,
    );
    let healthy = spawn_healthy(&args, &base, target)?;
    tokio::time::sleep(args.idle).await;

    let attack_start_s = watch.now_s();
    let end = Instant::now() + args.hold;
    match scenario {
        Scenario::Baseline => eprintln!("{label}: no attack, for {:?}", args.hold),
        _ => eprintln!("{label}: attack from {first}–{last} for {:?}", args.hold),
    }
    let attack_counters = Arc::new(attack::Counters::default());
    let flood_counters = Arc::new(flood::Counters::default());
    let progress = spawn_progress(watch.samples(), {
        let (a, f) = (attack_counters.clone(), flood_counters.clone());
        move || match scenario {
            Scenario::Baseline => String::new(),
            Scenario::TokenFlood => f.progress(),
            _ => a.progress(),
        }
    });
    let (attack, flood) = attack(
        &args,
        Attack {
            target,
            sources,
            connections,
            end,
        },
        attack_counters,
        flood_counters,
    )
    .await?;
    let attack_end_s = watch.now_s();
    let attack_ended = Instant::now();
    eprintln!(
        "{label}: attack over; watching the gateway for {:?}",
        args.after
    );
    let (healthy, new_connections) = healthy
        .await
        .context("the healthy client's thread died")??;
    tokio::time::sleep_until((attack_ended + args.after).into()).await;
    progress.abort();
    let gateway = watch.finish(attack_start_s, attack_end_s).await;

    let healthy = HealthyReport {
        source: args.healthy_source.to_string(),
        offered_requests_per_sec: args.healthy_rate,
        items_per_request: args.healthy_batch,
        timeout_s: args.healthy_timeout.as_secs_f64(),
        requests: healthy.requests,
        statuses: healthy.statuses,
        not_sent: healthy.not_sent,
        latency: healthy.latency,
        new_connections,
    };
    let report = AbuseReport {
        scenario,
        label,
        connections,
        hold_s: args.hold.as_secs_f64(),
        after_s: args.after.as_secs_f64(),
        attack_sources: match connections {
            0 => String::new(),
            _ if first == last => first.to_string(),
            _ => format!("{first}–{last}"),
        },
        targets: Targets::of(&gateway, &healthy),
        gateway,
        healthy,
        attack,
        flood,
    };
    eprintln!("{}", summary(&report));
    crate::output(&report, args.json_out.as_ref())
}

/// Where and how hard one attack hits, and when it ends.
struct Attack {
    target: SocketAddr,
    sources: Sources,
    connections: usize,
    end: Instant,
}

/// Runs the scenario's attack until `a.end`: raw connections, a token flood, or (the
/// baseline) nothing.
async fn attack(
    args: &AbuseArgs,
    a: Attack,
    attack_counters: Arc<attack::Counters>,
    flood_counters: Arc<flood::Counters>,
) -> anyhow::Result<(Option<AttackReport>, Option<FloodReport>)> {
    let host = a.target.to_string();
    let path = format!(
        "/v1/project/{}/datasource/{}/stream/events",
        args.project, args.attacker_datasource
    );
    let payload = match args.scenario {
        Scenario::Baseline => {
            tokio::time::sleep_until(a.end.into()).await;
            return Ok((None, None));
        }
        Scenario::TokenFlood => {
            let base = args.url.trim_end_matches('/');
            let flood = Flood {
                url: format!("{base}{path}"),
                metrics_url: args
                    .metrics_url
                    .clone()
                    .unwrap_or_else(|| format!("{base}/metrics")),
                sources: a.sources,
                connections: a.connections,
                timeout: args.flood_timeout,
                body: Workload::new(Kind::Events, 1, 300, 0.0, 1_000)
                    .batch(0, &mut rand::rng())
                    .body,
            };
            return Ok((None, Some(flood.run(a.end, flood_counters).await?)));
        }
        Scenario::StalledBodyAnon => Payload::Stalled {
            head: attack::stalled_head(&host, &path, args.body_bytes, None),
            body: args.body_bytes.saturating_sub(1),
        },
        Scenario::StalledBodyAuth => {
            let token = args
                .attacker_token
                .as_deref()
                .context("stalled-body-auth needs --attacker-token")?;
            Payload::Stalled {
                head: attack::stalled_head(&host, &path, args.body_bytes, Some(token)),
                body: args.body_bytes.saturating_sub(1),
            }
        }
        Scenario::Idle => Payload::Idle,
        Scenario::Slowloris => {
            let bytes_sent =
                args.hold.as_secs_f64() / args.slowloris_every.as_secs_f64().max(0.001);
            Payload::Slowloris {
                head: attack::slowloris_head(&host, &path, bytes_sent as usize + 64),
                every: args.slowloris_every,
            }
        }
    };
    let report = attack::run(
        a.target,
        a.sources,
        a.connections,
        args.open_rate,
        payload,
        a.end,
        attack_counters,
    )
    .await;
    Ok((Some(report), None))
}

/// `ip:port` of a `http://` URL, which must point into 127.0.0.0/8.
fn loopback_target(url: &str) -> anyhow::Result<SocketAddr> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("not a URL: {url}"))?;
    let host: Ipv4Addr = parsed
        .host_str()
        .and_then(|h| h.parse().ok())
        .with_context(|| format!("{url}: the gateway must be given by an IPv4 address"))?;
    if !host.is_loopback() {
        bail!("{url}: attacks go to 127.0.0.0/8 only");
    }
    let port = parsed
        .port_or_known_default()
        .with_context(|| format!("{url}: no port"))?;
    Ok(SocketAddr::new(IpAddr::V4(host), port))
}

/// Raises this process's soft limit on open files to its hard limit if `needed` is more.
fn raise_fd_limit(needed: usize) -> anyhow::Result<()> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    if (limit as usize) < needed {
        bail!("{needed} file descriptors needed, the hard limit allows {limit}");
    }
    Ok(())
}

/// Runs the healthy client, and the new-connection probes from its address, on a thread
/// and runtime of their own, so that thousands of attack tasks do not delay them in the
/// load generator itself. Both measure from `args.idle` on, for `args.hold`.
fn spawn_healthy(
    args: &AbuseArgs,
    base: &str,
    gateway: SocketAddr,
) -> anyhow::Result<oneshot::Receiver<anyhow::Result<(LoadReport, ProbeReport)>>> {
    let target = http::Target {
        base_url: base.to_owned(),
        project: args.project.clone(),
        datasource: args.healthy_datasource.clone(),
        token: args.healthy_token.clone(),
    };
    let workload = Workload::new(Kind::Events, args.healthy_batch, 300, 0.0, 100_000);
    let options = http::LoadOptions {
        connections: args.healthy_connections,
        rate: Some(args.healthy_rate * args.healthy_batch as f64),
        duration: args.hold,
        warmup: args.idle,
        timeout: args.healthy_timeout,
        e2e_every: 1,
        progress: false,
        local_address: Some(IpAddr::V4(args.healthy_source)),
        cpu_watch: Vec::new(),
    };
    let probe_from = Instant::now() + args.idle;
    let probes = probe::run(
        gateway,
        args.healthy_source,
        args.probe_every,
        args.healthy_timeout,
        probe_from,
        probe_from + args.hold,
    );
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("healthy-client".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| {
                    rt.block_on(async {
                        let (load, probes) =
                            tokio::join!(http::run(target, workload, options, None), probes);
                        Ok((load?, probes))
                    })
                });
            let _ = tx.send(result);
        })?;
    Ok(rx)
}

/// Prints the gateway's memory and descriptors and `attack()` every two seconds.
fn spawn_progress(
    samples: Arc<Mutex<Vec<gateway::Sample>>>,
    attack: impl Fn() -> String + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(2));
        loop {
            ticker.tick().await;
            let last = samples.lock().expect("samples lock").last().copied();
            if let Some(s) = last {
                eprintln!(
                    "[{:>5.0}s] gateway {:>7.0} MiB {:>6} fds  {}",
                    s.t_s,
                    s.rss_mib,
                    s.fds,
                    attack()
                );
            }
        }
    })
}

/// One line per scenario on stderr.
fn summary(r: &AbuseReport) -> String {
    let g = &r.gateway;
    let h = &r.healthy;
    let mut line = format!(
        "{}: gateway RSS {:.0} → peak {:.0} → {:.0} MiB after {:.0} s; fds peak {} (limit {}); \
         \"{}\" lines: {}; healthy p50 {:.1} ms p99 {:.1} ms max {:.1} ms, statuses {:?}; \
         new connections {:?}",
        r.label,
        g.rss_idle_mib,
        g.rss_peak_mib,
        g.rss_after_mib,
        r.after_s,
        g.fds_peak,
        g.fd_limit.map_or("?".into(), |l| l.to_string()),
        gateway::EMFILE,
        g.emfile_log_lines.map_or("?".into(), |n| n.to_string()),
        h.latency.p50_ms,
        h.latency.p99_ms,
        h.latency.max_ms,
        h.statuses,
        h.new_connections.outcomes
    );
    if let Some(a) = &r.attack {
        line.push_str(&format!(
            "; attack: {} connected, connect failures {:?}, answers {:?}, {} closed by server, {} held to the end",
            a.connected, a.connect_failures, a.answered, a.closed_by_server, a.held_to_end
        ));
    }
    if let Some(f) = &r.flood {
        line.push_str(&format!(
            "; flood: {:.0} answers/s, statuses {:?}, token look-ups in PostgreSQL {:?}",
            f.answered_per_sec, f.statuses, f.token_lookups_in_db
        ));
    }
    line.push_str(&format!(
        "; targets {}",
        if r.targets.all_met() {
            "met"
        } else {
            "NOT met"
        }
    ));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread_connections_and_stay_on_loopback() {
        let s = Sources::new(Ipv4Addr::new(127, 0, 0, 2), 1000);
        assert_eq!(s.address(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(s.address(999), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(s.address(1000), Ipv4Addr::new(127, 0, 0, 3));
        let s = Sources::new(Ipv4Addr::new(127, 0, 0, 250), 1);
        assert_eq!(s.address(10), Ipv4Addr::new(127, 0, 1, 4));
        assert_eq!(
            s.check(11, Ipv4Addr::LOCALHOST).unwrap().1,
            Ipv4Addr::new(127, 0, 1, 4)
        );
        assert!(Sources::new(Ipv4Addr::new(127, 255, 255, 255), 1)
            .check(2, Ipv4Addr::LOCALHOST)
            .is_err());
        assert!(Sources::new(Ipv4Addr::LOCALHOST, 10)
            .check(5, Ipv4Addr::LOCALHOST)
            .is_err());
    }

    #[test]
    fn targets_only_loopback() {
        assert_eq!(
            loopback_target("http://127.0.0.1:38080").unwrap(),
            "127.0.0.1:38080".parse().unwrap()
        );
        assert!(loopback_target("http://10.0.0.1:80").is_err());
        assert!(loopback_target("http://localhost:80").is_err());
    }

    #[test]
    fn targets_follow_the_figures() {
        let gateway = GatewayReport {
            rss_idle_mib: 50.0,
            rss_peak_mib: 400.0,
            rss_after_mib: 90.0,
            emfile_log_lines: Some(0),
            alive_after: true,
            ..Default::default()
        };
        let mut healthy = HealthyReport {
            requests: 100,
            ..Default::default()
        };
        healthy.latency.p99_ms = 20.0;
        assert!(Targets::of(&gateway, &healthy).all_met());
        let bloated = GatewayReport {
            rss_peak_mib: 2048.0,
            rss_after_mib: 101.0,
            ..gateway.clone()
        };
        let t = Targets::of(&bloated, &healthy);
        assert!(!t.rss_below_limit && !t.rss_recovered && t.no_emfile);
        healthy.latency.p99_ms = 3000.0;
        assert!(!Targets::of(&gateway, &healthy).healthy_p99_below_limit);
    }
}
