//! `dlq redrive`: re-publishes dead letters to the partition they came from, then
//! records them as redriven (see `record`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::bail;
use ingest_types::topics::dead_letter_headers;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::letters;
use super::record::{self, REDRIVE_GROUP};
use crate::connect::Kafka;

/// Header on a redriven message: the dead letter it came from, `<partition>:<offset>`.
pub const REDRIVEN_FROM: &str = "ingest-redriven-from";

/// Which dead letters `dlq redrive` re-publishes.
pub enum Selection {
    /// Every letter not redriven yet.
    All,
    /// These `(partition, offset)` letters.
    Offsets(BTreeSet<(i32, i64)>),
}

impl Selection {
    /// `--all`, or `--offset <partition>:<offset>` (repeatable); exactly one of the two.
    pub fn parse(all: bool, offsets: &[String]) -> anyhow::Result<Self> {
        Ok(match (all, offsets.is_empty()) {
            (true, false) => bail!("--all and --offset cannot be combined"),
            (false, true) => bail!(
                "choose the dead letters to redrive: --all, or --offset <partition>:<offset> (repeatable)"
            ),
            (true, true) => Self::All,
            (false, false) => Self::Offsets(
                offsets
                    .iter()
                    .map(|s| parse_letter(s))
                    .collect::<anyhow::Result<_>>()?,
            ),
        })
    }
}

/// Parses `<partition>:<offset>`.
fn parse_letter(s: &str) -> anyhow::Result<(i32, i64)> {
    let parsed = s.split_once(':').and_then(|(p, o)| {
        let p: i32 = p.trim().parse().ok()?;
        let o: i64 = o.trim().parse().ok()?;
        (p >= 0 && o >= 0).then_some((p, o))
    });
    match parsed {
        Some(letter) => Ok(letter),
        None => bail!("invalid --offset {s:?}: expected <partition>:<offset>, e.g. 0:42"),
    }
}

#[derive(Debug, Serialize)]
pub struct Redriven {
    /// The dead letter's partition and offset.
    pub partition: i32,
    pub offset: i64,
    /// Where it was re-published.
    pub topic: String,
    pub topic_partition: i32,
    pub topic_offset: i64,
}

#[derive(Debug, Serialize)]
pub struct RedriveReport {
    pub topic: String,
    pub redriven: Vec<Redriven>,
    /// Per dead-letter partition touched: the offset now committed for the redrive group.
    pub committed: BTreeMap<i32, i64>,
}

