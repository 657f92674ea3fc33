//! `decode.schema_registry`: where the registry is, how verdict authenticates to it, and
//! how long it waits for it. Every problem is reported at once, naming its key.

use serde::{Deserialize, Serialize};

/// How the subject of a record schema is named (Confluent subject name strategies).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SubjectStrategy {
    /// `<topic>-value` (Confluent's default, `TopicNameStrategy`).
    Topic,
    /// The record's full name, e.g. `verdict.Decision` (`RecordNameStrategy`).
    Record,
    /// `<topic>-<record full name>` (`TopicRecordNameStrategy`).
    TopicRecord,
}

/// A Confluent Schema Registry (`decode.schema_registry`); off while `url` is empty.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaRegistryConfig {
    /// Base URL, `http://` or `https://` (empty: no registry, local schemas only).
    pub url: String,
    /// HTTP basic auth user (empty: no authentication).
    pub username: String,
    /// HTTP basic auth password. Better from `password_file` or the environment
    /// (`VERDICT__DECODE__SCHEMA_REGISTRY__PASSWORD`).
    pub password: String,
    /// A file holding the password (one trailing newline is ignored).
    pub password_file: String,
    /// PEM CA certificate(s) to trust for an `https://` registry (empty: the Mozilla roots).
    pub ca_file: String,
    /// PEM client certificate (mutual TLS; with `key_file`).
    pub cert_file: String,
    /// PEM private key of `cert_file`.
    pub key_file: String,
    /// Limit on one request, connecting included (ms).
    pub timeout_ms: u64,
    /// Retries of a request that failed to connect or got a 5xx, with doubling backoff.
    pub retries: u32,
    /// First backoff between retries (ms); doubles, up to 5 s.
    pub retry_backoff_ms: u64,
    /// Subject naming of the registered decision and drift schemas: `topic`, `record` or
    /// `topic_record`.
    pub subject_strategy: SubjectStrategy,
}

impl Default for SchemaRegistryConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            username: String::new(),
            password: String::new(),
            password_file: String::new(),
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            timeout_ms: 5_000,
            retries: 3,
            retry_backoff_ms: 200,
            subject_strategy: SubjectStrategy::Topic,
        }
    }
}

impl std::fmt::Debug for SchemaRegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &if self.password.is_empty() { "" } else { "***" })
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("timeout_ms", &self.timeout_ms)
            .field("retries", &self.retries)
            .field("retry_backoff_ms", &self.retry_backoff_ms)
            .field("subject_strategy", &self.subject_strategy)
            .finish()
    }
}

const KEY: &str = "decode.schema_registry";

impl SchemaRegistryConfig {
    /// Every problem of the section, as `decode.schema_registry.<key>: what is wrong`
    /// (files are read: a file that `run` could not read is reported here).
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        if self.url.is_empty() {
            return e;
        }
        let https = match self.url.parse::<ureq::http::Uri>() {
            Ok(u) if u.host().is_some_and(|h| !h.is_empty()) && matches!(u.scheme_str(), Some("http" | "https")) => {
                if u.authority().is_some_and(|a| a.as_str().contains('@')) {
                    e.push(format!("{KEY}.url: put credentials in username and password_file, not the URL"));
                }
                u.scheme_str() == Some("https")
            }
            _ => {
                e.push(format!("{KEY}.url: '{}' is not an http:// or https:// URL with a host", self.url));
                true
            }
        };
        if !self.password.is_empty() && !self.password_file.is_empty() {
            e.push(format!("{KEY}.password: set password or password_file, not both"));
        }
        if self.username.is_empty() && !(self.password.is_empty() && self.password_file.is_empty()) {
            e.push(format!("{KEY}.username: required with a password"));
        }
        if !self.password_file.is_empty() {
            if let Err(p) = self.password() {
                e.push(p);
            }
        }
        if !https {
            for (k, v) in [("ca_file", &self.ca_file), ("cert_file", &self.cert_file), ("key_file", &self.key_file)] {
                if !v.is_empty() {
                    e.push(format!("{KEY}.{k}: only used with an https:// url"));
                }
            }
        }
        match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (false, true) => e.push(format!("{KEY}.key_file: required with cert_file")),
            (true, false) => e.push(format!("{KEY}.cert_file: required with key_file")),
            _ => {}
        }
        if let Err(p) = super::client::tls_config(self) {
            e.push(p);
        }
        if self.timeout_ms == 0 {
            e.push(format!("{KEY}.timeout_ms: must be > 0"));
        }
        e
    }

    /// The password, from `password` or `password_file` (empty: none).
    pub fn password(&self) -> Result<String, String> {
        if self.password_file.is_empty() {
            return Ok(self.password.clone());
        }
        let text = std::fs::read_to_string(&self.password_file)
            .map_err(|err| format!("{KEY}.password_file: {}: {err}", self.password_file))?;
        let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
        if text.is_empty() {
            return Err(format!("{KEY}.password_file: {} is empty", self.password_file));
        }
        Ok(text.to_string())
    }

    /// The secret values of the section, for redaction.
    pub fn secret_values(&self) -> Vec<String> {
        let mut v: Vec<String> = [self.password.clone(), self.password().unwrap_or_default()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_of_the_section_is_reported_at_once_with_its_key() {
        let cfg = SchemaRegistryConfig {
            url: "http://registry:8081".into(),
            password: "inline".into(),
            password_file: "/nonexistent/registry-pw".into(),
            ca_file: "/nonexistent/ca.pem".into(),
            cert_file: "/nonexistent/cert.pem".into(),
            timeout_ms: 0,
            ..Default::default()
        };
        let problems = cfg.validate();
        let keys: Vec<&str> = problems.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "decode.schema_registry.password",
                "decode.schema_registry.username",
                "decode.schema_registry.password_file",
                "decode.schema_registry.ca_file",
                "decode.schema_registry.cert_file",
                "decode.schema_registry.key_file",
                "decode.schema_registry.ca_file",
                "decode.schema_registry.timeout_ms",
            ],
            "{problems:#?}"
        );
        assert!(problems.iter().all(|p| !p.contains("inline")), "the password is not echoed");
    }

    #[test]
    fn a_url_that_is_not_http_or_carries_credentials_is_refused() {
        for (url, what) in [
            ("registry:8081", "is not an http:// or https:// URL"),
            ("ftp://registry", "is not an http:// or https:// URL"),
            ("https://user:pw@registry", "not the URL"),
        ] {
            let cfg = SchemaRegistryConfig { url: url.into(), ..Default::default() };
            let problems = cfg.validate();
            assert!(
                problems.iter().any(|p| p.starts_with("decode.schema_registry.url: ") && p.contains(what)),
                "{url}: {problems:?}"
            );
        }
        assert!(SchemaRegistryConfig { url: "https://registry.internal:8081/".into(), ..Default::default() }
            .validate()
            .is_empty());
        assert!(SchemaRegistryConfig::default().validate().is_empty(), "off: nothing to check");
    }

    #[test]
    fn the_password_file_is_read_without_its_newline_and_counted_as_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let cfg = SchemaRegistryConfig {
            url: "http://registry".into(),
            username: "verdict".into(),
            password_file: pw.display().to_string(),
            ..Default::default()
        };
        assert!(cfg.validate().is_empty());
        assert_eq!(cfg.password().unwrap(), "s3cret");
        assert_eq!(cfg.secret_values(), ["s3cret"]);
        assert!(!format!("{cfg:?}").contains("s3cret"));
    }
}
