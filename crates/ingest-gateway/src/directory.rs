//! Who may write where: API tokens and datasources, read from PostgreSQL and cached.
//!
//! Freshness. Every change to tokens, datasources or limits is announced on the
//! `ingest_tenancy` channel by database triggers; a listener task drops the affected
//! cache entries as soon as a notification arrives (typically milliseconds), so a
//! revocation reaches every gateway well within 5 seconds. A cached entry is trusted
//! only while the listener is connected and has been since the entry was read
//! (tracked by a generation number bumped on every connect and disconnect); otherwise
//! the database is asked again.
//!
//! Database outage. When PostgreSQL cannot be reached, entries read earlier (up to
//! `INGEST_AUTH_MAX_STALENESS_SECS` old) keep being honoured, so known producers keep
//! writing; a token or datasource never seen before cannot be checked and the request
//! gets 503 with `Retry-After` (not 401: the token may well be valid).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ingest_types::tenancy::{
    hash_token, is_valid_id, is_well_formed_token, Endpoint, DEFAULT_REQUESTS_PER_MINUTE,
};
use moka::future::Cache;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::AUTH_CACHE_MISSES_TOTAL;

/// The notification channel written by the tenancy triggers (see migrations).
const CHANNEL: &str = "ingest_tenancy";

#[derive(Debug, Clone, PartialEq)]
struct TokenRecord {
    project: String,
    /// `None`: the token may write to every datasource of its project.
    datasource: Option<String>,
    revoked: bool,
}

/// Requests per minute for each [`Endpoint`], in `Endpoint::ALL` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits([u32; Endpoint::ALL.len()]);

impl Limits {
    pub fn get(&self, endpoint: Endpoint) -> u32 {
        self.0[Self::index(endpoint)]
    }

    fn index(endpoint: Endpoint) -> usize {
        Endpoint::ALL
            .iter()
            .position(|e| *e == endpoint)
            .unwrap_or(0)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits([DEFAULT_REQUESTS_PER_MINUTE; Endpoint::ALL.len()])
    }
}

/// A request that may proceed: the datasource it writes to and that datasource's limits.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub project: String,
    pub datasource: String,
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Unknown project or datasource, or a token not allowed to write there.
    #[error("project or datasource not found")]
    NotFound,
    #[error("cannot check the token: the tenancy database is unreachable")]
    Unavailable(#[source] sqlx::Error),
}

#[derive(Clone)]
struct Cached<T> {
    value: T,
    generation: u64,
}

#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    tokens: Cache<[u8; 32], Cached<Option<TokenRecord>>>,
    datasources: Cache<(String, String), Cached<Option<Limits>>>,
    /// Bumped whenever the listener connects or disconnects.
    generation: AtomicU64,
    listening: AtomicBool,
    /// Bumped on every notification.
    invalidations: AtomicU64,
    /// Notification payload → the `invalidations` value when it last arrived, so a
    /// read that raced a change to *its own* key is not cached.
    recent: Cache<String, u64>,
}

