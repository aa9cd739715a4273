//! The realistic shape: what producers of a product-analytics and CRM API send.
//!
//! - **Every body distinct, and not only in its ids**: values are drawn from vocabularies
//!   and seeded distributions (event types by weight, free text of a log-normal length,
//!   prices, counts, dates jittered over the last minutes), so batches compress like
//!   real traffic, not like one body repeated.
//! - **Users repeat the way they do in real traffic**: a skewed draw over the user pool
//!   (the busiest 0.1% of users get about 3% of the writes), and event ids are
//!   random UUIDs, as SDKs make them.
//! - **Contacts are a mix**: new users with a full set of attributes, updates of existing
//!   users with a few attributes (some of them `null`, removing the attribute), and a
//!   small share of deletes (`DELETE /stream/contacts/{user_id}`, one user per request,
//!   as the API has it).
//!
//! Every item passes validation unless it is made invalid on purpose.

use std::fmt::Write as _;

use chrono::{SecondsFormat, Utc};
use rand::Rng;

use super::{Batch, ItemKind, Sample, Workload};

/// Event types and their weights (out of 100).
const EVENT_TYPES: [(&str, u32); 9] = [
    ("page_view", 40),
    ("click", 15),
    ("screen_view", 10),
    ("search", 10),
    ("add_to_cart", 8),
    ("login", 5),
    ("feature_used", 5),
    ("purchase", 4),
    ("signup", 3),
];

const WORDS: [&str; 64] = [
    "shoes",
    "running",
    "winter",
    "jacket",
    "summer",
    "sale",
    "blue",
    "red",
    "leather",
    "classic",
    "organic",
    "coffee",
    "beans",
    "espresso",
    "grinder",
    "kitchen",
    "table",
    "chair",
    "lamp",
    "garden",
    "hose",
    "bike",
    "helmet",
    "gloves",
    "travel",
    "bag",
    "laptop",
    "sleeve",
    "phone",
    "case",
    "charger",
    "cable",
    "wireless",
    "headphones",
    "speaker",
    "camera",
    "lens",
    "tripod",
    "book",
    "novel",
    "poster",
    "frame",
    "candle",
    "soap",
    "shampoo",
    "towel",
    "blanket",
    "pillow",
    "socks",
    "scarf",
    "watch",
    "ring",
    "wallet",
    "belt",
    "sunglasses",
    "umbrella",
    "bottle",
    "mug",
    "teapot",
    "plate",
    "bowl",
    "knife",
    "fork",
    "spoon",
];
const SECTIONS: [&str; 12] = [
    "catalog", "product", "blog", "help", "account", "cart", "checkout", "search", "deals",
    "brands", "stores", "about",
];
const REFERRERS: [&str; 8] = [
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
    "https://t.co/",
    "https://www.facebook.com/",
    "https://news.ycombinator.com/",
    "https://www.instagram.com/",
    "https://mail.example.net/",
];
const USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "ShopApp/4.12.0 (iOS 18.1; iPhone15,3)",
];
const LOCALES: [&str; 8] = [
    "en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "it-IT", "nl-NL", "pt-BR",
];
const CURRENCIES: [&str; 4] = ["EUR", "USD", "GBP", "CHF"];
const FIRST_NAMES: [&str; 16] = [
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Hedy",
    "Donald",
    "Katherine",
    "Niklaus",
];
const LAST_NAMES: [&str; 16] = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "Knuth",
    "Johnson",
    "Wirth",
];
const DOMAINS: [&str; 6] = [
    "example.com",
    "mail.example.org",
    "example.net",
    "corp.example.com",
    "example.io",
    "post.example.de",
];
const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];
const COUNTRIES: [&str; 10] = ["ES", "DE", "FR", "GB", "US", "IT", "NL", "PT", "BR", "MX"];
const TAGS: [&str; 8] = [
    "newsletter",
    "beta",
    "vip",
    "churn_risk",
    "trial",
    "mobile",
    "b2b",
    "early_adopter",
];
/// Attributes an update may remove with `null`.
const REMOVABLE: [&str; 4] = ["company", "coupon", "trial_ends_at", "tags"];

/// Share of contact writes that are new users (the rest update existing ones).
const NEW_USER_SHARE: f64 = 0.35;
/// Share of contact updates that remove an attribute with `null`.
const NULL_REMOVAL_SHARE: f64 = 0.25;

