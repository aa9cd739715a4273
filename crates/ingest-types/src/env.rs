//! Reading a binary's configuration from environment variables, in one way for every
//! binary: [`Vars`] parses a variable or names it in a [`ConfigError`], and reads the
//! variables the gateway and the worker share (the database, the brokers, the topic
//! prefix, the log format) with one default each; [`DatabaseUrl`] keeps the password out
//! of a configuration's `Debug`, so a configuration derives `Debug` and is logged whole.
//! Each binary's `config` module keeps only its own settings and their table.

use std::time::Duration;

use crate::topics::{self, Topics};

/// A variable that is set but cannot be used; names the variable and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {name}: {value:?} ({reason})")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// A variable of the process environment (one that is not valid Unicode counts as unset);
/// the lookup a configuration's `from_env` hands to its `from_lookup`.
pub fn process_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Reads variables through `get` (the process environment in production, a map in tests).
pub struct Vars<F>(pub F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    /// The variable's value, or `default` when unset.
    pub fn string(&self, name: &'static str, default: &str) -> String {
        (self.0)(name).unwrap_or_else(|| default.to_owned())
    }

    /// The variable's value when set and not empty.
    pub fn optional(&self, name: &'static str) -> Option<String> {
        (self.0)(name).filter(|v| !v.is_empty())
    }

    /// The variable parsed as `T`, or `default` parsed when unset.
    pub fn parse<T>(&self, name: &'static str, default: &str) -> Result<T, ConfigError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        let value = self.string(name, default);
        value.parse().map_err(|e: T::Err| ConfigError {
            name,
            reason: e.to_string(),
            value,
        })
    }

    /// The variable as a count of milliseconds, or `default` ms when unset.
    pub fn millis(&self, name: &'static str, default: &str) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.parse(name, default)?))
    }

    /// The variable as a count of seconds, or `default` s when unset.
    pub fn seconds(&self, name: &'static str, default: &str) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.parse(name, default)?))
    }

    /// `DATABASE_URL`, default `postgres://ingest@127.0.0.1:55432/ingest` (the dev stack).
    pub fn database_url(&self) -> DatabaseUrl {
        DatabaseUrl(self.string("DATABASE_URL", "postgres://ingest@127.0.0.1:55432/ingest"))
    }

    /// `KAFKA_BROKERS`: the bootstrap servers, default `127.0.0.1:19092` (the dev stack).
    pub fn kafka_brokers(&self) -> String {
        self.string("KAFKA_BROKERS", "127.0.0.1:19092")
    }

    /// The topic names from `INGEST_TOPIC_PREFIX` (default [`topics::DEFAULT_PREFIX`]).
    pub fn topics(&self) -> Topics {
        Topics::with_prefix(&self.string("INGEST_TOPIC_PREFIX", topics::DEFAULT_PREFIX))
    }

    /// `INGEST_LOG_FORMAT`: `json` (default) or `pretty`.
    pub fn log_format(&self) -> Result<LogFormat, ConfigError> {
        match self.string("INGEST_LOG_FORMAT", "json").as_str() {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            other => Err(ConfigError {
                name: "INGEST_LOG_FORMAT",
                value: other.to_owned(),
                reason: "expected json or pretty".to_owned(),
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// A database connection string. Its `Debug` shows it with the password replaced
/// ([`redact_password`]) and it has no `Display`, so it cannot reach a log line whole;
/// it dereferences to the full string for connecting.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for DatabaseUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&redact_password(&self.0), f)
    }
}

impl PartialEq<&str> for DatabaseUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{}", &url[..scheme + 3 + colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults_and_reports_bad_values() {
        let vars = Vars(|name: &str| (name == "N").then(|| "x".to_owned()));
        assert_eq!(vars.parse::<u32>("M", "7").unwrap(), 7);
        let err = vars.parse::<u32>("N", "7").unwrap_err();
        assert_eq!(err.name, "N");
        assert!(err.to_string().contains("invalid value for N"));
        assert_eq!(vars.log_format().unwrap(), LogFormat::Json);
        assert_eq!(vars.optional("M"), None);
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_password("postgres://u:pw@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(redact_password("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn shared_variables_have_one_default_and_the_url_debugs_redacted() {
        let vars = Vars(|name: &str| match name {
            "DATABASE_URL" => Some("postgres://u:s3cret@h/db".to_owned()),
            "INGEST_TOPIC_PREFIX" => Some("t".to_owned()),
            "WAIT_MS" => Some("250".to_owned()),
            _ => None,
        });
        let url = vars.database_url();
        assert_eq!(url, "postgres://u:s3cret@h/db");
        assert_eq!(format!("{url:?}"), r#""postgres://u:***@h/db""#);
        assert_eq!(vars.topics().events, "t.events");
        assert_eq!(vars.kafka_brokers(), "127.0.0.1:19092");
        assert_eq!(
            vars.millis("WAIT_MS", "1").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(vars.seconds("NONE_S", "3").unwrap(), Duration::from_secs(3));
        assert_eq!(
            vars.millis("DATABASE_URL", "1").unwrap_err().name,
            "DATABASE_URL"
        );
    }
}
