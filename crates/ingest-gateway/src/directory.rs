//! Who may write where: API tokens and datasources, read from PostgreSQL and cached.
//!
//! Freshness. Every change to tokens, datasources or limits is announced on the
//! `ingest_tenancy` channel by database triggers; a listener task drops the affected
//! cache entries as soon as a notification arrives (typically milliseconds), so a
//! revocation reaches every gateway well within 5 seconds. A cached entry is trusted
//! only while the listener is connected and has been since the entry was read
//! (tracked by a generation number bumped on every connect and disconnect), and for
//! at most [`TRUST_FOR`]; otherwise the database is asked again. The listener proves it
//! is alive by receiving its own pings (sent through the pool every
//! [`PING_EVERY`]); one that misses them for [`PING_DEADLINE`] is replaced, so a
//! silently dead connection cannot keep stale entries trusted.
//!
//! Database outage. When PostgreSQL cannot be reached (connection errors or time-outs,
//! not query errors), entries read earlier (up to `INGEST_AUTH_MAX_STALENESS_SECS` old)
//! keep being honoured, so known producers keep
//! writing; a token or datasource never seen before cannot be checked and the request
//! gets 503 with `Retry-After` (not 401: the token may well be valid).
//!
//! Floods. Unknown tokens and datasources are remembered apart from known ones (in caches
//! of their own, `INGEST_UNKNOWN_TOKEN_CACHE_CAPACITY`), so a flood of made-up tokens can
//! neither evict the tokens of real producers nor repeat a query; creating a token
//! announces it, which drops it from the unknown cache like any change. A flood of
//! *different* made-up tokens misses every cache, so the look-ups themselves are
//! limited per client address (`INGEST_LOOKUPS_PER_ADDR_PER_SEC`, burst
//! `INGEST_LOOKUPS_PER_ADDR_BURST`; a GCRA limiter from `governor`): past it, 429 with
//! `Retry-After` and no query. Cache hits are never limited.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ingest_types::tenancy::{
    hash_token, is_valid_id, is_well_formed_token, Endpoint, DEFAULT_REQUESTS_PER_MINUTE,
};
use ingest_types::validate::specs::{self, Specs};
use moka::future::Cache;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::{AUTH_CACHE_MISSES_TOTAL, LOOKUPS_REFUSED_TOTAL};

/// The notification channel written by the tenancy triggers (see migrations).
const CHANNEL: &str = "ingest_tenancy";
/// Longest a cached entry is used without asking the database again.
pub const TRUST_FOR: Duration = Duration::from_secs(60);
/// How often the listener's liveness is checked with a ping through the pool.
pub const PING_EVERY: Duration = Duration::from_secs(2);
/// A listener that has not received its own ping for this long is replaced.
pub const PING_DEADLINE: Duration = Duration::from_secs(6);
/// Longest a look-up may take before a cached entry stands in for it.
const LOOKUP_TIMEOUT_WITH_FALLBACK: Duration = Duration::from_millis(500);
/// Longest a look-up may take when nothing cached could stand in.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// The token may write to every datasource of the project.
    pub project_scope: bool,
    pub limits: Limits,
    /// What the datasource declares about its attributes and events.
    pub specs: Arc<Specs>,
}

