//! The client against the real pipeline: a gateway and a worker of the test's own on
//! the shared Kafka and PostgreSQL (`scripts/stack.sh up`), one tenant per test.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{builder, stored_contacts, stored_events, wait_for_events};
use ingest_client::{CloseReport, Outcome, Status};
use ingest_testkit::{
    migrated_pool, wait_for, wait_for_fresh_window, Tenant, TestGateway, TestTopics, TestWorker,
};
use serde_json::{json, Value};
use sqlx::PgPool;

/// A gateway and a worker on topics of the test's own.
struct Pipeline {
    topics: TestTopics,
    gateway: TestGateway,
    worker: TestWorker,
    pool: PgPool,
}

impl Pipeline {
    async fn start() -> Self {
        let topics = TestTopics::create(2).await;
        let gateway = TestGateway::spawn(&topics, &[]).await;
        let worker = TestWorker::spawn(&topics, &[]).await;
        Self {
            topics,
            gateway,
            worker,
            pool: migrated_pool().await,
        }
    }

    async fn stop(self) {
        self.gateway.stop().await;
        self.worker.stop().await;
        self.topics.delete().await;
    }
}

fn errors(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(field, message)| (field.to_string(), vec![message.to_string()]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failures_are_reported_per_item_and_the_rest_is_stored() {
    let pipeline = Pipeline::start().await;
    let tenant = Tenant::create(&pipeline.pool).await;
    let client = builder(&pipeline.gateway.base_url, &tenant)
        .build()
        .unwrap();

    let contacts = [
        client
            .upsert(json!({"_user_id": "ann", "_email": "ann@example.com"}))
            .await,
        client
            .upsert(json!({"_user_id": "bob", "_email": "not-an-email"}))
            .await,
        client.upsert(json!({"_email": "nobody@example.com"})).await,
        client
            .upsert(json!({"_user_id": "cyd", "plan": "pro"}))
            .await,
    ];
    let events = [
        client
            .track(json!({"_user_id": "ann", "_event_id": "ev-1", "_event_type": "view"}))
            .await,
        client
            .track(json!({"_event_id": "ev-2", "_event_type": "view"}))
            .await,
        client
            .track(json!({"_user_id": "cyd", "_event_id": "ev-3", "_event_type": "buy"}))
            .await,
    ];
    client.flush().await;
    let mut outcomes: Vec<Outcome> = Vec::new();
    for handle in contacts.into_iter().chain(events) {
        outcomes.push(handle.await);
    }
    let statuses: Vec<&Status> = outcomes.iter().map(|o| &o.status).collect();
    let accepted = Status::Accepted {
        committed: false,
        attempts: 1,
    };
    let rejected = |pairs: &[(&str, &str)]| Status::Rejected {
        errors: errors(pairs),
        http_status: Some(202),
        attempts: 1,
    };
    assert_eq!(
        statuses,
        [
            &accepted,
            &rejected(&[("_email", "Invalid format")]),
            &rejected(&[("_user_id", "Required")]),
            &accepted,
            &accepted,
            &rejected(&[("_user_id", "Required")]),
            &accepted,
        ]
    );
    // The item as enqueued comes back with its outcome.
    assert_eq!(
        outcomes[1].item,
        json!({"_user_id": "bob", "_email": "not-an-email"})
    );

    let project = &tenant.project;
    let stored = wait_for_events(&pipeline.pool, project, 2).await;
    assert_eq!(
        stored,
        BTreeMap::from([("ev-1".into(), 1), ("ev-3".into(), 1)])
    );
    let contacts = wait_for("two contacts stored", Duration::from_secs(30), || async {
        let contacts = stored_contacts(&pipeline.pool, project).await;
        (contacts.len() >= 2).then_some(contacts)
    })
    .await;
    assert_eq!(contacts.keys().collect::<Vec<_>>(), ["ann", "cyd"]);
    let stats = client.stats();
    assert_eq!((stats.accepted, stats.rejected, stats.failed), (4, 3, 0));
    assert_eq!(stats.requests, 2);

    client.close(Duration::from_secs(5)).await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_using_the_rate_limit_headers() {
    let pipeline = Pipeline::start().await;
    let tenant = Tenant::create(&pipeline.pool).await;
    tenant.set_limit("web", "events", 2).await;
    // The three first attempts fall in one one-minute window.
    wait_for_fresh_window(Duration::from_secs(10)).await;
    let window_ends = {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        now - now % 60 + 60
    };
    let client = builder(&pipeline.gateway.base_url, &tenant)
        .max_batch_items(5)
        .build()
        .unwrap();
    let mut handles = Vec::new();
    for n in 0..15 {
        let event = json!({"_user_id": format!("u{n}"), "_event_type": "view"});
        handles.push(client.track(event).await);
    }
    client.flush().await;
    let done_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut attempts = Vec::new();
    for handle in handles {
        let outcome = handle.await;
        assert!(outcome.is_accepted(), "{outcome:?}");
        attempts.push(outcome.attempts());
    }
    // Two batches went through; the third met the 429 and was sent again once, after
    // the window's reset (X-RateLimit-Reset), not before.
    attempts.sort();
    assert_eq!(attempts, [[1; 10].as_slice(), &[2; 5]].concat());
    assert!(
        done_at.as_secs() >= window_ends,
        "accepted at {done_at:?}, before the window ended at {window_ends}"
    );
    let stats = client.stats();
    assert_eq!((stats.accepted, stats.failed, stats.retries), (15, 0, 1));
    assert_eq!(stats.requests, 4);
    wait_for_events(&pipeline.pool, &tenant.project, 15).await;

    client.close(Duration::from_secs(5)).await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delivers_everything_queued() {
    let pipeline = Pipeline::start().await;
    let tenant = Tenant::create(&pipeline.pool).await;
    // A long interval: only close() sends the last partial batches.
    let client = builder(&pipeline.gateway.base_url, &tenant)
        .flush_interval(Duration::from_secs(600))
        .build()
        .unwrap();
    let mut handles = Vec::new();
    for n in 0..1000 {
        let event_type = ["view", "cart", "buy"][n % 3];
        let event = json!({
            "_user_id": format!("user-{}", n % 37),
            "_event_type": event_type,
            "_event_parameters": {"n": n, "path": format!("/item/{n}")},
        });
        handles.push(client.track(event).await);
        if n % 10 == 3 {
            let contact = json!({"_user_id": format!("user-{n}"), "visits": n});
            handles.push(client.upsert(contact).await);
        }
    }
    let report = client.close(Duration::from_secs(60)).await;
    assert_eq!(
        report,
        CloseReport {
            timed_out: false,
            abandoned: 0
        }
    );
    let mut ids = Vec::new();
    for handle in handles {
        let outcome = handle.await;
        assert!(outcome.is_accepted(), "{outcome:?}");
        if let Some(id) = outcome.item.get("_event_id") {
            ids.push(id.as_str().unwrap().to_owned());
        }
    }
    let stats = client.stats();
    assert_eq!(
        (stats.enqueued, stats.accepted, stats.queued),
        (1100, 1100, 0)
    );

    let stored = wait_for_events(&pipeline.pool, &tenant.project, 1000).await;
    ids.sort();
    assert_eq!(stored.keys().cloned().collect::<Vec<_>>(), ids);
    assert!(stored.values().all(|&copies| copies == 1));
    let contacts = wait_for("100 contacts stored", Duration::from_secs(30), || async {
        let contacts = stored_contacts(&pipeline.pool, &tenant.project).await;
        (contacts.len() >= 100).then_some(contacts)
    })
    .await;
    assert_eq!(contacts["user-993"], json!({"visits": 993}));

    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_outcomes_are_committed_and_the_rows_are_there() {
    let pipeline = Pipeline::start().await;
    let tenant = Tenant::create(&pipeline.pool).await;
    let client = builder(&pipeline.gateway.base_url, &tenant)
        .sync(true)
        .build()
        .unwrap();
    let mut handles = Vec::new();
    for n in 0..5 {
        let event =
            json!({"_user_id": "u", "_event_id": format!("sync-{n}"), "_event_type": "view"});
        handles.push(client.track(event).await);
    }
    handles.push(client.upsert(json!({"_user_id": "u", "plan": "pro"})).await);
    client.flush().await;
    for handle in handles {
        let outcome = handle.await;
        assert_eq!(
            outcome.status,
            Status::Accepted {
                committed: true,
                attempts: 1
            },
            "{outcome:?}"
        );
    }
    // Committed means in the database already: no waiting.
    assert_eq!(
        stored_events(&pipeline.pool, &tenant.project).await.len(),
        5
    );
    assert_eq!(
        stored_contacts(&pipeline.pool, &tenant.project).await["u"],
        json!({"plan": "pro"})
    );

    client.close(Duration::from_secs(5)).await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_delete_upsert_of_a_user_ends_with_the_last_upsert() {
    let pipeline = Pipeline::start().await;
    let tenant = Tenant::create(&pipeline.pool).await;
    // Small batches, so that the writes of one user spread over many requests.
    let client = builder(&pipeline.gateway.base_url, &tenant)
        .max_batch_items(3)
        .build()
        .unwrap();
    let users: Vec<String> = (0..20).map(|n| format!("user {n}/é")).collect();
    let mut handles = Vec::new();
    for user in &users {
        handles.push(
            client
                .upsert(json!({"_user_id": user, "plan": "a", "old": true}))
                .await,
        );
    }
    for user in &users {
        handles.push(client.delete(user.clone()).await);
    }
    for user in &users {
        handles.push(client.upsert(json!({"_user_id": user, "plan": "c"})).await);
    }
    client.flush().await;
    for handle in handles {
        let outcome = handle.await;
        assert!(outcome.is_accepted(), "{outcome:?}");
    }
    let expected: BTreeMap<String, Value> = users
        .iter()
        .map(|user| (user.clone(), json!({"plan": "c"})))
        .collect();
    wait_for(
        "every user ends with the last upsert",
        Duration::from_secs(30),
        || async {
            let contacts = stored_contacts(&pipeline.pool, &tenant.project).await;
            (contacts == expected).then_some(())
        },
    )
    .await;

    client.close(Duration::from_secs(5)).await;
    pipeline.stop().await;
}
