//! The data lifecycle: `ingestctl retention show|set`, `ingestctl partitions` and
//! `ingestctl maintain`: the lifecycle settings, the partitions and generations retention
//! drops, and what the workers' maintenance job (`ingest_worker::lifecycle`) did and will
//! do next; with their arguments, queries and output.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use clap::Subcommand;
use ingest_worker::lifecycle::partitions::DEDUP_GRACE;
use ingest_worker::lifecycle::REPLAY_MARGIN;
use serde::Serialize;
use sqlx::PgPool;

use crate::output::{bytes, table, time, time_or_dash, Output};

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// The lifecycle settings, the purge horizon, what the next maintenance run will
    /// purge and how the last one went.
    Show,
    /// Change the lifecycle settings; the workers apply them at their next maintenance
    /// run (`ingestctl maintain` runs one now).
    Set {
        /// Keep events this many days after they were received (1-3650); older ones go
        /// with their day's partition. Shortening it needs --yes.
        #[arg(long)]
        events_days: Option<i32>,
        /// Confirm a shorter events retention (it drops partitions at the next run).
        #[arg(long)]
        yes: bool,
        /// Purge the tombstones of contacts deleted longer ago than this many days
        /// (1-36500). Replays from before the purge horizon are refused afterwards.
        #[arg(long)]
        tombstone_days: Option<i32>,
        /// Deduplicate an event against copies received up to this many hours apart
        /// (1-87600; default 168). Ids are forgotten an hour after the window has passed
        /// their generation; replays from before what was forgotten are refused. New
        /// generations take the new width; shortening it needs --yes.
        #[arg(long)]
        dedup_window_hours: Option<i32>,
    },
}

pub async fn run_retention(
    pool: &PgPool,
    out: Output,
    command: RetentionCommand,
) -> anyhow::Result<()> {
    let r = match command {
        RetentionCommand::Show => show(pool).await?,
        RetentionCommand::Set {
            events_days,
            tombstone_days,
            dedup_window_hours,
            yes,
        } => {
            let settings = Settings {
                events_days,
                tombstone_days,
                dedup_window_hours,
            };
            set(pool, settings, yes).await?
        }
    };
    out.print(&r, |w| print_retention(w, &r))
}

pub async fn run_partitions(pool: &PgPool, out: Output) -> anyhow::Result<()> {
    let p = partitions(pool).await?;
    out.print(&p, |w| print_partitions(w, &p))
}

/// Runs the workers' maintenance job now.
pub async fn run_maintain(pool: &PgPool, out: Output) -> anyhow::Result<()> {
    let report = ingest_worker::lifecycle::maintain(pool, Utc::now()).await?;
    out.print(&report, |w| {
        if !report.ran {
            return writeln!(w, "skipped: another maintenance run holds the lock");
        }
        let list = |l: &[String]| {
            if l.is_empty() {
                "-".to_owned()
            } else {
                l.join(", ")
            }
        };
        writeln!(
            w,
            "partitions created: {}",
            list(&report.partitions.created)
        )?;
        writeln!(
            w,
            "partitions dropped: {}",
            list(&report.partitions.dropped)
        )?;
        writeln!(w, "tombstones purged: {}", report.tombstones_purged)
    })
}