/// A user of the pool, drawn with a skew: index `users·u²` for a uniform `u`, so the
/// first 0.1% of the pool gets about 3% of the draws and half the draws fall in the
/// first quarter.
pub(super) fn pick_user(users: u64, rng: &mut impl Rng) -> String {
    let u: f64 = rng.random();
    let index = ((users as f64) * u * u) as u64;
    user_id(index.min(users - 1))
}

/// A pool user's id: stable for its index, spread like real ids.
pub(super) fn user_id(index: u64) -> String {
    format!("u_{:012x}", splitmix64(index) & 0xffff_ffff_ffff)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn pick<'a>(rng: &mut impl Rng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

/// A log-normal count with median `median` (σ = 0.8), at least 1, at most `max`.
fn lognormal(rng: &mut impl Rng, median: f64, max: usize) -> usize {
    let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    ((median * (0.8 * z).exp()).round() as usize).clamp(1, max)
}

fn words(body: &mut String, rng: &mut impl Rng, n: usize, sep: char) {
    for i in 0..n {
        if i > 0 {
            body.push(sep);
        }
        body.push_str(pick(rng, &WORDS));
    }
}

/// Words of a log-normal count (see [`lognormal`]).
fn text(body: &mut String, rng: &mut impl Rng, median: f64, max: usize, sep: char) {
    let n = lognormal(rng, median, max);
    words(body, rng, n, sep);
}

fn price(body: &mut String, rng: &mut impl Rng) {
    let cents = lognormal(rng, 3_000.0, 500_000);
    let _ = write!(body, "{}.{:02}", cents / 100, cents % 100);
}

fn date_ago(body: &mut String, rng: &mut impl Rng, max_secs: i64) {
    let at = Utc::now() - chrono::Duration::milliseconds(rng.random_range(0..max_secs * 1000));
    body.push_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true));
}

