//! The one way verdict connects to Redis: [`client`] turns a Redis URL and the `[redis]`
//! security settings ([`RedisConfig`]: TLS CA and client certificate, ACL user and password)
//! into a `redis::Client`. Every Redis connection verdict makes (window state and online
//! features, partition checkpoints, `redis_set` lists, scored events for label joins) comes
//! from a client built here, so one setting applies to all of them.
//!
//! `rediss://` URLs use TLS (rustls with ring): the server's certificate is checked against
//! `tls_ca_file`, or against the public roots built into the binary (webpki-roots) when none
//! is named. The settings apply to every Redis URL of the configuration; a URL may carry its
//! own user and password instead (`rediss://user:pass@host`), not both (checked at start-up).
//!
//! `config` composes [`RedisConfig`] into the one tree (section `[redis]`); serde names,
//! defaults and `deny_unknown_fields` are the file format, so change them here.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

mod conn;

pub use conn::{is_cluster_error, seed_urls, validate_urls, AsyncConnection, Client, Connection};

/// Security settings applied to every Redis URL verdict connects to.
#[derive(Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// PEM file of the CA certificate(s) the server's certificate must chain to
    /// (`rediss://` URLs); empty: the public roots built into the binary.
    pub tls_ca_file: String,
    /// PEM client certificate (chain) for servers that require one (`tls-auth-clients`);
    /// set together with `tls_key_file`.
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
    /// Accept any server certificate (no verification): for tests only; every client built
    /// with it logs a warning.
    pub tls_insecure: bool,
    /// ACL user (`AUTH user password`); empty: the URL's user, else `default`.
    pub username: String,
    /// ACL password. Prefer `password_file` or the environment (`VERDICT__REDIS__PASSWORD`)
    /// to a value in a file under version control.
    pub password: String,
    /// File holding the ACL password (a trailing newline is ignored), read when verdict
    /// builds its clients (at start-up).
    pub password_file: String,
}

impl fmt::Debug for RedisConfig {
    /// The password masked: a configuration may be printed whole.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masked = |s: &str| if s.is_empty() { "" } else { crate::redact::MASK };
        f.debug_struct("RedisConfig")
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_insecure", &self.tls_insecure)
            .field("username", &self.username)
            .field("password", &masked(&self.password))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// Why a Redis client could not be built (before any connection is tried).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A file a `[redis]` key names could not be read.
    #[error("{key}: cannot read {path}: {source}")]
    File {
        /// The key naming the file (`redis.tls_ca_file`...).
        key: &'static str,
        /// The file.
        path: String,
        /// What reading it said.
        source: std::io::Error,
    },
    /// A `[redis]` setting cannot be used as given.
    #[error("{key}: {reason}")]
    Setting {
        /// The key (`redis.password_file`...).
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The URL, or the TLS material with it, was refused by the client library.
    #[error("{key} '{url}': {reason}")]
    Url {
        /// The key holding the URL (`enrich.redis_url`...).
        key: String,
        /// The URL, password masked.
        url: String,
        /// The client library's reason, secrets masked.
        reason: String,
    },
}

/// A client for `url` (found under the key `key`, named in errors) with `cfg`'s TLS files and
/// credentials; connects nothing yet. Reads the files each call; the client keeps what it read
/// for all its connections.
pub fn client(key: &str, url: &str, cfg: &RedisConfig) -> Result<redis::Client, ClientError> {
    let (info, certificates) = prepared(key, url, cfg)?;
    let refused = refusal(key, url);
    match certificates {
        None => redis::Client::open(info).map_err(refused),
        // The certificates are parsed here: a malformed PEM fails the client, not each connect.
        Some(c) => redis::Client::build_with_tls(info, c).map_err(refused),
    }
}

/// Maps a client-library error about `url` to [`ClientError::Url`], secrets masked.
fn refusal<'a>(key: &'a str, url: &'a str) -> impl Fn(redis::RedisError) -> ClientError + 'a {
    move |e| ClientError::Url {
        key: key.to_string(),
        url: crate::redact::redis_url(url).into_owned(),
        reason: crate::redact::redis_error(&e),
    }
}

/// TCP settings of every Redis connection verdict makes: `TCP_NODELAY` (redis-rs leaves
/// Nagle's algorithm on, so a command written in more than one segment could wait for the
/// acknowledgement of the one before; most Redis clients turn it off).
pub(crate) fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// `url`'s connection settings with `cfg`'s credentials and TLS mode applied, and the TLS
/// files `cfg` names (None: none named).
fn prepared(
    key: &str,
    url: &str,
    cfg: &RedisConfig,
) -> Result<(redis::ConnectionInfo, Option<redis::TlsCertificates>), ClientError> {
    let mut info = redis::IntoConnectionInfo::into_connection_info(url).map_err(refusal(key, url))?;
    // No `CLIENT SETINFO` at connect: Redis before 7.2 does not know it, and an ACL user
    // would need it allowed for nothing verdict uses (README "Security").
    let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
    if !cfg.username.is_empty() {
        settings = settings.set_username(&cfg.username);
    }
    if let Some(password) = cfg.password()? {
        settings = settings.set_password(password);
    }
    info = info.set_redis_settings(settings).set_tcp_settings(tcp_settings());
    let redis::ConnectionAddr::TcpTls { host, port, insecure, .. } = info.addr().clone() else {
        return Ok((info, None));
    };
    if cfg.tls_insecure || insecure {
        warn_insecure(&crate::redact::redis_url(url));
        info = info.set_addr(redis::ConnectionAddr::TcpTls { host, port, insecure: true, tls_params: None });
    }
    let read = |key: &'static str, path: &str| {
        std::fs::read(path).map_err(|source| ClientError::File { key, path: path.to_string(), source })
    };
    let root_cert = match cfg.tls_ca_file.as_str() {
        "" => None,
        path => Some(read("redis.tls_ca_file", path)?),
    };
    let client_tls = match (cfg.tls_cert_file.as_str(), cfg.tls_key_file.as_str()) {
        ("", "") => None,
        (cert, key) if !cert.is_empty() && !key.is_empty() => Some(redis::ClientTlsConfig {
            client_cert: read("redis.tls_cert_file", cert)?,
            client_key: read("redis.tls_key_file", key)?,
        }),
        (cert, _) => {
            let (key, other) = if cert.is_empty() {
                ("redis.tls_cert_file", "redis.tls_key_file")
            } else {
                ("redis.tls_key_file", "redis.tls_cert_file")
            };
            return Err(ClientError::Setting { key, reason: format!("required with {other}") });
        }
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok((info, None));
    }
    Ok((info, Some(redis::TlsCertificates { client_tls, root_cert })))
}

