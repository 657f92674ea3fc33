//! SASL/OAUTHBEARER tokens for every Kafka client verdict creates: from an OAuth 2.0 token
//! endpoint with the client-credentials grant (RFC 6749 §4.4: what Confluent Cloud, Azure
//! Event Hubs and Keycloak-fronted clusters take), or, without an endpoint, the unsecured
//! JWT only a test broker accepts. librdkafka asks for a token when the client starts and
//! again at 80% of its lifetime; the client contexts answer through [`token`]. (librdkafka's
//! own OIDC method needs libcurl, which the vendored build does not link.)
//!
//! The parameters travel in the client's `sasl.oauthbearer.config` property (librdkafka
//! marks it sensitive), `key=value` pairs separated by spaces, values percent-escaped.

use std::collections::HashMap;
use std::error::Error;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rdkafka::client::OAuthToken;

/// How long a token from an endpoint that names no `expires_in` is used (s).
const DEFAULT_LIFETIME_S: i64 = 3600;

/// The `sasl.oauthbearer.config` value for a token endpoint.
pub fn endpoint_config(endpoint: &str, client_id: &str, client_secret: &str, scope: &str) -> String {
    format!(
        "endpoint={} client_id={} client_secret={} scope={}",
        escape(endpoint),
        escape(client_id),
        escape(client_secret),
        escape(scope)
    )
}

/// The `sasl.oauthbearer.config` value for the unsecured test token of `principal`.
pub fn unsecured_config(principal: &str) -> String {
    format!("principal={}", escape(principal))
}

/// A token for the client whose `sasl.oauthbearer.config` is `config`. Errors name the
/// endpoint and its answer, never the secret.
pub fn token(config: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
    let params = parse(config.unwrap_or(""));
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    match params.get("endpoint") {
        Some(endpoint) => fetch(endpoint, &params, now_ms),
        None => {
            let principal = params.get("principal").cloned().unwrap_or_default();
            Ok(unsecured(&principal, now_ms))
        }
    }
}

/// POSTs the client-credentials grant and reads `access_token` and `expires_in`; the
/// principal is the JWT's `sub`, else the client id.
fn fetch(endpoint: &str, p: &HashMap<String, String>, now_ms: i64) -> Result<OAuthToken, Box<dyn Error>> {
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    let (client_id, secret, scope) = (get("client_id"), get("client_secret"), get("scope"));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", form(client_id), form(secret)));
    let mut body = String::from("grant_type=client_credentials");
    if !scope.is_empty() {
        body.push_str("&scope=");
        body.push_str(&form(scope));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let failed = |what: String| -> Box<dyn Error> { format!("OAuth token endpoint {endpoint}: {what}").into() };
    let mut reply = agent
        .post(endpoint)
        .header("Authorization", &format!("Basic {basic}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Accept", "application/json")
        .send(body.as_str())
        .map_err(|e| failed(e.to_string()))?;
    let status = reply.status().as_u16();
    let text = reply.body_mut().read_to_string().map_err(|e| failed(e.to_string()))?;
    let text = text.replace(secret, crate::redact::MASK);
    if status != 200 {
        let excerpt: String = text.chars().take(300).collect();
        return Err(failed(format!("HTTP {status}: {excerpt}")));
    }
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| failed(format!("the answer is not JSON: {e}")))?;
    let access = json["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| failed("no access_token in the answer".into()))?;
    let expires_s = json["expires_in"].as_i64().unwrap_or(DEFAULT_LIFETIME_S).max(1);
    let principal = jwt_subject(access).unwrap_or_else(|| client_id.to_string());
    Ok(OAuthToken { token: access.to_string(), principal_name: principal, lifetime_ms: now_ms + expires_s * 1000 })
}

/// The `sub` claim of a JWT, if `token` is one.
fn jwt_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["sub"].as_str().map(str::to_string)
}

/// librdkafka's unsecured JWT (`alg: none`) for `principal`, valid an hour.
fn unsecured(principal: &str, now_ms: i64) -> OAuthToken {
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let iat = now_ms / 1000;
    let token = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none"})),
        b64(serde_json::json!({"sub": principal, "iat": iat, "exp": iat + DEFAULT_LIFETIME_S}))
    );
    OAuthToken { token, principal_name: principal.to_string(), lifetime_ms: now_ms + DEFAULT_LIFETIME_S * 1000 }
}

/// `application/x-www-form-urlencoded` of one value.
fn form(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Escapes what would break the `key=value key=value` form.
fn escape(v: &str) -> String {
    v.replace('%', "%25").replace(' ', "%20").replace('=', "%3D")
}

fn unescape(v: &str) -> String {
    v.replace("%3D", "=").replace("%20", " ").replace("%25", "%")
}

fn parse(config: &str) -> HashMap<String, String> {
    config.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), unescape(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_string_round_trips_any_value() {
        let c = endpoint_config("https://idp/token?a=b", "id 1", "s%e=c r3t", "kafka read");
        let p = parse(&c);
        assert_eq!(
            (p["endpoint"].as_str(), p["client_id"].as_str(), p["client_secret"].as_str(), p["scope"].as_str()),
            ("https://idp/token?a=b", "id 1", "s%e=c r3t", "kafka read")
        );
    }

    #[test]
    fn the_unsecured_token_names_its_principal_and_lives_an_hour() {
        let t = token(Some(&unsecured_config("tester"))).expect("a token");
        assert_eq!(t.principal_name, "tester");
        assert_eq!(jwt_subject(&t.token).as_deref(), Some("tester"));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!((t.lifetime_ms - now - 3_600_000).abs() < 5_000);
    }
}
