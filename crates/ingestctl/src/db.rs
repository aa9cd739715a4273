//! Every query `ingestctl` runs against the tenancy and spec tables, as typed async
//! functions.
//!
//! Ids, names, types and bounds are validated before any SQL runs; constraint violations
//! are mapped (by SQLSTATE) to errors that name the project, datasource, token, attribute,
//! event type or parameter concerned.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ingest_types::tenancy::{is_valid_id, Endpoint, NewToken, DEFAULT_REQUESTS_PER_MINUTE};
use ingest_types::validate::specs::{AttributeSpec, DataType, ParameterSpec, Specs};
use ingest_types::validate::{is_valid_name, MAX_EVENT_TYPE_CHARS, MAX_VALUES};
use serde::Serialize;
use sqlx::PgPool;

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
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn endpoint_names() -> String {
    let names: Vec<_> = Endpoint::ALL.iter().map(|e| e.as_str()).collect();
    names.join(", ")
}

fn check_id(id: &str) -> Result<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_owned()))
    }
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

/// Which constraint `e` violated, if any (by SQLSTATE).
fn violation(e: &sqlx::Error) -> Option<Violation> {
    let db = e.as_database_error()?;
    if db.is_unique_violation() {
        Some(Violation::Unique)
    } else if db.is_foreign_key_violation() {
        Some(Violation::ForeignKey)
    } else {
        None
    }
}

enum Violation {
    /// 23505
    Unique,
    /// 23503
    ForeignKey,
}

// ---------------------------------------------------------------- projects

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Project {
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// How many datasources the project has.
    pub datasources: i64,
}

pub async fn create_project(pool: &PgPool, id: &str) -> Result<Project> {
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

pub async fn list_projects(pool: &PgPool) -> Result<Vec<Project>> {
    Ok(sqlx::query_as(
        "SELECT p.id, p.created_at,
                (SELECT count(*) FROM datasources d WHERE d.project = p.id) AS datasources
           FROM projects p
          ORDER BY p.id",
    )
    .fetch_all(pool)
    .await?)
}

async fn ensure_project(pool: &PgPool, project: &str) -> Result<()> {
    check_id(project)?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projects WHERE id = $1)")
        .bind(project)
        .fetch_one(pool)
        .await?;
    if exists {
        Ok(())
    } else {
        Err(Error::NoSuchProject(project.to_owned()))
    }
}

async fn ensure_datasource(pool: &PgPool, project: &str, id: &str) -> Result<()> {
    ensure_project(pool, project).await?;
    check_id(id)?;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM datasources WHERE project = $1 AND id = $2)",
    )
    .bind(project)
    .bind(id)
    .fetch_one(pool)
    .await?;
    if exists {
        Ok(())
    } else {
        Err(Error::NoSuchDatasource(project.to_owned(), id.to_owned()))
    }
}

// ------------------------------------------------------------- datasources

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

pub async fn create_datasource(pool: &PgPool, project: &str, id: &str) -> Result<Datasource> {
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
    let limits = Endpoint::ALL
        .iter()
        .map(|e| (e.as_str(), DEFAULT_REQUESTS_PER_MINUTE))
        .collect();
    Ok(Datasource {
        project: project.to_owned(),
        id: id.to_owned(),
        created_at,
        limits,
    })
}

/// Datasources of one project (or of all projects), with their effective limits.
pub async fn list_datasources(pool: &PgPool, project: Option<&str>) -> Result<Vec<Datasource>> {
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
            let limits = Endpoint::ALL
                .iter()
                .map(|e| {
                    let key = (project.clone(), id.clone(), e.as_str().to_owned());
                    let rpm = set.remove(&key).unwrap_or(DEFAULT_REQUESTS_PER_MINUTE);
                    (e.as_str(), rpm)
                })
                .collect();
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
        .map_err(|e| match violation(&e) {
            // Deleted between the check and the upsert.
            Some(Violation::ForeignKey) => {
                Error::NoSuchDatasource(project.to_owned(), datasource.to_owned())
            }
            _ => e.into(),
        })?;
    }
    tx.commit().await?;
    list_datasources(pool, Some(project))
        .await?
        .into_iter()
        .find(|d| d.id == datasource)
        .ok_or_else(|| Error::NoSuchDatasource(project.to_owned(), datasource.to_owned()))
}

// ------------------------------------------------------------------ tokens

/// A token as just created: the only time its secret exists outside the caller's hands.
#[derive(Debug, Serialize)]
pub struct CreatedToken {
    pub id: String,
    pub secret: String,
    pub project: String,
    /// `None`: the token may write to every datasource of the project.
    pub datasource: Option<String>,
    pub name: String,
}

