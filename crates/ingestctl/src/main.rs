//! `ingestctl`: the operator CLI. It talks to PostgreSQL directly, and to Kafka for
//! the dead-letter and replay commands.
//!
//! This file only parses and dispatches. Each subject has a module with its arguments,
//! its queries or Kafka calls and its output: `tenancy` (projects, datasources, tokens
//! and their limits), `specs`, `dlq`, `replay`, `lifecycle` (retention, partitions,
//! maintenance) and `migrate`. Text and `--json` rendering are in `output`; the
//! database pool and the Kafka clients in `connect`; the SQL helpers the tenancy and
//! spec queries share in `sql`.

mod connect;
mod dlq;
mod lifecycle;
mod migrate;
mod output;
mod replay;
mod specs;
mod sql;
mod tenancy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use connect::Kafka;
use output::Output;

/// Operator CLI for the ingestion pipeline.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// PostgreSQL connection string.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        default_value = "postgres://ingest@127.0.0.1:55432/ingest",
        hide_env_values = true
    )]
    database_url: String,
    /// Kafka bootstrap servers (dlq and replay).
    #[arg(
        long,
        global = true,
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:19092",
        hide_env_values = true
    )]
    kafka_brokers: String,
    /// Topic prefix: the topics are <PREFIX>.contacts, <PREFIX>.events and <PREFIX>.dlq.
    #[arg(
        long,
        global = true,
        env = "INGEST_TOPIC_PREFIX",
        default_value = "ingest"
    )]
    topic_prefix: String,
    /// Print one machine-readable JSON document on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply every pending database migration (safe to run again).
    Migrate,
    /// Create and list projects (tenants).
    #[command(subcommand)]
    Project(tenancy::project::ProjectCommand),
    /// Create and list datasources, and set their per-endpoint rate limits.
    #[command(subcommand)]
    Datasource(tenancy::datasource::DatasourceCommand),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(tenancy::token::TokenCommand),
    /// Declare what a datasource's data looks like: custom attribute specs, event types
    /// and their parameter specs (the gateway validates against them).
    #[command(subcommand)]
    Spec(specs::SpecCommand),
    /// Inspect and redrive the dead-letter topic (<PREFIX>.dlq): messages the worker
    /// could never persist, with the reason and their origin.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Data lifecycle settings (the tombstone purge horizon) and what the workers'
    /// maintenance job did and will do next.
    #[command(subcommand)]
    Retention(lifecycle::RetentionCommand),
    /// The partitions of `events` (one per day of receipt) and the generations of
    /// `event_ids` (deduplication), with their sizes and when retention drops them.
    Partitions,
    /// Run the workers' maintenance job now (it also runs in every worker on a schedule;
    /// one run at a time: this one reports "skipped" while another runs).
    Maintain,
    // Its help is the doc comment of `ReplayArgs`.
    Replay(replay::ReplayArgs),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`| head -1`): see `output`.
        Err(e) if e.is::<output::Closed>() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    let kafka = Kafka::new(&cli.kafka_brokers, &cli.topic_prefix);
    // The dead-letter commands need no database; every other command connects first.
    let command = match cli.command {
        Command::Dlq(command) => return dlq::run(&kafka, out, command).await,
        command => command,
    };
    let pool = connect::pool(&cli.database_url).await?;
    match command {
        Command::Migrate => migrate::run(&pool, out).await,
        Command::Project(command) => tenancy::project::run(&pool, out, command).await,
        Command::Datasource(command) => tenancy::datasource::run(&pool, out, command).await,
        Command::Token(command) => tenancy::token::run(&pool, out, command).await,
        Command::Spec(command) => specs::run(&pool, out, command).await,
        Command::Retention(command) => lifecycle::run_retention(&pool, out, command).await,
        Command::Partitions => lifecycle::run_partitions(&pool, out).await,
        Command::Maintain => lifecycle::run_maintain(&pool, out).await,
        Command::Replay(args) => replay::run(&pool, &kafka, out, args).await,
        Command::Dlq(_) => unreachable!("handled without the database"),
    }
}
