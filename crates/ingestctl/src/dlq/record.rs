//! The record of what `dlq redrive` re-published: per dead-letter partition, an offset
//! committed for the group [`REDRIVE_GROUP`] (which never has members) and, in that
//! commit's metadata, the letters below it that were not redriven.

use std::collections::BTreeMap;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;

use crate::connect::{offset_of, REQUEST_TIMEOUT};

/// The consumer group whose committed offsets on the dead-letter topic record what was
/// redriven. It never has members: `dlq redrive` commits for it without joining.
pub const REDRIVE_GROUP: &str = "ingestctl-dlq-redrive";
/// Prefix of the commit metadata that lists letters below the committed offset that
/// were not redriven (`not-redriven=3-4,7`).
const PENDING_PREFIX: &str = "not-redriven=";

/// Inclusive, sorted, disjoint offset ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ranges(Vec<(i64, i64)>);

impl Ranges {
    fn parse(metadata: &str) -> Self {
        let Some(list) = metadata.strip_prefix(PENDING_PREFIX) else {
            return Self::default();
        };
        let mut ranges = Self::default();
        for part in list.split(',').filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
                ranges.add(a, b + 1);
            }
        }
        ranges
    }

    fn format(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        format!("{PENDING_PREFIX}{}", parts.join(","))
    }

    fn contains(&self, offset: i64) -> bool {
        self.0.iter().any(|&(a, b)| a <= offset && offset <= b)
    }

    fn first(&self) -> Option<i64> {
        self.0.first().map(|&(a, _)| a)
    }

    /// Adds `[start, end)`.
    fn add(&mut self, start: i64, end: i64) {
        if start >= end {
            return;
        }
        self.0.push((start, end - 1));
        self.0.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(self.0.len());
        for (a, b) in self.0.drain(..) {
            match merged.last_mut() {
                Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.0 = merged;
    }

    fn remove(&mut self, offset: i64) {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(a, b) in &self.0 {
            if offset < a || offset > b {
                out.push((a, b));
                continue;
            }
            if a < offset {
                out.push((a, offset - 1));
            }
            if offset < b {
                out.push((offset + 1, b));
            }
        }
        self.0 = out;
    }

    /// Drops every offset below `low`.
    fn keep_from(&mut self, low: i64) {
        self.0.retain(|&(_, b)| b >= low);
        if let Some(first) = self.0.first_mut() {
            first.0 = first.0.max(low);
        }
    }

    /// How many offsets of `[start, end)` are in the set.
    fn count_in(&self, start: i64, end: i64) -> i64 {
        self.0
            .iter()
            .map(|&(a, b)| (b + 1).min(end) - a.max(start))
            .filter(|&n| n > 0)
            .sum()
    }
}

/// What was redriven on one dead-letter partition: everything below `committed`
/// except the `pending` offsets.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    committed: Option<i64>,
    pending: Ranges,
}

impl Progress {
    pub fn redriven(&self, offset: i64) -> bool {
        self.committed.is_some_and(|c| offset < c) && !self.pending.contains(offset)
    }

    /// Offsets of `[low, high)` that were redriven.
    pub fn count_redriven(&self, low: i64, high: i64) -> i64 {
        let below = self.committed.map_or(0, |c| (c.min(high) - low).max(0));
        below
            - self
                .pending
                .count_in(low, self.committed.unwrap_or(low).min(high))
    }

    /// Where redriving everything not redriven yet starts: the committed offset (or the
    /// low watermark), or an earlier letter that was skipped.
    fn base(&self, low: i64) -> i64 {
        self.committed.unwrap_or(low).max(low)
    }

    /// The first offset of a partition whose low watermark is `low` that may hold a
    /// letter not redriven yet.
    pub fn start(&self, low: i64) -> i64 {
        let base = self.base(low);
        self.pending.first().map_or(base, |f| f.min(base)).max(low)
    }

    /// Records `offsets` (of a partition whose low watermark is `low`) as redriven, and
    /// returns the offset to commit: letters between the old committed offset and the
    /// new one that were not redriven stay pending.
    pub fn mark_redriven(&mut self, low: i64, offsets: &[i64]) -> i64 {
        let base = self.base(low);
        let top = offsets.iter().max().map_or(base, |o| o + 1).max(base);
        for &o in offsets {
            self.pending.remove(o);
        }
        let mut next = base;
        for &o in offsets.iter().filter(|&&o| o >= base) {
            self.pending.add(next, o);
            next = o + 1;
        }
        self.pending.add(next, top);
        self.pending.keep_from(low);
        self.committed = Some(top);
        top
    }

    /// The metadata to commit with the offset: the letters still pending.
    pub fn metadata(&self) -> String {
        self.pending.format()
    }
}

/// The redrive group's record for `partitions` of the dead-letter `topic`.
pub fn read(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: impl Iterator<Item = i32>,
) -> anyhow::Result<BTreeMap<i32, Progress>> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, REQUEST_TIMEOUT)
        .with_context(|| format!("reading the offsets committed for group {REDRIVE_GROUP}"))?;
    let mut progress = BTreeMap::new();
    for e in committed.elements() {
        e.error()
            .with_context(|| format!("reading the offsets committed for group {REDRIVE_GROUP}"))?;
        progress.insert(
            e.partition(),
            Progress {
                committed: offset_of(e.offset()),
                pending: Ranges::parse(e.metadata()),
            },
        );
    }
    Ok(progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip_and_edit() {
        let mut r = Ranges::default();
        r.add(3, 5);
        r.add(7, 8);
        assert_eq!(r.format(), "not-redriven=3-4,7");
        assert_eq!(Ranges::parse(&r.format()), r);
        r.remove(3);
        r.add(5, 7);
        assert_eq!(r.format(), "not-redriven=4-7");
        r.remove(5);
        assert_eq!(r.format(), "not-redriven=4,6-7");
        assert!(r.contains(6) && !r.contains(5));
        assert_eq!(r.count_in(0, 7), 2);
        r.keep_from(7);
        assert_eq!(r.format(), "not-redriven=7");
        assert_eq!(Ranges::parse(""), Ranges::default());
        assert_eq!(Ranges::parse("something else"), Ranges::default());
    }

    #[test]
    fn progress_marks_redriven() {
        let mut pending = Ranges::default();
        pending.add(2, 3);
        let p = Progress {
            committed: Some(5),
            pending,
        };
        let redriven: Vec<i64> = (0..7).filter(|&o| p.redriven(o)).collect();
        assert_eq!(redriven, [0, 1, 3, 4]);
        assert_eq!(p.count_redriven(0, 7), 4);
        assert_eq!(p.count_redriven(1, 7), 3);
        assert!(!Progress::default().redriven(0));
    }
}