/// What is cached per datasource: its limits and its specs.
#[derive(Debug, Clone)]
struct DatasourceRecord {
    limits: Limits,
    specs: Arc<Specs>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Unknown project or datasource, or a token not allowed to write there.
    #[error("project or datasource not found")]
    NotFound,
    #[error("cannot check the token: the tenancy database is unreachable")]
    Unavailable(#[source] LookupError),
    #[error("tenancy look-up failed")]
    Lookup(#[source] sqlx::Error),
    /// The client address made too many look-ups (cache misses); retry after this long.
    #[error("too many token look-ups from this address")]
    TooManyLookups { retry_after: Duration },
}

/// How many look-ups (cache misses) one client address may cause.
#[derive(Debug, Clone, Copy)]
pub struct LookupQuota {
    /// Sustained look-ups per second; 0 turns the limit off.
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the tenancy database did not answer within {0:?}")]
    TimedOut(Duration),
}

impl LookupError {
    /// Whether the database could not be reached at all (as opposed to a query failing):
    /// only then may a cached entry stand in.
    pub(crate) fn is_unreachable(&self) -> bool {
        match self {
            LookupError::TimedOut(_) => true,
            LookupError::Database(err) => matches!(
                err,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            ),
        }
    }
}

/// A listener on [`CHANNEL`] that reports a lost connection at once instead of
/// reconnecting inside `try_recv`: the caller reconnects and bumps the generation.
async fn connect_listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

#[derive(Clone)]
struct Cached<T> {
    value: T,
    generation: u64,
    fetched_at: Instant,
}

#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

/// Known entries and unknown ones, cached apart (see the module docs).
struct Caches<K, T> {
    known: Cache<K, Cached<Option<T>>>,
    unknown: Cache<K, Cached<Option<T>>>,
}

impl<K, T> Caches<K, T>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    fn new(known: u64, unknown: u64, max_staleness: Duration) -> Self {
        let cache = |capacity| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(max_staleness)
                .build()
        };
        Self {
            known: cache(known),
            unknown: cache(unknown),
        }
    }

    async fn get(&self, key: &K) -> Option<Cached<Option<T>>> {
        match self.known.get(key).await {
            Some(entry) => Some(entry),
            None => self.unknown.get(key).await,
        }
    }

    async fn insert(&self, key: K, entry: Cached<Option<T>>) {
        if entry.value.is_some() {
            self.known.insert(key, entry).await
        } else {
            self.unknown.insert(key, entry).await
        }
    }

    async fn invalidate(&self, key: &K) {
        self.known.invalidate(key).await;
        self.unknown.invalidate(key).await;
    }

    fn invalidate_all(&self) {
        self.known.invalidate_all();
        self.unknown.invalidate_all();
    }
}

struct Inner {
    pool: PgPool,
    tokens: Caches<[u8; 32], TokenRecord>,
    datasources: Caches<(String, String), DatasourceRecord>,
    /// Look-ups per client address; `None` when unlimited.
    lookups: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Bumped whenever the listener connects or disconnects.
    generation: AtomicU64,
    listening: AtomicBool,
    /// Bumped on every notification.
    invalidations: AtomicU64,
    /// Notification payload → the `invalidations` value when it last arrived, so a
    /// read that raced a change to *its own* key is not cached.
    recent: Cache<String, u64>,
    /// This instance's ping payload, and when the listener last received it.
    ping: String,
    last_ping: std::sync::Mutex<Instant>,
}

impl Directory {
    /// `capacity` known and `unknown_capacity` unknown entries of each kind are cached.
    pub fn new(
        pool: PgPool,
        capacity: u64,
        unknown_capacity: u64,
        max_staleness: Duration,
        lookups: LookupQuota,
    ) -> Self {
        let lookups = NonZeroU32::new(lookups.per_second).map(|per_second| {
            let burst = NonZeroU32::new(lookups.burst).unwrap_or(per_second);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
        });
        Self {
            inner: Arc::new(Inner {
                pool,
                tokens: Caches::new(capacity, unknown_capacity, max_staleness),
                datasources: Caches::new(capacity, unknown_capacity, max_staleness),
                lookups,
                generation: AtomicU64::new(0),
                listening: AtomicBool::new(false),
                invalidations: AtomicU64::new(0),
                recent: Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(Duration::from_secs(60))
                    .build(),
                ping: format!("ping:{}", uuid::Uuid::new_v4().simple()),
                last_ping: std::sync::Mutex::new(Instant::now()),
            }),
        }
    }

