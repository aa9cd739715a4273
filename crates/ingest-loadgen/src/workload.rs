//! What the load generator sends: contact and event requests of a chosen batch size, with
//! a chosen share of invalid items, over a chosen pool of users, in one of two shapes:
//!
//! - [`Shape::Realistic`] (the default, and the source of every figure in
//!   `BENCHMARKS.md`): every body distinct in ids *and* values, users repeating with a
//!   skew, contacts a mix of new users, partial updates with `null` removals and deletes
//!   ([`realistic`]);
//! - [`Shape::Reference`]: the near-identical items of earlier runs, for comparison only
//!   ([`reference`]).
//!
//! Every item is unique within a run (event ids, contact sequence numbers), so retries and
//! e2e sampling can tell items apart, and the rows a run leaves behind can be counted.

mod realistic;
mod reference;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use ingest_types::validate::{self, Specs};
use ingest_types::{Envelope, Operation, ENVELOPE_VERSION};
use rand::Rng;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Distinct, varied items: what real producers send.
    Realistic,
    /// Near-identical padded items (earlier runs' workload), for comparison only.
    Reference,
}

/// How realistic events' `_event_id`s are made.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    /// Random UUIDs (version 4): what Segment's SDKs send as `messageId`.
    #[default]
    V4,
    /// Time-ordered UUIDs (version 7): what this project's clients send.
    V7,
}

