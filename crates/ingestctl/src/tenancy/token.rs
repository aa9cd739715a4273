//! `ingestctl token create|list|revoke`: API tokens. A token's secret is shown once, when
//! it is created; only its SHA-256 hash is stored.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use ingest_types::tenancy::NewToken;
use serde::Serialize;
use sqlx::PgPool;

use super::{ensure_datasource, ensure_project, Error, Result};
use crate::output::{table, time, time_or_dash, Output};
use crate::sql;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token and print its secret. The secret is shown only this once:
    /// only its SHA-256 hash is stored.
    Create {
        /// The project the token writes to.
        project: String,
        /// Restrict the token to this datasource (default: every datasource of the project).
        #[arg(long)]
        datasource: Option<String>,
        /// A free-text label, e.g. who or what uses the token.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tokens (never their secrets). Revoked tokens are hidden unless --all is given.
    ///
    /// DATASOURCE is "*" (JSON: null) for a project-wide token.
    List {
        /// Only this project's tokens.
        project: Option<String>,
        /// Include revoked tokens (with their REVOKED time).
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token: it stops working within moments. Revoking it again is a no-op.
    Revoke {
        /// The token's id (tok_...), as shown by `token create` and `token list`.
        token_id: String,
    },
}

pub async fn run(pool: &PgPool, out: Output, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            project,
            datasource,
            name,
        } => {
            let t = create(pool, &project, datasource.as_deref(), &name).await?;
            out.print(&t, |w| {
                writeln!(w, "{}", t.secret)?;
                writeln!(
                    w,
                    "warning: this secret is shown only once and cannot be recovered; store it now"
                )?;
                writeln!(w, "id:    {}", t.id)?;
                writeln!(w, "scope: {}", scope(&t.project, t.datasource.as_deref()))?;
                if !t.name.is_empty() {
                    writeln!(w, "name:  {}", t.name)?;
                }
                Ok(())
            })
        }
        TokenCommand::List { project, all } => {
            let tokens = list(pool, project.as_deref(), all).await?;
            out.print(&tokens, |w| {
                let rows = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.project.clone(),
                            t.datasource.clone().unwrap_or_else(|| "*".into()),
                            format!("{}...", t.display_prefix),
                            time(&t.created_at),
                            time_or_dash(t.revoked_at.as_ref()),
                            t.name.clone(),
                        ]
                    })
                    .collect();
                let headers = [
                    "ID",
                    "PROJECT",
                    "DATASOURCE",
                    "PREFIX",
                    "CREATED",
                    "REVOKED",
                    "NAME",
                ];
                table(w, &headers, rows, "no tokens")
            })
        }
        TokenCommand::Revoke { token_id } => {
            let r = revoke(pool, &token_id).await?;
            out.print(&r, |w| {
                if r.already_revoked {
                    writeln!(
                        w,
                        "token {} was already revoked at {}",
                        r.id,
                        time(&r.revoked_at)
                    )
                } else {
                    writeln!(w, "revoked token {}", r.id)
                }
            })
        }
    }
}

fn scope(project: &str, datasource: Option<&str>) -> String {
    match datasource {
        Some(ds) => format!("datasource {project}/{ds}"),
        None => format!("project {project} (every datasource)"),
    }
}

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

pub async fn create(
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
    .map_err(|e| {
        sql::or_gone(e, || match datasource {
            Some(ds) => Error::no_such_datasource(project, ds),
            None => Error::NoSuchProject(project.to_owned()),
        })
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
pub async fn list(
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
pub async fn revoke(pool: &PgPool, id: &str) -> Result<Revocation> {
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
