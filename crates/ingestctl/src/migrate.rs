//! `ingestctl migrate`: applies every pending migration of the workspace's `migrations/`.

use anyhow::Context;
use sqlx::PgPool;

use crate::output::{self, Output};

/// The workspace's `migrations/`, embedded at compile time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

pub async fn run(pool: &PgPool, out: Output) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations")?;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .context("reading the migration table")?;
    // One compact line, unlike the pretty document of `Output::print`.
    output::write(|w| {
        if out.json {
            writeln!(w, "{}", serde_json::json!({"migrations_applied": applied}))
        } else {
            writeln!(w, "database is up to date ({applied} migrations applied)")
        }
    })
}
