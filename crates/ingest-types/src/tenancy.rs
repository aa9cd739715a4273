//! Tenancy vocabulary shared by the gateway and `ingestctl`: ids, API token format and
//! hashing, rate-limited endpoints. Pure functions, no I/O.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Every API token starts with this, so a leaked one is recognizable (secret scanners).
pub const TOKEN_PREFIX: &str = "ingk_";
/// Random bytes in a token's secret part (hex-encoded).
const TOKEN_SECRET_BYTES: usize = 32;
/// Characters of the token kept in clear to recognize it in listings.
const DISPLAY_PREFIX_CHARS: usize = TOKEN_PREFIX.len() + 8;

/// Requests per minute per (datasource, endpoint) when none is set.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 600;

/// Project and datasource ids: 1–64 chars of `A-Z a-z 0-9 _ -`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A freshly generated token. `secret` is shown once and never stored.
#[derive(Debug)]
pub struct NewToken {
    /// Public id, used to list and revoke (`tok_` + 16 hex chars).
    pub id: String,
    pub secret: String,
    pub hash: [u8; 32],
    pub display_prefix: String,
}

impl NewToken {
    pub fn generate() -> Self {
        let mut secret_bytes = [0u8; TOKEN_SECRET_BYTES];
        rand::rng().fill_bytes(&mut secret_bytes);
        let mut id_bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut id_bytes);
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(secret_bytes));
        Self {
            id: format!("tok_{}", hex::encode(id_bytes)),
            hash: hash_token(&secret),
            display_prefix: secret[..DISPLAY_PREFIX_CHARS].to_owned(),
            secret,
        }
    }
}

/// Whether `token` has the shape of a token this system issues (a cheap check before
/// any look-up).
pub fn is_well_formed_token(token: &str) -> bool {
    token.strip_prefix(TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() == TOKEN_SECRET_BYTES * 2
            && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// What the database stores and looks tokens up by.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The endpoints that have their own requests-per-minute limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// `GET /stream`
    Stream,
    /// `POST /stream/contacts`
    Contacts,
    /// `POST /stream/events`
    Events,
    /// `DELETE /stream/contacts/{user_id}`
    ContactsDelete,
    /// `GET /stream/specs/...`
    Specs,
    /// `DELETE /stream/users/{user_id}` and `GET /stream/users/{user_id}/erasure`
    Erasures,
}

impl Endpoint {
    pub const ALL: [Endpoint; 6] = [
        Endpoint::Stream,
        Endpoint::Contacts,
        Endpoint::Events,
        Endpoint::ContactsDelete,
        Endpoint::Specs,
        Endpoint::Erasures,
    ];

    /// The name used in the database, the CLI and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Stream => "stream",
            Endpoint::Contacts => "contacts",
            Endpoint::Events => "events",
            Endpoint::ContactsDelete => "contacts_delete",
            Endpoint::Specs => "specs",
            Endpoint::Erasures => "erasures",
        }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Endpoint::ALL.iter().map(|e| e.as_str()).collect();
                format!(
                    "unknown endpoint {s:?} (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_unique_and_hash_stably() {
        let a = NewToken::generate();
        let b = NewToken::generate();
        assert!(is_well_formed_token(&a.secret), "{}", a.secret);
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.id, b.id);
        assert_eq!(a.hash, hash_token(&a.secret));
        assert!(a.secret.starts_with(&a.display_prefix));
        assert_eq!(a.display_prefix.len(), TOKEN_PREFIX.len() + 8);
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let good = NewToken::generate().secret;
        assert!(!is_well_formed_token(""));
        assert!(!is_well_formed_token(&good[1..]));
        assert!(!is_well_formed_token(&format!("{good}0")));
        assert!(!is_well_formed_token(&good.to_uppercase()));
        assert!(!is_well_formed_token(&format!(
            "{}{}",
            TOKEN_PREFIX,
            "g".repeat(64)
        )));
    }

    #[test]
    fn ids_and_endpoints() {
        assert!(is_valid_id("acme_1-x"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id(&"a".repeat(65)));
        for e in Endpoint::ALL {
            assert_eq!(e.as_str().parse::<Endpoint>(), Ok(e));
        }
        assert!("nope"
            .parse::<Endpoint>()
            .unwrap_err()
            .contains("contacts_delete"));
    }
}