    /// Checks `authorization` (the header's value) for a write to `project`/`datasource`;
    /// `client` is the address whose look-ups are limited.
    pub async fn authorize(
        &self,
        authorization: Option<&str>,
        project: &str,
        datasource: &str,
        client: Option<IpAddr>,
    ) -> Result<Authorized, AuthError> {
        let header =
            authorization.ok_or(AuthError::Unauthenticated("missing Authorization header"))?;
        // The scheme is case-insensitive (RFC 7235).
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(AuthError::Unauthenticated(
                "Authorization must be 'Bearer <token>'",
            ))?;
        if !is_well_formed_token(token) {
            return Err(AuthError::Unauthenticated("malformed token"));
        }
        let record = self
            .token(hash_token(token), client)
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
        let DatasourceRecord { limits, specs } = self
            .datasource(project, datasource, client)
            .await?
            .ok_or(AuthError::NotFound)?;
        Ok(Authorized {
            project: project.to_owned(),
            datasource: datasource.to_owned(),
            project_scope: record.datasource.is_none(),
            limits,
            specs,
        })
    }

    async fn token(
        &self,
        hash: [u8; 32],
        client: Option<IpAddr>,
    ) -> Result<Option<TokenRecord>, AuthError> {
        let pool = self.inner.pool.clone();
        let marker = format!("token:{}", hex::encode(hash));
        self.cached(&self.inner.tokens, hash, marker, "token", client, move |hash| async move {
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
        client: Option<IpAddr>,
    ) -> Result<Option<DatasourceRecord>, AuthError> {
        let pool = self.inner.pool.clone();
        let key = (project.to_owned(), datasource.to_owned());
        let marker = format!("datasource:{project}/{datasource}");
        self.cached(&self.inner.datasources, key, marker, "datasource", client, move |(project, datasource)| async move {
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
            let specs = Arc::new(specs::load(&pool, &project, &datasource).await?);
            Ok(Some(DatasourceRecord { limits, specs }))
        })
        .await
    }

    /// A cached value when it is trustworthy, else a fresh read (if `client` may make
    /// one); a stale value when the database is unreachable; `Unavailable` when there is
    /// neither. `marker` is the notification payload that announces a change to this key.
    async fn cached<K, T, F, Fut>(
        &self,
        cache: &Caches<K, T>,
        key: K,
        marker: String,
        kind: &'static str,
        client: Option<IpAddr>,
        load: F,
    ) -> Result<Option<T>, AuthError>
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
        T: Clone + Send + Sync + 'static,
        F: FnOnce(K) -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, sqlx::Error>>,
    {
        // `listening` first: right after a reconnect, an entry of the old generation
        // must not pass as current.
        let listening = self.inner.listening.load(Ordering::SeqCst);
        let generation = self.inner.generation.load(Ordering::SeqCst);
        let cached = cache.get(&key).await;
        if let Some(entry) = &cached {
            if listening && entry.generation == generation && entry.fetched_at.elapsed() < TRUST_FOR
            {
                return Ok(entry.value.clone());
            }
        }
        self.may_look_up(client)?;
        metrics::counter!(AUTH_CACHE_MISSES_TOTAL, "kind" => kind).increment(1);
        let started = self.inner.invalidations.load(Ordering::SeqCst);
        let timeout = if cached.is_some() {
            LOOKUP_TIMEOUT_WITH_FALLBACK
        } else {
            LOOKUP_TIMEOUT
        };
        let loaded = match tokio::time::timeout(timeout, load(key.clone())).await {
            Ok(result) => result.map_err(LookupError::from),
            Err(_) => Err(LookupError::TimedOut(timeout)),
        };
        match loaded {
            Ok(value) => {
                let entry = Cached {
                    value: value.clone(),
                    generation,
                    fetched_at: Instant::now(),
                };
                cache.insert(key.clone(), entry).await;
                // Insert first, then look for a change to this key that arrived since the
                // read began: the listener records before it evicts, so one side always
                // sees the other and a stale read never stays cached.
                let raced = self
                    .inner
                    .recent
                    .get(&marker)
                    .await
                    .is_some_and(|at| at > started);
                if raced {
                    cache.invalidate(&key).await;
                }
                Ok(value)
            }
            Err(err) if err.is_unreachable() => match cached {
                Some(stale) => {
                    tracing::warn!(error = %err, kind, "tenancy database unreachable; using the cached entry");
                    Ok(stale.value)
                }
                None => Err(AuthError::Unavailable(err)),
            },
            Err(LookupError::Database(err)) => Err(AuthError::Lookup(err)),
            Err(err) => Err(AuthError::Unavailable(err)),
        }
    }

    /// Counts a look-up against `client`'s quota; `TooManyLookups` when it is spent.
    fn may_look_up(&self, client: Option<IpAddr>) -> Result<(), AuthError> {
        let (Some(limiter), Some(client)) = (&self.inner.lookups, client) else {
            return Ok(());
        };
        limiter.check_key(&client).map_err(|not_until| {
            metrics::counter!(LOOKUPS_REFUSED_TOTAL).increment(1);
            AuthError::TooManyLookups {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }
        })
    }

    /// Until `shutdown`, forgets every minute the look-up state of addresses that are back
    /// to a full quota, so the limiter's memory follows the addresses seen recently.
    pub async fn forget_quiet_clients(self, shutdown: CancellationToken) {
        let Some(limiter) = &self.inner.lookups else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            }
        }
    }

