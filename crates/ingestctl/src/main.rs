//! `ingestctl`: the operator CLI. It talks to PostgreSQL directly, and to Kafka for
//! the dead-letter and replay commands.

mod db;
mod kafka;
mod lifecycle;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use ingest_types::tenancy::Endpoint;
use ingest_types::validate::specs::{AttributeSpec, DataType, ParameterSpec, Specs};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

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
    Project(ProjectCommand),
    /// Create and list datasources, and set their per-endpoint rate limits.
    #[command(subcommand)]
    Datasource(DatasourceCommand),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Declare what a datasource's data looks like: custom attribute specs, event types
    /// and their parameter specs (the gateway validates against them).
    #[command(subcommand)]
    Spec(SpecCommand),
    /// Inspect and redrive the dead-letter topic (<PREFIX>.dlq): messages the worker
    /// could never persist, with the reason and their origin.
    #[command(subcommand)]
    Dlq(DlqCommand),
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
    /// Rewind the workers' consumer group on <PREFIX>.contacts and <PREFIX>.events to a
    /// point in time, so the workers consume everything since then again.
    ///
    /// For every partition the group's committed offset is set to the first offset at or
    /// after --from (the end of the partition when nothing is that recent). Offsets are
    /// only ever moved back: a partition committed before that point, or never committed
    /// (it is read from its start anyway), is left as it is.
    ///
    /// Stop every worker of the group first: a group with active members refuses the new
    /// offsets, and replay then fails without changing anything.
    ///
    /// Refused when --from is before the tombstone purge horizon (`retention show`) plus
    /// one hour: the tombstones that keep a replayed old upsert from bringing a deleted
    /// contact back may be gone. Reads the database for that (fails when it cannot).
    ///
    /// Replaying is safe: the worker's writes are idempotent (events are stored once per
    /// event id; contact writes are versioned by their Kafka offset, and a write whose
    /// version is older than or equal to the stored one is skipped), so after a replay the
    /// database holds identical contacts, tombstones and events, timestamps included.
    Replay {
        /// RFC 3339 time, e.g. 2026-11-24T09:00:00Z.
        #[arg(long)]
        from: String,
        /// The workers' consumer group (INGEST_WORKER_GROUP).
        #[arg(long, default_value = "ingest-worker")]
        group: String,
        /// Show what would be set, without committing anything.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters, oldest first: where each came from, why it failed, and whether
    /// it was redriven.
    ///
    /// Reads the topic from the start of every partition up to its current end, without
    /// joining a consumer group or committing anything. Text output truncates payloads;
    /// --json shows them in full.
    List {
        /// Show at most this many letters (the oldest).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Re-publish dead letters to the topic and partition they came from, with their key
    /// and payload unchanged and the header ingest-redriven-from: <partition>:<offset>.
    ///
    /// Redrive letters whose cause was fixed, e.g. a worker bug that is fixed and
    /// deployed, or data (specs, a datasource) that is now in place; a letter whose
    /// cause remains just fails again and comes back as a new dead letter.
    ///
    /// A redriven contact write gets a new offset, and contact writes are versioned by
    /// offset: it becomes the newest write for its user, applied over any write accepted
    /// after the original.
    ///
    /// Redriven letters are recorded as offsets committed for the consumer group
    /// ingestctl-dlq-redrive (which never has members), so --all never redrives a letter
    /// twice, and `dlq list` marks them.
    Redrive {
        /// Redrive every letter not redriven yet.
        #[arg(long)]
        all: bool,
        /// Redrive this letter, <partition>:<offset> as shown by `dlq list`. Repeatable.
        #[arg(long = "offset", value_name = "PARTITION:OFFSET")]
        offsets: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ProjectCommand {
    /// Create a project.
    Create {
        /// Project id: 1-64 characters of A-Z a-z 0-9 _ -.
        id: String,
    },
    /// List every project, with its number of datasources.
    List,
}

#[derive(Debug, Subcommand)]
enum DatasourceCommand {
    /// Create a datasource in an existing project (every endpoint starts at the default
    /// limit of 600 requests per minute).
    Create {
        /// The project it belongs to.
        project: String,
        /// Datasource id, unique within the project: 1-64 characters of A-Z a-z 0-9 _ -.
        id: String,
    },
    /// List datasources with their effective per-endpoint limits (requests per minute;
    /// 600 where none is set).
    List {
        /// Only this project's datasources.
        project: Option<String>,
    },
    /// Set a datasource's requests-per-minute limit for one endpoint, or for all.
    #[command(name = "set-limit")]
    SetLimit {
        /// The datasource's project.
        project: String,
        /// The datasource whose limit changes (it must exist).
        datasource: String,
        /// stream, contacts, events, contacts_delete, specs, erasures, or all.
        endpoint: String,
        /// Requests per minute, at least 1.
        #[arg(allow_negative_numbers = true)]
        requests_per_minute: i64,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API token and print its secret. The secret is shown only this once:
    /// only its SHA-256 hash is stored.
    Create {
        /// The project the token writes to.
        project: String,
        /// Restrict the token to this datasource (default: every datasource of the project).
        #[arg(long)]
        datasource: Option<String>,
        /// A free-text label, e.g. who or what uses the token.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tokens (never their secrets). Revoked tokens are hidden unless --all is given.
    ///
    /// DATASOURCE is "*" (JSON: null) for a project-wide token.
    List {
        /// Only this project's tokens.
        project: Option<String>,
        /// Include revoked tokens (with their REVOKED time).
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token: it stops working within moments. Revoking it again is a no-op.
    Revoke {
        /// The token's id (tok_...), as shown by `token create` and `token list`.
        token_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum SpecCommand {
    /// Declare, change and remove custom attribute specs.
    #[command(subcommand)]
    Attribute(AttributeCommand),
    /// Declare and remove event types. Once any is declared, events of other types are
    /// rejected.
    #[command(subcommand, name = "event-type")]
    EventType(EventTypeCommand),
    /// Declare, change and remove parameter specs of a declared event type.
    #[command(subcommand)]
    Parameter(ParameterCommand),
    /// Show everything a datasource declares. With --json: the specs document the
    /// gateway validates against.
    List {
        /// The datasource's project.
        project: String,
        /// The datasource (it must exist).
        datasource: String,
    },
}

/// How a spec constrains values: `--type` and `--multivalue`.
#[derive(Debug, clap::Args)]
struct ValueArgs {
    /// string, number or boolean (of each value, when multivalue).
    #[arg(long = "type", value_name = "TYPE")]
    data_type: String,
    /// Make it multivalue: a set of at most this many values (1-100). Without it, a
    /// single value.
    #[arg(long, value_name = "MAX", allow_negative_numbers = true)]
    multivalue: Option<i64>,
}

#[derive(Debug, Subcommand)]
enum AttributeCommand {
    /// Declare a custom attribute, or replace its spec.
    Set {
        /// The datasource's project.
        project: String,
        /// The datasource (it must exist).
        datasource: String,
        /// Attribute name: ^[a-z][a-z0-9_]{0,63}$.
        name: String,
        #[command(flatten)]
        value: ValueArgs,
    },
    /// Remove a custom attribute's spec (the attribute is then held only to the generic
    /// rules).
    Remove {
        /// The datasource's project.
        project: String,
        /// The datasource (it must exist).
        datasource: String,
        /// The declared attribute's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum EventTypeCommand {
    /// Declare an event type. Declaring a declared one again is a no-op.
    Add {
        /// The datasource's project.
        project: String,
        /// The datasource (it must exist).
        datasource: String,
        /// Event type: 1-128 characters.
        event_type: String,
    },
    /// Remove a declared event type and its parameter specs.
    Remove {
        /// The datasource's project.
        project: String,
        /// The datasource (it must exist).
        datasource: String,
        /// The declared event type.
        event_type: String,
    },
}

#[derive(Debug, Subcommand)]
enum ParameterCommand {
    /// Declare a parameter of a declared event type, or replace its spec.
    Set {
        /// The datasource's project.
        project: String,
        /// The datasource (it must exist).
        datasource: String,
        /// The event type (it must be declared).
        event_type: String,
        /// Parameter name: ^[a-z][a-z0-9_]{0,63}$.
        name: String,
        #[command(flatten)]
        value: ValueArgs,
        /// Every event of this type must carry the parameter (not null).
        #[arg(long)]
        required: bool,
    },
    /// Remove a parameter spec of a declared event type.
    Remove {
        /// The datasource's project.
        project: String,
        /// The datasource (it must exist).
        datasource: String,
        /// The declared event type.
        event_type: String,
        /// The declared parameter's name.
        name: String,
    },
}

/// The workspace's `migrations/`, embedded at compile time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    let command = match cli.command {
        Command::Dlq(command) => {
            let kafka = kafka::Kafka::new(&cli.kafka_brokers, &cli.topic_prefix);
            return dlq(&kafka, out, command).await;
        }
        command => command,
    };
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(&cli.database_url)
        .await
        .context("connecting to the database (is DATABASE_URL right, and is PostgreSQL up?)")?;
    match command {
        Command::Replay {
            from,
            group,
            dry_run,
        } => {
            let from = parse_from(&from)?;
            lifecycle::check_replay_from(&pool, from).await?;
            let kafka = kafka::Kafka::new(&cli.kafka_brokers, &cli.topic_prefix);
            replay(&kafka, out, from, &group, dry_run)?;
        }
        Command::Retention(lifecycle::RetentionCommand::Show) => {
            let r = lifecycle::show(&pool).await?;
            out.print(&r, || lifecycle::print_retention(&r))?;
        }
        Command::Retention(lifecycle::RetentionCommand::Set {
            events_days,
            tombstone_days,
            dedup_window_hours,
            yes,
        }) => {
            let settings = lifecycle::Settings {
                events_days,
                tombstone_days,
                dedup_window_hours,
            };
            let r = lifecycle::set(&pool, settings, yes).await?;
            out.print(&r, || lifecycle::print_retention(&r))?;
        }
        Command::Partitions => {
            let p = lifecycle::partitions(&pool).await?;
            out.print(&p, || lifecycle::print_partitions(&p))?;
        }
        Command::Maintain => {
            let report = ingest_worker::lifecycle::maintain(&pool, Utc::now()).await?;
            out.print(&report, || {
                if report.ran {
                    let list = |l: &[String]| {
                        if l.is_empty() {
                            "-".to_owned()
                        } else {
                            l.join(", ")
                        }
                    };
                    println!("partitions created: {}", list(&report.partitions.created));
                    println!("partitions dropped: {}", list(&report.partitions.dropped));
                    println!("tombstones purged: {}", report.tombstones_purged);
                } else {
                    println!("skipped: another maintenance run holds the lock");
                }
            })?;
        }
        Command::Migrate => migrate(&pool, out).await?,
        Command::Project(ProjectCommand::Create { id }) => {
            let p = db::create_project(&pool, &id).await?;
            out.print(&p, || println!("created project {}", p.id))?;
        }
        Command::Project(ProjectCommand::List) => {
            let projects = db::list_projects(&pool).await?;
            out.print(&projects, || {
                let rows = projects
                    .iter()
                    .map(|p| vec![p.id.clone(), p.datasources.to_string(), time(&p.created_at)])
                    .collect();
                table(&["PROJECT", "DATASOURCES", "CREATED"], rows, "no projects");
            })?;
        }
        Command::Datasource(DatasourceCommand::Create { project, id }) => {
            let d = db::create_datasource(&pool, &project, &id).await?;
            out.print(&d, || println!("created datasource {}/{}", d.project, d.id))?;
        }
        Command::Datasource(DatasourceCommand::List { project }) => {
            let datasources = db::list_datasources(&pool, project.as_deref()).await?;
            out.print(&datasources, || datasource_table(&datasources))?;
        }
        Command::Datasource(DatasourceCommand::SetLimit {
            project,
            datasource,
            endpoint,
            requests_per_minute,
        }) => {
            let endpoints = db::parse_endpoints(&endpoint)?;
            let d = db::set_limit(
                &pool,
                &project,
                &datasource,
                &endpoints,
                requests_per_minute,
            )
            .await?;
            out.print(&d, || {
                let which = if endpoints.len() == 1 {
                    format!("the {endpoint} endpoint")
                } else {
                    "every endpoint".to_owned()
                };
                println!(
                    "{project}/{datasource}: {which} limited to {requests_per_minute} requests per minute"
                );
                datasource_table(std::slice::from_ref(&d));
            })?;
        }
        Command::Token(TokenCommand::Create {
            project,
            datasource,
            name,
        }) => {
            let t = db::create_token(&pool, &project, datasource.as_deref(), &name).await?;
            out.print(&t, || {
                println!("{}", t.secret);
                println!(
                    "warning: this secret is shown only once and cannot be recovered; store it now"
                );
                println!("id:    {}", t.id);
                println!("scope: {}", scope(&t.project, t.datasource.as_deref()));
                if !t.name.is_empty() {
                    println!("name:  {}", t.name);
                }
            })?;
        }
        Command::Token(TokenCommand::List { project, all }) => {
            let tokens = db::list_tokens(&pool, project.as_deref(), all).await?;
            out.print(&tokens, || {
                let rows = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.project.clone(),
                            t.datasource.clone().unwrap_or_else(|| "*".into()),
                            format!("{}...", t.display_prefix),
                            time(&t.created_at),
                            t.revoked_at.as_ref().map_or_else(|| "-".into(), time),
                            t.name.clone(),
                        ]
                    })
                    .collect();
                let headers = [
                    "ID",
                    "PROJECT",
                    "DATASOURCE",
                    "PREFIX",
                    "CREATED",
                    "REVOKED",
                    "NAME",
                ];
                table(&headers, rows, "no tokens");
            })?;
        }
        Command::Token(TokenCommand::Revoke { token_id }) => {
            let r = db::revoke_token(&pool, &token_id).await?;
            out.print(&r, || {
                if r.already_revoked {
                    println!(
                        "token {} was already revoked at {}",
                        r.id,
                        time(&r.revoked_at)
                    );
                } else {
                    println!("revoked token {}", r.id);
                }
            })?;
        }
        Command::Spec(command) => spec(&pool, out, command).await?,
        Command::Dlq(_) => unreachable!("handled without the database"),
    }
    Ok(())
}

async fn dlq(kafka: &kafka::Kafka, out: Output, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { limit } => {
            let list = kafka.dlq_list(limit)?;
            out.print(&list, || {
                let rows = list
                    .letters
                    .iter()
                    .map(|l| {
                        let origin = match (&l.origin_topic, l.origin_partition, l.origin_offset) {
                            (Some(t), Some(p), Some(o)) => format!("{t}:{p}:{o}"),
                            (Some(t), _, _) => t.clone(),
                            _ => "-".to_owned(),
                        };
                        vec![
                            format!("{}:{}", l.partition, l.offset),
                            l.timestamp.as_ref().map_or_else(|| "-".into(), time),
                            if l.redriven { "yes" } else { "no" }.to_owned(),
                            origin,
                            l.key
                                .as_deref()
                                .map_or_else(|| "-".into(), |k| truncate(k, 40)),
                            l.reason
                                .as_deref()
                                .map_or_else(|| "-".into(), |r| truncate(r, 80)),
                            l.payload
                                .as_deref()
                                .map_or_else(|| "-".into(), |p| truncate(p, 60)),
                        ]
                    })
                    .collect();
                let headers = [
                    "LETTER", "TIME", "REDRIVEN", "ORIGIN", "KEY", "REASON", "PAYLOAD",
                ];
                table(
                    &headers,
                    rows,
                    &format!("no dead letters in {}", list.topic),
                );
                if list.total > 0 {
                    println!(
                        "{} of {} dead letters shown ({} redriven); --json shows payloads in full",
                        list.letters.len(),
                        list.total,
                        list.redriven
                    );
                }
            })?;
        }
        DlqCommand::Redrive { all, offsets } => {
            let selection = match (all, offsets.is_empty()) {
                (true, false) => anyhow::bail!("--all and --offset cannot be combined"),
                (false, true) => anyhow::bail!(
                    "choose the dead letters to redrive: --all, or --offset <partition>:<offset> (repeatable)"
                ),
                (true, true) => kafka::Selection::All,
                (false, false) => kafka::Selection::Offsets(
                    offsets
                        .iter()
                        .map(|s| kafka::parse_letter(s))
                        .collect::<anyhow::Result<_>>()?,
                ),
            };
            let report = kafka.dlq_redrive(selection).await?;
            out.print(&report, || {
                if report.redriven.is_empty() {
                    println!("nothing to redrive: every dead letter was redriven already");
                }
                for r in &report.redriven {
                    println!(
                        "redrove {}:{} to {}:{}:{}",
                        r.partition, r.offset, r.topic, r.topic_partition, r.topic_offset
                    );
                }
            })?;
        }
    }
    Ok(())
}

fn parse_from(from: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(from)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            anyhow::anyhow!(
                "invalid --from {from:?}: {e} (expected RFC 3339, e.g. 2026-11-24T09:00:00Z)"
            )
        })
}

fn replay(
    kafka: &kafka::Kafka,
    out: Output,
    from: DateTime<Utc>,
    group: &str,
    dry_run: bool,
) -> anyhow::Result<()> {
    let report = kafka.replay(group, from, dry_run)?;
    out.print(&report, || {
        let opt = |o: Option<i64>| o.map_or_else(|| "-".into(), |o| o.to_string());
        let rows = report
            .partitions
            .iter()
            .map(|p| {
                vec![
                    p.topic.clone(),
                    p.partition.to_string(),
                    opt(p.old),
                    opt(p.new),
                    if p.changed {
                        String::new()
                    } else if p.old.is_none() {
                        "unchanged (never committed: read from its start)".to_owned()
                    } else {
                        "unchanged (already before that time)".to_owned()
                    },
                ]
            })
            .collect();
        table(
            &["TOPIC", "PARTITION", "OLD", "NEW", ""],
            rows,
            "no partitions",
        );
        let changed = report.partitions.iter().filter(|p| p.changed).count();
        if report.dry_run {
            println!(
                "dry run: group {:?} not changed ({changed} partition(s) would be rewound)",
                report.group
            );
        } else {
            println!(
                "rewound group {:?} on {changed} partition(s) to {}; start the workers to replay",
                report.group,
                time(&report.from)
            );
        }
    })?;
    Ok(())
}

/// At most `max` characters, newlines escaped, with "..." when cut.
fn truncate(s: &str, max: usize) -> String {
    let s = s.replace('\n', "\\n");
    if s.chars().count() <= max {
        return s;
    }
    let cut: String = s.chars().take(max.saturating_sub(3)).collect();
    format!("{cut}...")
}

async fn spec(pool: &PgPool, out: Output, command: SpecCommand) -> anyhow::Result<()> {
    match command {
        SpecCommand::Attribute(AttributeCommand::Set {
            project,
            datasource,
            name,
            value,
        }) => {
            let (data_type, max_values) = db::parse_value_spec(&value.data_type, value.multivalue)?;
            let spec = AttributeSpec {
                data_type,
                max_values,
            };
            let a = db::set_attribute(pool, &project, &datasource, &name, spec).await?;
            out.print(&a, || {
                let now = describe(a.spec.data_type, a.spec.max_values);
                match &a.previous {
                    None => {
                        println!("declared attribute {name:?} on {project}/{datasource}: {now}")
                    }
                    Some(p) => println!(
                        "updated attribute {name:?} on {project}/{datasource}: {now} (was {})",
                        describe(p.data_type, p.max_values)
                    ),
                }
            })?;
        }
        SpecCommand::Attribute(AttributeCommand::Remove {
            project,
            datasource,
            name,
        }) => {
            let r = db::remove_attribute(pool, &project, &datasource, &name).await?;
            out.print(&r, || {
                println!(
                    "removed attribute {name:?} from {project}/{datasource} (was {})",
                    describe(r.removed.data_type, r.removed.max_values)
                );
            })?;
        }
        SpecCommand::EventType(EventTypeCommand::Add {
            project,
            datasource,
            event_type,
        }) => {
            let e = db::add_event_type(pool, &project, &datasource, &event_type).await?;
            out.print(&e, || {
                if e.already_declared {
                    println!(
                        "event type {event_type:?} was already declared on {project}/{datasource}"
                    );
                } else {
                    println!("declared event type {event_type:?} on {project}/{datasource}");
                }
            })?;
        }
        SpecCommand::EventType(EventTypeCommand::Remove {
            project,
            datasource,
            event_type,
        }) => {
            let r = db::remove_event_type(pool, &project, &datasource, &event_type).await?;
            out.print(&r, || {
                let params = match r.parameters_removed.len() {
                    0 => String::new(),
                    n => format!(
                        " and its {n} parameter spec{} ({})",
                        if n == 1 { "" } else { "s" },
                        r.parameters_removed.join(", ")
                    ),
                };
                println!("removed event type {event_type:?}{params} from {project}/{datasource}");
            })?;
        }
        SpecCommand::Parameter(ParameterCommand::Set {
            project,
            datasource,
            event_type,
            name,
            value,
            required,
        }) => {
            let (data_type, max_values) = db::parse_value_spec(&value.data_type, value.multivalue)?;
            let spec = ParameterSpec {
                data_type,
                max_values,
                required,
            };
            let p =
                db::set_parameter(pool, &project, &datasource, &event_type, &name, spec).await?;
            out.print(&p, || {
                let describe = |s: &ParameterSpec| {
                    let required = if s.required { "required" } else { "optional" };
                    format!("{}, {required}", describe(s.data_type, s.max_values))
                };
                let what = format!(
                    "parameter {name:?} of event type {event_type:?} on {project}/{datasource}"
                );
                match &p.previous {
                    None => println!("declared {what}: {}", describe(&p.spec)),
                    Some(prev) => println!(
                        "updated {what}: {} (was {})",
                        describe(&p.spec),
                        describe(prev)
                    ),
                }
            })?;
        }
        SpecCommand::Parameter(ParameterCommand::Remove {
            project,
            datasource,
            event_type,
            name,
        }) => {
            let r = db::remove_parameter(pool, &project, &datasource, &event_type, &name).await?;
            out.print(&r, || {
                println!(
                    "removed parameter {name:?} of event type {event_type:?} from {project}/{datasource}"
                );
            })?;
        }
        SpecCommand::List {
            project,
            datasource,
        } => {
            let specs = db::list_specs(pool, &project, &datasource).await?;
            out.print(&specs, || specs_tables(&specs))?;
        }
    }
    Ok(())
}

/// "string, single value" or "number, up to 5 values".
fn describe(data_type: DataType, max_values: Option<u32>) -> String {
    format!("{}, {}", data_type.as_str(), values(max_values))
}

fn values(max_values: Option<u32>) -> String {
    match max_values {
        None => "single value".to_owned(),
        Some(n) => format!("up to {n} values"),
    }
}

/// Attribute specs, then event types with their parameters, each sorted by name.
fn specs_tables(specs: &Specs) {
    let bound = |max_values: Option<u32>| {
        max_values.map_or_else(|| "single".to_owned(), |n| format!("max {n}"))
    };
    let attributes: BTreeMap<_, _> = specs.attributes.iter().collect();
    let rows = attributes
        .into_iter()
        .map(|(name, a)| {
            vec![
                name.clone(),
                a.data_type.as_str().to_owned(),
                bound(a.max_values),
            ]
        })
        .collect();
    table(
        &["ATTRIBUTE", "TYPE", "VALUES"],
        rows,
        "no attribute specs (custom attributes are held to the generic rules)",
    );
    println!();
    let event_types: BTreeMap<_, _> = specs.event_types.iter().collect();
    let mut rows = Vec::new();
    for (event_type, spec) in event_types {
        if spec.parameters.is_empty() {
            rows.push(vec![event_type.clone(), "-".to_owned()]);
        }
        let parameters: BTreeMap<_, _> = spec.parameters.iter().collect();
        for (name, p) in parameters {
            rows.push(vec![
                event_type.clone(),
                name.clone(),
                p.data_type.as_str().to_owned(),
                bound(p.max_values),
                if p.required { "yes" } else { "no" }.to_owned(),
            ]);
        }
    }
    table(
        &["EVENT TYPE", "PARAMETER", "TYPE", "VALUES", "REQUIRED"],
        rows,
        "no event types (every event type is accepted)",
    );
}

async fn migrate(pool: &PgPool, out: Output) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations")?;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .context("reading the migration table")?;
    if out.json {
        println!("{}", serde_json::json!({"migrations_applied": applied}));
    } else {
        println!("database is up to date ({applied} migrations applied)");
    }
    Ok(())
}

/// Text or JSON: every command prints exactly one of the two.
#[derive(Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    fn print<T: Serialize>(self, value: &T, text: impl FnOnce()) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            text();
        }
        Ok(())
    }
}

fn datasource_table(datasources: &[db::Datasource]) {
    let mut headers = vec!["PROJECT", "DATASOURCE"];
    headers.extend(Endpoint::ALL.iter().map(|e| e.as_str()));
    let rows = datasources
        .iter()
        .map(|d| {
            let mut row = vec![d.project.clone(), d.id.clone()];
            row.extend(Endpoint::ALL.iter().map(|&e| d.limit(e).to_string()));
            row
        })
        .collect();
    table(&headers, rows, "no datasources");
}

fn scope(project: &str, datasource: Option<&str>) -> String {
    match datasource {
        Some(ds) => format!("datasource {project}/{ds}"),
        None => format!("project {project} (every datasource)"),
    }
}

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Left-aligned columns separated by two spaces; `empty` when there are no rows.
fn table(headers: &[&str], rows: Vec<Vec<String>>, empty: &str) {
    if rows.is_empty() {
        println!("{empty}");
        return;
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
