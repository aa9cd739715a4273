//! The Kafka-side commands: inspecting and redriving dead letters, and replaying the
//! worker group from a point in time.
//!
//! Every consumer here assigns partitions explicitly: none ever joins a consumer group
//! (so none takes partitions away from a running worker), and none commits except on
//! purpose (`enable.auto.commit=false`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use ingest_types::topics::dead_letter_headers;
use ingest_types::Topics;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

/// The consumer group whose committed offsets on the dead-letter topic record what was
/// redriven. It never has members: `dlq redrive` commits for it without joining.
pub const REDRIVE_GROUP: &str = "ingestctl-dlq-redrive";
/// Header on a redriven message: the dead letter it came from, `<partition>:<offset>`.
pub const REDRIVEN_FROM: &str = "ingest-redriven-from";

/// Timeout of one request to the cluster (metadata, watermarks, offsets).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading a topic up to its high watermarks may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Prefix of the commit metadata that lists letters below the committed offset that
/// were not redriven (`not-redriven=3-4,7`).
const PENDING_PREFIX: &str = "not-redriven=";

pub struct Kafka {
    brokers: String,
    topics: Topics,
}

impl Kafka {
    pub fn new(brokers: &str, prefix: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            topics: Topics::with_prefix(prefix),
        }
    }

    /// A consumer that only ever assigns partitions (it never joins `group`; the group
    /// id is needed to read and commit that group's offsets).
    fn consumer(&self, group: &str) -> anyhow::Result<BaseConsumer> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create()
            .context("creating the kafka consumer")
    }

    /// The topic's partition ids, sorted.
    fn partitions(&self, consumer: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .with_context(|| {
                format!(
                    "reading metadata of topic {topic} from kafka at {} (is KAFKA_BROKERS right, and is kafka up?)",
                    self.brokers
                )
            })?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            bail!("topic {topic} does not exist (is --topic-prefix right?)");
        };
        if let Some(err) = t.error() {
            let code = RDKafkaErrorCode::from(err);
            if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                bail!("topic {topic} does not exist (is --topic-prefix right?)");
            }
            bail!("reading metadata of topic {topic}: {code}");
        }
        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        if ids.is_empty() {
            bail!("topic {topic} does not exist (is --topic-prefix right?)");
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Low and high watermark of every partition of `topic`.
    fn watermarks(
        &self,
        consumer: &BaseConsumer,
        topic: &str,
    ) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
        self.partitions(consumer, topic)?
            .into_iter()
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                    .map(|w| (p, w))
                    .with_context(|| format!("reading the offsets of {topic} partition {p}"))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Dead letters
// ---------------------------------------------------------------------------------------

/// One message of the dead-letter topic.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Partition and offset on the dead-letter topic.
    pub partition: i32,
    pub offset: i64,
    /// When it was written to the dead-letter topic.
    pub timestamp: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub origin_topic: Option<String>,
    pub origin_partition: Option<i32>,
    pub origin_offset: Option<i64>,
    /// Key and payload as text (invalid UTF-8 replaced by U+FFFD).
    pub key: Option<String>,
    pub payload: Option<String>,
    /// Whether `dlq redrive` already re-published it.
    pub redriven: bool,
    #[serde(skip)]
    raw_key: Option<Vec<u8>>,
    #[serde(skip)]
    raw_payload: Option<Vec<u8>>,
    /// Headers other than the four dead-letter headers, kept on redrive.
    #[serde(skip)]
    other_headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DeadLetter {
    fn from_message(m: &BorrowedMessage<'_>) -> Self {
        let mut header = BTreeMap::new();
        let mut other_headers = Vec::new();
        if let Some(headers) = m.headers() {
            for h in headers.iter() {
                let dlq = [
                    dead_letter_headers::REASON,
                    dead_letter_headers::TOPIC,
                    dead_letter_headers::PARTITION,
                    dead_letter_headers::OFFSET,
                ];
                if dlq.contains(&h.key) {
                    let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                    header.insert(h.key, value);
                } else {
                    other_headers.push((h.key.to_owned(), h.value.map(<[u8]>::to_vec)));
                }
            }
        }
        let text = |name: &str| header.get(name).cloned().flatten();
        let text_bytes = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        Self {
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis),
            reason: text(dead_letter_headers::REASON),
            origin_topic: text(dead_letter_headers::TOPIC),
            origin_partition: text(dead_letter_headers::PARTITION).and_then(|v| v.parse().ok()),
            origin_offset: text(dead_letter_headers::OFFSET).and_then(|v| v.parse().ok()),
            key: text_bytes(m.key()),
            payload: text_bytes(m.payload()),
            redriven: false,
            raw_key: m.key().map(<[u8]>::to_vec),
            raw_payload: m.payload().map(<[u8]>::to_vec),
            other_headers,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DlqList {
    pub topic: String,
    /// Letters on the topic (high minus low watermark, over every partition).
    pub total: i64,
    /// How many of those were redriven.
    pub redriven: i64,
    /// The oldest `--limit` letters, by partition and offset.
    pub letters: Vec<DeadLetter>,
}

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
struct Progress {
    committed: Option<i64>,
    pending: Ranges,
}

impl Progress {
    fn redriven(&self, offset: i64) -> bool {
        self.committed.is_some_and(|c| offset < c) && !self.pending.contains(offset)
    }

    /// Offsets of `[low, high)` that were redriven.
    fn count_redriven(&self, low: i64, high: i64) -> i64 {
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
}

fn offset_of(offset: Offset) -> Option<i64> {
    match offset {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

impl Kafka {
    /// The redrive group's record for every partition of the dead-letter topic.
    fn progress(
        &self,
        consumer: &BaseConsumer,
        partitions: impl Iterator<Item = i32>,
    ) -> anyhow::Result<BTreeMap<i32, Progress>> {
        let topic = &self.topics.dead_letter;
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, REQUEST_TIMEOUT)
            .with_context(|| format!("reading the offsets committed for group {REDRIVE_GROUP}"))?;
        let mut progress = BTreeMap::new();
        for e in committed.elements() {
            e.error().with_context(|| {
                format!("reading the offsets committed for group {REDRIVE_GROUP}")
            })?;
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

    /// Reads `topic` from the `[start, end)` range of each planned partition; keeps the
    /// messages `keep` accepts, at most `limit` per partition.
    fn read(
        &self,
        consumer: &BaseConsumer,
        plan: &BTreeMap<i32, (i64, i64)>,
        keep: impl Fn(i32, i64) -> bool,
        limit: Option<usize>,
    ) -> anyhow::Result<Vec<DeadLetter>> {
        let topic = &self.topics.dead_letter;
        let mut letters = Vec::new();
        let mut tpl = TopicPartitionList::new();
        let mut open: BTreeMap<i32, (i64, usize)> = BTreeMap::new();
        for (&p, &(start, end)) in plan {
            if start < end && limit != Some(0) {
                tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
                open.insert(p, (end, 0));
            }
        }
        if open.is_empty() {
            return Ok(letters);
        }
        consumer
            .assign(&tpl)
            .with_context(|| format!("assigning the partitions of {topic}"))?;
        let deadline = Instant::now() + READ_TIMEOUT;
        while !open.is_empty() {
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {READ_TIMEOUT:?} reading {topic} (partitions {:?} not read to the end)",
                    open.keys().collect::<Vec<_>>()
                );
            }
            let message = match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                    continue;
                }
                Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
                Some(Ok(m)) => m,
            };
            let (p, o) = (message.partition(), message.offset());
            let Some((end, kept)) = open.get_mut(&p) else {
                continue;
            };
            if o >= *end {
                open.remove(&p);
                continue;
            }
            if keep(p, o) {
                letters.push(DeadLetter::from_message(&message));
                *kept += 1;
            }
            if o + 1 >= *end || limit.is_some_and(|l| *kept >= l) {
                open.remove(&p);
            }
        }
        consumer.unassign()?;
        letters.sort_by_key(|l| (l.partition, l.offset));
        Ok(letters)
    }

    /// `dlq list`: the oldest `limit` dead letters, marked redriven or not.
    pub fn dlq_list(&self, limit: usize) -> anyhow::Result<DlqList> {
        let topic = &self.topics.dead_letter;
        let consumer = self.consumer(REDRIVE_GROUP)?;
        let watermarks = self.watermarks(&consumer, topic)?;
        let progress = self.progress(&consumer, watermarks.keys().copied())?;
        let mut letters = self.read(&consumer, &watermarks, |_, _| true, Some(limit))?;
        // Up to `limit` per partition were read; keep the oldest `limit` overall.
        letters.sort_by_key(|l| (l.timestamp, l.partition, l.offset));
        letters.truncate(limit);
        letters.sort_by_key(|l| (l.partition, l.offset));
        for l in &mut letters {
            l.redriven = progress
                .get(&l.partition)
                .is_some_and(|p| p.redriven(l.offset));
        }
        let total = watermarks.values().map(|(low, high)| high - low).sum();
        let redriven = watermarks
            .iter()
            .map(|(p, &(low, high))| progress.get(p).map_or(0, |pr| pr.count_redriven(low, high)))
            .sum();
        Ok(DlqList {
            topic: topic.clone(),
            total,
            redriven,
            letters,
        })
    }
}

/// Which dead letters `dlq redrive` re-publishes.
pub enum Selection {
    /// Every letter not redriven yet.
    All,
    /// These `(partition, offset)` letters.
    Offsets(BTreeSet<(i32, i64)>),
}

/// Parses `<partition>:<offset>`.
pub fn parse_letter(s: &str) -> anyhow::Result<(i32, i64)> {
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

impl Kafka {
    /// `dlq redrive`: re-publishes the selected letters to their origin partitions, then
    /// records them as redriven.
    pub async fn dlq_redrive(&self, selection: Selection) -> anyhow::Result<RedriveReport> {
        let topic = &self.topics.dead_letter;
        let consumer = self.consumer(REDRIVE_GROUP)?;
        let watermarks = self.watermarks(&consumer, topic)?;
        let mut progress = self.progress(&consumer, watermarks.keys().copied())?;
        let letters = match &selection {
            Selection::All => {
                let plan: BTreeMap<i32, (i64, i64)> = watermarks
                    .iter()
                    .map(|(&p, &(low, high))| {
                        let pr = progress.get(&p).cloned().unwrap_or_default();
                        let base = pr.base(low);
                        let start = pr.pending.first().map_or(base, |f| f.min(base)).max(low);
                        (p, (start, high))
                    })
                    .collect();
                self.read(
                    &consumer,
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
                let letters = self.read(&consumer, &plan, |p, o| wanted.contains(&(p, o)), None)?;
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
            if !self.topics.consumed().contains(&origin) {
                bail!(
                    "dead letter {p}:{o} comes from topic {origin:?}, not {} or {}: it cannot be redriven (is --topic-prefix right?)",
                    self.topics.contacts,
                    self.topics.events
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

        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .create()
            .context("creating the kafka producer")?;
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
            let low = watermarks[&p].0;
            let pr = progress.entry(p).or_default();
            let base = pr.base(low);
            let top = offsets.iter().max().map_or(base, |o| o + 1).max(base);
            for &o in offsets {
                pr.pending.remove(o);
            }
            // Letters between the old committed offset and the new one that were not
            // redriven stay pending.
            let mut next = base;
            for &o in offsets.iter().filter(|&&o| o >= base) {
                pr.pending.add(next, o);
                next = o + 1;
            }
            pr.pending.add(next, top);
            pr.pending.keep_from(low);
            pr.committed = Some(top);
            let mut e = tpl.add_partition(topic, p);
            e.set_offset(Offset::Offset(top))?;
            e.set_metadata(pr.pending.format());
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
}

fn partition_list<'a>(partitions: impl Iterator<Item = &'a i32>) -> String {
    partitions
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------------

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

impl Kafka {
    /// `replay`: rewinds `group` on the contacts and events topics to `from`.
    pub fn replay(
        &self,
        group: &str,
        from: DateTime<Utc>,
        dry_run: bool,
    ) -> anyhow::Result<ReplayReport> {
        let consumer = self.consumer(group)?;
        let mut all = TopicPartitionList::new();
        let mut watermarks = BTreeMap::new();
        for topic in self.topics.consumed() {
            for (p, w) in self.watermarks(&consumer, topic)? {
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
                self.topics.contacts,
                self.topics.events
            );
        }
        if !dry_run && commit.count() > 0 {
            if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                return Err(self.commit_error(&consumer, group, e));
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

    fn commit_error(&self, consumer: &BaseConsumer, group: &str, e: KafkaError) -> anyhow::Error {
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

    #[test]
    fn letters_parse() {
        assert_eq!(parse_letter("0:42").unwrap(), (0, 42));
        for bad in ["x", "0", "0:", ":1", "a:1", "0:-1", "-1:0"] {
            assert!(parse_letter(bad).is_err(), "{bad}");
        }
    }
}
