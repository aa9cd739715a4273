//! `ingestctl`: the operator CLI. It talks to PostgreSQL directly.

use anyhow::Context;
use clap::{Parser, Subcommand};
use sqlx::postgres::PgPoolOptions;

/// Operator CLI for the ingestion pipeline.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// PostgreSQL connection string.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://ingest@127.0.0.1:55432/ingest",
        hide_env_values = true
    )]
    database_url: String,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply every pending database migration (safe to run again).
    Migrate,
}

/// The workspace's `migrations/`, embedded at compile time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(&cli.database_url)
        .await
        .context("connecting to the database (is DATABASE_URL right, and is PostgreSQL up?)")?;
    match cli.command {
        Command::Migrate => {
            MIGRATOR.run(&pool).await.context("applying migrations")?;
            let applied: i64 =
                sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                    .fetch_one(&pool)
                    .await
                    .context("reading the migration table")?;
            if cli.json {
                println!("{}", serde_json::json!({"migrations_applied": applied}));
            } else {
                println!("database is up to date ({applied} migrations applied)");
            }
        }
    }
    Ok(())
}
