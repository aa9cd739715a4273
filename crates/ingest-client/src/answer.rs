//! Reading the server's answer to one request (docs/clients.md, "Outcomes"): a batch
//! answer gives each item its outcome; a status that is never retried rejects every item
//! with the request's message.

use serde::Deserialize;

use crate::outcome::{FieldErrors, Status};
use crate::pending::Pending;
use crate::shared::Endpoint;
use crate::transport::Response;

#[derive(Deserialize)]
struct BatchAnswer {
    entity: Entity,
}

#[derive(Deserialize)]
struct Entity {
    items: Vec<ItemAnswer>,
}

#[derive(Deserialize)]
struct ItemAnswer {
    status: String,
    #[serde(default)]
    errors: Option<FieldErrors>,
}

/// A batch answer (200, 202, 422): each item's outcome, in request order. Under `sync`
/// a 200 says the items are committed.
pub(crate) fn answered(sync: bool, items: Vec<Pending>, response: &Response, attempts: u32) {
    let http_status = response.status;
    let answer = serde_json::from_slice::<BatchAnswer>(&response.body)
        .map_err(|e| format!("the answer is not a batch answer: {e}"))
        .and_then(|answer| {
            if answer.entity.items.len() == items.len() {
                Ok(answer.entity.items)
            } else {
                Err(format!(
                    "the answer lists {} items for a request of {}",
                    answer.entity.items.len(),
                    items.len()
                ))
            }
        });
    let answers = match answer {
        Ok(answers) => answers,
        Err(message) => {
            tracing::error!(http_status, %message, "unreadable answer: reporting the batch failed");
            for item in items {
                item.finish(Status::Failed {
                    message: message.clone(),
                    http_status: Some(http_status),
                    attempts,
                });
            }
            return;
        }
    };
    let committed = sync && http_status == 200;
    for (item, answer) in items.into_iter().zip(answers) {
        let status = if answer.status == "success" {
            Status::Accepted {
                committed,
                attempts,
            }
        } else {
            Status::Rejected {
                errors: answer.errors.unwrap_or_default(),
                http_status: Some(http_status),
                attempts,
            }
        };
        item.finish(status);
    }
}

/// A status that is never retried: every item is rejected with the request's message.
pub(crate) fn refused(endpoint: Endpoint, items: Vec<Pending>, response: &Response, attempts: u32) {
    let message = request_message(response);
    tracing::warn!(
        ?endpoint,
        items = items.len(),
        http_status = response.status,
        %message,
        "the whole request was refused; its items are rejected"
    );
    let errors: FieldErrors = [("_request".to_owned(), vec![message])].into();
    for item in items {
        item.finish(Status::Rejected {
            errors: errors.clone(),
            http_status: Some(response.status),
            attempts,
        });
    }
}

/// The server's `{"message"}`, else the body's text, else the status line.
fn request_message(response: &Response) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    if let Ok(Message { message }) = serde_json::from_slice(&response.body) {
        return message;
    }
    let text = String::from_utf8_lossy(&response.body);
    let text = text.trim();
    if text.is_empty() {
        status_line(response.status)
    } else {
        text.chars().take(300).collect()
    }
}

/// What a retried answer said: `HTTP 503 Service Unavailable: <message>`.
pub(crate) fn status_message(response: &Response) -> String {
    let line = status_line(response.status);
    let message = request_message(response);
    if message == line {
        line
    } else {
        format!("{line}: {message}")
    }
}