/// Re-publishes the selected letters to their origin partitions, then records them as
/// redriven.
pub async fn redrive(kafka: &Kafka, selection: Selection) -> anyhow::Result<RedriveReport> {
    let topic = &kafka.topics.dead_letter;
    let consumer = kafka.consumer(REDRIVE_GROUP)?;
    let watermarks = kafka.watermarks(&consumer, topic)?;
    let mut progress = record::read(&consumer, topic, watermarks.keys().copied())?;
    let letters = match &selection {
        Selection::All => {
            let plan: BTreeMap<i32, (i64, i64)> = watermarks
                .iter()
                .map(|(&p, &(low, high))| {
                    let start = progress.get(&p).cloned().unwrap_or_default().start(low);
                    (p, (start, high))
                })
                .collect();
            letters::read(
                &consumer,
                topic,
                &plan,
                |p, o| progress.get(&p).is_none_or(|pr| !pr.redriven(o)),
                None,
            )?
        }
        Selection::Offsets(wanted) => {
            let mut plan: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
            for &(p, o) in wanted {
                let Some(&(low, high)) = watermarks.get(&p) else {
                    bail!(
                        "{topic} has no partition {p} (it has {})",
                        partition_list(watermarks.keys())
                    );
                };
                if o < low || o >= high {
                    if low == high {
                        bail!("no dead letter at {p}:{o} (partition {p} of {topic} is empty)");
                    }
                    bail!(
                        "no dead letter at {p}:{o} (partition {p} of {topic} holds offsets {low} to {})",
                        high - 1
                    );
                }
                if progress.get(&p).is_some_and(|pr| pr.redriven(o)) {
                    bail!("dead letter {p}:{o} was already redriven");
                }
                let range = plan.entry(p).or_insert((o, o + 1));
                range.0 = range.0.min(o);
                range.1 = range.1.max(o + 1);
            }
            let letters = letters::read(
                &consumer,
                topic,
                &plan,
                |p, o| wanted.contains(&(p, o)),
                None,
            )?;
            let found: BTreeSet<(i32, i64)> =
                letters.iter().map(|l| (l.partition, l.offset)).collect();
            if let Some((p, o)) = wanted.difference(&found).next() {
                bail!("no dead letter at {p}:{o} (it was deleted or compacted away)");
            }
            letters
        }
    };

    // Every letter must name an origin this deployment consumes, before any is sent.
    let mut targets = Vec::with_capacity(letters.len());
    for l in &letters {
        let (p, o) = (l.partition, l.offset);
        let Some(origin) = l.origin_topic.as_deref() else {
            bail!(
                "dead letter {p}:{o} has no {} header: it cannot be redriven",
                dead_letter_headers::TOPIC
            );
        };
        if !kafka.topics.consumed().contains(&origin) {
            bail!(
                "dead letter {p}:{o} comes from topic {origin:?}, not {} or {}: it cannot be redriven (is --topic-prefix right?)",
                kafka.topics.contacts,
                kafka.topics.events
            );
        }
        let Some(origin_partition) = l.origin_partition else {
            bail!(
                "dead letter {p}:{o} has no valid {} header: it cannot be redriven",
                dead_letter_headers::PARTITION
            );
        };
        targets.push((origin.to_owned(), origin_partition));
    }

    let producer = kafka.producer()?;
    let mut redriven = Vec::new();
    let mut failure = None;
    for (l, (target, target_partition)) in letters.iter().zip(&targets) {
        let from = format!("{}:{}", l.partition, l.offset);
        let mut headers = OwnedHeaders::new();
        for (key, value) in &l.other_headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        headers = headers.insert(Header {
            key: REDRIVEN_FROM,
            value: Some(&from),
        });
        // The origin partition, not the partitioner's choice: a user's contact
        // writes are versioned by offset, which orders them only within a partition.
        let mut record = FutureRecord::to(target)
            .partition(*target_partition)
            .headers(headers);
        if let Some(key) = &l.raw_key {
            record = record.key(key);
        }
        if let Some(payload) = &l.raw_payload {
            record = record.payload(payload);
        }
        match producer.send(record, Duration::from_secs(30)).await {
            Ok(delivery) => redriven.push(Redriven {
                partition: l.partition,
                offset: l.offset,
                topic: target.clone(),
                topic_partition: delivery.partition,
                topic_offset: delivery.offset,
            }),
            Err((e, _)) => {
                failure = Some(format!("redriving dead letter {from} to {target}: {e}"));
                break;
            }
        }
    }

    // Record what was delivered, even when a later letter failed.
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in &redriven {
        by_partition.entry(r.partition).or_default().push(r.offset);
    }
    let mut tpl = TopicPartitionList::new();
    let mut committed = BTreeMap::new();
    for (&p, offsets) in &by_partition {
        let pr = progress.entry(p).or_default();
        let top = pr.mark_redriven(watermarks[&p].0, offsets);
        let mut e = tpl.add_partition(topic, p);
        e.set_offset(Offset::Offset(top))?;
        e.set_metadata(pr.metadata());
        committed.insert(p, top);
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            bail!(
                "redrove {} dead letter(s) but could not record that for group {REDRIVE_GROUP} ({e}): a later --all would redrive them again",
                redriven.len()
            );
        }
    }
    if let Some(failure) = failure {
        bail!(
            "{failure} (the {} letter(s) before it were redriven and recorded)",
            redriven.len()
        );
    }
    Ok(RedriveReport {
        topic: topic.clone(),
        redriven,
        committed,
    })
}

fn partition_list<'a>(partitions: impl Iterator<Item = &'a i32>) -> String {
    partitions
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_parse() {
        assert_eq!(parse_letter("0:42").unwrap(), (0, 42));
        for bad in ["x", "0", "0:", ":1", "a:1", "0:-1", "-1:0"] {
            assert!(parse_letter(bad).is_err(), "{bad}");
        }
    }
}
