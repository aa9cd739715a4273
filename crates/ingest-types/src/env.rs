//! Helpers every binary uses to read its configuration from environment variables.

/// A variable that is set but cannot be used; names the variable and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {name}: {value:?} ({reason})")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
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
}
