//! Kafka TLS and SASL: the `[kafka.security]` section and its one mapping onto librdkafka
//! properties, applied to every Kafka client verdict creates (the group consumer, the
//! producer, the labels consumer and `check-config`'s clients) before the user's own
//! `[kafka.consumer]` / `[kafka.producer]` properties, which still override.
//!
//! Secrets (the SASL password, the private key's password) come from the TOML, the
//! environment (`VERDICT__KAFKA__SECURITY__PASSWORD`) or a file (`password_file`, read when
//! the properties are built, at start-up, its trailing newline trimmed). [`KafkaSecurity::validate`] and [`KafkaSecurity::properties`] share one pass
//! ([`KafkaSecurity::resolve`]), so what `check-config` accepts is what the clients get.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The protocols, as written in the TOML (any case) and as librdkafka spells them.
const PROTOCOLS: [(&str, &str); 4] =
    [("plaintext", "PLAINTEXT"), ("ssl", "SSL"), ("sasl_plaintext", "SASL_PLAINTEXT"), ("sasl_ssl", "SASL_SSL")];

/// The SASL mechanisms verdict's librdkafka is built with (`ssl-vendored` gives SCRAM and
/// OAUTHBEARER). OAUTHBEARER tokens come from verdict ([`oauth`]: an OAuth token endpoint
/// with the client-credentials grant, or the unsecured test token): librdkafka's own OIDC
/// method needs libcurl, which the crate's `curl-static` feature does not get linked into
/// librdkafka's build (its configure check fails).
const MECHANISMS: [&str; 4] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

/// `[kafka.security]`: how verdict's Kafka clients connect and authenticate. Empty strings
/// are unset. Debug output masks the secrets.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl` (TLS), `sasl_plaintext` or `sasl_ssl` (SASL over TLS).
    pub protocol: String,
    /// With a `sasl_*` protocol: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER`.
    pub sasl_mechanism: String,
    /// SASL user (PLAIN, SCRAM); with OAUTHBEARER and no `oauth_token_endpoint`, the
    /// principal of the unsecured test token.
    pub username: String,
    /// SASL password (PLAIN, SCRAM). Better from `password_file` or the environment.
    pub password: String,
    /// File holding the SASL password (instead of `password`).
    pub password_file: String,
    /// PEM file (or directory) of the CA certificates that sign the brokers' certificates;
    /// empty: the system's CA bundle.
    pub ca_file: String,
    /// PEM client certificate, for brokers that require TLS client authentication.
    pub cert_file: String,
    /// PEM private key of `cert_file`.
    pub key_file: String,
    /// Password of an encrypted `key_file`.
    pub key_password: String,
    /// File holding the password of `key_file` (instead of `key_password`).
    pub key_password_file: String,
    /// `https`: the broker's certificate must name the host connected to; `none`: not checked.
    pub endpoint_identification: String,
    /// OAUTHBEARER: the OAuth 2.0 token endpoint (client-credentials grant); empty: the
    /// unsecured test token for `username`.
    pub oauth_token_endpoint: String,
    /// OAUTHBEARER: the client id sent to the token endpoint.
    pub oauth_client_id: String,
    /// OAUTHBEARER: the client secret. Better from `oauth_client_secret_file` or the environment.
    pub oauth_client_secret: String,
    /// File holding the client secret (instead of `oauth_client_secret`).
    pub oauth_client_secret_file: String,
    /// OAUTHBEARER: the scope asked for (empty: none).
    pub oauth_scope: String,
}

impl Default for KafkaSecurity {
    fn default() -> Self {
        Self {
            protocol: "plaintext".into(),
            sasl_mechanism: String::new(),
            username: String::new(),
            password: String::new(),
            password_file: String::new(),
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            key_password: String::new(),
            key_password_file: String::new(),
            endpoint_identification: "https".into(),
            oauth_token_endpoint: String::new(),
            oauth_client_id: String::new(),
            oauth_client_secret: String::new(),
            oauth_client_secret_file: String::new(),
            oauth_scope: String::new(),
        }
    }
}

impl fmt::Debug for KafkaSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masked = |v: &str| if v.is_empty() { "" } else { crate::redact::MASK };
        f.debug_struct("KafkaSecurity")
            .field("protocol", &self.protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("username", &self.username)
            .field("password", &masked(&self.password))
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("key_password", &masked(&self.key_password))
            .field("key_password_file", &self.key_password_file)
            .field("endpoint_identification", &self.endpoint_identification)
            .field("oauth_token_endpoint", &self.oauth_token_endpoint)
            .field("oauth_client_id", &self.oauth_client_id)
            .field("oauth_client_secret", &masked(&self.oauth_client_secret))
            .field("oauth_client_secret_file", &self.oauth_client_secret_file)
            .field("oauth_scope", &self.oauth_scope)
            .finish()
    }
}

/// `[kafka.security]` could not be turned into client properties: every problem, each as
/// `kafka.security.key: what is wrong` (no secret value in them).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct SecurityError(pub Vec<String>);

