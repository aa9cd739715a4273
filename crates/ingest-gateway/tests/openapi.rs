//! `GET /openapi.json` describes the API the server really serves. The document is also
//! written to `target/openapi.json`, where `scripts/test.sh` validates it with
//! openapi-spec-validator (OpenAPI 3.1).

use ingest_testkit::{TestGateway, TestTopics};
use serde_json::Value;

#[tokio::test]
async fn the_openapi_document_covers_every_route() {
    let topics = TestTopics::create(1).await;
    let gateway = TestGateway::spawn(&topics, &[]).await;
    let response = reqwest::get(format!("{}/openapi.json", gateway.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let doc: Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );

    let base = "/v1/project/{project}/datasource/{datasource}/stream";
    let expected = [
        (base.to_owned(), "get"),
        (format!("{base}/contacts"), "post"),
        (format!("{base}/events"), "post"),
        (format!("{base}/contacts/{{user_id}}"), "delete"),
        (format!("{base}/specs/attributes"), "get"),
        (format!("{base}/specs/events"), "get"),
        (
            format!("{base}/specs/event-parameters/{{event_type}}"),
            "get",
        ),
    ];
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in &expected {
        assert!(
            paths.get(path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} undocumented"
        );
    }
    assert_eq!(
        paths.len(),
        expected.len(),
        "documented paths: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    // The batch answer schema is the real one (generated from ingest-types).
    let outcome = &doc["components"]["schemas"]["ItemOutcome"]["properties"];
    assert!(
        outcome.get("_user_id").is_some() && outcome.get("errors").is_some(),
        "{outcome}"
    );
    let contacts = &paths[&format!("{base}/contacts")]["post"]["responses"];
    for status in [
        "202", "400", "401", "404", "413", "422", "429", "500", "503",
    ] {
        assert!(
            contacts.get(status).is_some(),
            "POST contacts lacks {status}"
        );
    }

    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/openapi.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();

    gateway.stop().await;
    topics.delete().await;
}
