//! Specs: `ingestctl spec`, what a datasource's data looks like (custom attribute specs,
//! event types and their parameter specs; the gateway validates against them). One file
//! per kind with its arguments, queries and output; `spec list` and the dispatch here;
//! what they share in `rules`.

pub mod attribute;
pub mod event_type;
pub mod parameter;
pub mod rules;

use std::collections::BTreeMap;
use std::io::{self, Write};

use clap::Subcommand;
use ingest_types::validate::specs::Specs;
use sqlx::PgPool;

use crate::output::{table, Output};
use crate::tenancy::ensure_datasource;
use attribute::AttributeCommand;
use event_type::EventTypeCommand;
use parameter::ParameterCommand;

#[derive(Debug, Subcommand)]
pub enum SpecCommand {
    /// Declare, change and remove custom attribute specs.
    #[command(subcommand)]
    Attribute(AttributeCommand),
    /// Declare and remove event types. Once any is declared, events of other types are
    /// rejected.
    #[command(subcommand, name = "event-type")]
    EventType(EventTypeCommand),
    /// Declare, change and remove parameter specs of a declared event type.
    #[command(subcommand)]
    Parameter(ParameterCommand),
    /// Show everything a datasource declares. With --json: the specs document the
    /// gateway validates against.
    List {
        /// The datasource's project.
        project: String,
        /// The datasource (it must exist).
        datasource: String,
    },
}

pub async fn run(pool: &PgPool, out: Output, command: SpecCommand) -> anyhow::Result<()> {
    match command {
        SpecCommand::Attribute(command) => attribute::run(pool, out, command).await,
        SpecCommand::EventType(command) => event_type::run(pool, out, command).await,
        SpecCommand::Parameter(command) => parameter::run(pool, out, command).await,
        SpecCommand::List {
            project,
            datasource,
        } => {
            let specs = list(pool, &project, &datasource).await?;
            out.print(&specs, |w| print_tables(w, &specs))
        }
    }
}

/// Everything a datasource declares, in the shape the gateway validates against.
pub async fn list(pool: &PgPool, project: &str, datasource: &str) -> rules::Result<Specs> {
    ensure_datasource(pool, project, datasource).await?;
    Ok(ingest_types::validate::specs::load(pool, project, datasource).await?)
}

/// Attribute specs, then event types with their parameters, each sorted by name.
fn print_tables(w: &mut dyn Write, specs: &Specs) -> io::Result<()> {
    let bound = |max_values: Option<u32>| {
        max_values.map_or_else(|| "single".to_owned(), |n| format!("max {n}"))
    };
    let attributes: BTreeMap<_, _> = specs.attributes.iter().collect();
    let rows = attributes
        .into_iter()
        .map(|(name, a)| {
            vec![
                name.clone(),
                a.data_type.as_str().to_owned(),
                bound(a.max_values),
            ]
        })
        .collect();
    table(
        w,
        &["ATTRIBUTE", "TYPE", "VALUES"],
        rows,
        "no attribute specs (custom attributes are held to the generic rules)",
    )?;
    writeln!(w)?;
    let event_types: BTreeMap<_, _> = specs.event_types.iter().collect();
    let mut rows = Vec::new();
    for (event_type, spec) in event_types {
        if spec.parameters.is_empty() {
            rows.push(vec![event_type.clone(), "-".to_owned()]);
        }
        let parameters: BTreeMap<_, _> = spec.parameters.iter().collect();
        for (name, p) in parameters {
            rows.push(vec![
                event_type.clone(),
                name.clone(),
                p.data_type.as_str().to_owned(),
                bound(p.max_values),
                if p.required { "yes" } else { "no" }.to_owned(),
            ]);
        }
    }
    table(
        w,
        &["EVENT TYPE", "PARAMETER", "TYPE", "VALUES", "REQUIRED"],
        rows,
        "no event types (every event type is accepted)",
    )
}
