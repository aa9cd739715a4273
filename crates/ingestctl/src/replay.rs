//! `ingestctl replay`: rewinds the workers' consumer group on the contacts and events
//! topics to a point in time. Its arguments, the guard that refuses a replay from
//! before what the database has forgotten (tombstones purged, event ids dropped), the
//! rewind itself (Kafka), and its output.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use ingest_worker::lifecycle::REPLAY_MARGIN;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use sqlx::PgPool;

use crate::connect::{offset_of, Kafka, REQUEST_TIMEOUT};
use crate::output::{table, time, Output};

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
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// RFC 3339 time, e.g. 2026-11-24T09:00:00Z.
    #[arg(long)]
    from: String,
    /// The workers' consumer group (INGEST_WORKER_GROUP).
    #[arg(long, default_value = "ingest-worker")]
    group: String,
    /// Show what would be set, without committing anything.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(
    pool: &PgPool,
    kafka: &Kafka,
    out: Output,
    args: ReplayArgs,
) -> anyhow::Result<()> {
    let from = parse_from(&args.from)?;
    check_from(pool, from).await?;
    let report = rewind(kafka, &args.group, from, args.dry_run)?;
    out.print(&report, |w| {
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
            w,
            &["TOPIC", "PARTITION", "OLD", "NEW", ""],
            rows,
            "no partitions",
        )?;
        let changed = report.partitions.iter().filter(|p| p.changed).count();
        if report.dry_run {
            writeln!(
                w,
                "dry run: group {:?} not changed ({changed} partition(s) would be rewound)",
                report.group
            )
        } else {
            writeln!(
                w,
                "rewound group {:?} on {changed} partition(s) to {}; start the workers to replay",
                report.group,
                time(&report.from)
            )
        }
    })
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

/// Refuses a replay that starts before a horizon (plus a margin for clocks): the ids of
/// events received before the deduplication horizon were forgotten, so replayed events
/// would be stored again; the tombstones that would stop a replayed old upsert from
/// bringing a deleted contact back may be gone.
pub async fn check_from(pool: &PgPool, from: DateTime<Utc>) -> anyhow::Result<()> {
    let (purged_before, forgotten_before): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as(
            "SELECT CASE WHEN isfinite(tombstones_purged_before) THEN tombstones_purged_before END,
                    CASE WHEN isfinite(event_ids_dropped_before) THEN event_ids_dropped_before END
               FROM lifecycle_state",
        )
        .fetch_one(pool)
        .await?;
    let horizons = [
        (
            forgotten_before,
            "deduplication",
            "the ids of events received before {} were forgotten (the deduplication window \
             has passed them), and replaying from there would store those events again",
        ),
        (
            purged_before,
            "tombstone",
            "tombstones of contacts deleted before {} were purged, and replaying from there \
             could bring deleted contacts back",
        ),
    ];
    for (horizon, name, lost) in horizons {
        let Some(horizon) = horizon else { continue };
        let earliest = horizon + REPLAY_MARGIN;
        anyhow::ensure!(
            from >= earliest,
            "--from {} is before the {name} horizon: {}; the earliest allowed --from is {}",
            from.to_rfc3339(),
            lost.replace("{}", &horizon.to_rfc3339()),
            earliest.to_rfc3339()
        );
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct ReplayPartition {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset before (none: it never committed there).
    pub old: Option<i64>,
    /// The first offset at or after `--from` (the high watermark when there is none).
    pub target: i64,
    /// The committed offset now.
    pub new: Option<i64>,
    pub changed: bool,
}

#[derive(Debug, Serialize)]
pub struct ReplayReport {
    pub group: String,
    pub from: DateTime<Utc>,
    pub dry_run: bool,
    pub partitions: Vec<ReplayPartition>,
}

/// Rewinds `group` on the contacts and events topics to `from` (only reports, with
/// `dry_run`).
pub fn rewind(
    kafka: &Kafka,
    group: &str,
    from: DateTime<Utc>,
    dry_run: bool,
) -> anyhow::Result<ReplayReport> {
    let consumer = kafka.consumer(group)?;
    let mut all = TopicPartitionList::new();
    let mut watermarks = BTreeMap::new();
    for topic in kafka.topics.consumed() {
        for (p, w) in kafka.watermarks(&consumer, topic)? {
            all.add_partition(topic, p);
            watermarks.insert((topic.to_owned(), p), w);
        }
    }
    let committed = consumer
        .committed_offsets(all.clone(), REQUEST_TIMEOUT)
        .with_context(|| format!("reading the offsets committed for group {group:?}"))?;
    let mut times = all;
    times.set_all_offsets(Offset::Offset(from.timestamp_millis()))?;
    let found = consumer
        .offsets_for_times(times, REQUEST_TIMEOUT)
        .context("looking up offsets by time")?;

    let mut partitions = Vec::new();
    let mut commit = TopicPartitionList::new();
    for ((topic, p), (_, high)) in &watermarks {
        let old = committed
            .find_partition(topic, *p)
            .and_then(|e| offset_of(e.offset()));
        let target = found
            .find_partition(topic, *p)
            .and_then(|e| offset_of(e.offset()))
            .unwrap_or(*high);
        // Only ever rewind: moving forward would skip messages never consumed, and a
        // partition without a committed offset is read from its start anyway.
        let new = old.map(|o| o.min(target));
        let changed = new != old;
        if changed {
            commit.add_partition_offset(topic, *p, Offset::Offset(target))?;
        }
        partitions.push(ReplayPartition {
            topic: topic.clone(),
            partition: *p,
            old,
            target,
            new,
            changed,
        });
    }
    if partitions.iter().all(|p| p.old.is_none()) {
        bail!(
            "consumer group {group:?} has no committed offsets on {} or {} (is --group right?)",
            kafka.topics.contacts,
            kafka.topics.events
        );
    }
    if !dry_run && commit.count() > 0 {
        if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
            return Err(commit_error(&consumer, group, e));
        }
        // A commit can report success while the broker refused some partitions:
        // check what the group holds now.
        let now = consumer
            .committed_offsets(commit.clone(), REQUEST_TIMEOUT)
            .with_context(|| format!("reading back the offsets of group {group:?}"))?;
        for e in commit.elements() {
            let held = now
                .find_partition(e.topic(), e.partition())
                .map(|n| n.offset());
            if held != Some(e.offset()) {
                bail!(
                    "consumer group {group:?} did not take the new offset of {} partition {} (it holds {held:?})",
                    e.topic(),
                    e.partition()
                );
            }
        }
    }
    Ok(ReplayReport {
        group: group.to_owned(),
        from,
        dry_run,
        partitions,
    })
}

fn commit_error(consumer: &BaseConsumer, group: &str, e: KafkaError) -> anyhow::Error {
    let active = matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::StaleMemberEpoch
        )
    ) || consumer
        .fetch_group_list(Some(group), REQUEST_TIMEOUT)
        .is_ok_and(|list| list.groups().iter().any(|g| !g.members().is_empty()));
    if active {
        anyhow::anyhow!(
            "consumer group {group:?} has active members: stop the workers, then replay"
        )
    } else {
        anyhow::Error::new(e).context(format!("committing the offsets of group {group:?}"))
    }
}
