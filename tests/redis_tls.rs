//! Redis over TLS with an ACL user, against a real redis-server that speaks TLS only and
//! requires client certificates (test CA and certificates made by the `openssl` CLI). The ACL
//! user is the README's own line (README "Security"), run as written: windows and online
//! features come out exact through it, every Redis use of verdict works under it, and nothing
//! is refused. A wrong password, an untrusted server and a missing client certificate fail
//! start-up with a clear error that shows no secret.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use verdict::config::RedisConfig;
use verdict::pipeline::Pipeline;
use verdict::telemetry::Metrics;

const PASSWORD: &str = "verdict-pw-7d2e9b";

/// The README's minimal ACL line (`ACL SETUSER verdict ...`), with `password` for its
/// placeholder, as arguments.
fn readme_acl(password: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(crate_path("README.md")).unwrap();
    let line = readme.lines().find(|l| l.starts_with("ACL SETUSER verdict ")).expect("the README's ACL line");
    assert!(line.contains(" >PASSWORD "), "{line}");
    line.split_whitespace().skip(1).map(|a| if a == ">PASSWORD" { format!(">{password}") } else { a.into() }).collect()
}

/// A TLS-only redis-server with the README's `verdict` user (password [`PASSWORD`]).
fn server_with_readme_user() -> TlsRedis {
    let server = TlsRedis::start();
    let _: () = redis::cmd("ACL").arg(readme_acl(PASSWORD)).query(&mut server.admin()).unwrap();
    server
}

/// `[redis]` settings of the `verdict` user: the test CA, the client certificate, the user and
/// its password from a file (kept alive by the returned directory).
fn verdict_user(server: &TlsRedis) -> (RedisConfig, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let cfg = RedisConfig {
        username: "verdict".into(),
        password_file: file.display().to_string(),
        ..server.pki.client_settings()
    };
    (cfg, dir)
}

