//! `ingestctl spec parameter set|remove`: parameter specs of a declared event type.

use clap::Subcommand;
use ingest_types::validate::specs::ParameterSpec;
use serde::Serialize;
use sqlx::PgPool;

use super::event_type;
use super::rules::{
    check_event_type, check_parameter_name, describe, parameter_spec, stored_bound, Error, Result,
    ValueArgs,
};
use crate::output::Output;
use crate::sql;
use crate::tenancy::ensure_datasource;

#[derive(Debug, Subcommand)]
pub enum ParameterCommand {
    /// Declare a parameter of a declared event type, or replace its spec.
    Set {
        /// The datasource's project.
        project: String,
        /// The datasource (it must exist).
        datasource: String,
        /// The event type (it must be declared).
        event_type: String,
        /// Parameter name: ^[a-z][a-z0-9_]{0,63}$.
        name: String,
        #[command(flatten)]
        value: ValueArgs,
        /// Every event of this type must carry the parameter (not null).
        #[arg(long)]
        required: bool,
    },
    /// Remove a parameter spec of a declared event type.
    Remove {
        /// The datasource's project.
        project: String,
        /// The datasource (it must exist).
        datasource: String,
        /// The declared event type.
        event_type: String,
        /// The declared parameter's name.
        name: String,
    },
}

pub async fn run(pool: &PgPool, out: Output, command: ParameterCommand) -> anyhow::Result<()> {
    match command {
        ParameterCommand::Set {
            project,
            datasource,
            event_type,
            name,
            value,
            required,
        } => {
            let (data_type, max_values) = value.parse()?;
            let spec = ParameterSpec {
                data_type,
                max_values,
                required,
            };
            let p = set(pool, &project, &datasource, &event_type, &name, spec).await?;
            out.print(&p, |w| {
                let describe = |s: &ParameterSpec| {
                    let required = if s.required { "required" } else { "optional" };
                    format!("{}, {required}", describe(s.data_type, s.max_values))
                };
                let what = format!(
                    "parameter {name:?} of event type {event_type:?} on {project}/{datasource}"
                );
                match &p.previous {
                    None => writeln!(w, "declared {what}: {}", describe(&p.spec)),
                    Some(prev) => writeln!(
                        w,
                        "updated {what}: {} (was {})",
                        describe(&p.spec),
                        describe(prev)
                    ),
                }
            })
        }
        ParameterCommand::Remove {
            project,
            datasource,
            event_type,
            name,
        } => {
            let r = remove(pool, &project, &datasource, &event_type, &name).await?;
            out.print(&r, |w| {
                writeln!(
                    w,
                    "removed parameter {name:?} of event type {event_type:?} from {project}/{datasource}"
                )
            })
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ParameterSet {
    pub project: String,
    pub datasource: String,
    pub event_type: String,
    pub name: String,
    /// The spec as now declared.
    pub spec: ParameterSpec,
    /// The spec it replaced; `None` when the parameter was not declared before.
    pub previous: Option<ParameterSpec>,
}

/// Declares a parameter of a declared event type, or replaces its spec.
pub async fn set(
    pool: &PgPool,
    project: &str,
    datasource: &str,
    event_type: &str,
    name: &str,
    spec: ParameterSpec,
) -> Result<ParameterSet> {
    check_event_type(event_type)?;
    check_parameter_name(name)?;
    let max_values = stored_bound(spec.max_values)?;
    ensure_datasource(pool, project, datasource).await?;
    event_type::ensure(pool, project, datasource, event_type).await?;
    let mut tx = pool.begin().await?;
    let previous: Option<(String, Option<i32>, bool)> = sqlx::query_as(
        "SELECT data_type, max_values, required FROM event_parameter_specs
          WHERE project = $1 AND datasource = $2 AND event_type = $3 AND name = $4
            FOR UPDATE",
    )
    .bind(project)
    .bind(datasource)
    .bind(event_type)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO event_parameter_specs
                (project, datasource, event_type, name, data_type, max_values, required)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (project, datasource, event_type, name)
         DO UPDATE SET data_type = EXCLUDED.data_type,
                       max_values = EXCLUDED.max_values,
                       required = EXCLUDED.required",
    )
    .bind(project)
    .bind(datasource)
    .bind(event_type)
    .bind(name)
    .bind(spec.data_type.as_str())
    .bind(max_values)
    .bind(spec.required)
    .execute(&mut *tx)
    .await
    // The event type (or its datasource) was removed between the check and the upsert.
    .map_err(|e| {
        sql::or_gone(e, || {
            Error::no_such_event_type(project, datasource, event_type)
        })
    })?;
    tx.commit().await?;
    Ok(ParameterSet {
        project: project.to_owned(),
        datasource: datasource.to_owned(),
        event_type: event_type.to_owned(),
        name: name.to_owned(),
        spec,
        previous: previous.map(parameter_spec).transpose()?,
    })
}

#[derive(Debug, Serialize)]
pub struct ParameterRemoved {
    pub project: String,
    pub datasource: String,
    pub event_type: String,
    pub name: String,
    /// The spec that was declared.
    pub removed: ParameterSpec,
}

/// Removes a parameter spec of a declared event type.
pub async fn remove(
    pool: &PgPool,
    project: &str,
    datasource: &str,
    event_type: &str,
    name: &str,
) -> Result<ParameterRemoved> {
    check_event_type(event_type)?;
    check_parameter_name(name)?;
    ensure_datasource(pool, project, datasource).await?;
    event_type::ensure(pool, project, datasource, event_type).await?;
    let removed: Option<(String, Option<i32>, bool)> = sqlx::query_as(
        "DELETE FROM event_parameter_specs
          WHERE project = $1 AND datasource = $2 AND event_type = $3 AND name = $4
         RETURNING data_type, max_values, required",
    )
    .bind(project)
    .bind(datasource)
    .bind(event_type)
    .bind(name)
    .fetch_optional(pool)
    .await?;
    let Some(removed) = removed else {
        return Err(Error::NoSuchParameter(
            name.to_owned(),
            event_type.to_owned(),
            project.to_owned(),
            datasource.to_owned(),
        ));
    };
    Ok(ParameterRemoved {
        project: project.to_owned(),
        datasource: datasource.to_owned(),
        event_type: event_type.to_owned(),
        name: name.to_owned(),
        removed: parameter_spec(removed)?,
    })
}