pub async fn create_token(
    pool: &PgPool,
    project: &str,
    datasource: Option<&str>,
    name: &str,
) -> Result<CreatedToken> {
    match datasource {
        Some(ds) => ensure_datasource(pool, project, ds).await?,
        None => ensure_project(pool, project).await?,
    }
    let token = NewToken::generate();
    sqlx::query(
        "INSERT INTO api_tokens (id, project, datasource, secret_hash, display_prefix, name)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&token.id)
    .bind(project)
    .bind(datasource)
    .bind(&token.hash[..])
    .bind(&token.display_prefix)
    .bind(name)
    .execute(pool)
    .await
    .map_err(|e| match (violation(&e), datasource) {
        // Deleted between the check and the insert.
        (Some(Violation::ForeignKey), Some(ds)) => {
            Error::NoSuchDatasource(project.to_owned(), ds.to_owned())
        }
        (Some(Violation::ForeignKey), None) => Error::NoSuchProject(project.to_owned()),
        _ => e.into(),
    })?;
    Ok(CreatedToken {
        id: token.id,
        secret: token.secret,
        project: project.to_owned(),
        datasource: datasource.map(str::to_owned),
        name: name.to_owned(),
    })
}

/// A token as listed: never the secret nor its hash.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct TokenInfo {
    pub id: String,
    pub project: String,
    pub datasource: Option<String>,
    pub name: String,
    pub display_prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Tokens of one project (or of all projects); revoked ones only if `include_revoked`.
pub async fn list_tokens(
    pool: &PgPool,
    project: Option<&str>,
    include_revoked: bool,
) -> Result<Vec<TokenInfo>> {
    if let Some(project) = project {
        ensure_project(pool, project).await?;
    }
    Ok(sqlx::query_as(
        "SELECT id, project, datasource, name, display_prefix, created_at, revoked_at
           FROM api_tokens
          WHERE ($1::text IS NULL OR project = $1) AND ($2 OR revoked_at IS NULL)
          ORDER BY project, datasource NULLS FIRST, created_at, id",
    )
    .bind(project)
    .bind(include_revoked)
    .fetch_all(pool)
    .await?)
}

#[derive(Debug, Serialize)]
pub struct Revocation {
    pub id: String,
    pub revoked_at: DateTime<Utc>,
    /// The token had been revoked before this call (nothing changed).
    pub already_revoked: bool,
}

/// Revokes a token; revoking a revoked token again changes nothing and succeeds.
pub async fn revoke_token(pool: &PgPool, id: &str) -> Result<Revocation> {
    let mut tx = pool.begin().await?;
    let current: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar("SELECT revoked_at FROM api_tokens WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let (revoked_at, already_revoked) = match current {
        None => return Err(Error::NoSuchToken(id.to_owned())),
        Some(Some(revoked_at)) => (revoked_at, true),
        Some(None) => {
            let revoked_at = sqlx::query_scalar(
                "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 RETURNING revoked_at",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            (revoked_at, false)
        }
    };
    tx.commit().await?;
    Ok(Revocation {
        id: id.to_owned(),
        revoked_at,
        already_revoked,
    })
}

// ------------------------------------------------------------------- specs

fn check_attribute_name(name: &str) -> Result<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidAttributeName(name.to_owned()))
    }
}

fn check_parameter_name(name: &str) -> Result<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidParameterName(name.to_owned()))
    }
}

/// The gateway's `_event_type` rule: 1-128 characters (control characters allowed).
fn check_event_type(name: &str) -> Result<()> {
    if (1..=MAX_EVENT_TYPE_CHARS).contains(&name.chars().count()) {
        Ok(())
    } else {
        Err(Error::InvalidEventType(name.to_owned()))
    }
}

/// `--type` and `--multivalue`: the data type, and `None` (single value) or the
/// multivalue bound (1-100).
pub fn parse_value_spec(
    data_type: &str,
    multivalue: Option<i64>,
) -> Result<(DataType, Option<u32>)> {
    let data_type = data_type.parse().map_err(Error::UnknownDataType)?;
    let max_values = multivalue
        .map(|n| {
            u32::try_from(n)
                .ok()
                .filter(|&m| m >= 1 && usize::try_from(m).is_ok_and(|m| m <= MAX_VALUES))
                .ok_or(Error::InvalidMultivalue(n))
        })
        .transpose()?;
    Ok((data_type, max_values))
}

