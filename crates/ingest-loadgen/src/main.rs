//! `ingest-loadgen`: load and ceilings for the ingest pipeline.
//!
//! - `http`: batches against any gateway, open loop (`--rate`) or closed loop (max);
//! - `producer`: an application's load through the client library (`ingest-client`):
//!   producer tasks calling `track()`, the client batching and retrying;
//! - `producer-ceiling`: a bare producer with the gateway's settings;
//! - `copy-ceiling`: raw `COPY` of the same rows into the same table;
//! - `drain`: one worker turning a backlog into rows;
//! - `rate-search`: the highest open-loop rate the whole pipeline sustains with
//!   accept → visible p99 under a limit;
//! - `report`: `BENCHMARKS.md` from the JSON results of a run of `scripts/bench.sh`;
//! - `abuse`: one attack on a gateway (stalled bodies, idle connections, slowloris,
//!   unknown tokens) while a healthy client writes;
//! - `abuse-report`: `BENCHMARKS.md`'s abuse section from a run of
//!   `scripts/bench-abuse.sh`;
//! - `cluster-report`: `BENCHMARKS.md`'s three-nodes-vs-one section from a run of
//!   `scripts/bench-cluster.sh`.
//!
//! Every command prints progress on stderr and its result as JSON on stdout (or into
//! `--json-out`).

mod abuse;
mod ceiling;
mod cluster_report;
mod drain;
mod e2e;
mod http;
mod prefill;
mod procwatch;
mod producer;
mod rate_search;
mod report;
mod scale_report;
mod stats;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use workload::{IdKind, Kind, Shape, Workload};

#[derive(Debug, Parser)]
#[command(
    name = "ingest-loadgen",
    version,
    about = "Load generator and ceiling benchmarks for the ingest pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Post batches to a gateway: open loop with `--rate`, closed loop at max without.
    Http(HttpArgs),
    /// Drive the client library: producer tasks calling `track()` with varied events
    /// (closed loop, or `--rate` events/s in total); reports sustained accepted events/s,
    /// failures, delivery latency and the client's counters.
    Producer(producer::ProducerLoadArgs),
    /// Bare rdkafka producer with the gateway's producer settings (read from the same
    /// environment variables as the gateway: KAFKA_BROKERS, INGEST_TOPIC_PREFIX,
    /// INGEST_KAFKA_LINGER_MS, INGEST_KAFKA_COMPRESSION, ...), publishing the envelopes the
    /// gateway would publish, to a scratch topic deleted afterwards.
    ProducerCeiling(ProducerArgs),
    /// Raw COPY of event rows into the `events` table, under a project of its own.
    CopyCeiling(CopyArgs),
    /// Bulk-load events with the worker's own persistence (large batches sorted by id):
    /// a table already holding N events for the size benchmarks.
    Prefill(prefill::PrefillArgs),
    /// Set-based upserts of contact writes into the `contacts` table with the worker's
    /// merge semantics, under a project of its own: the worker's contacts ceiling.
    ContactsCeiling(ContactsCeilingArgs),
    /// Wait for a worker to drain the backlog of a topic; report its rate.
    Drain(DrainArgs),
    /// Print how many messages of the topics a consumer group has not committed yet.
    Lag(LagArgs),
    /// Search the highest open-loop rate at which the pipeline (gateway, Kafka, worker,
    /// PostgreSQL) accepts everything and accept → visible p99 stays under a limit;
    /// confirm it with a longer run.
    RateSearch(RateSearchArgs),
    /// Render BENCHMARKS.md's measured section from a results directory.
    Report(ReportArgs),
    /// Attack a running gateway in one way while a healthy client writes; report the
    /// gateway's memory and descriptors and the healthy client's latency.
    Abuse(abuse::AbuseArgs),
    /// Render BENCHMARKS.md's abuse section from a results directory of
    /// scripts/bench-abuse.sh.
    AbuseReport(ReportArgs),
    /// Render BENCHMARKS.md's three-nodes-vs-one section from a results directory of
    /// scripts/bench-cluster.sh.
    ClusterReport(ReportArgs),
    /// Render BENCHMARKS.md's "Events at scale" section from a results directory of
    /// scripts/bench-scale.sh (and, beside it, one of an earlier commit's run).
    ScaleReport(ScaleReportArgs),
}

