//! Start-up: what librdkafka and `check-config` accept, and where secrets come from.

use std::collections::HashMap;
use std::process::Command;

use super::*;

/// The `[kafka.security]` of each mechanism (and of mutual TLS), with real files.
fn every_mechanism(pki: &Pki, dir: &Path) -> Vec<(&'static str, KafkaSecurity)> {
    let password_file = write(dir, "password", "s3cret\n");
    let scram = |mechanism: &str| KafkaSecurity {
        protocol: "sasl_ssl".into(),
        sasl_mechanism: mechanism.into(),
        username: "verdict".into(),
        password_file: password_file.clone(),
        ca_file: pki.path("ca.pem"),
        ..Default::default()
    };
    vec![
        ("PLAIN", KafkaSecurity { protocol: "sasl_plaintext".into(), ca_file: String::new(), ..scram("PLAIN") }),
        ("SCRAM-SHA-256", scram("SCRAM-SHA-256")),
        ("SCRAM-SHA-512", scram("SCRAM-SHA-512")),
        ("OAUTHBEARER (unsecured test token)", KafkaSecurity { password_file: String::new(), ..scram("OAUTHBEARER") }),
        ("TLS with a client certificate", tls_client(pki)),
    ]
}

#[test]
fn every_mechanism_is_accepted_by_librdkafka_when_verdict_creates_its_clients() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    for (name, security) in every_mechanism(&pki, dir.path()) {
        // Nothing listens on port 1: creating a client connects to nothing yet.
        let kafka = KafkaConfig { brokers: "127.0.0.1:1".into(), security, ..Default::default() };
        let created = std::panic::catch_unwind(|| (consumer(&kafka), publisher(&kafka)));
        assert!(created.is_ok(), "{name}: librdkafka refused the clients");
    }
    // A key whose password is wrong is refused when the client is created, not later.
    let mut wrong_key = every_mechanism(&pki, dir.path()).pop().unwrap().1;
    wrong_key.key_password_file = write(dir.path(), "wrong-key-password", "not-it\n");
    let kafka = KafkaConfig { brokers: "127.0.0.1:1".into(), security: wrong_key, ..Default::default() };
    let err = verdict::consume::create_consumer(&kafka, 1000, Metrics::new(), Arc::new(AtomicUsize::new(0)))
        .err()
        .expect("a client with a key it cannot decrypt")
        .to_string();
    assert!(err.contains("ssl.key.location") || err.contains("private key"), "{err}");
    assert!(!err.contains("not-it"), "{err}");
}

/// `verdict check-config --config config/demo.toml --config <toml>` with `env`: (exit code, stderr).
fn check_config(toml: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "security.toml", toml);
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["check-config", "--config", "config/demo.toml", "--config", &file])
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_config_accepts_sasl_ssl_scram_and_names_every_security_problem_at_once() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let password_file = write(dir.path(), "password", "s3cret-in-a-file\n");
    let good = format!(
        "[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nusername = \"verdict\"\n\
         password_file = {password_file:?}\nca_file = {:?}\n",
        pki.path("ca.pem")
    );
    let (code, err) = check_config(&good, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "nothing logged: {err}");

    // Each of these passed check-config before and failed (or connected in clear) at start-up.
    let bad = "[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-1\"\n\
               ca_file = \"/nonexistent/ca.pem\"\ncert_file = \"/nonexistent/client.pem\"\n";
    let (code, err) = check_config(bad, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("3 problem(s)"), "{err}");
    for expected in [
        "kafka.security.ca_file: cannot read /nonexistent/ca.pem",
        "kafka.security.key_file: required with cert_file",
        "kafka.security.sasl_mechanism: 'SCRAM-SHA-1' is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }

    // The password from the environment; SCRAM without it is named; a certificate librdkafka
    // cannot use is found by creating the clients.
    let scram = "[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-256\"\nusername = \"u\"\n";
    let (code, err) = check_config(scram, &[("VERDICT__KAFKA__SECURITY__PASSWORD", "from-env")]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = check_config(scram, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("kafka.security.password: required with sasl_mechanism SCRAM-SHA-256"), "{err}");
    let not_a_ca = write(dir.path(), "not-a-ca.pem", "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n");
    let (code, err) = check_config(&format!("[kafka.security]\nprotocol = \"ssl\"\nca_file = {not_a_ca:?}\n"), &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("kafka: librdkafka cannot create the consumer") && err.contains("ssl.ca.location"), "{err}");
}

#[test]
fn secrets_from_the_environment_are_taken_as_written() {
    let env: HashMap<String, String> = [
        ("VERDICT__KAFKA__SECURITY__PROTOCOL", "sasl_plaintext"),
        ("VERDICT__KAFKA__SECURITY__SASL_MECHANISM", "PLAIN"),
        ("VERDICT__KAFKA__SECURITY__USERNAME", "verdict"),
        // A number, a leading zero: kept as the string it is.
        ("VERDICT__KAFKA__SECURITY__PASSWORD", "007"),
        // A librdkafka property keeps its dotted name (it gave `invalid type: map` before).
        ("VERDICT__KAFKA__CONSUMER__SASL.PASSWORD", "0042"),
        ("VERDICT__KAFKA__PRODUCER__LINGER.MS", "5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let cfg =
        match verdict::config::load_layers(&[verdict::config::DEFAULTS_TOML, verdict::config::DEMO_TOML], &[], env) {
            verdict::config::Loaded { config: Some(cfg), problems } if problems.is_empty() => cfg,
            other => panic!("{:?}", other.problems),
        };
    assert_eq!(cfg.kafka.security.password, "007");
    assert_eq!(cfg.kafka.consumer.get("sasl.password").map(String::as_str), Some("0042"));
    assert_eq!(cfg.kafka.producer.get("linger.ms").map(String::as_str), Some("5"));
    // Redaction covers them; the configuration's debug output does not show the password.
    let secrets = verdict::redact::Secrets::of(&cfg);
    assert_eq!(secrets.scrub("password 007, property 0042"), "password ***, property ***");
    assert!(!format!("{:?}", cfg.kafka.security).contains("007"));
}