#[derive(Debug, Serialize)]
pub struct Retention {
    pub events_retention_days: i32,
    /// Every events partition that held events received before this was dropped.
    pub events_dropped_before: Option<DateTime<Utc>>,
    /// The partition retention drops next, and when.
    pub next_drop: Option<Partition>,
    pub tombstone_horizon_days: i32,
    /// Events are deduplicated against copies received up to this many hours apart.
    pub dedup_window_hours: i32,
    /// Ids of events received before this may be forgotten (`None`: none dropped yet).
    pub event_ids_dropped_before: Option<DateTime<Utc>>,
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

/// A partition of `events` or a generation of `event_ids`.
#[derive(Debug, Serialize)]
pub struct Partition {
    pub table: &'static str,
    pub name: String,
    /// What it holds: receipt times from (inclusive) to (exclusive); `None`: unbounded.
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub rows_estimate: i64,
    pub bytes: i64,
    /// When the maintenance job drops it at the current retention (`None`: never, the
    /// default partitions).
    pub drops_at: Option<DateTime<Utc>>,
}

/// Every partition of `events` and generation of `event_ids`, oldest first per table.
pub async fn partitions(pool: &PgPool) -> anyhow::Result<Vec<Partition>> {
    type Row = (
        String,
        String,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        f32,
        i64,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "WITH parts AS (
                SELECT p.relname::text AS name, parent.relname::text AS tbl, p.oid, p.reltuples,
                       CASE WHEN p.relname ~ '^events_p[0-9]{8}$'
                            THEN to_date(right(p.relname, 8), 'YYYYMMDD') END AS day
                  FROM pg_inherits i
                  JOIN pg_class p ON p.oid = i.inhrelid
                  JOIN pg_class parent ON parent.oid = i.inhparent
                 WHERE parent.relname IN ('events', 'event_ids'))
         SELECT tbl, name,
                CASE WHEN tbl = 'events' THEN day::timestamp AT TIME ZONE 'UTC'
                     ELSE g.bucket END,
                CASE WHEN name = 'events_legacy' THEN (SELECT legacy_until FROM lifecycle_state)
                     WHEN tbl = 'events' THEN (day + 1)::timestamp AT TIME ZONE 'UTC'
                     ELSE g.ends END,
                greatest(reltuples, 0)::real, pg_total_relation_size(oid)
           FROM parts
           LEFT JOIN event_id_generations g ON tbl = 'event_ids' AND g.part = parts.name",
    )
    .fetch_all(pool)
    .await?;
    let (days, hours): (i32, i32) =
        sqlx::query_as("SELECT events_retention_days, dedup_window_hours FROM lifecycle_settings")
            .fetch_one(pool)
            .await?;
    let retention = chrono::TimeDelta::days(days.into());
    let forgotten = chrono::TimeDelta::hours(hours.into()) + DEDUP_GRACE;
    let mut partitions: Vec<Partition> = rows
        .into_iter()
        .map(|(table, name, from, until, rows, bytes)| Partition {
            table: if table == "events" {
                "events"
            } else {
                "event_ids"
            },
            drops_at: if name.ends_with("_default") {
                None
            } else if table == "events" {
                until.map(|u| u + retention)
            } else {
                until.map(|u| u + forgotten)
            },
            name,
            from,
            until,
            rows_estimate: rows as i64,
            bytes,
        })
        .collect();
    // Events first; per table oldest first, the default partition last.
    partitions.sort_by_key(|p| (p.table != "events", p.until.is_none(), p.until));
    Ok(partitions)
}

fn print_partitions(w: &mut dyn Write, partitions: &[Partition]) -> io::Result<()> {
    let rows = partitions
        .iter()
        .map(|p| {
            vec![
                p.table.to_owned(),
                p.name.clone(),
                time_or_dash(p.from.as_ref()),
                time_or_dash(p.until.as_ref()),
                p.rows_estimate.to_string(),
                bytes(p.bytes),
                time_or_dash(p.drops_at.as_ref()),
            ]
        })
        .collect();
    table(
        w,
        &[
            "TABLE",
            "PARTITION",
            "FROM",
            "UNTIL",
            "ROWS (EST.)",
            "SIZE",
            "DROPPED AT",
        ],
        rows,
        "no partitions",
    )
}

pub async fn show(pool: &PgPool) -> anyhow::Result<Retention> {
    type Events = (i32, i32, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let (events_days, window_hours, events_dropped_before, ids_dropped_before): Events =
        sqlx::query_as(
            "SELECT (SELECT events_retention_days FROM lifecycle_settings),
                    (SELECT dedup_window_hours FROM lifecycle_settings),
                    CASE WHEN isfinite(events_dropped_before) THEN events_dropped_before END,
                    CASE WHEN isfinite(event_ids_dropped_before) THEN event_ids_dropped_before END
               FROM lifecycle_state",
        )
        .fetch_one(pool)
        .await?;
    let next_drop = partitions(pool)
        .await?
        .into_iter()
        .filter(|p| p.drops_at.is_some())
        .min_by_key(|p| p.drops_at);
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
        events_retention_days: events_days,
        events_dropped_before,
        next_drop,
        tombstone_horizon_days: days,
        dedup_window_hours: window_hours,
        event_ids_dropped_before: ids_dropped_before,
        settings_updated_at: updated,
        tombstones_purged_before: purged_before,
        earliest_replay_from: purged_before
            .max(ids_dropped_before)
            .map(|t| t + REPLAY_MARGIN),
        tombstones: total,
        tombstones_due: due,
        next_tombstone_due_at: next_due,
        last_run_started_at: started,
        last_run_finished_at: finished,
        last_run_error: error,
    })
}

/// What `ingestctl retention set` changes (`None`: left as it is).
#[derive(Debug, Default)]
pub struct Settings {
    pub events_days: Option<i32>,
    pub tombstone_days: Option<i32>,
    pub dedup_window_hours: Option<i32>,
}