    /// Keeps a LISTEN connection open until `shutdown`, dropping cache entries as
    /// changes are announced, and reconnecting (with backoff) when it is lost.
    pub async fn listen_for_changes(self, shutdown: CancellationToken) {
        let inner = &self.inner;
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let mut listener = match connect_listener(&inner.pool).await {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot LISTEN for tenancy changes");
                    self.wait(&shutdown, &mut backoff).await;
                    continue;
                }
            };
            // Anything cached before this point may have missed a notification.
            *inner.last_ping.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            inner.generation.fetch_add(1, Ordering::SeqCst);
            inner.listening.store(true, Ordering::SeqCst);
            backoff = Duration::from_millis(100);
            tracing::info!("listening for tenancy changes");
            loop {
                let last_ping = *inner.last_ping.lock().unwrap_or_else(|e| e.into_inner());
                let deadline = tokio::time::Instant::from_std(last_ping + PING_DEADLINE);
                let received = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(deadline) => {
                        tracing::warn!("tenancy listener missed its pings; replacing it");
                        break;
                    }
                    received = listener.try_recv() => received,
                };
                match received {
                    Ok(Some(notification)) if notification.payload() == inner.ping => {
                        *inner.last_ping.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                    }
                    Ok(Some(notification)) if notification.payload().starts_with("ping:") => {}
                    Ok(Some(notification)) => self.invalidate(notification.payload()).await,
                    Ok(None) | Err(_) => {
                        tracing::warn!("tenancy listener lost its connection; reconnecting");
                        break;
                    }
                }
            }
            inner.listening.store(false, Ordering::SeqCst);
            inner.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Until `shutdown`, sends this instance's ping on the channel every [`PING_EVERY`]
    /// through the pool; the listener checks it comes back.
    pub async fn ping_listener(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let sent = tokio::time::timeout(
                PING_EVERY,
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(&self.inner.ping)
                    .execute(&self.inner.pool),
            )
            .await;
            if !matches!(sent, Ok(Ok(_))) {
                tracing::debug!("tenancy ping could not be sent");
            }
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
        let epoch = self.inner.invalidations.fetch_add(1, Ordering::SeqCst) + 1;
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
            if payload != "reset" {
                tracing::warn!(
                    payload,
                    "unknown tenancy notification; dropping every cached entry"
                );
            }
            self.inner.tokens.invalidate_all();
            self.inner.datasources.invalidate_all();
        }
    }
}