#[derive(Debug, Args)]
struct ScaleReportArgs {
    #[command(flatten)]
    report: ReportArgs,
    /// The results of the same scenarios with an earlier commit's binaries.
    #[arg(long)]
    before: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct WorkloadArgs {
    /// contacts, events or mixed (alternating batches).
    #[arg(long, value_enum, default_value = "events")]
    kind: Kind,
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// realistic (distinct, varied items: every figure in BENCHMARKS.md) or reference
    /// (the near-identical padded items of earlier runs, for comparison only).
    #[arg(long, value_enum, default_value = "realistic")]
    shape: Shape,
    /// Reference shape: JSON size of one item (realistic items vary by themselves).
    #[arg(long, default_value_t = 300)]
    item_bytes: usize,
    /// Share of items made invalid on purpose (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    invalid_share: f64,
    /// Distinct users items are spread over (with a skew; new contacts come on top).
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Realistic contacts: share of contact writes that are deletes (one request each).
    #[arg(long, default_value_t = 0.005)]
    delete_share: f64,
    /// Realistic events: random (v4) or time-ordered (v7) UUIDs as `_event_id`.
    #[arg(long, value_enum, default_value = "v4")]
    ids: IdKind,
}

impl WorkloadArgs {
    fn workload(&self) -> Workload {
        Workload::new(
            self.kind,
            self.batch_size,
            self.item_bytes,
            self.invalid_share,
            self.users,
        )
        .with_shape(self.shape)
        .with_delete_share(self.delete_share)
        .with_ids(self.ids)
    }
}

/// The gateway and datasource a load is sent to.
#[derive(Debug, Args)]
struct TargetArgs {
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
}

impl TargetArgs {
    fn target(&self) -> http::Target {
        http::Target {
            base_url: self.url.clone(),
            project: self.project.clone(),
            datasource: self.datasource.clone(),
            token: self.token.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct HttpArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Concurrent connections (requests in flight at most).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Offered load in items per second (open loop). Without it: closed loop at max.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured duration, e.g. 30s, 2m.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    duration: Duration,
    /// Load sent before measuring starts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    warmup: Duration,
    /// Per-request timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Sample end-to-end latency (accept → row visible) from this database.
    #[arg(long)]
    e2e_database_url: Option<String>,
    /// Sample one accepted request in this many.
    #[arg(long, default_value_t = 10)]
    e2e_every: u64,
    #[arg(long, default_value_t = 20)]
    e2e_poll_ms: u64,
    /// Watch a process's resident memory: NAME=PID (repeatable).
    #[arg(long = "watch", value_parser = procwatch::parse_watch)]
    watch: Vec<(String, u32)>,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    watch_every: Duration,
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// No per-second progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct RateSearchArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// First rate tried, items/s.
    #[arg(long)]
    start_rate: f64,
    /// The highest rate tried (e.g. the worker's drain rate), items/s.
    #[arg(long)]
    max_rate: f64,
    /// Each passing step of the climb offers this many times the last one.
    #[arg(long, default_value_t = 1.25)]
    growth: f64,
    /// Measured length of each search step.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    step: Duration,
    /// Measured length of the confirmation run at the rate found.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
    confirm: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    warmup: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    p99_limit: Duration,
    #[arg(long, default_value_t = 0.05)]
    precision: f64,
    #[arg(long, default_value_t = 6)]
    max_steps: usize,
    /// Confirmation runs at most: each failed one lowers the rate by a tenth.
    #[arg(long, default_value_t = 3)]
    confirmations: usize,
    /// A run at the start rate before the first step, not judged (cold caches).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    warm_up_run: Duration,
    /// Sample one accepted request in this many for end-to-end latency.
    #[arg(long, default_value_t = 10)]
    e2e_every: u64,
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The workers' consumer group (its lag must be 0 before each step).
    #[arg(long, env = "INGEST_WORKER_GROUP", default_value = "ingest-worker")]
    group: String,
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    /// Topics the worker consumes (repeatable).
    #[arg(long = "topic", default_values_t = ["ingest.events".to_owned(), "ingest.contacts".to_owned()])]
    topics: Vec<String>,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    catch_up_timeout: Duration,
    /// A process whose CPU is reported (with its children): NAME=PID (repeatable).
    #[arg(long = "watch", value_parser = procwatch::parse_watch)]
    watch: Vec<(String, u32)>,
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ProducerArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Batches in flight at once (like concurrent requests).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    duration: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    warmup: Duration,
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CopyArgs {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[arg(long, default_value_t = 500_000)]
    rows: u64,
    #[arg(long, default_value_t = 10_000)]
    rows_per_copy: usize,
    /// Project the rows are written under.
    #[arg(long, default_value = "bench-copy")]
    project: String,
    /// Datasource the rows are written under.
    #[arg(long, default_value = "copy")]
    datasource: String,
    /// Delete the rows afterwards (and VACUUM), leaving the table as it was.
    #[arg(long)]
    cleanup: bool,
    /// Roll every COPY's transaction back instead of committing it: the ceiling at the
    /// table's present size, into the same project's part of its indexes, leaving nothing.
    #[arg(long, conflicts_with = "cleanup")]
    rollback: bool,
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ContactsCeilingArgs {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Contact writes (messages) to upsert.
    #[arg(long, default_value_t = 500_000)]
    rows: u64,
    /// Writes per transaction, folded per user first (the worker's batch size).
    #[arg(long, default_value_t = 5_000)]
    rows_per_chunk: usize,
    /// Methods to try, each on an emptied project; the fastest is the ceiling.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "unnest,copy-merge,unnest-nestloop,copy-merge-nestloop"
    )]
    methods: Vec<ceiling::ContactsMethod>,
    /// Project the rows are written under.
    #[arg(long, default_value = "bench-contacts")]
    project: String,
    /// Delete the rows and tombstones afterwards (and VACUUM).
    #[arg(long)]
    cleanup: bool,
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DrainArgs {
    /// The worker's metrics endpoint (repeat it for several workers).
    #[arg(long = "metrics-url", default_value = "http://127.0.0.1:9091/metrics")]
    metrics_urls: Vec<String>,
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    #[arg(long, default_value = "ingest.events")]
    topic: String,
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Project whose rows are counted at the end.
    #[arg(long)]
    project: String,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15m")]
    timeout: Duration,
    /// The messages to wait for (e.g. `ingest-loadgen lag` read before the worker
    /// started, on a topic holding earlier rounds). Without it, the whole topic.
    #[arg(long)]
    backlog: Option<u64>,
    /// Measure a process's CPU over the steady window: NAME=PID (repeatable).
    #[arg(long = "watch", value_parser = procwatch::parse_watch)]
    watch: Vec<(String, u32)>,
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct LagArgs {
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    #[arg(long, env = "INGEST_WORKER_GROUP", default_value = "ingest-worker")]
    group: String,
    #[arg(long = "topic", default_values_t = ["ingest.events".to_owned()])]
    topics: Vec<String>,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// Directory with the JSON results of one benchmark run.
    #[arg(long)]
    results: PathBuf,
    /// The file whose generated section is replaced (its own section for each command).
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(err) = run(cli.command).await {
        eprintln!("ingest-loadgen: {err:#}");
        std::process::exit(1);
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Http(args) => http_load(args).await,
        Command::Producer(args) => {
            let json_out = args.json_out.clone();
            let report = producer::run(args).await?;
            eprintln!(
                "producer ({} loop, {} tasks): {:.0} accepted events/s sustained ({:.0} enqueued/s), {} rejected, {} failed, {} dropped; delivery p50 {:.1} ms p99 {:.1} ms; close took {:.1} s",
                report.mode,
                report.producers,
                report.accepted_per_sec,
                report.enqueued_per_sec,
                report.rejected,
                report.failed,
                report.dropped,
                report.delivery_latency.p50_ms,
                report.delivery_latency.p99_ms,
                report.close_s
            );
            output(&report, json_out.as_ref())
        }
        Command::ProducerCeiling(args) => {
            let gateway = ingest_gateway::config::Config::from_env()?;
            let report = ceiling::producer(
                &gateway,
                &args.workload.workload(),
                args.concurrency,
                args.warmup,
                args.duration,
            )
            .await?;
            eprintln!(
                "producer ceiling: {:.0} messages/s ({:.1} MiB/s payload), {} failed",
                report.messages_per_sec, report.payload_mib_per_sec, report.failed
            );
            output(&report, args.json_out.as_ref())
        }
        Command::CopyCeiling(args) => {
            let pool = connect(&args.database_url).await?;
            let report = ceiling::copy(
                &pool,
                &args.workload.workload(),
                (&args.project, &args.datasource),
                args.rows,
                args.rows_per_copy,
                args.rollback,
            )
            .await?;
            eprintln!("COPY ceiling: {:.0} rows/s", report.rows_per_sec);
            if args.cleanup {
                sqlx::query("DELETE FROM events WHERE project = $1")
                    .bind(&args.project)
                    .execute(&pool)
                    .await?;
                sqlx::query("VACUUM events").execute(&pool).await?;
            }
            output(&report, args.json_out.as_ref())
        }
        Command::Prefill(args) => prefill::run(args).await,
        Command::ContactsCeiling(args) => {
            let pool = connect(&args.database_url).await?;
            let report = ceiling::contacts(
                &pool,
                &args.workload.workload(),
                &args.project,
                args.rows,
                args.rows_per_chunk,
                &args.methods,
            )
            .await?;
            eprintln!("contacts ceiling: {:.0} writes/s", report.writes_per_sec);
            if args.cleanup {
                ceiling::contacts_cleanup(&pool, &args.project).await?;
            }
            output(&report, args.json_out.as_ref())
        }
        Command::Drain(args) => {
            let pool = connect(&args.database_url).await?;
            let report = drain::drain(
                &args.metrics_urls,
                &args.brokers,
                &args.topic,
                &pool,
                &args.project,
                args.timeout,
                &drain::DrainOptions {
                    backlog: args.backlog,
                    watch: args.watch.clone(),
                },
            )
            .await?;
            eprintln!(
                "drain: {} messages in {:.1} s, steady {:.0} rows/s, {} rows in the database",
                report.backlog, report.total_s, report.steady_rows_per_sec, report.rows_in_database
            );
            output(&report, args.json_out.as_ref())
        }
        Command::Lag(args) => {
            println!(
                "{}",
                drain::group_lag(&args.brokers, &args.group, &args.topics)?
            );
            Ok(())
        }
        Command::RateSearch(args) => {
            let pool = connect_sampler(&args.database_url).await?;
            let target = args.target.target();
            let options = rate_search::SearchOptions {
                connections: args.connections,
                start_rate: args.start_rate,
                max_rate: args.max_rate,
                growth: args.growth,
                step: args.step,
                confirm: args.confirm,
                warmup: args.warmup,
                p99_limit: args.p99_limit,
                precision: args.precision,
                max_steps: args.max_steps,
                confirmations: args.confirmations,
                warm_up_run: args.warm_up_run,
                e2e_every: args.e2e_every,
                group: args.group.clone(),
                brokers: args.brokers.clone(),
                topics: args.topics.clone(),
                catch_up_timeout: args.catch_up_timeout,
                cpu_watch: args.watch.clone(),
            };
            let report =
                rate_search::search(&target, &args.workload.workload(), &pool, &options).await?;
            eprintln!(
                "sustained: {:.0} items/s with accept → visible p99 under {:.0} ms",
                report.sustained_items_per_sec, report.p99_limit_ms
            );
            output(&report, args.json_out.as_ref())
        }
        Command::Report(args) => report::write(&args.results, &args.out),
        Command::Abuse(args) => abuse::run(args).await,
        Command::AbuseReport(args) => abuse::render::write(&args.results, &args.out),
        Command::ClusterReport(args) => cluster_report::write(&args.results, &args.out),
        Command::ScaleReport(args) => scale_report::write(
            &args.report.results,
            args.before.as_deref(),
            &args.report.out,
        ),
    }
}

async fn connect(url: &str) -> anyhow::Result<sqlx::PgPool> {
    open(PgPoolOptions::new(), url).await
}

async fn open(options: PgPoolOptions, url: &str) -> anyhow::Result<sqlx::PgPool> {
    options
        .max_connections(2)
        .connect(url)
        .await
        .with_context(|| format!("connecting to {}", ingest_types::env::redact_password(url)))
}

/// The end-to-end sampler's pool. Its lookups by primary key (`e2e::visible`) must use
/// the index even when the statistics still say the table is empty (it grew from empty
/// since the last ANALYZE), where a scan of a few rows looks cheaper.
async fn connect_sampler(url: &str) -> anyhow::Result<sqlx::PgPool> {
    let options = PgPoolOptions::new().after_connect(|conn, _| {
        Box::pin(async move {
            sqlx::Executor::execute(conn, "SET enable_seqscan = off").await?;
            Ok(())
        })
    });
    open(options, url).await
}

async fn http_load(args: HttpArgs) -> anyhow::Result<()> {
    let target = args.target.target();
    let options = http::LoadOptions {
        connections: args.connections,
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        timeout: args.timeout,
        e2e_every: args.e2e_every,
        progress: !args.quiet,
        local_address: None,
        cpu_watch: args.watch.clone(),
    };
    let done = CancellationToken::new();
    let (sampler, e2e_task) = match &args.e2e_database_url {
        Some(url) => {
            let pool = connect_sampler(url).await?;
            let (sampler, task) = e2e::start(
                pool,
                target.project.clone(),
                target.datasource.clone(),
                Duration::from_millis(args.e2e_poll_ms),
                Duration::from_secs(30),
                done.clone(),
            );
            (Some(sampler), Some(task))
        }
        None => (None, None),
    };
    let watch = tokio::spawn(procwatch::watch(
        args.watch.clone(),
        args.watch_every,
        done.clone(),
    ));
    let report = http::run(target, args.workload.workload(), options, sampler).await;
    done.cancel();
    let memory = watch.await?;
    let e2e = match e2e_task {
        Some(task) => Some(task.await??),
        None => None,
    };
    let mut report = report?;
    report.e2e = e2e;
    report.memory = memory;
    eprintln!(
        "{} loop: {:.0} req/s, {:.0} accepted items/s; latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms; statuses {:?}",
        report.mode,
        report.requests_per_sec,
        report.accepted_items_per_sec,
        report.latency.p50_ms,
        report.latency.p99_ms,
        report.latency.max_ms,
        report.statuses
    );
    if let Some(e2e) = &report.e2e {
        eprintln!(
            "end to end: {} samples, p50 {:.1} ms p99 {:.1} ms max {:.1} ms, {} unseen",
            e2e.latency.count,
            e2e.latency.p50_ms,
            e2e.latency.p99_ms,
            e2e.latency.max_ms,
            e2e.unseen
        );
    }
    output(&report, args.json_out.as_ref())
}

fn output(value: &impl Serialize, path: Option<&PathBuf>) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    match path {
        Some(path) => {
            std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
        }
        None => {
            println!("{text}");
            Ok(())
        }
    }
}