fn status_line(status: u16) -> String {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    match reason {
        Some(reason) => format!("HTTP {status} {reason}"),
        None => format!("HTTP {status}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::outcome::Status;
    use crate::testing::{client, event};
    use crate::transport::fake::{self, Fake};
    use crate::transport::Request;

    #[tokio::test(start_paused = true)]
    async fn statuses_not_retried_reject_every_item_of_the_request_once() {
        for (status, body, message) in [
            (
                400,
                json!({"message": "Body should be an array"}),
                "Body should be an array",
            ),
            (401, json!({"message": "unknown token"}), "unknown token"),
            (403, json!(null), "HTTP 403 Forbidden"),
            (
                404,
                json!({"message": "project or datasource not found"}),
                "project or datasource not found",
            ),
            (
                405,
                json!({"message": "method not allowed"}),
                "method not allowed",
            ),
            (413, json!(null), "HTTP 413 Payload Too Large"),
            (501, json!(null), "HTTP 501 Not Implemented"),
        ] {
            let answer = fake::status(status, body);
            let fake = Fake::new(move |_: &Request, _| fake::now(answer.clone()));
            let client = client(&fake, |b| b);
            let handles = [client.track(event(1)).await, client.track(event(2)).await];
            client.flush().await;
            for handle in handles {
                assert_eq!(
                    handle.await.status,
                    Status::Rejected {
                        errors: [("_request".to_owned(), vec![message.to_owned()])].into(),
                        http_status: Some(status),
                        attempts: 1,
                    },
                    "{status}"
                );
            }
            assert_eq!(fake.seen().len(), 1, "{status} was retried");
            assert_eq!(client.stats().rejected, 2);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_answer_is_reported_per_item() {
        let fake = Fake::new(|_: &Request, _| {
            fake::now(fake::status(
                202,
                json!({"entity": {"successful": 1, "failed": 2, "items": [
                    {"status": "success", "_user_id": "a"},
                    {"status": "error", "_user_id": "b", "errors": {"_email": ["Invalid format"]}},
                    {"status": "error", "_user_id": null, "errors": {"_user_id": ["Required"]}},
                ]}}),
            ))
        });
        let client = client(&fake, |b| b);
        let a = client.upsert(json!({"_user_id": "a"})).await;
        let b = client
            .upsert(json!({"_user_id": "b", "_email": "nope"}))
            .await;
        let c = client.upsert(json!({"_email": "c@example.com"})).await;
        client.flush().await;
        assert_eq!(
            a.await.status,
            Status::Accepted {
                committed: false,
                attempts: 1
            }
        );
        let b = b.await;
        assert_eq!(
            b.status,
            Status::Rejected {
                errors: [("_email".to_owned(), vec!["Invalid format".to_owned()])].into(),
                http_status: Some(202),
                attempts: 1,
            }
        );
        assert_eq!(b.item, json!({"_user_id": "b", "_email": "nope"}));
        assert!(
            matches!(c.await.status, Status::Rejected { ref errors, .. } if errors["_user_id"] == ["Required"])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_does_not_match_the_request_fails_its_items() {
        let fake = Fake::new(|_: &Request, _| {
            fake::now(fake::status(
                202,
                json!({"entity": {"successful": 1, "failed": 0, "items": [{"status": "success"}]}}),
            ))
        });
        let client = client(&fake, |b| b);
        let handles = [client.track(event(1)).await, client.track(event(2)).await];
        client.flush().await;
        for handle in handles {
            assert!(matches!(
                handle.await.status,
                Status::Failed { ref message, http_status: Some(202), attempts: 1 }
                    if message.contains("lists 1 items for a request of 2")
            ));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sync_asks_for_the_commit_and_a_200_says_committed() {
        let fake = Fake::new(|request: &Request, n| {
            fake::now(fake::all_accepted(request, if n == 0 { 200 } else { 202 }))
        });
        let client = client(&fake, |b| b.sync(true).max_batch_items(1));
        let committed = client.track(event(1)).await.await;
        let not_in_time = client.track(event(2)).await.await;
        assert_eq!(
            committed.status,
            Status::Accepted {
                committed: true,
                attempts: 1
            }
        );
        assert_eq!(
            not_in_time.status,
            Status::Accepted {
                committed: false,
                attempts: 1
            }
        );
        assert!(fake
            .seen()
            .iter()
            .all(|s| s.url.ends_with("/stream/events?_sync")));
        // Without sync a 200 is not a commit.
        let fake = Fake::new(|request: &Request, _| fake::now(fake::all_accepted(request, 200)));
        let plain = crate::testing::client(&fake, |b| b);
        let outcome = plain.track(event(1)).await.await;
        assert_eq!(
            outcome.status,
            Status::Accepted {
                committed: false,
                attempts: 1
            }
        );
        assert!(fake.seen()[0].url.ends_with("/stream/events"));
    }
}