impl Directory {
    pub fn new(pool: PgPool, capacity: u64, max_staleness: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                tokens: Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(max_staleness)
                    .build(),
                datasources: Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(max_staleness)
                    .build(),
                generation: AtomicU64::new(0),
                listening: AtomicBool::new(false),
                invalidations: AtomicU64::new(0),
                recent: Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(Duration::from_secs(60))
                    .build(),
            }),
        }
    }

    /// Checks `authorization` (the header's value) for a write to `project`/`datasource`.
    pub async fn authorize(
        &self,
        authorization: Option<&str>,
        project: &str,
        datasource: &str,
    ) -> Result<Authorized, AuthError> {
        let header =
            authorization.ok_or(AuthError::Unauthenticated("missing Authorization header"))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or(AuthError::Unauthenticated(
                "Authorization must be 'Bearer <token>'",
            ))?
            .trim();
        if !is_well_formed_token(token) {
            return Err(AuthError::Unauthenticated("malformed token"));
        }
        let record = self
            .token(hash_token(token))
            .await?
            .ok_or(AuthError::Unauthenticated("unknown token"))?;
        if record.revoked {
            return Err(AuthError::Unauthenticated("token revoked"));
        }
        // Ids outside the contract's alphabet cannot exist: no look-up needed.
        let in_scope = is_valid_id(project)
            && is_valid_id(datasource)
            && record.project == project
            && record.datasource.as_deref().is_none_or(|d| d == datasource);
        if !in_scope {
            return Err(AuthError::NotFound);
        }
        let limits = self
            .datasource(project, datasource)
            .await?
            .ok_or(AuthError::NotFound)?;
        Ok(Authorized {
            project: project.to_owned(),
            datasource: datasource.to_owned(),
            limits,
        })
    }

    async fn token(&self, hash: [u8; 32]) -> Result<Option<TokenRecord>, AuthError> {
        let pool = self.inner.pool.clone();
        let marker = format!("token:{}", hex::encode(hash));
        self.cached(&self.inner.tokens, hash, marker, "token", move |hash| async move {
            let row: Option<(String, Option<String>, bool)> = sqlx::query_as(
                "SELECT project, datasource, revoked_at IS NOT NULL FROM api_tokens WHERE secret_hash = $1",
            )
            .bind(&hash[..])
            .fetch_optional(&pool)
            .await?;
            Ok(row.map(|(project, datasource, revoked)| TokenRecord {
                project,
                datasource,
                revoked,
            }))
        })
        .await
    }

    async fn datasource(
        &self,
        project: &str,
        datasource: &str,
    ) -> Result<Option<Limits>, AuthError> {
        let pool = self.inner.pool.clone();
        let key = (project.to_owned(), datasource.to_owned());
        let marker = format!("datasource:{project}/{datasource}");
        self.cached(&self.inner.datasources, key, marker, "datasource", move |(project, datasource)| async move {
            let exists: Option<bool> = sqlx::query_scalar(
                "SELECT true FROM datasources WHERE project = $1 AND id = $2",
            )
            .bind(&project)
            .bind(&datasource)
            .fetch_optional(&pool)
            .await?;
            if exists.is_none() {
                return Ok(None);
            }
            let rows: Vec<(String, i32)> = sqlx::query_as(
                "SELECT endpoint, requests_per_minute FROM rate_limits WHERE project = $1 AND datasource = $2",
            )
            .bind(&project)
            .bind(&datasource)
            .fetch_all(&pool)
            .await?;
            let mut limits = Limits::default();
            for (endpoint, rpm) in rows {
                if let Ok(endpoint) = endpoint.parse::<Endpoint>() {
                    limits.0[Limits::index(endpoint)] = u32::try_from(rpm).unwrap_or(1).max(1);
                }
            }
            Ok(Some(limits))
        })
        .await
    }

    /// A cached value when it is trustworthy, else a fresh read; a stale value when the
    /// database is unreachable; `Unavailable` when there is neither. `marker` is the
    /// notification payload that announces a change to this key.
    async fn cached<K, V, F, Fut>(
        &self,
        cache: &Cache<K, Cached<V>>,
        key: K,
        marker: String,
        kind: &'static str,
        load: F,
    ) -> Result<V, AuthError>
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        F: FnOnce(K) -> Fut,
        Fut: std::future::Future<Output = Result<V, sqlx::Error>>,
    {
        let generation = self.inner.generation.load(Ordering::Acquire);
        let listening = self.inner.listening.load(Ordering::Acquire);
        let cached = cache.get(&key).await;
        if let Some(entry) = &cached {
            if listening && entry.generation == generation {
                return Ok(entry.value.clone());
            }
        }
        metrics::counter!(AUTH_CACHE_MISSES_TOTAL, "kind" => kind).increment(1);
        let started = self.inner.invalidations.load(Ordering::Acquire);
        match load(key.clone()).await {
            Ok(value) => {
                let raced = self
                    .inner
                    .recent
                    .get(&marker)
                    .await
                    .is_some_and(|at| at > started);
                if !raced {
                    cache
                        .insert(
                            key,
                            Cached {
                                value: value.clone(),
                                generation,
                            },
                        )
                        .await;
                }
                Ok(value)
            }
            Err(err) => match cached {
                Some(stale) => {
                    tracing::warn!(error = %err, kind, "tenancy database unreachable; using the cached entry");
                    Ok(stale.value)
                }
                None => Err(AuthError::Unavailable(err)),
            },
        }
    }

    /// Keeps a LISTEN connection open until `shutdown`, dropping cache entries as
    /// changes are announced, and reconnecting (with backoff) when it is lost.
    pub async fn listen_for_changes(self, shutdown: CancellationToken) {
        let inner = &self.inner;
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let mut listener = match PgListener::connect_with(&inner.pool).await {
                Ok(mut listener) => match listener.listen(CHANNEL).await {
                    Ok(()) => listener,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot LISTEN for tenancy changes");
                        self.wait(&shutdown, &mut backoff).await;
                        continue;
                    }
                },
                Err(err) => {
                    tracing::warn!(error = %err, "cannot connect the tenancy listener");
                    self.wait(&shutdown, &mut backoff).await;
                    continue;
                }
            };
            // Anything cached before this point may have missed a notification.
            inner.generation.fetch_add(1, Ordering::AcqRel);
            inner.listening.store(true, Ordering::Release);
            backoff = Duration::from_millis(100);
            tracing::info!("listening for tenancy changes");
            loop {
                let received = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    received = listener.try_recv() => received,
                };
                match received {
                    Ok(Some(notification)) => self.invalidate(notification.payload()).await,
                    Ok(None) | Err(_) => {
                        tracing::warn!("tenancy listener lost its connection; reconnecting");
                        break;
                    }
                }
            }
            inner.listening.store(false, Ordering::Release);
            inner.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    async fn wait(&self, shutdown: &CancellationToken, backoff: &mut Duration) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(*backoff) => {}
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
    }

    async fn invalidate(&self, payload: &str) {
        let epoch = self.inner.invalidations.fetch_add(1, Ordering::AcqRel) + 1;
        self.inner.recent.insert(payload.to_owned(), epoch).await;
        if let Some(hex) = payload.strip_prefix("token:") {
            match hex::decode(hex)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
            {
                Some(hash) => self.inner.tokens.invalidate(&hash).await,
                None => self.inner.tokens.invalidate_all(),
            }
        } else if let Some((project, datasource)) = payload
            .strip_prefix("datasource:")
            .and_then(|rest| rest.split_once('/'))
        {
            self.inner
                .datasources
                .invalidate(&(project.to_owned(), datasource.to_owned()))
                .await;
        } else {
            tracing::warn!(
                payload,
                "unknown tenancy notification; dropping every cached entry"
            );
            self.inner.tokens.invalidate_all();
            self.inner.datasources.invalidate_all();
        }
    }
}
