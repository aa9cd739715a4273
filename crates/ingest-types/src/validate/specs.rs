//! What a datasource declares about its data: custom attribute specs and event types
//! with their parameter specs. Stored as JSON and returned by the specs endpoints.
//!
//! [`Specs::default()`] declares nothing: every well-formed custom attribute and every
//! event type is accepted, and values are only held to the generic rules.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The type of a declared attribute or parameter (of each value, when multivalue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    String,
    Number,
    Boolean,
}

impl DataType {
    pub const ALL: [DataType; 3] = [DataType::String, DataType::Number, DataType::Boolean];

    /// The name used in the database, the CLI and the specs endpoints.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::String => "string",
            DataType::Number => "number",
            DataType::Boolean => "boolean",
        }
    }
}

impl std::str::FromStr for DataType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown data type {s:?} (expected string, number or boolean)"))
    }
}

/// A declared custom attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeSpec {
    pub data_type: DataType,
    /// `None`: single value. `Some(n)`: multivalue, a set of at most `n` values.
    #[serde(default)]
    pub max_values: Option<u32>,
}

/// A declared parameter of an event type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParameterSpec {
    pub data_type: DataType,
    /// `None`: single value. `Some(n)`: multivalue, a set of at most `n` values.
    #[serde(default)]
    pub max_values: Option<u32>,
    /// The parameter must be present (and not `null`) in every event of this type.
    #[serde(default)]
    pub required: bool,
}

/// A declared event type.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EventTypeSpec {
    /// Declared parameters by name; undeclared parameters are still accepted under the
    /// generic value rules.
    #[serde(default)]
    pub parameters: HashMap<String, ParameterSpec>,
}

/// Everything one datasource declares.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Specs {
    /// Custom attribute specs by name. Reserved attributes (`_email`, ...) have fixed
    /// rules; an entry here for a reserved name is ignored by validation.
    #[serde(default)]
    pub attributes: HashMap<String, AttributeSpec>,
    /// Declared event types by name. Empty: any event type is accepted.
    #[serde(default)]
    pub event_types: HashMap<String, EventTypeSpec>,
}

/// A datasource's declared attribute specs, event types and parameter specs, as stored
/// by `ingestctl spec ...` (migration 3). Feature `db`.
#[cfg(feature = "db")]
pub async fn load(
    pool: &sqlx::PgPool,
    project: &str,
    datasource: &str,
) -> Result<Specs, sqlx::Error> {
    fn parse_type(t: &str) -> Result<DataType, sqlx::Error> {
        t.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))
    }
    let max_values = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok());
    let mut specs = Specs::default();
    let attributes: Vec<(String, String, Option<i32>)> = sqlx::query_as(
        "SELECT name, data_type, max_values FROM attribute_specs WHERE project = $1 AND datasource = $2",
    )
    .bind(project)
    .bind(datasource)
    .fetch_all(pool)
    .await?;
    for (name, data_type, max) in attributes {
        let spec = AttributeSpec {
            data_type: parse_type(&data_type)?,
            max_values: max_values(max),
        };
        specs.attributes.insert(name, spec);
    }
    let event_types: Vec<String> =
        sqlx::query_scalar("SELECT name FROM event_types WHERE project = $1 AND datasource = $2")
            .bind(project)
            .bind(datasource)
            .fetch_all(pool)
            .await?;
    for name in event_types {
        specs.event_types.insert(name, EventTypeSpec::default());
    }
    let parameters: Vec<(String, String, String, Option<i32>, bool)> = sqlx::query_as(
        "SELECT event_type, name, data_type, max_values, required FROM event_parameter_specs
         WHERE project = $1 AND datasource = $2",
    )
    .bind(project)
    .bind(datasource)
    .fetch_all(pool)
    .await?;
    for (event_type, name, data_type, max, required) in parameters {
        let spec = ParameterSpec {
            data_type: parse_type(&data_type)?,
            max_values: max_values(max),
            required,
        };
        specs
            .event_types
            .entry(event_type)
            .or_default()
            .parameters
            .insert(name, spec);
    }
    Ok(specs)
}

/// The part of an attribute or parameter spec that constrains a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ValueSpec {
    pub data_type: DataType,
    pub max_values: Option<u32>,
}

impl From<&AttributeSpec> for ValueSpec {
    fn from(spec: &AttributeSpec) -> Self {
        Self {
            data_type: spec.data_type,
            max_values: spec.max_values,
        }
    }
}

impl From<&ParameterSpec> for ValueSpec {
    fn from(spec: &ParameterSpec) -> Self {
        Self {
            data_type: spec.data_type,
            max_values: spec.max_values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_shape_round_trips() {
        let value = json!({
            "attributes": {
                "plan": {"data_type": "string", "max_values": null},
                "tags": {"data_type": "string", "max_values": 5}
            },
            "event_types": {
                "purchase": {"parameters": {
                    "amount": {"data_type": "number", "max_values": null, "required": true},
                    "gift": {"data_type": "boolean", "max_values": null, "required": false}
                }}
            }
        });
        let specs: Specs = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(
            specs.attributes["tags"],
            AttributeSpec {
                data_type: DataType::String,
                max_values: Some(5)
            }
        );
        assert!(specs.event_types["purchase"].parameters["amount"].required);
        assert_eq!(serde_json::to_value(&specs).unwrap(), value);
        // Omitted optional fields take their defaults.
        let short: Specs = serde_json::from_value(json!({
            "attributes": {"age": {"data_type": "number"}},
            "event_types": {"login": {}}
        }))
        .unwrap();
        assert_eq!(short.attributes["age"].max_values, None);
        assert!(short.event_types["login"].parameters.is_empty());
        assert_eq!(
            serde_json::from_value::<Specs>(json!({})).unwrap(),
            Specs::default()
        );
    }
}