#[test]
fn over_tls_with_the_readme_acl_user_windows_and_features_are_exact_and_nothing_is_refused() {
    let server = server_with_readme_user();
    let (security, _pw) = verdict_user(&server);
    let (mock, mut cfg) = mock_setup(4);
    mock.create_topic("labels", 1);
    cfg.enrich.backend = verdict::enrich::Backend::Redis;
    cfg.enrich.redis_url = server.url();
    cfg.redis = security;
    cfg.publish.format = verdict::config::DecisionFormat::Json;
    cfg.publish.include_aggregates = true;
    cfg.drift.labels_topic = "labels".into();
    // The card is partition-owned (checkpoints, claims, loads); the merchant is shared (the
    // window script's compare and set): both Redis paths run under the ACL.
    cfg.enrich.entities.push(verdict::enrich::EntityConfig {
        name: "merchant".into(),
        key: "merchant_id".into(),
        ownership: verdict::enrich::Ownership::Shared,
        windows: vec![verdict::enrich::config::WindowConfig::new("10m", 600)],
        value_field: Some("amount".into()),
        distinct_field: Some("card_id".into()),
        ..Default::default()
    });
    let events = produce_transactions(&mock, "events", 4_000, 31, None);

    // Online features for 50 cards and a deny list in a Redis set, written as the admin.
    let mut admin = server.admin();
    let mut seeded: Vec<String> = Vec::new();
    for e in &events {
        if seeded.len() < 50 && !seeded.contains(&e.card_id) {
            seeded.push(e.card_id.clone());
        }
    }
    seed_chargebacks(&mut admin, &seeded, |i| i + 1);
    let denied = events.last().unwrap().card_id.clone();
    let _: () = redis::cmd("SADD").arg("verdict:list:deny").arg(&denied).query(&mut admin).unwrap();
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        rules.path(),
        "[lists.deny]\nredis_set = \"verdict:list:deny\"\n[[rules]]\nid = \"deny\"\n\
         condition = \"event.card_id in lists.deny\"\naction = \"decline\"\nreason = \"deny_listed\"\npriority = 100\n",
    )
    .unwrap();
    cfg.rules.file = rules.path().display().to_string();

    let m = Metrics::new();
    let p = Pipeline::start(&cfg, m.clone()).unwrap();
    let decided = wait_or_fail_later("all decided", Duration::from_secs(60), || handled(&m) >= 4_000);
    assert!(decided.is_ok(), "{decided:?}; refused by the ACL: {:?}", server.acl_denials());
    wait_for("scored events kept", Duration::from_secs(10), || m.labels.with_label_values(&["kept"]).get() == 4_000);
    let decisions: Vec<serde_json::Value> = mock
        .read_all("decisions", Duration::from_millis(500))
        .iter()
        .map(|d| serde_json::from_slice(&d.payload).unwrap())
        .collect();
    for d in decisions.iter().take(100) {
        let label = serde_json::json!({"event_id": d["event_id"], "label": 1});
        mock.produce("labels", None, b"k", label.to_string().as_bytes());
    }
    mock.flush();
    wait_for("labels joined", Duration::from_secs(30), || m.labels.with_label_values(&["joined"]).get() == 100);
    assert!(p.shutdown(Duration::from_secs(30)).clean);

    assert_eq!(decisions.len(), 4_000);
    let mut denied_seen = 0;
    for d in &decisions {
        let card = d["entity_key"].as_str().unwrap();
        match seeded.iter().position(|c| c == card) {
            Some(i) => assert_eq!(d["features"]["card_chargebacks_90d"], (i + 1) as f64, "{d}"),
            None => assert_eq!(d["features"]["card_chargebacks_90d"], 0.0, "{d}"),
        }
        if card == denied {
            assert_eq!((d["action"].as_str(), d["reason"].as_str()), (Some("decline"), Some("deny_listed")), "{d}");
            denied_seen += 1;
        }
    }
    assert!(denied_seen > 0);
    assert_eq!(m.rules_list_refreshes.with_label_values(&["error"]).get(), 0);
    assert_eq!(layout(&mut admin, "card").as_deref(), Some("partition-v2"));
    assert_eq!(layout(&mut admin, "merchant").as_deref(), Some("shared"));
    assert_entity_exact(&mut admin, "card", &reference_totals(&events));
    let merchants =
        reference_by(events.iter().map(|e| (e.merchant_id.as_str(), e.amount, e.card_id.as_str(), e.event_time)));
    assert_entity_exact(&mut admin, "merchant", &merchants);
    assert_eq!(server.acl_denials(), Vec::<String>::new(), "the README's ACL lacks something verdict uses");
}

/// Every message of an error's chain, as `run` prints it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[test]
fn a_wrong_password_an_untrusted_server_or_no_client_certificate_fail_start_up_clearly() {
    let server = server_with_readme_user();
    let (right, _pw) = verdict_user(&server);
    let (_mock, mut cfg) = mock_setup(1);
    cfg.enrich.backend = verdict::enrich::Backend::Redis;
    cfg.enrich.redis_url = server.url();
    cfg.enrich.timeout_ms = 2_000;

    // A wrong password (as from VERDICT__REDIS__PASSWORD): start-up fails, saying so and where.
    let wrong = "wr0ng-redis-pw-5e1";
    cfg.redis = RedisConfig { password: wrong.into(), password_file: String::new(), ..right.clone() };
    let err = match Pipeline::start(&cfg, Metrics::new()) {
        Ok(_) => panic!("started with a wrong Redis password"),
        Err(e) => chain(&e),
    };
    assert!(err.contains("authentication failed"), "{err}");
    assert!(err.contains(&server.url()), "names the server: {err}");
    assert!(!err.contains(wrong), "shows the password: {err}");
    assert!(!format!("{cfg:?}").contains(wrong), "a printed config shows the password");

    // The right password through the same path connects.
    cfg.redis = right.clone();
    verdict::enrich::Enricher::connect(&cfg.enrich, &cfg.redis).expect("the right settings connect");

    // No CA file: the test CA is not among the public roots, so the server is not trusted.
    cfg.redis = RedisConfig { tls_ca_file: String::new(), ..right.clone() };
    let err = verdict::enrich::Enricher::connect(&cfg.enrich, &cfg.redis).err().expect("untrusted server").to_string();
    assert!(err.contains("certificate") && err.contains(&server.url()), "{err}");
    // tls_insecure skips that check (tests only).
    cfg.redis.tls_insecure = true;
    verdict::enrich::Enricher::connect(&cfg.enrich, &cfg.redis).expect("tls_insecure connects");

    // No client certificate: the server (tls-auth-clients yes) refuses the connection.
    cfg.redis = RedisConfig { tls_cert_file: String::new(), tls_key_file: String::new(), ..right.clone() };
    let err = verdict::enrich::Enricher::connect(&cfg.enrich, &cfg.redis).err().expect("no client certificate");
    assert!(err.to_string().contains(&server.url()), "{err}");
    assert!(!err.to_string().contains(PASSWORD), "{err}");
}

