//! The batch answer: one outcome per item, in request order.
//!
//! ```json
//! {"entity": {"successful": 1, "failed": 1, "items": [
//!   {"status": "success", "_user_id": "USER-1"},
//!   {"status": "error", "_user_id": null, "errors": {"_user_id": ["Required"]}}]}}
//! ```

use serde::{Deserialize, Serialize};

use crate::validate::{Echo, FieldErrors};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchAnswer {
    pub entity: BatchEntity,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchEntity {
    pub successful: usize,
    pub failed: usize,
    pub items: Vec<ItemOutcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemOutcome {
    pub status: ItemStatus,
    /// The item's `_user_id`, or `null` when it was missing or not a string.
    #[serde(rename = "_user_id")]
    pub user_id: Option<String>,
    /// Events only: the item's `_event_id` (or `null`). Absent for contacts.
    #[serde(
        rename = "_event_id",
        default,
        skip_serializing_if = "EventId::is_absent"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, required = false))]
    pub event_id: EventId,
    /// Each offending field with its messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<std::collections::BTreeMap<String, Vec<String>>>))]
    pub errors: Option<FieldErrors>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Success,
    Error,
}

/// Whether the answer carries `_event_id` at all (events) and with which value.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(from = "Option<String>", into = "Option<String>")]
pub enum EventId {
    #[default]
    Absent,
    Echoed(Option<String>),
}

impl EventId {
    fn is_absent(&self) -> bool {
        matches!(self, EventId::Absent)
    }
}

impl From<Option<String>> for EventId {
    fn from(value: Option<String>) -> Self {
        EventId::Echoed(value)
    }
}

impl From<EventId> for Option<String> {
    fn from(value: EventId) -> Self {
        match value {
            EventId::Absent => None,
            EventId::Echoed(v) => v,
        }
    }
}

/// Which kind of item a batch holds; decides whether `_event_id` is echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Contact,
    Event,
}

impl ItemOutcome {
    pub fn new(kind: ItemKind, echo: Echo, errors: Option<FieldErrors>) -> Self {
        Self {
            status: if errors.is_some() {
                ItemStatus::Error
            } else {
                ItemStatus::Success
            },
            user_id: echo.user_id,
            event_id: match kind {
                ItemKind::Contact => EventId::Absent,
                ItemKind::Event => EventId::Echoed(echo.event_id),
            },
            errors,
        }
    }
}

impl BatchAnswer {
    pub fn new(items: Vec<ItemOutcome>) -> Self {
        let successful = items
            .iter()
            .filter(|i| i.status == ItemStatus::Success)
            .count();
        Self {
            entity: BatchEntity {
                successful,
                failed: items.len() - successful,
                items,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{add_error, REQUIRED};
    use serde_json::json;

    #[test]
    fn serializes_like_the_contract() {
        let mut errors = FieldErrors::new();
        add_error(&mut errors, "_user_id", REQUIRED);
        let answer = BatchAnswer::new(vec![
            ItemOutcome::new(
                ItemKind::Contact,
                Echo {
                    user_id: Some("USER-1".into()),
                    event_id: None,
                },
                None,
            ),
            ItemOutcome::new(ItemKind::Contact, Echo::default(), Some(errors)),
            ItemOutcome::new(
                ItemKind::Event,
                Echo {
                    user_id: Some("u".into()),
                    event_id: Some("e".into()),
                },
                None,
            ),
            ItemOutcome::new(ItemKind::Event, Echo::default(), None),
        ]);
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            json!({"entity": {"successful": 3, "failed": 1, "items": [
                {"status": "success", "_user_id": "USER-1"},
                {"status": "error", "_user_id": null, "errors": {"_user_id": ["Required"]}},
                {"status": "success", "_user_id": "u", "_event_id": "e"},
                {"status": "success", "_user_id": null, "_event_id": null},
            ]}})
        );
    }
}