/// A bound as stored (`integer`, CHECKed to 1-100).
fn stored_bound(max_values: Option<u32>) -> Result<Option<i32>> {
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

async fn ensure_event_type(
    pool: &PgPool,
    project: &str,
    datasource: &str,
    event_type: &str,
) -> Result<()> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM event_types
                         WHERE project = $1 AND datasource = $2 AND name = $3)",
    )
    .bind(project)
    .bind(datasource)
    .bind(event_type)
    .fetch_one(pool)
    .await?;
    if exists {
        Ok(())
    } else {
        Err(no_such_event_type(project, datasource, event_type))
    }
}

fn no_such_event_type(project: &str, datasource: &str, event_type: &str) -> Error {
    Error::NoSuchEventType(
        event_type.to_owned(),
        project.to_owned(),
        datasource.to_owned(),
    )
}

/// Everything a datasource declares, in the shape the gateway validates against.
pub async fn list_specs(pool: &PgPool, project: &str, datasource: &str) -> Result<Specs> {
    ensure_datasource(pool, project, datasource).await?;
    Ok(ingest_types::validate::specs::load(pool, project, datasource).await?)
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
pub async fn set_attribute(
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
    .map_err(|e| match violation(&e) {
        // Deleted between the check and the upsert.
        Some(Violation::ForeignKey) => {
            Error::NoSuchDatasource(project.to_owned(), datasource.to_owned())
        }
        _ => e.into(),
    })?;
    tx.commit().await?;
    let previous = previous
        .map(|(data_type, max_values)| {
            value_spec(&data_type, max_values).map(|(data_type, max_values)| AttributeSpec {
                data_type,
                max_values,
            })
        })
        .transpose()?;
    Ok(AttributeSet {
        project: project.to_owned(),
        datasource: datasource.to_owned(),
        name: name.to_owned(),
        spec,
        previous,
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
pub async fn remove_attribute(
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
    let Some((data_type, max_values)) = removed else {
        return Err(Error::NoSuchAttribute(
            name.to_owned(),
            project.to_owned(),
            datasource.to_owned(),
        ));
    };
    let (data_type, max_values) = value_spec(&data_type, max_values)?;
    Ok(AttributeRemoved {
        project: project.to_owned(),
        datasource: datasource.to_owned(),
        name: name.to_owned(),
        removed: AttributeSpec {
            data_type,
            max_values,
        },
    })
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
pub async fn add_event_type(
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
    .map_err(|e| match violation(&e) {
        // Deleted between the check and the insert.
        Some(Violation::ForeignKey) => {
            Error::NoSuchDatasource(project.to_owned(), datasource.to_owned())
        }
        _ => e.into(),
    })?
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
pub async fn remove_event_type(
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
        return Err(no_such_event_type(project, datasource, event_type));
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
pub async fn set_parameter(
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
    ensure_event_type(pool, project, datasource, event_type).await?;
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
    .map_err(|e| match violation(&e) {
        // The event type (or its datasource) was removed between the check and the upsert.
        Some(Violation::ForeignKey) => no_such_event_type(project, datasource, event_type),
        _ => e.into(),
    })?;
    tx.commit().await?;
    let previous = previous
        .map(|(data_type, max_values, required)| {
            value_spec(&data_type, max_values).map(|(data_type, max_values)| ParameterSpec {
                data_type,
                max_values,
                required,
            })
        })
        .transpose()?;
    Ok(ParameterSet {
        project: project.to_owned(),
        datasource: datasource.to_owned(),
        event_type: event_type.to_owned(),
        name: name.to_owned(),
        spec,
        previous,
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
pub async fn remove_parameter(
    pool: &PgPool,
    project: &str,
    datasource: &str,
    event_type: &str,
    name: &str,
) -> Result<ParameterRemoved> {
    check_event_type(event_type)?;
    check_parameter_name(name)?;
    ensure_datasource(pool, project, datasource).await?;
    ensure_event_type(pool, project, datasource, event_type).await?;
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
    let Some((data_type, max_values, required)) = removed else {
        return Err(Error::NoSuchParameter(
            name.to_owned(),
            event_type.to_owned(),
            project.to_owned(),
            datasource.to_owned(),
        ));
    };
    let (data_type, max_values) = value_spec(&data_type, max_values)?;
    Ok(ParameterRemoved {
        project: project.to_owned(),
        datasource: datasource.to_owned(),
        event_type: event_type.to_owned(),
        name: name.to_owned(),
        removed: ParameterSpec {
            data_type,
            max_values,
            required,
        },
    })
}
