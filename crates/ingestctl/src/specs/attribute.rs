//! `ingestctl spec attribute set|remove`: custom attribute specs.

use clap::Subcommand;
use ingest_types::validate::specs::AttributeSpec;
use serde::Serialize;
use sqlx::PgPool;

use super::rules::{
    attribute_spec, check_attribute_name, describe, stored_bound, Error, Result, ValueArgs,
};
use crate::output::Output;
use crate::sql;
use crate::tenancy::ensure_datasource;

#[derive(Debug, Subcommand)]
pub enum AttributeCommand {
    /// Declare a custom attribute, or replace its spec.
    Set {
        /// The datasource's project.
        project: String,
        /// The datasource (it must exist).
        datasource: String,
        /// Attribute name: ^[a-z][a-z0-9_]{0,63}$.
        name: String,
        #[command(flatten)]
        value: ValueArgs,
    },
    /// Remove a custom attribute's spec (the attribute is then held only to the generic
    /// rules).
    Remove {
        /// The datasource's project.
        project: String,
        /// The datasource (it must exist).
        datasource: String,
        /// The declared attribute's name.
        name: String,
    },
}

pub async fn run(pool: &PgPool, out: Output, command: AttributeCommand) -> anyhow::Result<()> {
    match command {
        AttributeCommand::Set {
            project,
            datasource,
            name,
            value,
        } => {
            let (data_type, max_values) = value.parse()?;
            let spec = AttributeSpec {
                data_type,
                max_values,
            };
            let a = set(pool, &project, &datasource, &name, spec).await?;
            out.print(&a, |w| {
                let now = describe(a.spec.data_type, a.spec.max_values);
                match &a.previous {
                    None => writeln!(
                        w,
                        "declared attribute {name:?} on {project}/{datasource}: {now}"
                    ),
                    Some(p) => writeln!(
                        w,
                        "updated attribute {name:?} on {project}/{datasource}: {now} (was {})",
                        describe(p.data_type, p.max_values)
                    ),
                }
            })
        }
        AttributeCommand::Remove {
            project,
            datasource,
            name,
        } => {
            let r = remove(pool, &project, &datasource, &name).await?;
            out.print(&r, |w| {
                writeln!(
                    w,
                    "removed attribute {name:?} from {project}/{datasource} (was {})",
                    describe(r.removed.data_type, r.removed.max_values)
                )
            })
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AttributeSet {
    pub project: String,
    pub datasource: String,
    pub name: String,
    /// The spec as now declared.
    pub spec: AttributeSpec,
    /// The spec it replaced; `None` when the attribute was not declared before.
    pub previous: Option<AttributeSpec>,
}

/// Declares a custom attribute, or replaces its spec.
pub async fn set(
    pool: &PgPool,
    project: &str,
    datasource: &str,
    name: &str,
    spec: AttributeSpec,
) -> Result<AttributeSet> {
    check_attribute_name(name)?;
    let max_values = stored_bound(spec.max_values)?;
    ensure_datasource(pool, project, datasource).await?;
    let mut tx = pool.begin().await?;
    let previous: Option<(String, Option<i32>)> = sqlx::query_as(
        "SELECT data_type, max_values FROM attribute_specs
          WHERE project = $1 AND datasource = $2 AND name = $3
            FOR UPDATE",
    )
    .bind(project)
    .bind(datasource)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO attribute_specs (project, datasource, name, data_type, max_values)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (project, datasource, name)
         DO UPDATE SET data_type = EXCLUDED.data_type, max_values = EXCLUDED.max_values",
    )
    .bind(project)
    .bind(datasource)
    .bind(name)
    .bind(spec.data_type.as_str())
    .bind(max_values)
    .execute(&mut *tx)
    .await
    .map_err(|e| sql::or_gone(e, || Error::no_such_datasource(project, datasource)))?;
    tx.commit().await?;
    Ok(AttributeSet {
        project: project.to_owned(),
        datasource: datasource.to_owned(),
        name: name.to_owned(),
        spec,
        previous: previous.map(attribute_spec).transpose()?,
    })
}

#[derive(Debug, Serialize)]
pub struct AttributeRemoved {
    pub project: String,
    pub datasource: String,
    pub name: String,
    /// The spec that was declared.
    pub removed: AttributeSpec,
}

/// Removes a custom attribute's spec (the attribute is then accepted under the generic
/// rules).
pub async fn remove(
    pool: &PgPool,
    project: &str,
    datasource: &str,
    name: &str,
) -> Result<AttributeRemoved> {
    check_attribute_name(name)?;
    ensure_datasource(pool, project, datasource).await?;
    let removed: Option<(String, Option<i32>)> = sqlx::query_as(
        "DELETE FROM attribute_specs
          WHERE project = $1 AND datasource = $2 AND name = $3
         RETURNING data_type, max_values",
    )
    .bind(project)
    .bind(datasource)
    .bind(name)
    .fetch_optional(pool)
    .await?;
    let Some(removed) = removed else {
        return Err(Error::NoSuchAttribute(
            name.to_owned(),
            project.to_owned(),
            datasource.to_owned(),
        ));
    };
    Ok(AttributeRemoved {
        project: project.to_owned(),
        datasource: datasource.to_owned(),
        name: name.to_owned(),
        removed: attribute_spec(removed)?,
    })
}
