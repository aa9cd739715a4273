//! Every validation rule of the contract, over HTTP against the real stack: one item
//! per rule, all in one batch, each failing alone with the documented field and text.

use ingest_testkit::{migrated_pool, Tenant, TestGateway, TestTopics};
use serde_json::{json, Value};

/// (item, offending field, expected message)
fn contact_rules() -> Vec<(Value, &'static str, &'static str)> {
    let u = |extra: Value| {
        let mut item = json!({"_user_id": "u"});
        item.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        item
    };
    vec![
        (json!({"plan": "x"}), "_user_id", "Required"),
        (json!({"_user_id": 5}), "_user_id", "Must be a string"),
        (json!({"_user_id": ""}), "_user_id", "Invalid format"),
        (json!({"_user_id": "a\u{7}b"}), "_user_id", "Invalid format"),
        (
            json!({"_user_id": "x".repeat(257)}),
            "_user_id",
            "Invalid format",
        ),
        (
            u(json!({"_email": "not-an-email"})),
            "_email",
            "Invalid format",
        ),
        (
            u(json!({"_email": format!("{}@example.com", "a".repeat(250))})),
            "_email",
            "Invalid format",
        ),
        (
            u(json!({"_phone_mobile": "600000000"})),
            "_phone_mobile",
            "Invalid format",
        ),
        (
            u(json!({"_first_name": 3})),
            "_first_name",
            "Must be a string",
        ),
        (
            u(json!({"_last_name": "x".repeat(257)})),
            "_last_name",
            "Too long",
        ),
        (
            u(json!({"_favourite": "x"})),
            "_favourite",
            "Unknown reserved attribute",
        ),
        (u(json!({"Plan": "x"})), "Plan", "Invalid name"),
        (u(json!({"nested": {"a": 1}})), "nested", "Invalid type"),
        (u(json!({"deep": [[1]]})), "deep", "Invalid type"),
        (u(json!({"bio": "x".repeat(1025)})), "bio", "Too long"),
        (u(json!({"tags": vec![1; 101]})), "tags", "Too many values"),
        (json!("a string"), "_item", "Must be an object"),
        (json!([1, 2]), "_item", "Must be an object"),
        (
            u(json!({"blob": vec!["x".repeat(1000); 33]})),
            "_item",
            "Too large",
        ),
    ]
}

fn event_rules() -> Vec<(Value, &'static str, &'static str)> {
    let e = |extra: Value| {
        let mut item = json!({"_user_id": "u", "_event_id": "e", "_event_type": "t"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                item.as_object_mut().unwrap().remove(k);
            } else {
                item[k] = v.clone();
            }
        }
        item
    };
    let future = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
    vec![
        (e(json!({"_user_id": null})), "_user_id", "Required"),
        (e(json!({"_event_id": null})), "_event_id", "Required"),
        (
            e(json!({"_event_id": "x".repeat(129)})),
            "_event_id",
            "Invalid format",
        ),
        (e(json!({"_event_type": null})), "_event_type", "Required"),
        (
            e(json!({"_event_type": 7})),
            "_event_type",
            "Must be a string",
        ),
        (
            e(json!({"_event_date": "yesterday"})),
            "_event_date",
            "Invalid format",
        ),
        (
            e(json!({"_event_date": "2026-11-24T10:00:00"})),
            "_event_date",
            "Invalid format",
        ),
        (
            e(json!({"_event_date": future})),
            "_event_date",
            "Too far in the future",
        ),
        (
            e(json!({"_event_parameters": [1]})),
            "_event_parameters",
            "Must be an object",
        ),
        (
            e(json!({"_event_parameters": {"Bad": 1}})),
            "_event_parameters.Bad",
            "Invalid name",
        ),
        (
            e(json!({"_event_parameters": {"n": {"a": 1}}})),
            "_event_parameters.n",
            "Invalid type",
        ),
        (e(json!({"color": "red"})), "color", "Unknown field"),
        (json!(42), "_item", "Must be an object"),
    ]
}

async fn check(kind: &str, rules: Vec<(Value, &'static str, &'static str)>, valid: Value) {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&migrated_pool().await).await;
    let mut batch: Vec<Value> = rules.iter().map(|(item, _, _)| item.clone()).collect();
    batch.push(valid);
    let response = reqwest::Client::new()
        .post(gateway.stream_url(&tenant.project, "web", kind))
        .bearer_auth(&tenant.token)
        .json(&batch)
        .send()
        .await
        .unwrap();
    // One valid item: the batch is accepted, the rest fail alone.
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let items = body["entity"]["items"].as_array().unwrap();
    assert_eq!(items.len(), rules.len() + 1);
    assert_eq!(body["entity"]["successful"], 1);
    assert_eq!(body["entity"]["failed"], rules.len());
    for (i, (item, field, message)) in rules.iter().enumerate() {
        let outcome = &items[i];
        assert_eq!(outcome["status"], "error", "{kind} rule {i}: {item}");
        let messages = outcome["errors"][field].as_array().unwrap_or_else(|| {
            panic!(
                "{kind} rule {i}: no error for {field}, got {}",
                outcome["errors"]
            )
        });
        assert!(
            messages.iter().any(|m| m == message),
            "{kind} rule {i}: {field} should say {message:?}, got {messages:?}"
        );
    }
    assert_eq!(items[rules.len()]["status"], "success");
    gateway.stop().await;
    topics.delete().await;
}

#[tokio::test]
async fn every_contact_rule_fails_its_item_alone() {
    check(
        "contacts",
        contact_rules(),
        json!({"_user_id": "ok", "_email": "ada@example.com", "_phone_mobile": "+34600000000",
               "_first_name": "Ada", "plan": "pro", "score": 9.5, "vip": true, "tags": ["a", 1], "gone": null}),
    )
    .await;
}

#[tokio::test]
async fn every_event_rule_fails_its_item_alone() {
    check(
        "events",
        event_rules(),
        json!({"_user_id": "ok", "_event_id": "ok", "_event_type": "t",
               "_event_date": "2026-11-24T10:00:00+01:00", "_event_parameters": {"n": [1, "a"], "x": null}}),
    )
    .await;
}
