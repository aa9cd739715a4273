//! Helpers of the unit tests: a client on the fake transport, items, and reading what
//! the fake saw.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::client::Client;
use crate::config::ClientBuilder;
use crate::outcome::Outcome;
use crate::transport::fake::{self, Fake};
use crate::transport::Request;

/// A client on `transport`, with `options` applied to the default builder.
pub fn client(
    transport: &Arc<Fake>,
    options: impl FnOnce(ClientBuilder) -> ClientBuilder,
) -> Client {
    options(Client::builder(
        "http://gateway.test",
        "p1",
        "web",
        "ingk_test",
    ))
    .transport(Arc::new(transport.clone()))
    .build()
    .expect("client")
}

/// A client whose outcomes are also collected from the callback.
pub fn client_with_log(
    transport: &Arc<Fake>,
    options: impl FnOnce(ClientBuilder) -> ClientBuilder,
) -> (Client, Arc<Mutex<Vec<Outcome>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let client = client(transport, |b| {
        options(b).on_delivery(move |outcome| sink.lock().unwrap().push(outcome.clone()))
    });
    (client, log)
}

/// A fake gateway that accepts every item with 202.
pub fn accepting() -> Arc<Fake> {
    Fake::new(|request: &Request, _| fake::now(fake::all_accepted(request, 202)))
}

pub fn event(n: usize) -> Value {
    json!({"_user_id": format!("u{n}"), "_event_type": "page_view", "_event_id": format!("e{n}")})
}

pub fn contact(user: &str, n: usize) -> Value {
    json!({"_user_id": user, "n": n})
}

/// The items of a request body.
pub fn items(body: &Option<Value>) -> Vec<Value> {
    body.as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The `key` of every item of a request body.
pub fn ids(body: &Option<Value>, key: &str) -> Vec<String> {
    items(body)
        .iter()
        .map(|item| item[key].as_str().unwrap_or("?").to_owned())
        .collect()
}
