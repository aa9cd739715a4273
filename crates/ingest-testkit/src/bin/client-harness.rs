//! The client harness: the real pipeline for the client libraries' integration tests in
//! other languages (docs/clients.md, "The client harness's control API").
//!
//! Starts a Kafka of its own (`scripts/stack.sh` in a private data dir, so the tests may
//! stop it), an in-process gateway and worker on it and on the shared PostgreSQL
//! (`DATABASE_URL`), prints `HARNESS_URL=http://127.0.0.1:<port>` and serves the control
//! API there until `POST /shutdown` or SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ingest_testkit::{
    migrated_pool, wait_for_leaders, PrivateStack, Tenant, TestGateway, TestTopics, TestWorker,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

struct Harness {
    stack: PrivateStack,
    topics: TestTopics,
    gateway_url: String,
    pool: PgPool,
    tenants: tokio::sync::Mutex<Vec<Tenant>>,
    shutdown: CancellationToken,
}

type Shared = State<Arc<Harness>>;

fn main() {
    let stack = PrivateStack::new();
    stack.run(&["up", "kafka"]);
    // Before any thread exists: the test kit's helpers read the brokers from here.
    std::env::set_var("KAFKA_BROKERS", stack.kafka_brokers());
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(serve(stack));
}

async fn serve(stack: PrivateStack) {
    let topics = TestTopics::create(2).await;
    // A broker outage is answered 503 after 1 s instead of 5.
    let gateway = TestGateway::spawn(&topics, &[("INGEST_PUBLISH_TIMEOUT_MS", "1000")]).await;
    let worker = TestWorker::spawn(&topics, &[]).await;
    let harness = Arc::new(Harness {
        stack,
        topics,
        gateway_url: gateway.base_url.clone(),
        pool: migrated_pool().await,
        tenants: Default::default(),
        shutdown: CancellationToken::new(),
    });
    let app = Router::new()
        .route("/tenants", post(new_tenant))
        .route("/tenants/{project}/limits/{endpoint}", put(set_limit))
        .route("/tenants/{project}/events", get(events))
        .route("/tenants/{project}/contacts", get(contacts))
        .route("/kafka/stop", post(kafka_stop))
        .route("/kafka/start", post(kafka_start))
        .route("/shutdown", post(shutdown))
        .with_state(harness.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!(
        "HARNESS_URL=http://{}",
        listener.local_addr().expect("address")
    );
    let stop = harness.shutdown.clone();
    tokio::spawn(stop_on_signal(stop.clone()));
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .expect("serve");
    gateway.stop().await;
    worker.stop().await;
    let harness = Arc::into_inner(harness).expect("no request in flight");
    harness.topics.delete().await;
    drop(harness.stack); // stops its Kafka and deletes its data dir
}

async fn stop_on_signal(stop: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    stop.cancel();
}

async fn new_tenant(State(h): Shared) -> Json<Value> {
    let tenant = Tenant::create(&h.pool).await;
    let answer = json!({
        "base_url": h.gateway_url,
        "project": tenant.project,
        "datasource": tenant.datasource,
        "token": tenant.token,
    });
    h.tenants.lock().await.push(tenant);
    Json(answer)
}

async fn set_limit(
    State(h): Shared,
    Path((project, endpoint)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Result<StatusCode, (StatusCode, String)> {
    let rpm = body["requests_per_minute"]
        .as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or((StatusCode::BAD_REQUEST, "requests_per_minute".to_owned()))?;
    let tenants = h.tenants.lock().await;
    let tenant = tenants
        .iter()
        .find(|t| t.project == project)
        .ok_or((StatusCode::NOT_FOUND, "no such tenant".to_owned()))?;
    tenant.set_limit(&tenant.datasource, &endpoint, rpm).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn events(State(h): Shared, Path(project): Path<String>) -> Json<Value> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT event_id, user_id, count(*) FROM events WHERE project = $1
          GROUP BY event_id, user_id ORDER BY event_id",
    )
    .bind(&project)
    .fetch_all(&h.pool)
    .await
    .expect("read events");
    Json(
        rows.into_iter()
            .map(|(event_id, user_id, copies)| {
                json!({"event_id": event_id, "user_id": user_id, "copies": copies})
            })
            .collect(),
    )
}

async fn contacts(State(h): Shared, Path(project): Path<String>) -> Json<Value> {
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT user_id, attributes FROM contacts WHERE project = $1 ORDER BY user_id",
    )
    .bind(&project)
    .fetch_all(&h.pool)
    .await
    .expect("read contacts");
    Json(
        rows.into_iter()
            .map(|(user_id, attributes)| json!({"user_id": user_id, "attributes": attributes}))
            .collect(),
    )
}

async fn kafka_stop(State(h): Shared) -> StatusCode {
    let h = h.clone();
    tokio::task::spawn_blocking(move || h.stack.run(&["down", "kafka"]))
        .await
        .expect("stop kafka");
    StatusCode::NO_CONTENT
}

async fn kafka_start(State(h): Shared) -> StatusCode {
    let h = h.clone();
    tokio::task::spawn_blocking(move || {
        h.stack.run(&["up", "kafka"]);
        let t = &h.topics.topics;
        wait_for_leaders(&[t.contacts.clone(), t.events.clone()], 2);
    })
    .await
    .expect("start kafka");
    // The gateway's producer reconnects on its own; give it a moment to see the leaders.
    tokio::time::sleep(Duration::from_millis(500)).await;
    StatusCode::NO_CONTENT
}

async fn shutdown(State(h): Shared) -> StatusCode {
    h.shutdown.cancel();
    StatusCode::NO_CONTENT
}
