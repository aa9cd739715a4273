//! `ingestctl datasource create|list|set-limit`: datasources and their per-endpoint rate
//! limits.

use std::collections::BTreeMap;
use std::io::{self, Write};

use chrono::{DateTime, Utc};
use clap::Subcommand;
use ingest_types::tenancy::{Endpoint, DEFAULT_REQUESTS_PER_MINUTE};
use serde::Serialize;
use sqlx::PgPool;

use super::{check_id, ensure_datasource, ensure_project, Error, Result};
use crate::output::{table, Output};
use crate::sql::{self, violation, Violation};

#[derive(Debug, Subcommand)]
pub enum DatasourceCommand {
    /// Create a datasource in an existing project (every endpoint starts at the default
    /// limit of 600 requests per minute).
    Create {
        /// The project it belongs to.
        project: String,
        /// Datasource id, unique within the project: 1-64 characters of A-Z a-z 0-9 _ -.
        id: String,
    },
    /// List datasources with their effective per-endpoint limits (requests per minute;
    /// 600 where none is set).
    List {
        /// Only this project's datasources.
        project: Option<String>,
    },
    /// Set a datasource's requests-per-minute limit for one endpoint, or for all.
    #[command(name = "set-limit")]
    SetLimit {
        /// The datasource's project.
        project: String,
        /// The datasource whose limit changes (it must exist).
        datasource: String,
        /// stream, contacts, events, contacts_delete, specs, erasures, or all.
        endpoint: String,
        /// Requests per minute, at least 1.
        #[arg(allow_negative_numbers = true)]
        requests_per_minute: i64,
    },
}

pub async fn run(pool: &PgPool, out: Output, command: DatasourceCommand) -> anyhow::Result<()> {
    match command {
        DatasourceCommand::Create { project, id } => {
            let d = create(pool, &project, &id).await?;
            out.print(&d, |w| {
                writeln!(w, "created datasource {}/{}", d.project, d.id)
            })
        }
        DatasourceCommand::List { project } => {
            let datasources = list(pool, project.as_deref()).await?;
            out.print(&datasources, |w| print_table(w, &datasources))
        }
        DatasourceCommand::SetLimit {
            project,
            datasource,
            endpoint,
            requests_per_minute,
        } => {
            let endpoints = parse_endpoints(&endpoint)?;
            let d = set_limit(pool, &project, &datasource, &endpoints, requests_per_minute).await?;
            out.print(&d, |w| {
                let which = if endpoints.len() == 1 {
                    format!("the {endpoint} endpoint")
                } else {
                    "every endpoint".to_owned()
                };
                writeln!(
                    w,
                    "{project}/{datasource}: {which} limited to {requests_per_minute} requests per minute"
                )?;
                print_table(w, std::slice::from_ref(&d))
            })
        }
    }
}

fn print_table(w: &mut dyn Write, datasources: &[Datasource]) -> io::Result<()> {
    let mut headers = vec!["PROJECT", "DATASOURCE"];
    headers.extend(Endpoint::ALL.iter().map(|e| e.as_str()));
    let rows = datasources
        .iter()
        .map(|d| {
            let mut row = vec![d.project.clone(), d.id.clone()];
            row.extend(Endpoint::ALL.iter().map(|&e| d.limit(e).to_string()));
            row
        })
        .collect();
    table(w, &headers, rows, "no datasources")
}

/// `all` → every endpoint; otherwise one endpoint by its [`Endpoint::as_str`] name.
pub fn parse_endpoints(name: &str) -> Result<Vec<Endpoint>> {
    if name == "all" {
        return Ok(Endpoint::ALL.to_vec());
    }
    name.parse()
        .map(|e| vec![e])
        .map_err(|_| Error::UnknownEndpoint(name.to_owned()))
}

#[derive(Debug, Serialize)]
pub struct Datasource {
    pub project: String,
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// Effective requests per minute for every endpoint (the default when no row is set).
    pub limits: BTreeMap<&'static str, u32>,
}