/// One pass over the section: the librdkafka properties, the secret values read, and every
/// problem.
#[derive(Debug, Default)]
pub struct Resolved {
    /// librdkafka properties, in the order they are set.
    pub properties: Vec<(&'static str, String)>,
    /// Every secret value (inline or read from a file), for redaction.
    pub secrets: Vec<String>,
    /// Every problem, `kafka.security.key: what is wrong`.
    pub problems: Vec<String>,
}

impl Resolved {
    fn problem(&mut self, key: &str, what: impl fmt::Display) {
        self.problems.push(format!("kafka.security.{key}: {what}"));
    }

    fn set(&mut self, property: &'static str, value: impl Into<String>) {
        self.properties.push((property, value.into()));
    }

    /// The secret from `key` or `file_key`, whichever is set (a file's trailing newline
    /// trimmed); both set, an unreadable or empty file are problems.
    fn secret(&mut self, (key, inline): (&str, &str), (file_key, file): (&str, &str)) -> Option<String> {
        let value = match (inline.is_empty(), file.is_empty()) {
            (true, true) => return None,
            (false, false) => {
                self.problem(key, format_args!("set {key} or {file_key}, not both"));
                return None;
            }
            (false, true) => inline.to_string(),
            (true, false) => match std::fs::read_to_string(file) {
                Ok(text) if text.trim_end_matches(['\r', '\n']).is_empty() => {
                    self.problem(file_key, format_args!("{file} is empty"));
                    return None;
                }
                Ok(text) => text.trim_end_matches(['\r', '\n']).to_string(),
                Err(e) => {
                    self.problem(file_key, format_args!("cannot read {file}: {e}"));
                    return None;
                }
            },
        };
        self.secrets.push(value.clone());
        Some(value)
    }

    /// A problem unless `path` (a file or, where `dir_ok`, a directory) can be read.
    fn readable(&mut self, key: &str, path: &str, dir_ok: bool) {
        let result = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() && dir_ok => std::fs::read_dir(path).map(drop),
            Ok(_) => std::fs::File::open(path).map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.problem(key, format_args!("cannot read {path}: {e}"));
        }
    }

    /// A problem for each of `keys` that is set although `why` does not hold.
    fn unused(&mut self, keys: &[(&str, &str)], why: &str) {
        for (key, value) in keys {
            if !value.is_empty() {
                self.problem(key, format_args!("only used {why}"));
            }
        }
    }
}

impl KafkaSecurity {
    /// Every problem of the section (values, missing credentials, unreadable files), each
    /// as `kafka.security.key: what is wrong`.
    pub fn validate(&self) -> Vec<String> {
        self.resolve().problems
    }

    /// The librdkafka properties for this section, secret files read now.
    pub fn properties(&self) -> Result<Vec<(&'static str, String)>, SecurityError> {
        let resolved = self.resolve();
        if resolved.problems.is_empty() {
            Ok(resolved.properties)
        } else {
            Err(SecurityError(resolved.problems))
        }
    }

    /// Every secret value of the section, those in files included (for redaction); the
    /// inline ones even where the protocol does not use them.
    pub fn secret_values(&self) -> Vec<String> {
        let mut values = self.resolve().secrets;
        values.extend(
            [&self.password, &self.key_password, &self.oauth_client_secret]
                .into_iter()
                .filter(|v| !v.is_empty())
                .cloned(),
        );
        values.sort();
        values.dedup();
        values
    }

    /// Checks the section, reads its secret files and maps it onto librdkafka properties.
    pub fn resolve(&self) -> Resolved {
        let mut r = Resolved::default();
        let protocol = PROTOCOLS.iter().find(|(name, _)| name.eq_ignore_ascii_case(self.protocol.trim()));
        match protocol {
            Some((_, librdkafka)) => r.set("security.protocol", *librdkafka),
            None => r.problem(
                "protocol",
                format_args!("'{}' is not one of plaintext, ssl, sasl_plaintext, sasl_ssl", self.protocol),
            ),
        }
        let (tls, sasl) = match protocol {
            Some((name, _)) => (Some(name.ends_with("ssl")), Some(name.starts_with("sasl"))),
            None => (None, None),
        };
        match self.endpoint_identification.as_str() {
            "https" | "none" => {}
            other => r.problem("endpoint_identification", format_args!("'{other}' is not one of https, none")),
        }
        if tls == Some(true) {
            self.tls(&mut r);
        } else if tls == Some(false) {
            r.unused(
                &[
                    ("ca_file", &self.ca_file),
                    ("cert_file", &self.cert_file),
                    ("key_file", &self.key_file),
                    ("key_password", &self.key_password),
                    ("key_password_file", &self.key_password_file),
                ],
                "with protocol ssl or sasl_ssl",
            );
        }
        if sasl == Some(true) {
            self.sasl(&mut r);
        } else if sasl == Some(false) {
            r.unused(
                &[
                    ("sasl_mechanism", &self.sasl_mechanism),
                    ("username", &self.username),
                    ("password", &self.password),
                    ("password_file", &self.password_file),
                    ("oauth_token_endpoint", &self.oauth_token_endpoint),
                    ("oauth_client_id", &self.oauth_client_id),
                    ("oauth_client_secret", &self.oauth_client_secret),
                    ("oauth_client_secret_file", &self.oauth_client_secret_file),
                    ("oauth_scope", &self.oauth_scope),
                ],
                "with protocol sasl_plaintext or sasl_ssl",
            );
        }
        r
    }

