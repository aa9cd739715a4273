//! What the spec commands share: their typed error, the rules their input is held to
//! before any SQL runs (names, event types, value specs), and how a value spec is
//! stored, read back and described.

use ingest_types::validate::specs::{AttributeSpec, DataType, ParameterSpec};
use ingest_types::validate::{is_valid_name, MAX_EVENT_TYPE_CHARS, MAX_VALUES};

use crate::tenancy;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid attribute name {0:?}: use ^[a-z][a-z0-9_]{{0,63}}$")]
    InvalidAttributeName(String),
    #[error("invalid parameter name {0:?}: use ^[a-z][a-z0-9_]{{0,63}}$")]
    InvalidParameterName(String),
    #[error("invalid event type {0:?}: use 1-{MAX_EVENT_TYPE_CHARS} characters")]
    InvalidEventType(String),
    /// The message of [`DataType`]'s `FromStr`, which names the bad type.
    #[error("{0}")]
    UnknownDataType(String),
    #[error("invalid multivalue bound {0}: a multivalue holds between 1 and {MAX_VALUES} values")]
    InvalidMultivalue(i64),
    #[error("attribute {0:?} is not declared for {1}/{2}")]
    NoSuchAttribute(String, String, String),
    #[error("event type {0:?} is not declared for {1}/{2}")]
    NoSuchEventType(String, String, String),
    #[error("parameter {0:?} is not declared for event type {1:?} of {2}/{3}")]
    NoSuchParameter(String, String, String, String),
    /// The project or datasource (missing, or an invalid id).
    #[error(transparent)]
    Tenancy(#[from] tenancy::Error),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn no_such_datasource(project: &str, datasource: &str) -> Self {
        tenancy::Error::no_such_datasource(project, datasource).into()
    }

    pub fn no_such_event_type(project: &str, datasource: &str, event_type: &str) -> Self {
        Self::NoSuchEventType(
            event_type.to_owned(),
            project.to_owned(),
            datasource.to_owned(),
        )
    }
}

/// `Ok` when `valid`, else the error `invalid` makes of `value`.
fn check(valid: bool, value: &str, invalid: fn(String) -> Error) -> Result<()> {
    if valid {
        Ok(())
    } else {
        Err(invalid(value.to_owned()))
    }
}

pub fn check_attribute_name(name: &str) -> Result<()> {
    check(is_valid_name(name), name, Error::InvalidAttributeName)
}

pub fn check_parameter_name(name: &str) -> Result<()> {
    check(is_valid_name(name), name, Error::InvalidParameterName)
}

/// The gateway's `_event_type` rule: 1-128 characters (control characters allowed).
pub fn check_event_type(name: &str) -> Result<()> {
    let valid = (1..=MAX_EVENT_TYPE_CHARS).contains(&name.chars().count());
    check(valid, name, Error::InvalidEventType)
}

/// How a spec constrains values: `--type` and `--multivalue`.
#[derive(Debug, clap::Args)]
pub struct ValueArgs {
    /// string, number or boolean (of each value, when multivalue).
    #[arg(long = "type", value_name = "TYPE")]
    data_type: String,
    /// Make it multivalue: a set of at most this many values (1-100). Without it, a
    /// single value.
    #[arg(long, value_name = "MAX", allow_negative_numbers = true)]
    multivalue: Option<i64>,
}

impl ValueArgs {
    /// The data type, and `None` (single value) or the multivalue bound (1-100).
    pub fn parse(&self) -> Result<(DataType, Option<u32>)> {
        let data_type = self.data_type.parse().map_err(Error::UnknownDataType)?;
        let max_values = self
            .multivalue
            .map(|n| {
                u32::try_from(n)
                    .ok()
                    .filter(|&m| m >= 1 && usize::try_from(m).is_ok_and(|m| m <= MAX_VALUES))
                    .ok_or(Error::InvalidMultivalue(n))
            })
            .transpose()?;
        Ok((data_type, max_values))
    }
}

/// A bound as stored (`integer`, CHECKed to 1-100).
pub fn stored_bound(max_values: Option<u32>) -> Result<Option<i32>> {
    max_values
        .map(|n| i32::try_from(n).map_err(|_| Error::InvalidMultivalue(n.into())))
        .transpose()
}

/// A stored row's data type and bound (the table CHECKs make both always valid).
fn value_spec(data_type: &str, max_values: Option<i32>) -> Result<(DataType, Option<u32>)> {
    let data_type = data_type
        .parse()
        .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
    Ok((data_type, max_values.and_then(|n| u32::try_from(n).ok())))
}

/// An `attribute_specs` row's `data_type, max_values`.
pub fn attribute_spec((data_type, max_values): (String, Option<i32>)) -> Result<AttributeSpec> {
    let (data_type, max_values) = value_spec(&data_type, max_values)?;
    Ok(AttributeSpec {
        data_type,
        max_values,
    })
}

/// An `event_parameter_specs` row's `data_type, max_values, required`.
pub fn parameter_spec(
    (data_type, max_values, required): (String, Option<i32>, bool),
) -> Result<ParameterSpec> {
    let (data_type, max_values) = value_spec(&data_type, max_values)?;
    Ok(ParameterSpec {
        data_type,
        max_values,
        required,
    })
}

/// "string, single value" or "number, up to 5 values".
pub fn describe(data_type: DataType, max_values: Option<u32>) -> String {
    let values = match max_values {
        None => "single value".to_owned(),
        Some(n) => format!("up to {n} values"),
    };
    format!("{}, {values}", data_type.as_str())
}
