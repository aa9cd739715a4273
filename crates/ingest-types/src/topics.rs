//! Topic names. Every deployment (and every integration test) derives its three topics
//! from one prefix, so parallel tests can use disjoint topics on one broker.

use crate::envelope::Operation;

/// Headers of a dead letter: why it could not be persisted, and where it came from.
pub mod dead_letter_headers {
    pub const REASON: &str = "ingest-dlq-reason";
    pub const TOPIC: &str = "ingest-dlq-topic";
    pub const PARTITION: &str = "ingest-dlq-partition";
    pub const OFFSET: &str = "ingest-dlq-offset";
}

/// Default prefix: topics `ingest.contacts`, `ingest.events`, `ingest.dlq`.
pub const DEFAULT_PREFIX: &str = "ingest";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub contacts: String,
    pub events: String,
    pub dead_letter: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            contacts: format!("{prefix}.contacts"),
            events: format!("{prefix}.events"),
            dead_letter: format!("{prefix}.dlq"),
        }
    }

    /// The topic an operation is published to. Contact upserts and deletes share one
    /// topic (and one key per user), so Kafka keeps them in order.
    pub fn for_operation(&self, op: &Operation) -> &str {
        match op {
            Operation::UpsertContact { .. } | Operation::DeleteContact | Operation::EraseUser => {
                &self.contacts
            }
            Operation::AppendEvent { .. } => &self.events,
        }
    }

    /// The topics a worker consumes.
    pub fn consumed(&self) -> [&str; 2] {
        [&self.contacts, &self.events]
    }
}

impl Default for Topics {
    fn default() -> Self {
        Self::with_prefix(DEFAULT_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_prefix() {
        let t = Topics::with_prefix("t1");
        assert_eq!(t.contacts, "t1.contacts");
        assert_eq!(t.events, "t1.events");
        assert_eq!(t.dead_letter, "t1.dlq");
        assert_eq!(t.for_operation(&Operation::DeleteContact), "t1.contacts");
    }
}