impl IdKind {
    /// A new id of this kind, in the canonical text form.
    pub fn make(self, rng: &mut impl Rng) -> String {
        match self {
            IdKind::V4 => uuid::Builder::from_random_bytes(rng.random()).into_uuid(),
            IdKind::V7 => uuid::Uuid::now_v7(),
        }
        .to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Contacts,
    Events,
    /// Alternates contact and event batches.
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Contact,
    Event,
}

impl ItemKind {
    pub fn endpoint(self) -> &'static str {
        match self {
            ItemKind::Contact => "contacts",
            ItemKind::Event => "events",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Workload {
    pub kind: Kind,
    pub shape: Shape,
    pub batch_size: usize,
    /// Reference shape: the size of one item's JSON text, padded up to it. (Realistic
    /// items have the sizes their values give them: 150 B to a few KiB.)
    pub item_bytes: usize,
    /// Share of items (0.0–1.0) made invalid on purpose.
    pub invalid_share: f64,
    /// Distinct `_user_id`s items are spread over (new contacts come on top).
    pub users: u64,
    /// Realistic contacts: the share of contact writes that are deletes, each one a
    /// `DELETE /stream/contacts/{user_id}` request of its own.
    pub delete_share: f64,
    /// Realistic events: how their ids are made.
    pub ids: IdKind,
    /// Makes this run's event ids and sequence numbers unique.
    pub run_id: String,
    #[serde(skip)]
    event_date: String,
}

/// One request body and what it carries.
pub struct Batch {
    pub kind: ItemKind,
    pub body: Bytes,
    pub items: usize,
    pub invalid: usize,
    /// The first valid item, for end-to-end sampling.
    pub sample: Option<Sample>,
    /// A contact delete: `DELETE /stream/contacts/{this user}`, no body.
    pub delete: Option<String>,
}

/// An item whose arrival in PostgreSQL can be looked up.
#[derive(Debug, Clone)]
pub enum Sample {
    Event { event_id: String },
    Contact { user_id: String, seq: i64 },
}

impl Workload {
    pub fn new(
        kind: Kind,
        batch_size: usize,
        item_bytes: usize,
        invalid_share: f64,
        users: u64,
    ) -> Self {
        let run_id = format!("{:08x}", rand::rng().random::<u32>());
        Self {
            kind,
            shape: Shape::Realistic,
            batch_size,
            item_bytes,
            invalid_share,
            users: users.max(1),
            delete_share: 0.005,
            ids: IdKind::V4,
            run_id,
            // A fixed date a minute in the past: valid for the whole run.
            event_date: (Utc::now() - chrono::Duration::minutes(1))
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }

    /// The kind of the `seq`-th batch.
    pub fn kind_of(&self, seq: u64) -> ItemKind {
        match self.kind {
            Kind::Contacts => ItemKind::Contact,
            Kind::Events => ItemKind::Event,
            Kind::Mixed if seq % 2 == 0 => ItemKind::Event,
            Kind::Mixed => ItemKind::Contact,
        }
    }

    pub fn with_shape(mut self, shape: Shape) -> Self {
        self.shape = shape;
        self
    }

    pub fn with_ids(mut self, ids: IdKind) -> Self {
        self.ids = ids;
        self
    }

    pub fn with_delete_share(mut self, share: f64) -> Self {
        self.delete_share = share.clamp(0.0, 1.0);
        self
    }

    /// The share of contact requests that are deletes, such that deletes are
    /// `delete_share` of the contact writes (a delete carries one write, an upsert batch
    /// `batch_size`).
    fn delete_request_share(&self) -> f64 {
        let d = self.delete_share;
        if d <= 0.0 {
            return 0.0;
        }
        d / (d + (1.0 - d) / self.batch_size.max(1) as f64)
    }

    /// The `seq`-th request of this run.
    pub fn batch(&self, seq: u64, rng: &mut impl Rng) -> Batch {
        let kind = self.kind_of(seq);
        match self.shape {
            Shape::Realistic => realistic::batch(self, seq, kind, rng),
            Shape::Reference => reference::batch(self, seq, kind, rng),
        }
    }

    /// The envelopes the gateway would publish for the valid items of `batch` (an event
    /// batch), as the gateway builds them: for the bare-producer ceiling.
    pub fn envelopes(
        &self,
        batch: &Batch,
        project: &str,
        datasource: &str,
        received_at: DateTime<Utc>,
    ) -> Vec<Envelope> {
        let envelope = |user_id: String, op: Operation| Envelope {
            v: ENVELOPE_VERSION,
            project: project.to_owned(),
            datasource: datasource.to_owned(),
            user_id,
            received_at,
            request_id: format!("{}-ceiling", self.run_id),
            sync_id: None,
            op,
        };
        if let Some(user) = &batch.delete {
            return vec![envelope(user.clone(), Operation::DeleteContact)];
        }
        let items: Vec<Value> =
            serde_json::from_slice(&batch.body).expect("generated batches are JSON arrays");
        let kind = match batch.kind {
            ItemKind::Contact => ingest_types::ItemKind::Contact,
            ItemKind::Event => ingest_types::ItemKind::Event,
        };
        let specs = Specs::default();
        items
            .iter()
            .filter_map(|item| validate::validate_item(kind, item, received_at, &specs).ok())
            .map(|valid| envelope(valid.user_id, valid.op))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::Write as _;

    fn item_kind(kind: ItemKind) -> ingest_types::ItemKind {
        match kind {
            ItemKind::Event => ingest_types::ItemKind::Event,
            ItemKind::Contact => ingest_types::ItemKind::Contact,
        }
    }

    fn valid(kind: ItemKind, item: &Value) -> bool {
        validate::validate_item(item_kind(kind), item, Utc::now(), &Specs::default()).is_ok()
    }

    fn items(batch: &Batch) -> Vec<Value> {
        serde_json::from_slice(&batch.body).unwrap()
    }

    fn gzip_ratio(bodies: &[Bytes]) -> f64 {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut raw = 0;
        for body in bodies {
            encoder.write_all(body).unwrap();
            raw += body.len();
        }
        raw as f64 / encoder.finish().unwrap().len() as f64
    }

    #[test]
    fn reference_items_have_the_requested_size() {
        let mut rng = rand::rng();
        for kind in [Kind::Events, Kind::Contacts] {
            let workload = Workload::new(kind, 100, 300, 0.0, 1000).with_shape(Shape::Reference);
            let batch = workload.batch(7, &mut rng);
            let items = items(&batch);
            assert_eq!(items.len(), 100);
            for item in &items {
                let len = item.to_string().len();
                assert!((295..=305).contains(&len), "{kind:?} item of {len} bytes");
                assert!(valid(batch.kind, item), "{item}");
            }
            assert!(batch.sample.is_some());
        }
    }

    #[test]
    fn realistic_items_pass_validation_and_differ_in_values_and_size() {
        let mut rng = rand::rng();
        for kind in [Kind::Events, Kind::Contacts] {
            let workload = Workload::new(kind, 100, 300, 0.0, 100_000).with_delete_share(0.0);
            let mut sizes = Vec::new();
            let mut users = HashSet::new();
            for seq in 0..300 {
                let batch = workload.batch(seq, &mut rng);
                assert_eq!(batch.invalid, 0);
                assert!(batch.sample.is_some()); // for contacts: one of the new users
                for item in items(&batch) {
                    assert!(valid(batch.kind, &item), "{kind:?} item failed: {item}");
                    sizes.push(item.to_string().len());
                    users.insert(item["_user_id"].as_str().unwrap().to_owned());
                }
            }
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            let mean = sizes.iter().sum::<usize>() / sizes.len();
            assert!(max > &(2 * min), "{kind:?}: sizes {min}..{max} hardly vary");
            assert!(
                (100..1000).contains(&mean),
                "{kind:?}: mean item of {mean} bytes"
            );
            // Users repeat (skewed draw), but most items are not of the same few users.
            assert!(users.len() < sizes.len(), "{kind:?}: no user repeated");
            assert!(
                users.len() > sizes.len() / 4,
                "{kind:?}: {} users",
                users.len()
            );
        }
    }

    #[test]
    fn realistic_bodies_compress_like_traffic_not_like_one_body_repeated() {
        let mut rng = rand::rng();
        let bodies = |shape| {
            let workload = Workload::new(Kind::Events, 100, 300, 0.0, 100_000).with_shape(shape);
            (0..20)
                .map(|seq| workload.batch(seq, &mut rand::rng()).body)
                .collect::<Vec<_>>()
        };
        let _ = &mut rng;
        let (realistic, reference) = (
            gzip_ratio(&bodies(Shape::Realistic)),
            gzip_ratio(&bodies(Shape::Reference)),
        );
        assert!(realistic < 5.0, "realistic events compress {realistic:.1}x");
        assert!(
            reference > 2.0 * realistic,
            "reference {reference:.1}x vs realistic {realistic:.1}x"
        );
    }

    #[test]
    fn realistic_contacts_mix_new_users_partial_updates_removals_and_deletes() {
        let mut rng = rand::rng();
        let workload = Workload::new(Kind::Contacts, 10, 300, 0.0, 1_000).with_delete_share(0.01);
        let (mut new, mut updates, mut removals, mut deletes, mut writes) = (0, 0, 0, 0, 0);
        for seq in 0..2_000 {
            let batch = workload.batch(seq, &mut rng);
            if let Some(user) = &batch.delete {
                assert!(batch.body.is_empty());
                assert!(user.starts_with("u_"), "{user}");
                deletes += 1;
                writes += 1;
                continue;
            }
            for item in items(&batch) {
                writes += 1;
                let object = item.as_object().unwrap();
                if object.contains_key("_first_name") && object.contains_key("_last_name") {
                    new += 1;
                } else {
                    updates += 1;
                    assert!(
                        object.len() <= 7,
                        "an update of {} keys: {item}",
                        object.len()
                    );
                }
                removals += usize::from(object.values().any(Value::is_null));
            }
        }
        let share = |n: usize| n as f64 / writes as f64;
        assert!(
            (0.25..0.45).contains(&share(new)),
            "new users {:.3}",
            share(new)
        );
        assert!(share(updates) > 0.5, "updates {:.3}", share(updates));
        assert!(
            share(removals) > 0.05,
            "null removals {:.3}",
            share(removals)
        );
        assert!(
            (0.004..0.02).contains(&share(deletes)),
            "deletes {:.4}",
            share(deletes)
        );
    }

    #[test]
    fn invalid_share_makes_items_fail_validation() {
        let mut rng = rand::rng();
        for shape in [Shape::Realistic, Shape::Reference] {
            for kind in [Kind::Events, Kind::Contacts] {
                let workload = Workload::new(kind, 100, 300, 1.0, 10)
                    .with_shape(shape)
                    .with_delete_share(0.0);
                let batch = workload.batch(0, &mut rng);
                assert_eq!(batch.invalid, 100);
                assert!(batch.sample.is_none());
                for item in &items(&batch) {
                    assert!(!valid(batch.kind, item), "{item} passed validation");
                }
            }
        }
    }

    #[test]
    fn envelopes_match_the_valid_items_and_deletes() {
        let workload = Workload::new(Kind::Events, 10, 300, 0.0, 10);
        let batch = workload.batch(3, &mut rand::rng());
        let envelopes = workload.envelopes(&batch, "p", "d", Utc::now());
        assert_eq!(envelopes.len(), 10);
        assert!(matches!(envelopes[0].op, Operation::AppendEvent { .. }));

        let workload = Workload::new(Kind::Contacts, 10, 300, 0.0, 10).with_delete_share(1.0);
        let batch = workload.batch(0, &mut rand::rng());
        let envelopes = workload.envelopes(&batch, "p", "d", Utc::now());
        assert_eq!(envelopes.len(), 1);
        assert!(matches!(envelopes[0].op, Operation::DeleteContact));
        assert_eq!(Some(&envelopes[0].user_id), batch.delete.as_ref());
    }
}
