//! The Kafka envelope: the one message format the gateway produces and the worker consumes.
//!
//! The payload is JSON so that dead letters and replays stay readable with ordinary
//! Kafka tooling. Every envelope carries its format version `v`; a worker refuses (and
//! dead-letters) versions it does not know instead of guessing.
//!
//! The message key is `{project}/{datasource}/{user_id}`: project and datasource ids
//! cannot contain `/`, so the key is unambiguous, and every write for one user lands in
//! one partition, in the order the gateway published it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The PostgreSQL `NOTIFY` channel on which the worker announces, at commit, how many
/// items of each `sync_id` it persisted: `{"<sync_id>": <items>, ...}`.
pub const COMMITTED_CHANNEL: &str = "ingest_committed";

/// The envelope format this build writes and understands.
pub const ENVELOPE_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version, [`ENVELOPE_VERSION`] when written by this build.
    pub v: u16,
    pub project: String,
    pub datasource: String,
    pub user_id: String,
    /// When the gateway received the request carrying this item.
    pub received_at: DateTime<Utc>,
    /// The request that carried this item, for tracing a row back to its request.
    pub request_id: String,
    /// Set when the request asked `?_sync`: the worker announces when items carrying it
    /// are committed (unique per request, unlike a client-chosen request id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_id: Option<String>,
    #[serde(flatten)]
    pub op: Operation,
}

/// What the item asks the worker to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Merge `attributes` into the contact: present keys overwrite, `null` removes the
    /// attribute, absent keys stay as they were.
    UpsertContact { attributes: Map<String, Value> },
    /// Delete the contact.
    DeleteContact,
    /// Erase the user from the datasource: the contact, and every write of the user
    /// (events included) the gateway received at or before this envelope's
    /// `received_at`, wherever it is: stored, in flight, replayed or redriven later.
    /// Published on the contacts topic with the user's key, so it is ordered with the
    /// user's contact writes.
    EraseUser,
    /// Append an event; a second event with the same id is a no-op.
    AppendEvent {
        event_id: String,
        event_type: String,
        event_date: DateTime<Utc>,
        parameters: Map<String, Value>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is not valid JSON of the expected shape: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(
        "envelope version {found} is not supported (this build reads version {ENVELOPE_VERSION})"
    )]
    UnsupportedVersion { found: u16 },
}

impl Envelope {
    /// The Kafka message key: one key per (project, datasource, user).
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.project, self.datasource, self.user_id)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and JSON maps cannot fail.
        serde_json::to_vec(self).expect("envelope serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        #[derive(Deserialize)]
        struct Version {
            v: u16,
        }
        // One parse on the happy path; the version is read alone only to explain a
        // failure (a newer envelope may not parse as this build's shape at all).
        match serde_json::from_slice::<Envelope>(bytes) {
            Ok(envelope) if envelope.v == ENVELOPE_VERSION => Ok(envelope),
            Ok(envelope) => Err(EnvelopeError::UnsupportedVersion { found: envelope.v }),
            Err(err) => match serde_json::from_slice::<Version>(bytes) {
                Ok(Version { v }) if v != ENVELOPE_VERSION => {
                    Err(EnvelopeError::UnsupportedVersion { found: v })
                }
                _ => Err(EnvelopeError::Malformed(err)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(op: Operation) -> Envelope {
        Envelope {
            v: ENVELOPE_VERSION,
            project: "p1".into(),
            datasource: "ds".into(),
            user_id: "USER/1".into(),
            received_at: "2026-11-24T10:00:00.123456Z".parse().unwrap(),
            request_id: "req-1".into(),
            sync_id: None,
            op,
        }
    }

    #[test]
    fn round_trips_every_operation() {
        let attrs = json!({"_email": "a@b.co", "plan": null, "tags": ["x", 1]});
        let ops = [
            Operation::UpsertContact {
                attributes: attrs.as_object().unwrap().clone(),
            },
            Operation::DeleteContact,
            Operation::EraseUser,
            Operation::AppendEvent {
                event_id: "e1".into(),
                event_type: "purchase".into(),
                event_date: "2026-11-24T09:00:00Z".parse().unwrap(),
                parameters: Map::new(),
            },
        ];
        for op in ops {
            let env = sample(op);
            assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
        }
    }

    #[test]
    fn key_keeps_user_id_verbatim() {
        assert_eq!(sample(Operation::DeleteContact).key(), "p1/ds/USER/1");
    }

    #[test]
    fn rejects_unknown_version_and_garbage() {
        let mut value = serde_json::to_value(sample(Operation::DeleteContact)).unwrap();
        value["v"] = json!(99);
        let err = Envelope::decode(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(matches!(
            err,
            EnvelopeError::UnsupportedVersion { found: 99 }
        ));
        assert!(matches!(
            Envelope::decode(b"not json"),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::decode(br#"{"v":1,"op":"delete_contact"}"#),
            Err(EnvelopeError::Malformed(_))
        ));
    }
}
