//! `ingestctl`: the operator CLI. It talks to PostgreSQL directly.

mod db;

use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use ingest_types::tenancy::Endpoint;
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
        /// stream, contacts, events, contacts_delete, specs, or all.
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
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(&cli.database_url)
        .await
        .context("connecting to the database (is DATABASE_URL right, and is PostgreSQL up?)")?;
    let out = Output { json: cli.json };
    match cli.command {
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
    }
    Ok(())
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