impl RedisConfig {
    /// The password from `password` or `password_file` (None: neither is set, the URL's
    /// applies).
    fn password(&self) -> Result<Option<String>, ClientError> {
        if !self.password.is_empty() {
            return Ok(Some(self.password.clone()));
        }
        if self.password_file.is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&self.password_file).map_err(|source| ClientError::File {
            key: "redis.password_file",
            path: self.password_file.clone(),
            source,
        })?;
        let password = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
        if password.is_empty() {
            return Err(ClientError::Setting {
                key: "redis.password_file",
                reason: format!("{} is empty", self.password_file),
            });
        }
        Ok(Some(password.to_string()))
    }

    /// The passwords these settings hold (the value, the file's content), to mask wherever
    /// they could be shown.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.password.is_empty() {
            out.push(self.password.clone());
        }
        if !self.password_file.is_empty() {
            let only_file = RedisConfig { password: String::new(), ..self.clone() };
            out.extend(only_file.password().ok().flatten());
        }
        out
    }

    /// Every problem of these settings for the Redis URLs in use (`(key, url)` pairs), each as
    /// `redis.key: what is wrong`: files that cannot be read, a password given twice, a
    /// certificate without its key, TLS settings with no `rediss://` URL to apply to.
    pub fn validate(&self, urls: &[(&str, &str)]) -> Vec<String> {
        let mut e = Vec::new();
        if !self.password.is_empty() && !self.password_file.is_empty() {
            e.push("redis.password: set together with redis.password_file; give one".into());
        } else if let Err(err) = self.password() {
            e.push(err.to_string());
        }
        for (key, path) in [
            ("redis.tls_ca_file", &self.tls_ca_file),
            ("redis.tls_cert_file", &self.tls_cert_file),
            ("redis.tls_key_file", &self.tls_key_file),
        ] {
            if !path.is_empty() {
                if let Err(err) = std::fs::File::open(path) {
                    e.push(format!("{key}: cannot read {path}: {err}"));
                }
            }
        }
        match (self.tls_cert_file.is_empty(), self.tls_key_file.is_empty()) {
            (false, true) => e.push("redis.tls_key_file: required with redis.tls_cert_file".into()),
            (true, false) => e.push("redis.tls_cert_file: required with redis.tls_key_file".into()),
            _ => {}
        }
        let tls_set = [&self.tls_ca_file, &self.tls_cert_file, &self.tls_key_file].iter().any(|p| !p.is_empty());
        if (tls_set || self.tls_insecure) && !urls.iter().any(|(_, url)| url.starts_with("rediss://")) {
            let key = if tls_set { "redis.tls_ca_file" } else { "redis.tls_insecure" };
            let keys: Vec<&str> = urls.iter().map(|(k, _)| *k).collect();
            e.push(format!(
                "{key}: TLS settings are given but no Redis URL uses TLS ({}: use rediss://)",
                keys.join(", ")
            ));
        }
        for (key, url) in urls {
            let Ok(info) = redis::IntoConnectionInfo::into_connection_info(*url) else { continue };
            let r = info.redis_settings();
            if r.password().is_some() && !(self.password.is_empty() && self.password_file.is_empty()) {
                let which = if self.password.is_empty() { "redis.password_file" } else { "redis.password" };
                e.push(format!("{which}: {key} carries a password too; give it in one place"));
            }
            if r.username().is_some() && !self.username.is_empty() {
                e.push(format!("redis.username: {key} names a user too; give it in one place"));
            }
        }
        e
    }
}

