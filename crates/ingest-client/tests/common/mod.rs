//! What the integration tests share: a client for a tenant, and reading what the worker
//! stored in PostgreSQL.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeMap;
use std::time::Duration;

use ingest_client::{Client, ClientBuilder};
use ingest_testkit::{wait_for, Tenant};
use serde_json::Value;
use sqlx::PgPool;

/// A builder for `tenant`'s datasource on the gateway at `base_url`.
pub fn builder(base_url: &str, tenant: &Tenant) -> ClientBuilder {
    Client::builder(base_url, &tenant.project, &tenant.datasource, &tenant.token)
}

/// Every stored event of the project: event id → number of rows.
pub async fn stored_events(pool: &PgPool, project: &str) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "SELECT event_id, count(*) FROM events WHERE project = $1 GROUP BY event_id",
    )
    .bind(project)
    .fetch_all(pool)
    .await
    .expect("read events")
    .into_iter()
    .collect()
}

/// Every stored contact of the project: user id → attributes.
pub async fn stored_contacts(pool: &PgPool, project: &str) -> BTreeMap<String, Value> {
    sqlx::query_as::<_, (String, Value)>(
        "SELECT user_id, attributes FROM contacts WHERE project = $1",
    )
    .bind(project)
    .fetch_all(pool)
    .await
    .expect("read contacts")
    .into_iter()
    .collect()
}

/// Waits until the project has `count` distinct stored events; returns them.
pub async fn wait_for_events(pool: &PgPool, project: &str, count: usize) -> BTreeMap<String, i64> {
    wait_for(
        &format!("{count} events stored"),
        Duration::from_secs(60),
        || async {
            let events = stored_events(pool, project).await;
            (events.len() >= count).then_some(events)
        },
    )
    .await
}
