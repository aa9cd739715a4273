//! `GET /openapi.json` describes the API the server really serves. The document is also
//! written to `target/openapi.json`, where `scripts/test.sh` validates it with
//! openapi-spec-validator (OpenAPI 3.1); `scripts/fuzz-api.sh` then checks the running
//! gateway against it with schemathesis.

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
        (format!("{base}/users/{{user_id}}"), "delete"),
        (format!("{base}/users/{{user_id}}/erasure"), "get"),
        (format!("{base}/specs/attributes"), "get"),
        (format!("{base}/specs/events"), "get"),
        (
            format!("{base}/specs/event-parameters/{{event_type}}"),
            "get",
        ),
    ];
    // The public API only: the operations endpoints (`/healthz`, `/readyz`, `/metrics`) are
    // not in it (the exact count below).
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
        "200", "202", "400", "401", "404", "405", "408", "413", "422", "429", "500", "503",
    ] {
        assert!(
            contacts.get(status).is_some(),
            "POST contacts lacks {status}"
        );
    }
    // The erasure endpoints: every answer documented, the 503 of the status read its own.
    let erase = &paths[&format!("{base}/users/{{user_id}}")]["delete"]["responses"];
    let status = &paths[&format!("{base}/users/{{user_id}}/erasure")]["get"]["responses"];
    for (responses, statuses) in [
        (
            erase,
            &[
                "200", "202", "400", "401", "404", "405", "422", "429", "500", "503",
            ][..],
        ),
        (
            status,
            &[
                "200", "400", "401", "404", "405", "422", "429", "500", "503",
            ][..],
        ),
    ] {
        for code in statuses {
            assert!(responses.get(*code).is_some(), "erasure lacks {code}");
        }
    }
    assert_eq!(
        erase["202"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErasureAccepted"
    );
    assert_eq!(
        erase["422"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/BatchAnswer"
    );
    assert!(
        status["503"]["description"]
            .as_str()
            .unwrap()
            .contains("database cannot be read"),
        "{}",
        status["503"]
    );
    assert_eq!(status["503"]["headers"]["Retry-After"]["required"], true);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["ErasureState"]["enum"],
        serde_json::json!(["none", "in_progress", "completed"])
    );
    assert_eq!(
        schemas["ErasureStatus"]["required"],
        serde_json::json!([
            "user_id",
            "status",
            "accepted_at",
            "completed_at",
            "events_erased"
        ])
    );
    // Headers a checker can hold the answers to.
    assert_eq!(
        contacts["202"]["headers"]["X-RateLimit-Remaining"]["required"],
        true
    );
    assert_eq!(
        contacts["401"]["headers"]["WWW-Authenticate"]["required"],
        true
    );
    assert_eq!(contacts["429"]["headers"]["Retry-After"]["required"], true);
    assert_eq!(contacts["503"]["headers"]["Retry-After"]["required"], true);
    assert!(contacts["429"].get("content").is_none(), "429 has no body");
    // The batch bounds and the item rules are in the request schema.
    let schemas = &doc["components"]["schemas"];
    for batch in ["ContactBatch", "EventBatch"] {
        assert_eq!(schemas[batch]["minItems"], 1, "{batch}");
        assert_eq!(schemas[batch]["maxItems"], 100, "{batch}");
    }
    assert_eq!(schemas["UserId"]["minLength"], 1);
    assert_eq!(schemas["UserId"]["maxLength"], 256);
    assert_eq!(schemas["EventItem"]["additionalProperties"], false);
    assert_eq!(
        schemas["ContactItem"]["propertyNames"]["type"], "string",
        "{}",
        schemas["ContactItem"]
    );

    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/openapi.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();

    gateway.stop().await;
    topics.delete().await;
}
