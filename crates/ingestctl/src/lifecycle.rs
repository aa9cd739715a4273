//! `ingestctl retention show|set` and `ingestctl maintain`: the data lifecycle settings,
//! what the workers' maintenance job (`ingest_worker::lifecycle`) did and will do next,
//! and the replay guard that keeps a purge from resurrecting deleted contacts.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use ingest_worker::lifecycle::REPLAY_MARGIN;
use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// The lifecycle settings, the purge horizon, what the next maintenance run will
    /// purge and how the last one went.
    Show,
    /// Change the lifecycle settings; the workers apply them at their next maintenance
    /// run (`ingestctl maintain` runs one now).
    Set {
        /// Purge the tombstones of contacts deleted longer ago than this many days
        /// (1-36500). Replays from before the purge horizon are refused afterwards.
        #[arg(long)]
        tombstone_days: Option<i32>,
    },
}

#[derive(Debug, Serialize)]
pub struct Retention {
    pub tombstone_horizon_days: i32,
    pub settings_updated_at: DateTime<Utc>,
    /// Tombstones deleted before this time may be gone (none purged yet: `None`).
    pub tombstones_purged_before: Option<DateTime<Utc>>,
    /// The earliest `replay --from` allowed (`None`: any).
    pub earliest_replay_from: Option<DateTime<Utc>>,
    pub tombstones: i64,
    /// Tombstones the next maintenance run will purge.
    pub tombstones_due: i64,
    /// When the oldest tombstone not yet due will be (at the current horizon).
    pub next_tombstone_due_at: Option<DateTime<Utc>>,
    pub last_run_started_at: Option<DateTime<Utc>>,
    pub last_run_finished_at: Option<DateTime<Utc>>,
    pub last_run_error: Option<String>,
}

type RetentionRow = (
    i32,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    i64,
    i64,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
);

pub async fn show(pool: &PgPool) -> anyhow::Result<Retention> {
    let row: RetentionRow = sqlx::query_as(
        "WITH s AS (SELECT tombstone_horizon_days AS days, updated_at,
                           now() - make_interval(days => tombstone_horizon_days) AS cutoff
                      FROM lifecycle_settings)
         SELECT s.days, s.updated_at,
                CASE WHEN isfinite(st.tombstones_purged_before) THEN st.tombstones_purged_before END,
                (SELECT count(*) FROM contact_tombstones),
                (SELECT count(*) FROM contact_tombstones WHERE deleted_at < s.cutoff),
                (SELECT min(deleted_at) FROM contact_tombstones WHERE deleted_at >= s.cutoff)
                    + make_interval(days => s.days),
                st.last_run_started_at, st.last_run_finished_at, st.last_run_error
           FROM s, lifecycle_state st",
    )
    .fetch_one(pool)
    .await?;
    let (days, updated, purged_before, total, due, next_due, started, finished, error) = row;
    Ok(Retention {
        tombstone_horizon_days: days,
        settings_updated_at: updated,
        tombstones_purged_before: purged_before,
        earliest_replay_from: purged_before.map(|t| t + REPLAY_MARGIN),
        tombstones: total,
        tombstones_due: due,
        next_tombstone_due_at: next_due,
        last_run_started_at: started,
        last_run_finished_at: finished,
        last_run_error: error,
    })
}

pub async fn set(pool: &PgPool, tombstone_days: Option<i32>) -> anyhow::Result<Retention> {
    let Some(days) = tombstone_days else {
        anyhow::bail!("nothing to set: give --tombstone-days N");
    };
    anyhow::ensure!(
        (1..=36_500).contains(&days),
        "--tombstone-days must be between 1 and 36500, not {days}"
    );
    sqlx::query("UPDATE lifecycle_settings SET tombstone_horizon_days = $1, updated_at = now()")
        .bind(days)
        .execute(pool)
        .await?;
    show(pool).await
}

/// Refuses a replay that starts before the purge horizon (plus a margin for clocks): the
/// tombstones that would stop a replayed old upsert from bringing a deleted contact back
/// may be gone.
pub async fn check_replay_from(pool: &PgPool, from: DateTime<Utc>) -> anyhow::Result<()> {
    let purged_before: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT CASE WHEN isfinite(tombstones_purged_before) THEN tombstones_purged_before END
           FROM lifecycle_state",
    )
    .fetch_one(pool)
    .await?;
    if let Some(purged_before) = purged_before {
        let earliest = purged_before + REPLAY_MARGIN;
        anyhow::ensure!(
            from >= earliest,
            "--from {} is before the tombstone horizon: tombstones of contacts deleted before {} \
             were purged, and replaying from there could bring deleted contacts back; the \
             earliest allowed --from is {}",
            from.to_rfc3339(),
            purged_before.to_rfc3339(),
            earliest.to_rfc3339()
        );
    }
    Ok(())
}

pub fn print_retention(r: &Retention) {
    let t = |t: &Option<DateTime<Utc>>| t.as_ref().map_or_else(|| "-".to_owned(), crate::time);
    println!(
        "tombstone horizon:   {} days (set {})",
        r.tombstone_horizon_days,
        crate::time(&r.settings_updated_at)
    );
    println!("tombstones:          {}", r.tombstones);
    println!("purged before:       {}", t(&r.tombstones_purged_before));
    println!(
        "earliest replay:     {}",
        r.earliest_replay_from
            .as_ref()
            .map_or_else(|| "any".to_owned(), crate::time)
    );
    println!("due at the next run: {} tombstones", r.tombstones_due);
    println!("next due:            {}", t(&r.next_tombstone_due_at));
    println!(
        "last run:            started {}, finished {}{}",
        t(&r.last_run_started_at),
        t(&r.last_run_finished_at),
        r.last_run_error
            .as_ref()
            .map_or_else(String::new, |e| format!(", failed: {e}"))
    );
}
