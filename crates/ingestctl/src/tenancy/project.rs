//! `ingestctl project create|list`: projects (tenants).

use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::Serialize;
use sqlx::PgPool;

use super::{check_id, Error, Result};
use crate::output::{table, time, Output};
use crate::sql::{violation, Violation};

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project.
    Create {
        /// Project id: 1-64 characters of A-Z a-z 0-9 _ -.
        id: String,
    },
    /// List every project, with its number of datasources.
    List,
}

pub async fn run(pool: &PgPool, out: Output, command: ProjectCommand) -> anyhow::Result<()> {
    match command {
        ProjectCommand::Create { id } => {
            let p = create(pool, &id).await?;
            out.print(&p, |w| writeln!(w, "created project {}", p.id))
        }
        ProjectCommand::List => {
            let projects = list(pool).await?;
            out.print(&projects, |w| {
                let rows = projects
                    .iter()
                    .map(|p| vec![p.id.clone(), p.datasources.to_string(), time(&p.created_at)])
                    .collect();
                table(
                    w,
                    &["PROJECT", "DATASOURCES", "CREATED"],
                    rows,
                    "no projects",
                )
            })
        }
    }
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Project {
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// How many datasources the project has.
    pub datasources: i64,
}

pub async fn create(pool: &PgPool, id: &str) -> Result<Project> {
    check_id(id)?;
    let created_at =
        sqlx::query_scalar("INSERT INTO projects (id) VALUES ($1) RETURNING created_at")
            .bind(id)
            .fetch_one(pool)
            .await
            .map_err(|e| match violation(&e) {
                Some(Violation::Unique) => Error::ProjectExists(id.to_owned()),
                _ => e.into(),
            })?;
    Ok(Project {
        id: id.to_owned(),
        created_at,
        datasources: 0,
    })
}

pub async fn list(pool: &PgPool) -> Result<Vec<Project>> {
    Ok(sqlx::query_as(
        "SELECT p.id, p.created_at,
                (SELECT count(*) FROM datasources d WHERE d.project = p.id) AS datasources
           FROM projects p
          ORDER BY p.id",
    )
    .fetch_all(pool)
    .await?)
}
