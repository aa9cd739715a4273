//! What every handler and layer shares: [`AppState`], built once by
//! [`Application::build`](crate::Application::build).

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::budget::BodyBudget;
use crate::config::Config;
use crate::directory::Directory;
use crate::publish::Publisher;
use crate::ratelimit::RateLimiter;
use crate::sync::SyncWaiters;

/// What every handler shares. Cloned for every request (axum's `State` extractor and each
/// layer hold a copy), so it is one `Arc`: a clone is one atomic increment, not one per
/// field (the producer, the caches, the pool, ...).
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    pub fn new(shared: SharedState) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

pub struct SharedState {
    pub config: Arc<Config>,
    pub publisher: Publisher,
    pub directory: Directory,
    pub limiter: RateLimiter,
    pub sync: SyncWaiters,
    pub budget: BodyBudget,
    pub metrics: PrometheusHandle,
    /// The per-request metrics' handles, resolved once.
    pub counters: crate::metrics::Handles,
    /// The database pool the directory, the limiter and `?_sync` use too; the erasure
    /// status is read through it.
    pub db: PgPool,
}
