//! "Accepted means stored", over HTTP against the real stack: what PostgreSQL cannot hold
//! unchanged is refused per item with the field and text documented in docs/API.md, and
//! what is accepted lands in PostgreSQL with the value that was sent (numbers exact).

use std::time::Duration;

use ingest_testkit::{migrated_pool, wait_for, Tenant, TestGateway, TestTopics, TestWorker};
use serde_json::{json, Value};

/// The batch answer's `errors` of each item, in order (`None` for a success).
fn item_errors(answer: &Value) -> Vec<Option<Value>> {
    answer["entity"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r.get("errors").cloned())
        .collect()
}

async fn post(gateway: &TestGateway, tenant: &Tenant, endpoint: &str, body: String) -> Value {
    let response = reqwest::Client::new()
        .post(gateway.stream_url(&tenant.project, &tenant.datasource, endpoint))
        .bearer_auth(&tenant.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        [202, 422].contains(&response.status().as_u16()),
        "{}",
        response.status()
    );
    response.json().await.unwrap()
}

#[tokio::test]
async fn unstorable_items_fail_alone_with_their_field() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&migrated_pool().await).await;

    // Raw text: duplicate keys and numbers must reach the gateway exactly as written.
    let contacts = [
        (r#"{"_user_id":"ok"}"#, None),
        (
            r#"{"_user_id":"u","plan":"a\u0000b"}"#,
            Some(("plan", "Invalid format")),
        ),
        (
            r#"{"_user_id":"u","tags":["x","\u0000"]}"#,
            Some(("tags", "Invalid format")),
        ),
        (
            r#"{"_user_id":"u","_first_name":"A\u0000"}"#,
            Some(("_first_name", "Invalid format")),
        ),
        (
            r#"{"_user_id":"u","_last_name":"\u0000"}"#,
            Some(("_last_name", "Invalid format")),
        ),
        (
            r#"{"_user_id":"a","_user_id":"b"}"#,
            Some(("_item", "Duplicate key")),
        ),
        (
            r#"{"_user_id":"u","n":1e200000}"#,
            Some(("n", "Invalid format")),
        ),
        (
            r#"{"_user_id":"u","n":1e-20000}"#,
            Some(("n", "Invalid format")),
        ),
    ];
    let body = format!(
        "[{}]",
        contacts
            .iter()
            .map(|(t, _)| *t)
            .collect::<Vec<_>>()
            .join(",")
    );
    let answer = post(&gateway, &tenant, "contacts", body).await;
    for ((text, expected), errors) in contacts.iter().zip(item_errors(&answer)) {
        let expected = expected.map(|(field, message)| json!({ field: [message] }));
        assert_eq!(errors, expected, "{text}");
    }

    let e = |extra: &str| format!(r#"{{"_user_id":"u","_event_id":"e","_event_type":"t"{extra}}}"#);
    let events = [
        (e(""), None),
        (
            r#"{"_user_id":"u","_event_id":"e","_event_type":"a\u0000b"}"#.to_owned(),
            Some(("_event_type", "Invalid format")),
        ),
        (
            e(r#","_event_parameters":{"p":"\u0000"}"#),
            Some(("_event_parameters.p", "Invalid format")),
        ),
        (
            e(r#","_event_date":"0000-01-01T00:00:00Z""#),
            Some(("_event_date", "Invalid format")),
        ),
        (
            e(r#","_event_date":"0001-01-01T00:00:00+01:00""#),
            Some(("_event_date", "Invalid format")),
        ),
        (
            e(r#","_event_parameters":{"p":1,"p":2}"#),
            Some(("_item", "Duplicate key")),
        ),
    ];
    let body = format!(
        "[{}]",
        events
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let answer = post(&gateway, &tenant, "events", body).await;
    for ((text, expected), errors) in events.iter().zip(item_errors(&answer)) {
        let expected = expected.map(|(field, message)| json!({ field: [message] }));
        assert_eq!(errors, expected, "{text}");
    }
    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn accepted_numbers_and_dates_are_stored_exactly_as_sent() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let worker = TestWorker::spawn(&topics, &[]).await;
    let pool = migrated_pool().await;
    let tenant = Tenant::create(&pool).await;

    // Numbers an f64 cannot hold, sent as text; PostgreSQL compares them as decimals.
    let numbers = [
        "123456789012345678901234567890",
        "18446744073709551616",
        "-9223372036854775809",
        "1e-400",
        "0.1000000000000000000000000000001",
        "1e400",
    ];
    let attributes = numbers
        .iter()
        .enumerate()
        .map(|(i, n)| format!(r#""n{i}":{n}"#))
        .collect::<Vec<_>>()
        .join(",");
    let contact = format!(r#"{{"_user_id":"exact",{attributes},"s":"a\u0001b\"c\\d"}}"#);
    let event = format!(
        r#"{{"_user_id":"exact","_event_id":"e1","_event_type":"t\u0007","_event_date":"0001-01-01T00:00:00.1234567Z","_event_parameters":{{{attributes}}}}}"#
    );
    let client = reqwest::Client::new();
    for (endpoint, item) in [("contacts", &contact), ("events", &event)] {
        let response = client
            .post(format!(
                "{}?_sync",
                gateway.stream_url(&tenant.project, &tenant.datasource, endpoint)
            ))
            .bearer_auth(&tenant.token)
            .body(format!("[{item}]"))
            .send()
            .await
            .unwrap();
        // 200: committed in PostgreSQL (before, such items were dead-lettered or changed).
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let expected_attributes = format!(r#"{{{attributes},"s":"a\u0001b\"c\\d"}}"#);
    let (stored_attributes, stored_parameters, event_type, date): (bool, bool, String, String) =
        wait_for("the rows", Duration::from_secs(20), || async {
            sqlx::query_as(
                "SELECT c.attributes = $3::jsonb, e.parameters = $4::jsonb, e.event_type,
                        to_char(e.event_date AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
                   FROM contacts c JOIN events e USING (project, datasource, user_id)
                  WHERE c.project = $1 AND c.datasource = $2 AND c.user_id = 'exact'",
            )
            .bind(&tenant.project)
            .bind(&tenant.datasource)
            .bind(&expected_attributes)
            .bind(format!("{{{attributes}}}"))
            .fetch_optional(&pool)
            .await
            .unwrap()
        })
        .await;
    assert!(
        stored_attributes,
        "contact attributes differ from those sent"
    );
    assert!(stored_parameters, "event parameters differ from those sent");
    assert_eq!(event_type, "t\u{7}");
    // Truncated to the microsecond, in UTC.
    assert_eq!(date, "0001-01-01 00:00:00.123456");
    worker.stop().await;
    gateway.stop().await;
    topics.delete().await;
}
