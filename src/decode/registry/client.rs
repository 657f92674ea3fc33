//! The HTTP side of the Schema Registry: one blocking agent (rustls, basic auth), bounded
//! retries with backoff on connection errors and 5xx, and the registry's error bodies
//! (`{"error_code": 40403, "message": "Schema 7 not found"}`) turned into typed errors.

use std::time::Duration;

use serde::Deserialize;
use ureq::tls::{ClientCert, PemItem, RootCerts, TlsConfig, TlsProvider};

use super::config::SchemaRegistryConfig;
use crate::backoff::Backoff;

/// The registry's content type (requests and replies).
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A registry request that failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A `decode.schema_registry` file could not be used (key and file named).
    #[error("{0}")]
    Config(String),
    /// No reply (connection refused, timeout, TLS) or a 5xx, through every retry.
    #[error("schema registry {url}{path}: unavailable after {attempts} attempts: {reason}")]
    Unavailable {
        /// The base URL.
        url: String,
        /// The request path.
        path: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The registry answered with an error (4xx), with its `error_code` and message.
    #[error("schema registry {url}{path}: HTTP {status}, error_code {code}: {message}")]
    Refused {
        /// The base URL.
        url: String,
        /// The request path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The registry's `error_code` (0: none in the body).
        code: i64,
        /// The registry's `message` (or the body).
        message: String,
    },
    /// A 2xx reply that is not the documented shape.
    #[error("schema registry {url}{path}: unexpected reply: {detail}")]
    BadReply {
        /// The base URL.
        url: String,
        /// The request path.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

impl RegistryError {
    /// The registry's `error_code`, if it refused the request.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The registry's error body.
#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    message: Option<String>,
}

/// A blocking client of one registry. Cheap to share by reference across threads.
pub struct RegistryClient {
    agent: ureq::Agent,
    base: String,
    /// `Basic …` (None: no authentication). Never logged.
    auth: Option<String>,
    retries: u32,
    backoff: Duration,
}

impl RegistryClient {
    /// A client for `cfg` (its password file and PEM files read now).
    pub fn new(cfg: &SchemaRegistryConfig) -> Result<Self, RegistryError> {
        let tls = tls_config(cfg).map_err(RegistryError::Config)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(cfg.timeout_ms.max(1))))
            .tls_config(tls)
            .build();
        let password = cfg.password().map_err(RegistryError::Config)?;
        let auth = (!cfg.username.is_empty()).then(|| {
            use base64::Engine;
            let pair = format!("{}:{password}", cfg.username);
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        });
        Ok(Self {
            agent: ureq::Agent::new_with_config(config),
            base: cfg.url.trim_end_matches('/').to_string(),
            auth,
            retries: cfg.retries,
            backoff: Duration::from_millis(cfg.retry_backoff_ms.max(1)),
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET path` (JSON reply), retried as configured.
    pub fn get(&self, path: &str) -> Result<serde_json::Value, RegistryError> {
        self.call(path, None)
    }

    /// `POST /subjects/{subject}/versions` with an Avro schema; the id the registry gives it.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let path = format!("/subjects/{}/versions", encode_segment(subject));
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" }).to_string();
        let reply = self.call(&path, Some(&body))?;
        reply.get("id").and_then(serde_json::Value::as_u64).and_then(|id| u32::try_from(id).ok()).ok_or_else(|| {
            RegistryError::BadReply { url: self.base.clone(), path, detail: format!("no integer 'id' in {reply}") }
        })
    }

    /// One request with bounded retries on connection errors and 5xx.
    fn call(&self, path: &str, body: Option<&str>) -> Result<serde_json::Value, RegistryError> {
        let mut backoff = Backoff::new(self.backoff, Duration::from_secs(5).max(self.backoff));
        let mut attempts = 0;
        loop {
            attempts += 1;
            let reason = match self.once(path, body) {
                Ok((status, text)) if status < 300 => {
                    return serde_json::from_str(&text).map_err(|e| RegistryError::BadReply {
                        url: self.base.clone(),
                        path: path.to_string(),
                        detail: format!("{e}"),
                    });
                }
                Ok((status, text)) if status < 500 => {
                    let parsed: Option<ErrorBody> = serde_json::from_str(&text).ok();
                    let (code, message) = match parsed {
                        Some(b) => (b.error_code.unwrap_or(0), b.message.unwrap_or(text)),
                        None => (0, text),
                    };
                    return Err(RegistryError::Refused {
                        url: self.base.clone(),
                        path: path.to_string(),
                        status,
                        code,
                        message,
                    });
                }
                Ok((status, text)) => format!("HTTP {status}: {}", text.chars().take(200).collect::<String>()),
                Err(e) => e.to_string(),
            };
            if attempts > self.retries {
                return Err(RegistryError::Unavailable {
                    url: self.base.clone(),
                    path: path.to_string(),
                    attempts,
                    reason,
                });
            }
            std::thread::sleep(backoff.next_delay());
        }
    }

    fn once(&self, path: &str, body: Option<&str>) -> Result<(u16, String), ureq::Error> {
        let url = format!("{}{path}", self.base);
        let mut response = match body {
            None => {
                let mut req = self.agent.get(&url).header("Accept", CONTENT_TYPE);
                if let Some(a) = &self.auth {
                    req = req.header("Authorization", a);
                }
                req.call()?
            }
            Some(body) => {
                let mut req = self.agent.post(&url).header("Accept", CONTENT_TYPE).header("Content-Type", CONTENT_TYPE);
                if let Some(a) = &self.auth {
                    req = req.header("Authorization", a);
                }
                req.send(body)?
            }
        };
        let status = response.status().as_u16();
        Ok((status, response.body_mut().read_to_string()?))
    }
}

/// A subject as one URL path segment (a record name has dots only, a topic may have more).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The TLS settings of `cfg`: its CA file (else the Mozilla roots) and client certificate.
pub(super) fn tls_config(cfg: &SchemaRegistryConfig) -> Result<TlsConfig, String> {
    let key = "decode.schema_registry";
    let read = |k: &str, path: &str| -> Result<Vec<PemItem<'static>>, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{key}.{k}: {path}: {e}"))?;
        let items: Result<Vec<_>, _> = ureq::tls::parse_pem(&bytes).collect();
        items.map_err(|e| format!("{key}.{k}: {path}: {e}"))
    };
    let mut tls = TlsConfig::builder().provider(TlsProvider::Rustls);
    if !cfg.ca_file.is_empty() {
        let certs: Vec<_> = read("ca_file", &cfg.ca_file)?
            .into_iter()
            .filter_map(|i| match i {
                PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(format!("{key}.ca_file: {}: no PEM certificate in it", cfg.ca_file));
        }
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    if !cfg.cert_file.is_empty() && !cfg.key_file.is_empty() {
        let chain: Vec<_> = read("cert_file", &cfg.cert_file)?
            .into_iter()
            .filter_map(|i| match i {
                PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .collect();
        let key_item = read("key_file", &cfg.key_file)?.into_iter().find_map(|i| match i {
            PemItem::PrivateKey(k) => Some(k),
            _ => None,
        });
        match (chain.is_empty(), key_item) {
            (true, _) => return Err(format!("{key}.cert_file: {}: no PEM certificate in it", cfg.cert_file)),
            (_, None) => return Err(format!("{key}.key_file: {}: no PEM private key in it", cfg.key_file)),
            (false, Some(k)) => tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, k))),
        }
    }
    Ok(tls.build())
}
