//! Secrets kept out of logs and error messages.
//!
//! A Redis URL may carry a password (`redis://user:pass@host:6379/0`) and librdkafka
//! properties may carry SASL passwords, OAuth configs, private keys. Whatever can reach a log
//! line or an error message goes through one of these first:
//!
//! * [`redis_url`]: the URL with its password masked (`redis://user:***@host:6379/0`);
//! * [`text`]: any `scheme://user:pass@` inside free text masked (a safety net for error
//!   strings of unknown origin);
//! * [`kafka_properties`]: librdkafka properties with secret values masked
//!   ([`is_secret_property`] says which);
//! * [`Secrets`]: every secret value of a configuration (`Secrets::of`, on the config side),
//!   to scrub from any message
//!   (start-up errors, `check-config` output), whatever printed it.

use std::borrow::Cow;
use std::collections::BTreeMap;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Parts of a librdkafka property name that mark its value secret.
const SECRET_PROPERTY_PARTS: [&str; 6] =
    ["password", "secret", "token", "sasl.oauthbearer.config", "ssl.key", "ssl.keystore"];

/// Query parameters of a URL whose value is masked.
const SECRET_QUERY_PARTS: [&str; 4] = ["pass", "secret", "token", "key"];

/// `url` with the password of its userinfo (and any password-like query parameter) masked:
/// `redis://user:pass@host:6379/0` → `redis://user:***@host:6379/0`. A URL without one is
/// returned as it is.
pub fn redis_url(url: &str) -> Cow<'_, str> {
    if url.contains(',') {
        // A Redis Cluster's seed nodes (`enrich.redis_cluster`): each URL masked.
        return Cow::Owned(url.split(',').map(redis_url).collect::<Vec<_>>().join(","));
    }
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return Cow::Borrowed(url) };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..scheme_end]);
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let tail = &rest[authority_end..];
    match tail.find('?') {
        Some(q) => {
            out.push_str(&tail[..=q]);
            let (query, fragment) = tail[q + 1..].split_at(tail[q + 1..].find('#').unwrap_or(tail.len() - q - 1));
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((k, _)) if SECRET_QUERY_PARTS.iter().any(|p| k.to_ascii_lowercase().contains(p)) => {
                        out.push_str(k);
                        out.push('=');
                        out.push_str(MASK);
                    }
                    _ => out.push_str(pair),
                }
            }
            out.push_str(fragment);
        }
        None => out.push_str(tail),
    }
    if out == url {
        Cow::Borrowed(url)
    } else {
        Cow::Owned(out)
    }
}

/// `message` with every URL inside it passed through [`redis_url`] (URLs end at whitespace
/// or a quote). For error strings whose origin is not known.
pub fn text(message: &str) -> Cow<'_, str> {
    if !message.contains("://") {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("://") {
        // The scheme: letters, digits, '+', '-', '.' before "://".
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |j| j + 1);
        let end =
            rest[i..].find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`')).map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..start]);
        out.push_str(&redis_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Whether a librdkafka property holds a secret (`sasl.password`, `ssl.key.pem`,
/// `sasl.oauthbearer.client.secret`...).
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PROPERTY_PARTS.iter().any(|p| name.contains(p))
}

/// librdkafka properties as they may be shown: secret values replaced by [`MASK`].
pub fn kafka_properties<'a>(props: impl IntoIterator<Item = (&'a String, &'a String)>) -> BTreeMap<String, String> {
    props
        .into_iter()
        .map(|(k, v)| (k.clone(), if is_secret_property(k) { MASK.to_string() } else { v.clone() }))
        .collect()
}

/// The password in a URL's userinfo, as written and percent-decoded.
pub fn url_password(url: &str) -> Vec<String> {
    let Some(rest) = url.find("://").map(|i| &url[i + 3..]) else { return Vec::new() };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some((_, password)) = authority.rfind('@').and_then(|at| authority[..at].split_once(':')) else {
        return Vec::new();
    };
    if password.is_empty() {
        return Vec::new();
    }
    let mut out = vec![password.to_string()];
    if let Ok(decoded) = percent_decode(password) {
        if decoded != password {
            out.push(decoded);
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push(h * 16 + l);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

/// A Redis error as verdict shows it: authentication failures named as such (the server
/// says `WRONGPASS` or `NOAUTH`), and any URL in it without its password.
pub fn redis_error(e: &redis::RedisError) -> String {
    let text = text(&e.to_string()).into_owned();
    let auth = e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH");
    if auth && !text.to_ascii_lowercase().contains("authentication failed") {
        format!("authentication failed (check the user and password: [redis] or the Redis URL): {text}")
    } else {
        text
    }
}

/// Every secret value of a configuration: the Redis passwords (`enrich.redis_url`,
/// `rules.redis_url`, `[redis]` password and password file), the secret librdkafka properties
/// (`kafka.consumer`, `kafka.producer`) and the `[kafka.security]` secrets, those in files
/// included. [`Secrets::scrub`] masks them in any message.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// Longest first, so a secret containing another is masked whole.
    values: Vec<String>,
}

impl Secrets {
    /// Secrets given as they are.
    pub fn from_values(mut values: Vec<String>) -> Self {
        values.retain(|v| !v.is_empty());
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Self { values }
    }

    /// `message` with every secret masked, and any URL password too (see [`text`]).
    pub fn scrub(&self, message: &str) -> String {
        let mut out = text(message).into_owned();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_url_keeps_everything_but_its_password() {
        assert_eq!(redis_url("redis://user:hunter2@host:6379/0"), "redis://user:***@host:6379/0");
        assert_eq!(redis_url("redis://:hunter2@10.0.0.1:6379"), "redis://:***@10.0.0.1:6379");
        assert_eq!(redis_url("rediss://u:p%40ss@h/1?protocol=resp3"), "rediss://u:***@h/1?protocol=resp3");
        // An '@' inside the password: the userinfo ends at the last one.
        assert_eq!(redis_url("redis://u:a@b@host/"), "redis://u:***@host/");
        assert_eq!(redis_url("redis://host/0?password=hunter2&db=1"), "redis://host/0?password=***&db=1");
        for plain in ["redis://127.0.0.1:6379/", "redis://user@host/", "not a url", ""] {
            assert!(matches!(redis_url(plain), Cow::Borrowed(_)), "{plain} unchanged");
        }
    }

    #[test]
    fn urls_inside_messages_are_masked() {
        let m = "connecting to redis://app:hunter2@cache:6379/0: timed out (was 'redis://:pw@other/')";
        assert_eq!(text(m), "connecting to redis://app:***@cache:6379/0: timed out (was 'redis://:***@other/')");
        assert_eq!(text("no url here"), "no url here");
    }

    #[test]
    fn secret_kafka_properties_are_named_by_the_issue_list() {
        for secret in [
            "sasl.password",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl.keystore.password",
            "ssl.keystore.location",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret",
            "SASL.PASSWORD",
            "custom.token.value",
        ] {
            assert!(is_secret_property(secret), "{secret}");
        }
        for plain in ["bootstrap.servers", "sasl.username", "sasl.mechanism", "ssl.ca.location", "group.id"] {
            assert!(!is_secret_property(plain), "{plain}");
        }
        let props: BTreeMap<String, String> =
            [("sasl.password", "hunter2"), ("sasl.username", "app")].map(|(k, v)| (k.into(), v.into())).into();
        let shown = kafka_properties(&props);
        assert_eq!(shown["sasl.password"], MASK);
        assert_eq!(shown["sasl.username"], "app");
    }
}