impl Datasource {
    /// The effective limit of one endpoint.
    pub fn limit(&self, endpoint: Endpoint) -> u32 {
        self.limits
            .get(endpoint.as_str())
            .copied()
            .unwrap_or(DEFAULT_REQUESTS_PER_MINUTE)
    }
}

/// The effective limit of every endpoint: what `set` says, else the default.
fn effective_limits(mut set: impl FnMut(Endpoint) -> Option<u32>) -> BTreeMap<&'static str, u32> {
    Endpoint::ALL
        .iter()
        .map(|&e| (e.as_str(), set(e).unwrap_or(DEFAULT_REQUESTS_PER_MINUTE)))
        .collect()
}

pub async fn create(pool: &PgPool, project: &str, id: &str) -> Result<Datasource> {
    check_id(project)?;
    check_id(id)?;
    let created_at = sqlx::query_scalar(
        "INSERT INTO datasources (project, id) VALUES ($1, $2) RETURNING created_at",
    )
    .bind(project)
    .bind(id)
    .fetch_one(pool)
    .await
    .map_err(|e| match violation(&e) {
        Some(Violation::Unique) => Error::DatasourceExists(project.to_owned(), id.to_owned()),
        Some(Violation::ForeignKey) => Error::NoSuchProject(project.to_owned()),
        None => e.into(),
    })?;
    Ok(Datasource {
        project: project.to_owned(),
        id: id.to_owned(),
        created_at,
        limits: effective_limits(|_| None),
    })
}

/// Datasources of one project (or of all projects), with their effective limits.
pub async fn list(pool: &PgPool, project: Option<&str>) -> Result<Vec<Datasource>> {
    if let Some(project) = project {
        ensure_project(pool, project).await?;
    }
    let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT project, id, created_at FROM datasources
          WHERE $1::text IS NULL OR project = $1
          ORDER BY project, id",
    )
    .bind(project)
    .fetch_all(pool)
    .await?;
    let set: Vec<(String, String, String, i32)> = sqlx::query_as(
        "SELECT project, datasource, endpoint, requests_per_minute FROM rate_limits
          WHERE $1::text IS NULL OR project = $1",
    )
    .bind(project)
    .fetch_all(pool)
    .await?;
    let mut set: BTreeMap<(String, String, String), u32> = set
        .into_iter()
        .map(|(p, d, e, rpm)| ((p, d, e), u32::try_from(rpm).unwrap_or(0)))
        .collect();
    Ok(rows
        .into_iter()
        .map(|(project, id, created_at)| {
            let limits = effective_limits(|e| {
                set.remove(&(project.clone(), id.clone(), e.as_str().to_owned()))
            });
            Datasource {
                project,
                id,
                created_at,
                limits,
            }
        })
        .collect())
}

/// Sets (inserts or replaces) the limit of `endpoints`, in one transaction, and returns
/// the datasource with its new effective limits.
pub async fn set_limit(
    pool: &PgPool,
    project: &str,
    datasource: &str,
    endpoints: &[Endpoint],
    requests_per_minute: i64,
) -> Result<Datasource> {
    let rpm = i32::try_from(requests_per_minute)
        .ok()
        .filter(|&r| r >= 1)
        .ok_or(Error::InvalidLimit(requests_per_minute))?;
    ensure_datasource(pool, project, datasource).await?;
    let mut tx = pool.begin().await?;
    for endpoint in endpoints {
        sqlx::query(
            "INSERT INTO rate_limits (project, datasource, endpoint, requests_per_minute)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (project, datasource, endpoint)
             DO UPDATE SET requests_per_minute = EXCLUDED.requests_per_minute",
        )
        .bind(project)
        .bind(datasource)
        .bind(endpoint.as_str())
        .bind(rpm)
        .execute(&mut *tx)
        .await
        .map_err(|e| sql::or_gone(e, || Error::no_such_datasource(project, datasource)))?;
    }
    tx.commit().await?;
    list(pool, Some(project))
        .await?
        .into_iter()
        .find(|d| d.id == datasource)
        .ok_or_else(|| Error::no_such_datasource(project, datasource))
}
