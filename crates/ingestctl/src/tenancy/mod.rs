//! Tenancy: `ingestctl project`, `datasource` and `token`, one file each with its
//! arguments, queries and output. This file holds what they share: the typed error and
//! the id rule, and the checks that a project or datasource exists.
//!
//! Ids are validated before any SQL runs; constraint violations are mapped (by SQLSTATE)
//! to errors that name the project, datasource or token concerned.

pub mod datasource;
pub mod project;
pub mod token;

use ingest_types::tenancy::{is_valid_id, Endpoint};
use sqlx::PgPool;

use crate::sql;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid id {0:?}: use 1-64 characters of A-Z a-z 0-9 _ -")]
    InvalidId(String),
    #[error("project {0:?} does not exist")]
    NoSuchProject(String),
    #[error("project {0:?} already exists")]
    ProjectExists(String),
    #[error("datasource \"{0}/{1}\" does not exist")]
    NoSuchDatasource(String, String),
    #[error("datasource \"{0}/{1}\" already exists")]
    DatasourceExists(String, String),
    #[error("token {0:?} does not exist")]
    NoSuchToken(String),
    #[error("unknown endpoint {0:?}: use one of {names}, or all", names = endpoint_names())]
    UnknownEndpoint(String),
    #[error("invalid limit {0}: requests per minute must be between 1 and {max}", max = i32::MAX)]
    InvalidLimit(i64),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn no_such_datasource(project: &str, datasource: &str) -> Self {
        Self::NoSuchDatasource(project.to_owned(), datasource.to_owned())
    }
}

fn endpoint_names() -> String {
    let names: Vec<_> = Endpoint::ALL.iter().map(|e| e.as_str()).collect();
    names.join(", ")
}

/// A project or datasource id: 1-64 characters of A-Z a-z 0-9 _ -.
pub fn check_id(id: &str) -> Result<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_owned()))
    }
}

pub async fn ensure_project(pool: &PgPool, project: &str) -> Result<()> {
    check_id(project)?;
    let query = "SELECT EXISTS (SELECT 1 FROM projects WHERE id = $1)";
    if sql::exists(pool, query, &[project]).await? {
        Ok(())
    } else {
        Err(Error::NoSuchProject(project.to_owned()))
    }
}

pub async fn ensure_datasource(pool: &PgPool, project: &str, id: &str) -> Result<()> {
    ensure_project(pool, project).await?;
    check_id(id)?;
    let query = "SELECT EXISTS (SELECT 1 FROM datasources WHERE project = $1 AND id = $2)";
    if sql::exists(pool, query, &[project, id]).await? {
        Ok(())
    } else {
        Err(Error::no_such_datasource(project, id))
    }
}