/// Set once the insecure-TLS warning was logged: it is repeated only with the first client of
/// each process, so reconnections do not fill the log.
static WARNED_INSECURE: AtomicBool = AtomicBool::new(false);

fn warn_insecure(url: &str) {
    if !WARNED_INSECURE.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            %url,
            "redis.tls_insecure = true: the Redis server's certificate is NOT verified; anyone on the path \
             can read and change the traffic. For tests only."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    #[test]
    fn password_file_is_read_without_its_trailing_newline_and_wins_over_no_url_password() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RedisConfig {
            username: "verdict".into(),
            password_file: file(&dir, "pw", "s3cret-from-file\n"),
            ..Default::default()
        };
        let c = client("enrich.redis_url", "redis://127.0.0.1:6379/0", &cfg).unwrap();
        let r = c.get_connection_info().redis_settings();
        assert_eq!((r.username(), r.password()), (Some("verdict"), Some("s3cret-from-file")));
        assert_eq!(cfg.secrets(), ["s3cret-from-file"]);
        assert!(!format!("{cfg:?}").contains("s3cret"), "Debug shows no password");
        let inline = RedisConfig { password: "inline-pw".into(), ..Default::default() };
        assert!(!format!("{inline:?}").contains("inline-pw"));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RedisConfig {
            tls_ca_file: "/no/such/ca.pem".into(),
            tls_cert_file: file(&dir, "cert.pem", "x"),
            password: "p".into(),
            password_file: file(&dir, "pw", "q"),
            ..Default::default()
        };
        let e = cfg.validate(&[("enrich.redis_url", "redis://u:urlpw@cache:6379/")]);
        let has = |s: &str| e.iter().any(|p| p.contains(s));
        assert!(has("redis.password: set together with redis.password_file"), "{e:?}");
        assert!(has("redis.tls_ca_file: cannot read /no/such/ca.pem"), "{e:?}");
        assert!(has("redis.tls_key_file: required with redis.tls_cert_file"), "{e:?}");
        assert!(has("no Redis URL uses TLS (enrich.redis_url: use rediss://)"), "{e:?}");
        assert!(has("redis.password: enrich.redis_url carries a password too"), "{e:?}");
        assert!(!e.iter().any(|p| p.contains("urlpw")), "{e:?}");
        assert!(RedisConfig::default().validate(&[("enrich.redis_url", "redis://u:pw@cache/")]).is_empty());
    }

    #[test]
    fn an_empty_or_missing_password_file_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let empty = RedisConfig { password_file: file(&dir, "pw", "\n"), ..Default::default() };
        let err = client("enrich.redis_url", "redis://127.0.0.1/", &empty).unwrap_err().to_string();
        assert!(err.starts_with("redis.password_file: ") && err.ends_with("is empty"), "{err}");
        let missing = RedisConfig { password_file: "/no/such/pw".into(), ..Default::default() };
        let err = client("rules.redis_url", "redis://127.0.0.1/", &missing).unwrap_err().to_string();
        assert!(err.starts_with("redis.password_file: cannot read /no/such/pw"), "{err}");
    }

    #[test]
    fn a_bad_ca_file_fails_the_client_naming_the_url_key_without_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let broken = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        let cfg = RedisConfig { tls_ca_file: file(&dir, "bad.pem", broken), ..Default::default() };
        let e = client("enrich.redis_url", "rediss://u:hunter2@cache:6380/", &cfg).unwrap_err().to_string();
        assert!(e.contains("root certificate") && !e.contains("hunter2"), "{e}");
    }
}
