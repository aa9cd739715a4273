//! `ingestctl spec event-type add|remove`: declared event types. Once any is declared, the
//! gateway rejects events of other types.

use clap::Subcommand;
use serde::Serialize;
use sqlx::PgPool;

use super::rules::{check_event_type, Error, Result};
use crate::output::Output;
use crate::sql;
use crate::tenancy::ensure_datasource;

#[derive(Debug, Subcommand)]
pub enum EventTypeCommand {
    /// Declare an event type. Declaring a declared one again is a no-op.
    Add {
        /// The datasource's project.
        project: String,
        /// The datasource (it must exist).
        datasource: String,
        /// Event type: 1-128 characters.
        event_type: String,
    },
    /// Remove a declared event type and its parameter specs.
    Remove {
        /// The datasource's project.
        project: String,
        /// The datasource (it must exist).
        datasource: String,
        /// The declared event type.
        event_type: String,
    },
}

pub async fn run(pool: &PgPool, out: Output, command: EventTypeCommand) -> anyhow::Result<()> {
    match command {
        EventTypeCommand::Add {
            project,
            datasource,
            event_type,
        } => {
            let e = add(pool, &project, &datasource, &event_type).await?;
            out.print(&e, |w| {
                if e.already_declared {
                    writeln!(
                        w,
                        "event type {event_type:?} was already declared on {project}/{datasource}"
                    )
                } else {
                    writeln!(
                        w,
                        "declared event type {event_type:?} on {project}/{datasource}"
                    )
                }
            })
        }
        EventTypeCommand::Remove {
            project,
            datasource,
            event_type,
        } => {
            let r = remove(pool, &project, &datasource, &event_type).await?;
            out.print(&r, |w| {
                let params = match r.parameters_removed.len() {
                    0 => String::new(),
                    n => format!(
                        " and its {n} parameter spec{} ({})",
                        if n == 1 { "" } else { "s" },
                        r.parameters_removed.join(", ")
                    ),
                };
                writeln!(
                    w,
                    "removed event type {event_type:?}{params} from {project}/{datasource}"
                )
            })
        }
    }
}

/// Whether `event_type` is declared for the datasource.
pub async fn ensure(
    pool: &PgPool,
    project: &str,
    datasource: &str,
    event_type: &str,
) -> Result<()> {
    let query = "SELECT EXISTS (SELECT 1 FROM event_types
                                 WHERE project = $1 AND datasource = $2 AND name = $3)";
    if sql::exists(pool, query, &[project, datasource, event_type]).await? {
        Ok(())
    } else {
        Err(Error::no_such_event_type(project, datasource, event_type))
    }
}

#[derive(Debug, Serialize)]
pub struct EventTypeAdded {
    pub project: String,
    pub datasource: String,
    pub event_type: String,
    /// It was declared before this call (nothing changed).
    pub already_declared: bool,
}

/// Declares an event type; declaring a declared one again changes nothing and succeeds.
pub async fn add(
    pool: &PgPool,
    project: &str,
    datasource: &str,
    event_type: &str,
) -> Result<EventTypeAdded> {
    check_event_type(event_type)?;
    ensure_datasource(pool, project, datasource).await?;
    let inserted = sqlx::query(
        "INSERT INTO event_types (project, datasource, name) VALUES ($1, $2, $3)
         ON CONFLICT (project, datasource, name) DO NOTHING",
    )
    .bind(project)
    .bind(datasource)
    .bind(event_type)
    .execute(pool)
    .await
    .map_err(|e| sql::or_gone(e, || Error::no_such_datasource(project, datasource)))?
    .rows_affected();
    Ok(EventTypeAdded {
        project: project.to_owned(),
        datasource: datasource.to_owned(),
        event_type: event_type.to_owned(),
        already_declared: inserted == 0,
    })
}

#[derive(Debug, Serialize)]
pub struct EventTypeRemoved {
    pub project: String,
    pub datasource: String,
    pub event_type: String,
    /// The parameter specs removed with it, by name.
    pub parameters_removed: Vec<String>,
}

/// Removes a declared event type and (by cascade) its parameter specs.
pub async fn remove(
    pool: &PgPool,
    project: &str,
    datasource: &str,
    event_type: &str,
) -> Result<EventTypeRemoved> {
    check_event_type(event_type)?;
    ensure_datasource(pool, project, datasource).await?;
    let mut tx = pool.begin().await?;
    // Locking the event type holds off concurrent parameter inserts (their foreign-key
    // check needs a share lock on it), so the list below is exactly what cascades.
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM event_types WHERE project = $1 AND datasource = $2 AND name = $3
            FOR UPDATE",
    )
    .bind(project)
    .bind(datasource)
    .bind(event_type)
    .fetch_optional(&mut *tx)
    .await?;
    if found.is_none() {
        return Err(Error::no_such_event_type(project, datasource, event_type));
    }
    let parameters_removed: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM event_parameter_specs
          WHERE project = $1 AND datasource = $2 AND event_type = $3
          ORDER BY name",
    )
    .bind(project)
    .bind(datasource)
    .bind(event_type)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM event_types WHERE project = $1 AND datasource = $2 AND name = $3")
        .bind(project)
        .bind(datasource)
        .bind(event_type)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(EventTypeRemoved {
        project: project.to_owned(),
        datasource: datasource.to_owned(),
        event_type: event_type.to_owned(),
        parameters_removed,
    })
}