    /// TLS: CA, client certificate and key, host name check.
    fn tls(&self, r: &mut Resolved) {
        if self.ca_file.is_empty() {
            // librdkafka's built-in OpenSSL is vendored: its compiled-in CA path is not this
            // machine's, so the standard bundle locations are probed instead.
            r.set("ssl.ca.location", "probe");
        } else {
            r.readable("ca_file", &self.ca_file, true);
            r.set("ssl.ca.location", self.ca_file.clone());
        }
        match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (false, false) => {
                r.readable("cert_file", &self.cert_file, false);
                r.readable("key_file", &self.key_file, false);
                r.set("ssl.certificate.location", self.cert_file.clone());
                r.set("ssl.key.location", self.key_file.clone());
            }
            (false, true) => r.problem("key_file", "required with cert_file"),
            (true, false) => r.problem("cert_file", "required with key_file"),
            (true, true) => {}
        }
        let key_password =
            r.secret(("key_password", &self.key_password), ("key_password_file", &self.key_password_file));
        if let Some(password) = key_password {
            if self.key_file.is_empty() {
                r.problem("key_password", "only used with key_file");
            }
            r.set("ssl.key.password", password);
        }
        if matches!(self.endpoint_identification.as_str(), "https" | "none") {
            r.set("ssl.endpoint.identification.algorithm", self.endpoint_identification.clone());
        }
    }

    /// SASL: the mechanism and its credentials.
    fn sasl(&self, r: &mut Resolved) {
        let mechanism = MECHANISMS.iter().copied().find(|m| m.eq_ignore_ascii_case(self.sasl_mechanism.trim()));
        let Some(mechanism) = mechanism else {
            let what = if self.sasl_mechanism.is_empty() {
                format!("required with protocol {}: one of", self.protocol.to_ascii_lowercase())
            } else {
                format!("'{}' is not one of", self.sasl_mechanism)
            };
            r.problem("sasl_mechanism", format_args!("{what} {}", MECHANISMS.join(", ")));
            return;
        };
        r.set("sasl.mechanism", mechanism);
        let oauth_keys = [
            ("oauth_token_endpoint", self.oauth_token_endpoint.as_str()),
            ("oauth_client_id", &self.oauth_client_id),
            ("oauth_client_secret", &self.oauth_client_secret),
            ("oauth_client_secret_file", &self.oauth_client_secret_file),
            ("oauth_scope", &self.oauth_scope),
        ];
        if mechanism == "OAUTHBEARER" {
            // Tokens come from verdict's client contexts (`oauth::token`), which read these
            // parameters back from `sasl.oauthbearer.config`.
            r.unused(&[("password", &self.password), ("password_file", &self.password_file)], "with PLAIN or SCRAM");
            if self.oauth_token_endpoint.is_empty() {
                // The unsecured JWT, which only a test broker takes.
                r.unused(&oauth_keys[1..], "with oauth_token_endpoint");
                if self.username.is_empty() {
                    r.problem(
                        "username",
                        "required with sasl_mechanism OAUTHBEARER and no oauth_token_endpoint (the test token's principal)",
                    );
                }
                r.set("sasl.oauthbearer.config", oauth::unsecured_config(&self.username));
                return;
            }
            let endpoint = self.oauth_token_endpoint.trim();
            if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
                r.problem("oauth_token_endpoint", format_args!("'{endpoint}' is not an http:// or https:// URL"));
            }
            if self.oauth_client_id.is_empty() {
                r.problem("oauth_client_id", "required with oauth_token_endpoint");
            }
            let secret = r.secret(
                ("oauth_client_secret", &self.oauth_client_secret),
                ("oauth_client_secret_file", &self.oauth_client_secret_file),
            );
            if self.oauth_client_secret.is_empty() && self.oauth_client_secret_file.is_empty() {
                r.problem("oauth_client_secret", "required with oauth_token_endpoint (or oauth_client_secret_file)");
            }
            r.set(
                "sasl.oauthbearer.config",
                oauth::endpoint_config(endpoint, &self.oauth_client_id, &secret.unwrap_or_default(), &self.oauth_scope),
            );
            return;
        }
        r.unused(&oauth_keys, "with sasl_mechanism OAUTHBEARER");
        let password = r.secret(("password", &self.password), ("password_file", &self.password_file));
        if self.username.is_empty() {
            r.problem("username", format_args!("required with sasl_mechanism {mechanism}"));
        }
        if self.password.is_empty() && self.password_file.is_empty() {
            r.problem("password", format_args!("required with sasl_mechanism {mechanism} (or password_file)"));
        }
        r.set("sasl.username", self.username.clone());
        r.set("sasl.password", password.unwrap_or_default());
    }
}

pub mod oauth;

#[cfg(test)]
mod tests;
