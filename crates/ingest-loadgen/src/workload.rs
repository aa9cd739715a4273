//! What the load generator sends: realistic contact and event batches of a chosen size,
//! with a chosen share of invalid items, over a chosen number of distinct users.
//!
//! Every item is unique within a run (event ids and contact sequence numbers carry the
//! run id and a sequence), so retries and e2e sampling can tell items apart, and the
//! rows a run leaves behind can be counted exactly.

use std::fmt::Write as _;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use ingest_types::validate::{self, Specs};
use ingest_types::{Envelope, ENVELOPE_VERSION};
use rand::Rng;
use serde_json::Value;

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
    pub batch_size: usize,
    /// Approximate size of one item's JSON text; items are padded up to it.
    pub item_bytes: usize,
    /// Share of items (0.0–1.0) made invalid on purpose.
    pub invalid_share: f64,
    /// Distinct `_user_id`s items are spread over.
    pub users: u64,
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
}

/// An item whose arrival in PostgreSQL can be looked up.
#[derive(Debug, Clone)]
pub enum Sample {
    Event { event_id: String },
    Contact { user_id: String, seq: i64 },
}

const EVENT_TYPES: [&str; 4] = ["page_view", "add_to_cart", "purchase", "search"];

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
            batch_size,
            item_bytes,
            invalid_share,
            users: users.max(1),
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

    /// The `seq`-th request body of this run.
    pub fn batch(&self, seq: u64, rng: &mut impl Rng) -> Batch {
        let kind = self.kind_of(seq);
        let mut body = String::with_capacity(self.batch_size * (self.item_bytes + 8) + 2);
        let mut invalid = 0;
        let mut sample = None;
        body.push('[');
        for i in 0..self.batch_size {
            if i > 0 {
                body.push(',');
            }
            let bad = self.invalid_share > 0.0 && rng.random_bool(self.invalid_share.min(1.0));
            invalid += usize::from(bad);
            let user = rng.random_range(0..self.users);
            let item_seq = (seq * self.batch_size as u64 + i as u64) as i64;
            let start = body.len();
            match kind {
                ItemKind::Event => {
                    let event_id = format!("{}-{item_seq}", self.run_id);
                    let event_type = EVENT_TYPES[(item_seq % 4) as usize];
                    let _ = write!(
                        body,
                        r#"{{"_user_id":"user-{user}","_event_id":"{event_id}","#
                    );
                    if !bad {
                        let _ = write!(body, r#""_event_type":"{event_type}","#);
                    }
                    let _ = write!(
                        body,
                        r#""_event_date":"{}","_event_parameters":{{"path":"/catalog/item/{}","referrer":"https://www.example.com/search?q=shoes","amount":{}.99,"currency":"EUR","pad":""#,
                        self.event_date,
                        item_seq % 100_000,
                        item_seq % 500
                    );
                    if !bad && sample.is_none() {
                        sample = Some(Sample::Event { event_id });
                    }
                }
                ItemKind::Contact => {
                    let email = if bad {
                        "not-an-email".to_owned()
                    } else {
                        format!("user{user}@example.com")
                    };
                    let _ = write!(
                        body,
                        r#"{{"_user_id":"user-{user}","_email":"{email}","_first_name":"Ada","_last_name":"Lovelace","plan":"pro","lg_seq":{item_seq},"tags":["newsletter","beta"],"pad":""#
                    );
                    if !bad && sample.is_none() {
                        sample = Some(Sample::Contact {
                            user_id: format!("user-{user}"),
                            seq: item_seq,
                        });
                    }
                }
            }
            // Pad up to the item size, then close the string and object(s).
            let closing = if kind == ItemKind::Event { 3 } else { 2 };
            let used = body.len() - start + closing;
            for _ in used..self.item_bytes {
                body.push('x');
            }
            body.push_str(if kind == ItemKind::Event {
                "\"}}"
            } else {
                "\"}"
            });
        }
        body.push(']');
        Batch {
            kind,
            body: Bytes::from(body),
            items: self.batch_size,
            invalid,
            sample,
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
            .map(|valid| Envelope {
                v: ENVELOPE_VERSION,
                project: project.to_owned(),
                datasource: datasource.to_owned(),
                user_id: valid.user_id,
                received_at,
                request_id: format!("{}-ceiling", self.run_id),
                sync_id: None,
                op: valid.op,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest_types::Operation;

    fn check(kind: Kind, item: &Value) -> bool {
        let kind = match kind {
            Kind::Events => ingest_types::ItemKind::Event,
            _ => ingest_types::ItemKind::Contact,
        };
        validate::validate_item(kind, item, Utc::now(), &Specs::default()).is_ok()
    }

    #[test]
    fn items_have_the_requested_size_and_validity() {
        let mut rng = rand::rng();
        for kind in [Kind::Events, Kind::Contacts] {
            let workload = Workload::new(kind, 100, 300, 0.0, 1000);
            let batch = workload.batch(7, &mut rng);
            let items: Vec<Value> = serde_json::from_slice(&batch.body).unwrap();
            assert_eq!(items.len(), 100);
            for item in &items {
                let len = item.to_string().len();
                assert!((295..=305).contains(&len), "{kind:?} item of {len} bytes");
            }
            assert_eq!(batch.invalid, 0);
            assert!(batch.sample.is_some());
        }
    }

    #[test]
    fn invalid_share_makes_items_fail_validation() {
        let mut rng = rand::rng();
        for kind in [Kind::Events, Kind::Contacts] {
            let workload = Workload::new(kind, 100, 300, 1.0, 10);
            let batch = workload.batch(0, &mut rng);
            assert_eq!(batch.invalid, 100);
            assert!(batch.sample.is_none());
            let items: Vec<Value> = serde_json::from_slice(&batch.body).unwrap();
            for item in &items {
                assert!(!check(kind, item), "{item} passed validation");
            }
        }
        let workload = Workload::new(Kind::Events, 100, 300, 0.0, 10);
        let batch = workload.batch(0, &mut rng);
        let items: Vec<Value> = serde_json::from_slice(&batch.body).unwrap();
        for item in &items {
            assert!(check(Kind::Events, item), "{item} failed validation");
        }
    }

    #[test]
    fn envelopes_match_the_valid_items() {
        let workload = Workload::new(Kind::Events, 10, 300, 0.0, 10);
        let batch = workload.batch(3, &mut rand::rng());
        let envelopes = workload.envelopes(&batch, "p", "d", Utc::now());
        assert_eq!(envelopes.len(), 10);
        assert!(matches!(envelopes[0].op, Operation::AppendEvent { .. }));
    }
}