#[test]
fn redis_secrets_from_the_environment_are_taken_as_written() {
    let env: HashMap<String, String> = [
        ("VERDICT__ENRICH__REDIS_URL", "rediss://cache:6380/0"),
        ("VERDICT__REDIS__USERNAME", "42"),
        ("VERDICT__REDIS__PASSWORD", "0012345"),
        ("VERDICT__REDIS__TLS_INSECURE", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let loaded = verdict::config::load_layers(&[verdict::config::DEFAULTS_TOML, verdict::config::DEMO_TOML], &[], env);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let cfg = loaded.config.unwrap();
    assert_eq!((cfg.redis.username.as_str(), cfg.redis.password.as_str()), ("42", "0012345"));
    assert!(cfg.redis.tls_insecure);
    let scrubbed = verdict::redact::Secrets::of(&cfg).scrub("AUTH 42 0012345 refused");
    assert!(!scrubbed.contains("0012345"), "{scrubbed}");
}

#[test]
fn check_config_reports_every_redis_problem_with_its_key_and_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("client.pem");
    std::fs::write(&cert, "x").unwrap();
    let check = |toml: &str| {
        let file = dir.path().join("redis.toml");
        std::fs::write(&file, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_verdict"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["check-config", "--config", "config/demo.toml", "--config"])
            .arg(&file)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let secret = "inline-secret-93c1";
    let (code, text) = check(&format!(
        "[enrich]\nbackend = \"redis\"\nredis_url = \"rediss://cache:6380/\"\n[redis]\ntls_ca_file = \"/no/such/ca.pem\"\n\
         tls_cert_file = {cert:?}\npassword = \"{secret}\"\npassword_file = \"/no/such/password\"\n"
    ));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("3 problem(s)"), "{text}");
    for expected in [
        "redis.password: set together with redis.password_file; give one",
        "redis.tls_ca_file: cannot read /no/such/ca.pem",
        "redis.tls_key_file: required with redis.tls_cert_file",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains(secret), "{text}");

    // Files that exist but hold no usable certificate fail where `run` would: building the client.
    let pki = TestPki::generate();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").unwrap();
    let (code, text) = check(&format!(
        "[enrich]\nbackend = \"redis\"\nredis_url = \"rediss://verdict:{secret}@cache:6380/\"\n[redis]\n\
         tls_ca_file = {bad:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
        pki.path("client.pem"),
        pki.path("client.key")
    ));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("enrich.redis_url 'rediss://verdict:***@cache:6380/'"), "{text}");
    assert!(!text.contains(secret), "{text}");
    // With redis:// (no TLS) the TLS settings would silently not apply: refused.
    let (code, text) = check(&format!(
        "[enrich]\nredis_url = \"redis://cache:6379/\"\n[redis]\ntls_ca_file = {:?}\n",
        pki.path("ca.pem")
    ));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("redis.tls_ca_file: TLS settings are given but no Redis URL uses TLS"), "{text}");
}
