//! The reference shape, kept only to compare with figures of earlier runs: every item has
//! the same fields and nearly the same values (fixed strings, an `x` padding up to
//! `item_bytes`), so batches compress far better than real traffic (about 45 bytes per
//! message on the broker's disk). Not used for any figure in `BENCHMARKS.md`.

use std::fmt::Write as _;

use rand::Rng;

use super::{Batch, ItemKind, Sample, Workload};

const EVENT_TYPES: [&str; 4] = ["page_view", "add_to_cart", "purchase", "search"];

pub(super) fn batch(workload: &Workload, seq: u64, kind: ItemKind, rng: &mut impl Rng) -> Batch {
    let mut body = String::with_capacity(workload.batch_size * (workload.item_bytes + 8) + 2);
    let mut invalid = 0;
    let mut sample = None;
    body.push('[');
    for i in 0..workload.batch_size {
        if i > 0 {
            body.push(',');
        }
        let bad = workload.invalid_share > 0.0 && rng.random_bool(workload.invalid_share.min(1.0));
        invalid += usize::from(bad);
        let user = rng.random_range(0..workload.users);
        let item_seq = (seq * workload.batch_size as u64 + i as u64) as i64;
        let start = body.len();
        match kind {
            ItemKind::Event => {
                let event_id = format!("{}-{item_seq}", workload.run_id);
                let event_type = EVENT_TYPES[(item_seq % 4) as usize];
                let _ = write!(
                    body,
                    r#"{{"_user_id":"user-{user}","_event_id":"{event_id}","#
                );
                if !bad {
                    let _ = write!(body, r#""_event_type":"{event_type}","#);
                }
                let _ = write!(
                    body,
                    r#""_event_date":"{}","_event_parameters":{{"path":"/catalog/item/{}","referrer":"https://www.example.com/search?q=shoes","amount":{}.99,"currency":"EUR","pad":""#,
                    workload.event_date,
                    item_seq % 100_000,
                    item_seq % 500
                );
                if !bad && sample.is_none() {
                    sample = Some(Sample::Event { event_id });
                }
            }
            ItemKind::Contact => {
                let email = if bad {
                    "not-an-email".to_owned()
                } else {
                    format!("user{user}@example.com")
                };
                let _ = write!(
                    body,
                    r#"{{"_user_id":"user-{user}","_email":"{email}","_first_name":"Ada","_last_name":"Lovelace","plan":"pro","lg_seq":{item_seq},"tags":["newsletter","beta"],"pad":""#
                );
                if !bad && sample.is_none() {
                    sample = Some(Sample::Contact {
                        user_id: format!("user-{user}"),
                        seq: item_seq,
                    });
                }
            }
        }
        // Pad up to the item size, then close the string and object(s).
        let closing = if kind == ItemKind::Event { 3 } else { 2 };
        let used = body.len() - start + closing;
        for _ in used..workload.item_bytes {
            body.push('x');
        }
        body.push_str(if kind == ItemKind::Event {
            "\"}}"
        } else {
            "\"}"
        });
    }
    body.push(']');
    Batch {
        kind,
        body: bytes::Bytes::from(body),
        items: workload.batch_size,
        invalid,
        sample,
        delete: None,
    }
}
