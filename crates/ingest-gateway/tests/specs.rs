//! Specs: declared per datasource, served by the specs endpoints, enforced by validation.

use std::time::Duration;

use ingest_testkit::{migrated_pool, wait_for, Tenant, TestGateway, TestTopics};
use reqwest::Client;
use serde_json::{json, Value};

async fn get(client: &Client, url: String, token: &str) -> (u16, Value) {
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn specs_are_served_and_enforced() {
    let pool = migrated_pool().await;
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let tenant = Tenant::create(&pool).await;
    let client = Client::new();
    let base = format!(
        "{}/v1/project/{}/datasource/web/stream",
        gateway.base_url, tenant.project
    );

    // Nothing declared: the reserved attributes only, no event types, any type accepted.
    let (status, body) = get(&client, format!("{base}/specs/attributes"), &tenant.token).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "_user_id",
            "_email",
            "_phone_mobile",
            "_first_name",
            "_last_name"
        ]
    );
    let (_, body) = get(&client, format!("{base}/specs/events"), &tenant.token).await;
    assert_eq!(body, json!({"event_types": []}));

    tenant.declare_attribute("plan", "string", None).await;
    tenant.declare_attribute("tags", "string", Some(3)).await;
    tenant.declare_event_type("purchase").await;
    tenant
        .declare_parameter("purchase", "amount", "number", true)
        .await;
    tenant
        .declare_parameter("purchase", "coupon", "string", false)
        .await;

    // Declarations reach the running gateway without a restart.
    let body = wait_for("the declared specs", Duration::from_secs(5), || async {
        let (_, body) = get(&client, format!("{base}/specs/attributes"), &tenant.token).await;
        (body["attributes"].as_array().unwrap().len() == 7).then_some(body)
    })
    .await;
    assert_eq!(
        body["attributes"][5],
        json!({"name": "plan", "data_type": "string", "multivalue": false, "max_values": null, "reserved": false, "required": false})
    );
    assert_eq!(body["attributes"][6]["max_values"], 3);
    let (_, body) = get(&client, format!("{base}/specs/events"), &tenant.token).await;
    assert_eq!(
        body,
        json!({"event_types": [{"name": "purchase", "parameters": 2}]})
    );
    let (status, body) = get(
        &client,
        format!("{base}/specs/event-parameters/purchase"),
        &tenant.token,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"event_type": "purchase", "parameters": [
            {"name": "amount", "data_type": "number", "multivalue": false, "max_values": null, "required": true},
            {"name": "coupon", "data_type": "string", "multivalue": false, "max_values": null, "required": false},
        ]})
    );
    let (status, body) = get(
        &client,
        format!("{base}/specs/event-parameters/refund"),
        &tenant.token,
    )
    .await;
    assert_eq!(status, 404);
    assert!(body["message"].is_string());

    // Validation follows the specs.
    let response = client
        .post(format!("{base}/contacts"))
        .bearer_auth(&tenant.token)
        .json(&json!([
            {"_user_id": "ok", "plan": "pro", "tags": ["a", "b"]},
            {"_user_id": "bad", "plan": 3, "tags": ["a", "b", "c", "d"]},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["entity"]["items"][0]["status"], "success");
    assert_eq!(
        body["entity"]["items"][1]["errors"],
        json!({"plan": ["Invalid type"], "tags": ["Too many values"]})
    );
    let response = client
        .post(format!("{base}/events"))
        .bearer_auth(&tenant.token)
        .json(&json!([
            {"_user_id": "u", "_event_id": "1", "_event_type": "purchase", "_event_parameters": {"amount": 9.5}},
            {"_user_id": "u", "_event_id": "2", "_event_type": "purchase", "_event_parameters": {"coupon": "X"}},
            {"_user_id": "u", "_event_id": "3", "_event_type": "refund"},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let items = &body["entity"]["items"];
    assert_eq!(items[0]["status"], "success");
    assert_eq!(
        items[1]["errors"],
        json!({"_event_parameters.amount": ["Required"]})
    );
    assert_eq!(
        items[2]["errors"]["_event_type"].as_array().unwrap().len(),
        1
    );
    assert_eq!(items[2]["_event_id"], "3");

    gateway.stop().await;
    topics.delete().await;
}