pub(super) fn batch(workload: &Workload, seq: u64, kind: ItemKind, rng: &mut impl Rng) -> Batch {
    if kind == ItemKind::Contact && rng.random_bool(workload.delete_request_share()) {
        let user = pick_user(workload.users, rng);
        return Batch {
            kind,
            body: bytes::Bytes::new(),
            items: 1,
            invalid: 0,
            sample: None,
            delete: Some(user),
        };
    }
    let mut body = String::with_capacity(workload.batch_size * 420 + 2);
    let mut invalid = 0;
    let mut sample = None;
    body.push('[');
    for i in 0..workload.batch_size {
        if i > 0 {
            body.push(',');
        }
        let bad = workload.invalid_share > 0.0 && rng.random_bool(workload.invalid_share.min(1.0));
        invalid += usize::from(bad);
        let item_seq = seq * workload.batch_size as u64 + i as u64;
        let item_sample = match kind {
            ItemKind::Event => Some(event(&mut body, workload, bad, rng)),
            ItemKind::Contact => contact(&mut body, workload, item_seq, bad, rng),
        };
        if !bad && sample.is_none() {
            sample = item_sample;
        }
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

fn event(body: &mut String, workload: &Workload, bad: bool, rng: &mut impl Rng) -> Sample {
    let event_id = workload.ids.make(rng);
    let user = pick_user(workload.users, rng);
    let mut roll = rng.random_range(0..100);
    let event_type = EVENT_TYPES
        .iter()
        .find(|(_, weight)| {
            let hit = roll < *weight;
            roll = roll.saturating_sub(*weight);
            hit
        })
        .map_or("page_view", |(name, _)| name);
    let _ = write!(body, r#"{{"_user_id":"{user}","_event_id":"{event_id}","#);
    if !bad {
        // The invalid item lacks its required type.
        let _ = write!(body, r#""_event_type":"{event_type}","#);
    }
    body.push_str(r#""_event_date":""#);
    date_ago(body, rng, 120);
    body.push_str(r#"","_event_parameters":{"#);
    match event_type {
        "page_view" => {
            let _ = write!(body, r#""path":"/{}/"#, pick(rng, &SECTIONS));
            let n = rng.random_range(1..4);
            words(body, rng, n, '-');
            let _ = write!(body, r#"/{}","title":""#, rng.random_range(1..100_000));
            text(body, rng, 5.0, 30, ' ');
            body.push('"');
            if rng.random_bool(0.6) {
                let _ = write!(body, r#","referrer":"{}""#, pick(rng, &REFERRERS));
            }
            if rng.random_bool(0.3) {
                let _ = write!(
                    body,
                    r#","utm_source":"{}","utm_campaign":"{}_{}""#,
                    pick(rng, &["newsletter", "adwords", "partner", "social"]),
                    pick(rng, &WORDS),
                    rng.random_range(2020..2027)
                );
            }
            let _ = write!(
                body,
                r#","duration_ms":{}"#,
                lognormal(rng, 8_000.0, 3_600_000)
            );
        }
        "click" => {
            let _ = write!(body, r#""element":"button.{}","text":""#, pick(rng, &WORDS));
            text(body, rng, 2.0, 8, ' ');
            let _ = write!(
                body,
                r#"","x":{},"y":{}"#,
                rng.random_range(0..1920),
                rng.random_range(0..4000)
            );
        }
        "screen_view" => {
            let _ = write!(
                body,
                r#""screen":"{}_screen","app_version":"4.{}.{}","os":"{}""#,
                pick(rng, &SECTIONS),
                rng.random_range(0..20),
                rng.random_range(0..10),
                pick(rng, &["iOS 18.1", "iOS 17.6", "Android 14", "Android 15"])
            );
        }
        "search" => {
            body.push_str(r#""query":""#);
            text(body, rng, 2.0, 10, ' ');
            let _ = write!(
                body,
                r#"","results":{},"page":{}"#,
                lognormal(rng, 40.0, 10_000) - 1,
                lognormal(rng, 1.0, 20)
            );
        }
        "add_to_cart" => {
            let _ = write!(
                body,
                r#""sku":"SKU-{:06}","name":""#,
                rng.random_range(0..1_000_000)
            );
            text(body, rng, 3.0, 12, ' ');
            body.push_str(r#"","price":"#);
            price(body, rng);
            let _ = write!(
                body,
                r#","quantity":{},"currency":"{}""#,
                lognormal(rng, 1.0, 20),
                pick(rng, &CURRENCIES)
            );
        }
        "purchase" => {
            let lines = lognormal(rng, 2.0, 20);
            let _ = write!(
                body,
                r#""order_id":"ord_{:016x}","amount":"#,
                rng.random::<u64>()
            );
            price(body, rng);
            let _ = write!(body, r#","currency":"{}","skus":["#, pick(rng, &CURRENCIES));
            for line in 0..lines {
                if line > 0 {
                    body.push(',');
                }
                let _ = write!(body, r#""SKU-{:06}""#, rng.random_range(0..1_000_000));
            }
            body.push_str(r#"],"quantities":["#);
            for line in 0..lines {
                if line > 0 {
                    body.push(',');
                }
                let _ = write!(body, "{}", lognormal(rng, 1.0, 10));
            }
            body.push(']');
            if rng.random_bool(0.2) {
                let _ = write!(
                    body,
                    r#","coupon":"{}{}""#,
                    pick(rng, &WORDS),
                    rng.random_range(5..50)
                );
            }
        }
        "signup" | "login" => {
            let _ = write!(
                body,
                r#""method":"{}","success":{}"#,
                pick(rng, &["email", "google", "apple", "sso"]),
                rng.random_bool(0.95)
            );
            if event_type == "signup" {
                let _ = write!(body, r#","plan":"{}""#, pick(rng, &PLANS));
            }
        }
        _ => {
            let _ = write!(
                body,
                r#""feature":"{}_{}","enabled":{},"value":{}"#,
                pick(rng, &WORDS),
                pick(rng, &WORDS),
                rng.random_bool(0.5),
                rng.random_range(0..1000)
            );
        }
    }
    // What SDKs add to every event: the user agent and locale (most of them).
    if rng.random_bool(0.7) {
        let _ = write!(
            body,
            r#","user_agent":"{}","locale":"{}""#,
            pick(rng, &USER_AGENTS),
            pick(rng, &LOCALES)
        );
    }
    // Some events carry a free-text note of a long-tailed length (at most 90 words of at
    // most 10 letters: under the 1,024-character limit of a parameter).
    if rng.random_bool(0.1) {
        body.push_str(r#","note":""#);
        text(body, rng, 20.0, 90, ' ');
        body.push('"');
    }
    body.push_str("}}");
    Sample::Event { event_id }
}

fn contact(
    body: &mut String,
    workload: &Workload,
    item_seq: u64,
    bad: bool,
    rng: &mut impl Rng,
) -> Option<Sample> {
    let new = rng.random_bool(NEW_USER_SHARE);
    let user = if new {
        format!("n_{}_{item_seq}", workload.run_id)
    } else {
        pick_user(workload.users, rng)
    };
    let _ = write!(body, r#"{{"_user_id":"{user}","lg_seq":{item_seq}"#);
    if bad {
        // The invalid item has an e-mail address without a domain.
        body.push_str(r#","_email":"not-an-email""#);
    }
    if new {
        let (first, last) = (pick(rng, &FIRST_NAMES), pick(rng, &LAST_NAMES));
        if !bad {
            let _ = write!(
                body,
                r#","_email":"{}.{}{}@{}""#,
                first.to_lowercase(),
                last.to_lowercase(),
                rng.random_range(1..10_000),
                pick(rng, &DOMAINS)
            );
        }
        let _ = write!(body, r#","_first_name":"{first}","_last_name":"{last}""#);
        if rng.random_bool(0.5) {
            let _ = write!(
                body,
                r#","_phone_mobile":"+346{:08}""#,
                rng.random_range(0..100_000_000)
            );
        }
        let _ = write!(
            body,
            r#","plan":"{}","country":"{}","language":"{}","signup_source":"{}","marketing_opt_in":{},"lifetime_value":0,"signed_up_at":""#,
            pick(rng, &PLANS),
            pick(rng, &COUNTRIES),
            &pick(rng, &LOCALES)[..2],
            pick(rng, &["web", "ios", "android", "import", "api"]),
            rng.random_bool(0.4)
        );
        date_ago(body, rng, 600);
        body.push('"');
        tags(body, rng);
        if rng.random_bool(0.4) {
            body.push_str(r#","company":""#);
            text(body, rng, 2.0, 5, ' ');
            body.push_str(" GmbH\"");
        }
        if rng.random_bool(0.3) {
            body.push_str(r#","trial_ends_at":""#);
            date_ago(body, rng, 600);
            body.push('"');
        }
    } else {
        // An update: one to four distinct attributes changed, sometimes one removed.
        let mut used = [false; 9];
        for _ in 0..lognormal(rng, 2.0, 4) {
            let field = rng.random_range(0..used.len());
            if std::mem::replace(&mut used[field], true) {
                continue; // a key appears once per item
            }
            match field {
                0 => {
                    let _ = write!(body, r#","plan":"{}""#, pick(rng, &PLANS));
                }
                1 => {
                    let _ = write!(body, r#","country":"{}""#, pick(rng, &COUNTRIES));
                }
                2 => {
                    body.push_str(r#","last_seen_at":""#);
                    date_ago(body, rng, 600);
                    body.push('"');
                }
                3 => {
                    body.push_str(r#","lifetime_value":"#);
                    price(body, rng);
                }
                4 => tags(body, rng),
                5 => {
                    let _ = write!(body, r#","marketing_opt_in":{}"#, rng.random_bool(0.4));
                }
                6 => {
                    let _ = write!(body, r#","sessions":{}"#, lognormal(rng, 12.0, 100_000));
                }
                7 if !bad => {
                    let _ = write!(
                        body,
                        r#","_email":"{}{}@{}""#,
                        pick(rng, &WORDS),
                        rng.random_range(1..100_000),
                        pick(rng, &DOMAINS)
                    );
                }
                _ => {
                    let _ = write!(body, r#","_first_name":"{}""#, pick(rng, &FIRST_NAMES));
                }
            }
        }
        if rng.random_bool(NULL_REMOVAL_SHARE) {
            // `tags` is the only removable attribute an update also sets (field 4).
            let removed = pick(rng, &REMOVABLE);
            if !(removed == "tags" && used[4]) {
                let _ = write!(body, r#","{removed}":null"#);
            }
        }
    }
    body.push('}');
    // Only new users are sampled for end-to-end latency: a pool user's later delete
    // would hide the write it was looking for.
    new.then_some(Sample::Contact {
        user_id: user,
        seq: item_seq as i64,
    })
}

fn tags(body: &mut String, rng: &mut impl Rng) {
    body.push_str(r#","tags":["#);
    for i in 0..rng.random_range(1..4) {
        if i > 0 {
            body.push(',');
        }
        let _ = write!(body, r#""{}""#, pick(rng, &TAGS));
    }
    body.push(']');
}