pub async fn set(pool: &PgPool, settings: Settings, yes: bool) -> anyhow::Result<Retention> {
    let Settings {
        events_days,
        tombstone_days,
        dedup_window_hours,
    } = settings;
    anyhow::ensure!(
        events_days.is_some() || tombstone_days.is_some() || dedup_window_hours.is_some(),
        "nothing to set: give --events-days N, --tombstone-days N and/or --dedup-window-hours N"
    );
    if let Some(hours) = dedup_window_hours {
        anyhow::ensure!(
            (1..=87_600).contains(&hours),
            "--dedup-window-hours must be between 1 and 87600, not {hours}"
        );
        let current: i32 = sqlx::query_scalar("SELECT dedup_window_hours FROM lifecycle_settings")
            .fetch_one(pool)
            .await?;
        anyhow::ensure!(
            hours >= current || yes,
            "shortening the deduplication window from {current} to {hours} hours forgets ids \
             sooner: a retry received more than {hours} hours after its original, or a replay \
             from before what is forgotten, would be stored again; run again with --yes to do it"
        );
    }
    if let Some(days) = tombstone_days {
        anyhow::ensure!(
            (1..=36_500).contains(&days),
            "--tombstone-days must be between 1 and 36500, not {days}"
        );
    }
    if let Some(days) = events_days {
        anyhow::ensure!(
            (1..=3650).contains(&days),
            "--events-days must be between 1 and 3650, not {days}"
        );
        let current: i32 =
            sqlx::query_scalar("SELECT events_retention_days FROM lifecycle_settings")
                .fetch_one(pool)
                .await?;
        if days < current && !yes {
            let horizon = Utc::now() - chrono::TimeDelta::days(days.into());
            let doomed: Vec<Partition> = partitions(pool)
                .await?
                .into_iter()
                .filter(|p| {
                    p.table == "events"
                        && p.drops_at.is_some()
                        && p.until.is_some_and(|u| u <= horizon)
                })
                .collect();
            let total: i64 = doomed.iter().map(|p| p.bytes).sum();
            anyhow::bail!(
                "shortening the events retention from {current} to {days} days drops {} partition(s) \
                 ({}) at the next maintenance run; run again with --yes to do it",
                doomed.len(),
                bytes(total)
            );
        }
    }
    sqlx::query(
        "UPDATE lifecycle_settings
            SET events_retention_days = coalesce($1, events_retention_days),
                tombstone_horizon_days = coalesce($2, tombstone_horizon_days),
                dedup_window_hours = coalesce($3, dedup_window_hours),
                updated_at = now()",
    )
    .bind(events_days)
    .bind(tombstone_days)
    .bind(dedup_window_hours)
    .execute(pool)
    .await?;
    show(pool).await
}

fn print_retention(w: &mut dyn Write, r: &Retention) -> io::Result<()> {
    let t = |t: &Option<DateTime<Utc>>| time_or_dash(t.as_ref());
    writeln!(w, "events retention:    {} days", r.events_retention_days)?;
    writeln!(w, "events dropped before {}", t(&r.events_dropped_before))?;
    match &r.next_drop {
        Some(p) => writeln!(
            w,
            "next drop:           {} ({}, ~{} rows) at {}",
            p.name,
            bytes(p.bytes),
            p.rows_estimate,
            t(&p.drops_at)
        )?,
        None => writeln!(w, "next drop:           -")?,
    }
    writeln!(
        w,
        "dedup window:        {} hours (ids forgotten before {})",
        r.dedup_window_hours,
        t(&r.event_ids_dropped_before)
    )?;
    writeln!(
        w,
        "tombstone horizon:   {} days (set {})",
        r.tombstone_horizon_days,
        time(&r.settings_updated_at)
    )?;
    writeln!(w, "tombstones:          {}", r.tombstones)?;
    writeln!(w, "purged before:       {}", t(&r.tombstones_purged_before))?;
    writeln!(
        w,
        "earliest replay:     {}",
        r.earliest_replay_from
            .as_ref()
            .map_or_else(|| "any".to_owned(), time)
    )?;
    writeln!(w, "due at the next run: {} tombstones", r.tombstones_due)?;
    writeln!(w, "next due:            {}", t(&r.next_tombstone_due_at))?;
    writeln!(
        w,
        "last run:            started {}, finished {}{}",
        t(&r.last_run_started_at),
        t(&r.last_run_finished_at),
        r.last_run_error
            .as_ref()
            .map_or_else(String::new, |e| format!(", failed: {e}"))
    )
}
