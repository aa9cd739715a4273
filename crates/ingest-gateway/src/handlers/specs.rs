//! The specs reads, `GET /stream/specs/...`: what a datasource declares about its
//! attributes and events. Each one is a pure view of the authorized datasource's specs,
//! served through the one read path, [`Guard::read`].

use std::collections::HashMap;

use axum::response::Response;
use ingest_types::tenancy::Endpoint;
use ingest_types::validate::contacts::RESERVED_ATTRIBUTES;
use ingest_types::validate::specs::Specs;
use serde::Deserialize;
use utoipa::IntoParams;

use super::guard::{DatasourcePath, Guard, StreamPath};
use crate::error::{ApiError, Message};
use crate::views::{
    AttributeSpecView, AttributeSpecs, EventParameterSpecs, EventSpecs, EventTypeView,
    GuardedErrors, ParameterSpecView, PathErrors,
};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EventTypePath {
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    project: String,
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    datasource: String,
    /// The event type's name (percent-encoded); 404 unless the datasource declares it.
    #[param(min_length = 1, max_length = 128)]
    event_type: String,
}

impl DatasourcePath for EventTypePath {
    fn ids(&self) -> (&str, &str) {
        (&self.project, &self.datasource)
    }
}

/// `GET /stream/specs/attributes`: the reserved attributes, then the datasource's
/// declared custom ones, by name.
#[utoipa::path(get, path = "/v1/project/{project}/datasource/{datasource}/stream/specs/attributes", tag = "specs",
    params(StreamPath),
    responses(
        (status = 200, description = "Reserved and declared custom attributes", body = AttributeSpecs),
        PathErrors,
        GuardedErrors,
    ))]
pub async fn get_attribute_specs(guard: Guard<StreamPath>) -> Response {
    guard
        .read(Endpoint::Specs, |auth, _| Ok(attribute_specs(&auth.specs)))
        .await
}

/// `GET /stream/specs/events`: the declared event types, by name (empty: any type is accepted).
#[utoipa::path(get, path = "/v1/project/{project}/datasource/{datasource}/stream/specs/events", tag = "specs",
    params(StreamPath),
    responses(
        (status = 200, description = "Declared event types", body = EventSpecs),
        PathErrors,
        GuardedErrors,
    ))]
pub async fn get_event_specs(guard: Guard<StreamPath>) -> Response {
    guard
        .read(Endpoint::Specs, |auth, _| Ok(event_specs(&auth.specs)))
        .await
}

/// `GET /stream/specs/event-parameters/{event_type}`: the parameter specs of one declared
/// event type; 404 when the type is not declared.
#[utoipa::path(get, path = "/v1/project/{project}/datasource/{datasource}/stream/specs/event-parameters/{event_type}", tag = "specs",
    params(EventTypePath),
    responses(
        (status = 200, description = "Parameter specs of the event type", body = EventParameterSpecs),
        PathErrors,
        GuardedErrors,
        (status = 404, description = "The event type is not declared for this datasource; or, as for every endpoint, unknown project or datasource, a token that may not read there, or no route for the path", body = Message),
    ))]
pub async fn get_event_parameter_specs(guard: Guard<EventTypePath>) -> Response {
    guard
        .read(Endpoint::Specs, |auth, path| {
            event_parameter_specs(&auth.specs, path.event_type)
        })
        .await
}

fn attribute_specs(specs: &Specs) -> AttributeSpecs {
    let reserved = RESERVED_ATTRIBUTES
        .iter()
        .map(|(name, data_type, required)| AttributeSpecView {
            name: (*name).to_owned(),
            data_type: *data_type,
            multivalue: false,
            max_values: None,
            reserved: true,
            required: *required,
        });
    let custom = by_name(&specs.attributes, |name, spec| AttributeSpecView {
        name: name.to_owned(),
        data_type: spec.data_type,
        multivalue: spec.max_values.is_some(),
        max_values: spec.max_values,
        reserved: false,
        required: false,
    });
    AttributeSpecs {
        attributes: reserved.chain(custom).collect(),
    }
}

fn event_specs(specs: &Specs) -> EventSpecs {
    EventSpecs {
        event_types: by_name(&specs.event_types, |name, spec| EventTypeView {
            name: name.to_owned(),
            parameters: spec.parameters.len(),
        }),
    }
}

fn event_parameter_specs(
    specs: &Specs,
    event_type: String,
) -> Result<EventParameterSpecs, ApiError> {
    let spec = specs
        .event_types
        .get(&event_type)
        .ok_or(ApiError::EventTypeNotDeclared)?;
    let parameters = by_name(&spec.parameters, |name, p| ParameterSpecView {
        name: name.to_owned(),
        data_type: p.data_type,
        multivalue: p.max_values.is_some(),
        max_values: p.max_values,
        required: p.required,
    });
    Ok(EventParameterSpecs {
        event_type,
        parameters,
    })
}

/// The views of a map's entries, ordered by name.
fn by_name<S, T>(map: &HashMap<String, S>, view: impl Fn(&str, &S) -> T) -> Vec<T> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
        .into_iter()
        .map(|(name, spec)| view(name.as_str(), spec))
        .collect()
}
