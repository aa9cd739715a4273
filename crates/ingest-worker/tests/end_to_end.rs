//! End to end on the real stack: HTTP batch -> gateway -> Kafka -> worker -> PostgreSQL.

use std::time::Duration;

use ingest_testkit::{migrated_pool, wait_for, Tenant, TestGateway, TestTopics, TestWorker};
use serde_json::{json, Value};

#[tokio::test]
async fn a_posted_batch_lands_in_postgres_once_however_often_it_is_sent() {
    let pool = migrated_pool().await;
    let topics = TestTopics::create(4).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let worker = TestWorker::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&pool).await;
    let project = tenant.project.clone();
    let client = reqwest::Client::new();

    let contacts = json!([
        {"_user_id": "USER-1", "_email": "one@example.com", "plan": "free"},
        {"_user_id": "USER-2", "_first_name": "Ada"},
        {"_email": "missing-user-id@example.com"},
    ]);
    let events: Value = (0..20)
        .map(|i| {
            json!({"_user_id": format!("USER-{}", i % 2 + 1), "_event_id": format!("EV-{i}"),
                        "_event_type": "page_view", "_event_parameters": {"n": i}})
        })
        .collect();
    // A client retrying the same batches (e.g. after a timeout) must not create duplicates.
    for _ in 0..3 {
        let response = client
            .post(gateway.stream_url(&project, "web", "contacts"))
            .bearer_auth(&tenant.token)
            .json(&contacts)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            (
                answer["entity"]["successful"].as_u64(),
                answer["entity"]["failed"].as_u64()
            ),
            (Some(2), Some(1))
        );
        let response = client
            .post(gateway.stream_url(&project, "web", "events"))
            .bearer_auth(&tenant.token)
            .json(&events)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    // Then a later update for USER-1 that removes `plan`.
    let response = client
        .post(gateway.stream_url(&project, "web", "contacts"))
        .bearer_auth(&tenant.token)
        .json(&json!([{"_user_id": "USER-1", "plan": null, "score": 7}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    let rows: Vec<(String, Value)> = wait_for("contacts merged in postgres", Duration::from_secs(60), || async {
        let rows: Vec<(String, Value)> = sqlx::query_as(
            "SELECT user_id, attributes FROM contacts WHERE project = $1 AND datasource = 'web' ORDER BY user_id",
        )
        .bind(&project)
        .fetch_all(&pool)
        .await
        .unwrap();
        (rows.len() == 2 && rows[0].1.get("score").is_some()).then_some(rows)
    })
    .await;
    assert_eq!(
        rows[0],
        (
            "USER-1".to_owned(),
            json!({"_email": "one@example.com", "score": 7})
        )
    );
    assert_eq!(
        rows[1],
        ("USER-2".to_owned(), json!({"_first_name": "Ada"}))
    );

    let event_count: i64 = wait_for("20 events in postgres", Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE project = $1")
            .bind(&project)
            .fetch_one(&pool)
            .await
            .unwrap();
        (n >= 20).then_some(n)
    })
    .await;
    // Give any straggling duplicate time to land before asserting there is none.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (total, distinct, param_sum): (i64, i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT event_id), sum((parameters->>'n')::bigint)::bigint FROM events WHERE project = $1",
    )
    .bind(&project)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (event_count, total, distinct, param_sum),
        (20, 20, 20, Some((0..20).sum()))
    );
    let user_of_ev3: String =
        sqlx::query_scalar("SELECT user_id FROM events WHERE project = $1 AND event_id = 'EV-3'")
            .bind(&project)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(user_of_ev3, "USER-2");

    worker.stop().await;
    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn upsert_delete_upsert_across_requests_applies_in_order() {
    let pool = migrated_pool().await;
    // One partition: the marker written last proves everything before it was applied.
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let worker = TestWorker::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&pool).await;
    let client = reqwest::Client::new();
    let contacts = gateway.stream_url(&tenant.project, "web", "contacts");
    let upsert = |body: Value| {
        client
            .post(&contacts)
            .bearer_auth(&tenant.token)
            .json(&body)
            .send()
    };

    assert_eq!(
        upsert(json!([{"_user_id": "U", "a": 1, "b": 2}]))
            .await
            .unwrap()
            .status(),
        202
    );
    let deleted = client
        .delete(format!("{contacts}/U"))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    assert_eq!(
        upsert(json!([{"_user_id": "U", "c": 3}]))
            .await
            .unwrap()
            .status(),
        202
    );
    // A user deleted last stays deleted.
    assert_eq!(
        upsert(json!([{"_user_id": "GONE", "x": 1}]))
            .await
            .unwrap()
            .status(),
        202
    );
    let deleted = client
        .delete(format!("{contacts}/GONE"))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    // A marker written after everything else: once it is in, so is all of the above.
    assert_eq!(
        upsert(json!([{"_user_id": "MARKER"}]))
            .await
            .unwrap()
            .status(),
        202
    );

    wait_for("the marker contact", Duration::from_secs(60), || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT 1 FROM contacts WHERE project = $1 AND user_id = 'MARKER'",
        )
        .bind(&tenant.project)
        .fetch_optional(&pool)
        .await
        .unwrap()
    })
    .await;
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT user_id, attributes FROM contacts WHERE project = $1 AND user_id IN ('U', 'GONE') ORDER BY user_id",
    )
    .bind(&tenant.project)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows, vec![("U".to_owned(), json!({"c": 3}))]);

    worker.stop().await;
    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn sync_answers_200_once_the_rows_are_committed_and_202_after_the_wait() {
    let pool = migrated_pool().await;
    let topics = TestTopics::create(2).await;
    let gateway = TestGateway::spawn(&topics, &[("INGEST_SYNC_WAIT_MS", "1500")]).await;
    let tenant = Tenant::create(&pool).await;
    let client = reqwest::Client::new();
    let events = gateway.stream_url(&tenant.project, "web", "events");
    let batch = |prefix: &str| -> Value {
        (0..30)
            .map(|i| json!({"_user_id": format!("u{i}"), "_event_id": format!("{prefix}-{i}"), "_event_type": "t"}))
            .chain([json!({"_user_id": "bad"})])
            .collect()
    };
    let count = |prefix: &'static str| {
        let pool = pool.clone();
        let project = tenant.project.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM events WHERE project = $1 AND event_id LIKE $2",
            )
            .bind(project)
            .bind(format!("{prefix}-%"))
            .fetch_one(&pool)
            .await
            .unwrap();
            n
        }
    };

    // No worker yet: nothing can commit, so the answer is 202 after the wait.
    let started = std::time::Instant::now();
    let response = client
        .post(format!("{events}?_sync"))
        .bearer_auth(&tenant.token)
        .json(&batch("early"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );

    let worker = TestWorker::spawn(&topics, &[]).await;
    // Let the worker catch up on the early batch, then a synced request sees its rows at once.
    wait_for("the early batch", Duration::from_secs(60), || async {
        (count("early").await == 30).then_some(())
    })
    .await;
    let response = client
        .post(format!("{events}?_sync"))
        .bearer_auth(&tenant.token)
        .json(&batch("synced"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (
            body["entity"]["successful"].as_u64(),
            body["entity"]["failed"].as_u64()
        ),
        (Some(30), Some(1))
    );
    assert_eq!(
        count("synced").await,
        30,
        "200 means the accepted items are already committed"
    );

    // `_sync=false` is the ordinary 202.
    let response = client
        .post(format!("{events}?_sync=false"))
        .bearer_auth(&tenant.token)
        .json(&batch("plain"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    worker.stop().await;
    gateway.stop().await;
    topics.delete().await;
}
