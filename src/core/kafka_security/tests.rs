use super::*;

fn props(s: &KafkaSecurity) -> Vec<(String, String)> {
    s.properties().unwrap().into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn get(s: &KafkaSecurity, key: &str) -> Option<String> {
    props(s).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

#[test]
fn the_default_is_plaintext_and_sets_nothing_else() {
    assert_eq!(props(&KafkaSecurity::default()), [("security.protocol".to_string(), "PLAINTEXT".to_string())]);
}

#[test]
fn sasl_ssl_scram_reads_the_password_file_without_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let (pw, ca) = (dir.path().join("pw"), dir.path().join("ca.pem"));
    std::fs::write(&pw, "s3cret-from-file\n").unwrap();
    std::fs::write(&ca, "not checked here: librdkafka reads it").unwrap();
    let s = KafkaSecurity {
        protocol: "SASL_SSL".into(),
        sasl_mechanism: "scram-sha-512".into(),
        username: "verdict".into(),
        password_file: pw.display().to_string(),
        ca_file: ca.display().to_string(),
        ..Default::default()
    };
    assert_eq!(get(&s, "security.protocol").as_deref(), Some("SASL_SSL"));
    assert_eq!(get(&s, "sasl.mechanism").as_deref(), Some("SCRAM-SHA-512"));
    assert_eq!(get(&s, "sasl.username").as_deref(), Some("verdict"));
    assert_eq!(get(&s, "sasl.password").as_deref(), Some("s3cret-from-file"));
    assert_eq!(get(&s, "ssl.ca.location"), Some(ca.display().to_string()));
    assert_eq!(get(&s, "ssl.endpoint.identification.algorithm").as_deref(), Some("https"));
    assert_eq!(s.secret_values(), ["s3cret-from-file"]);
}

#[test]
fn tls_without_a_ca_file_probes_the_system_bundle() {
    let s = KafkaSecurity { protocol: "ssl".into(), endpoint_identification: "none".into(), ..Default::default() };
    assert_eq!(get(&s, "ssl.ca.location").as_deref(), Some("probe"));
    assert_eq!(get(&s, "ssl.endpoint.identification.algorithm").as_deref(), Some("none"));
}

#[test]
fn oauthbearer_is_the_unsecured_test_token_for_username() {
    let s = KafkaSecurity {
        protocol: "sasl_plaintext".into(),
        sasl_mechanism: "OAUTHBEARER".into(),
        username: "tester".into(),
        ..Default::default()
    };
    assert_eq!(get(&s, "enable.sasl.oauthbearer.unsecure.jwt"), None, "verdict makes the token");
    assert_eq!(get(&s, "sasl.oauthbearer.config").as_deref(), Some("principal=tester"));
    let s = KafkaSecurity { username: String::new(), password: "p".into(), oauth_scope: "x".into(), ..s };
    assert_eq!(
        s.validate(),
        [
            "kafka.security.password: only used with PLAIN or SCRAM",
            "kafka.security.oauth_scope: only used with oauth_token_endpoint",
            "kafka.security.username: required with sasl_mechanism OAUTHBEARER and no oauth_token_endpoint (the test \
             token's principal)",
        ]
    );
}

#[test]
fn oauthbearer_with_a_token_endpoint_needs_its_client_and_names_every_problem() {
    let s = KafkaSecurity {
        protocol: "sasl_ssl".into(),
        sasl_mechanism: "OAUTHBEARER".into(),
        oauth_token_endpoint: "idp.example/token".into(),
        ..Default::default()
    };
    assert_eq!(
        s.validate(),
        [
            "kafka.security.oauth_token_endpoint: 'idp.example/token' is not an http:// or https:// URL",
            "kafka.security.oauth_client_id: required with oauth_token_endpoint",
            "kafka.security.oauth_client_secret: required with oauth_token_endpoint (or oauth_client_secret_file)",
        ]
    );
    let ok = KafkaSecurity {
        oauth_token_endpoint: "https://idp.example/token".into(),
        oauth_client_id: "svc".into(),
        oauth_client_secret: "top secret".into(),
        ..s
    };
    assert!(ok.validate().is_empty(), "{:?}", ok.validate());
    assert_eq!(ok.secret_values(), ["top secret"]);
    assert!(!format!("{ok:?}").contains("top secret"));
    let plain = KafkaSecurity { sasl_mechanism: "PLAIN".into(), username: "u".into(), password: "p".into(), ..ok };
    assert!(plain
        .validate()
        .contains(&"kafka.security.oauth_client_id: only used with sasl_mechanism OAUTHBEARER".into()));
}

#[test]
fn every_problem_is_reported_at_once_with_its_key() {
    let s =
        KafkaSecurity { protocol: "sasl_tls".into(), endpoint_identification: "strict".into(), ..Default::default() };
    assert_eq!(
        s.validate(),
        [
            "kafka.security.protocol: 'sasl_tls' is not one of plaintext, ssl, sasl_plaintext, sasl_ssl",
            "kafka.security.endpoint_identification: 'strict' is not one of https, none",
        ]
    );
    let s = KafkaSecurity {
        protocol: "sasl_ssl".into(),
        sasl_mechanism: "SCRAM-SHA-256".into(),
        password: "inline".into(),
        password_file: "/nonexistent/pw".into(),
        cert_file: "/nonexistent/cert.pem".into(),
        ..Default::default()
    };
    let problems = s.validate();
    assert_eq!(
        problems,
        [
            "kafka.security.key_file: required with cert_file",
            "kafka.security.password: set password or password_file, not both",
            "kafka.security.username: required with sasl_mechanism SCRAM-SHA-256",
        ]
    );
    assert!(!problems.join("\n").contains("inline"), "a problem shows the password");
    let err = s.properties().unwrap_err().to_string();
    assert!(err.contains("kafka.security.username") && !err.contains("inline"), "{err}");
}

#[test]
fn unreadable_files_and_settings_the_protocol_ignores_are_problems() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let s = KafkaSecurity {
        protocol: "sasl_plaintext".into(),
        sasl_mechanism: "PLAIN".into(),
        username: "u".into(),
        password_file: empty.display().to_string(),
        ca_file: "/nonexistent/ca.pem".into(),
        ..Default::default()
    };
    let problems = s.validate();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0], "kafka.security.ca_file: only used with protocol ssl or sasl_ssl");
    assert!(problems[1].starts_with("kafka.security.password_file: ") && problems[1].ends_with("is empty"));
    let s = KafkaSecurity { protocol: "ssl".into(), ca_file: "/nonexistent/ca.pem".into(), ..Default::default() };
    let problems = s.validate();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].starts_with("kafka.security.ca_file: cannot read /nonexistent/ca.pem: "), "{problems:?}");
    let s = KafkaSecurity { sasl_mechanism: "PLAIN".into(), username: "u".into(), ..Default::default() };
    assert_eq!(
        s.validate(),
        [
            "kafka.security.sasl_mechanism: only used with protocol sasl_plaintext or sasl_ssl",
            "kafka.security.username: only used with protocol sasl_plaintext or sasl_ssl",
        ]
    );
}

#[test]
fn debug_output_masks_every_secret() {
    let s = KafkaSecurity {
        password: "pw-1".into(),
        key_password: "pw-2".into(),
        username: "visible".into(),
        ..Default::default()
    };
    let shown = format!("{s:?}");
    assert!(shown.contains("visible") && shown.contains("***"), "{shown}");
    for secret in ["pw-1", "pw-2"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    // Redaction knows them even where the protocol (plaintext here) does not use them.
    assert_eq!(s.secret_values(), ["pw-1", "pw-2"]);
}
