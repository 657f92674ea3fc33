use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn embedded_defaults_equal_struct_defaults() {
    let from_toml: Config = toml_from(DEFAULTS_TOML);
    assert_eq!(from_toml, Config::default());
}

fn toml_from(s: &str) -> Config {
    config::Config::builder()
        .add_source(config::File::from_str(s, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap()
}

#[test]
fn environment_overrides_file_and_lists_split_on_commas() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v.toml");
    std::fs::write(&file, "[kafka]\ngroup_id = \"from-file\"\nbrokers = \"a:1\"\n[model]\ndir = \"models/demo\"\n")
        .unwrap();
    let cfg =
        load_with_env(Some(&file), env(&[("VERDICT__KAFKA__BROKERS", "b:2"), ("VERDICT__KAFKA__INPUT_TOPICS", "x,y")]));
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(cfg.kafka.group_id, "from-file");
    assert_eq!(cfg.kafka.brokers, "b:2");
    assert_eq!(cfg.kafka.input_topics, vec!["x", "y"]);
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[batch]\nmax_events = 0\nbogus = 1\n[decide]\nreview_at = 0.95\ndecline_at = 0.9\n[kafka]\ncompression = \"brotli\"\n[model]\ndir = \"models/demo\"\n",
    )
    .unwrap();
    let errs = load_with_env(Some(&file), HashMap::new()).unwrap_err().0;
    let joined = errs.join("\n");
    assert!(joined.contains("batch.bogus: unknown key"), "{joined}");
    assert!(joined.contains("batch.max_events"), "{joined}");
    assert!(joined.contains("decide.review_at"), "{joined}");
    assert!(joined.contains("kafka.compression"), "{joined}");
    assert_eq!(errs.len(), 4, "{joined}");
}

fn load_str(toml: &str) -> Result<Config, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v.toml");
    std::fs::write(&file, toml).unwrap();
    load_with_env(Some(&file), HashMap::new()).map_err(|e| e.0)
}

#[test]
fn type_errors_name_their_key_and_all_are_reported() {
    let errs =
        load_str("[batch]\nmax_events = \"two\"\n[enrich]\nbackend = \"mongo\"\n[model]\ndir = \"models/demo\"\n")
            .unwrap_err();
    let joined = errs.join("\n");
    assert!(joined.contains("batch.max_events: invalid type: string \"two\", expected usize"), "{joined}");
    assert!(joined.contains("enrich.backend: unknown variant `mongo`"), "{joined}");
    assert_eq!(errs.len(), 2, "{joined}");
}

#[test]
fn a_secret_value_is_not_echoed_in_an_error() {
    let errs = load_str("[kafka.producer]\n\"sasl.password\" = [\"hunter2\"]\n[model]\ndir = \"models/demo\"\n")
        .unwrap_err()
        .join("\n");
    assert!(errs.contains("kafka.producer.\"sasl.password\": invalid type"), "{errs}");
    assert!(!errs.contains("hunter2"), "{errs}");
}

#[test]
fn defaults_name_no_demo_schema_entity_or_model() {
    let cfg = Config::default();
    assert!(cfg.decode.avro_schemas.is_empty());
    assert!(cfg.enrich.entities.is_empty());
    assert_eq!(cfg.decode.fields.entity_key, "entity_id");
    assert_eq!(cfg.model.dir, PathBuf::new());
    for demo_word in ["card", "merchant", "transaction", "models/demo", "chargeback"] {
        let active: String = DEFAULTS_TOML.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
        assert!(!active.contains(demo_word), "defaults.toml sets a demo value: {demo_word}");
    }
    let errs = load_str("").unwrap_err();
    assert_eq!(errs, vec!["model.dir: required: the directory holding manifest.json and the model it names"]);
}

#[test]
fn an_entity_entry_takes_neutral_defaults_and_needs_name_and_key() {
    let cfg = load_str("[model]\ndir = \"models/demo\"\n[[enrich.entities]]\nname = \"device\"\nkey = \"device_id\"\n")
        .unwrap();
    let e = &cfg.enrich.entities[..];
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].name.as_str(), e[0].key.as_str()), ("device", "device_id"));
    assert!(e[0].windows.is_empty() && e[0].features.is_empty(), "{e:?}");
    assert_eq!((e[0].value_field.as_deref(), e[0].distinct_field.as_deref()), (None, None));
    assert_eq!(e[0].bucket_s, 60);

    let errs = load_str("[model]\ndir = \"models/demo\"\n[[enrich.entities]]\nname = \"device\"\n").unwrap_err();
    assert_eq!(errs, vec!["enrich.entities[0].key: required (no default)"]);
}

#[test]
fn the_demo_layer_has_its_entity_and_a_file_replaces_it() {
    let demo = demo();
    assert_eq!(demo.model.dir, PathBuf::from("models/demo"));
    assert_eq!(demo.enrich.entities.len(), 1);
    assert_eq!(demo.enrich.entities[0].distinct_field.as_deref(), Some("merchant_id"));
    assert!(demo.validate().is_empty(), "{:?}", demo.validate());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v.toml");
    std::fs::write(&file, "[[enrich.entities]]\nname = \"device\"\nkey = \"device_id\"\n").unwrap();
    let cfg = checked(load_layers(&[DEFAULTS_TOML, DEMO_TOML], &[&file], HashMap::new())).unwrap();
    assert_eq!(cfg.enrich.entities.len(), 1, "{:?}", cfg.enrich.entities);
    assert_eq!(cfg.enrich.entities[0].name, "device");
    assert_eq!(cfg.enrich.entities[0].distinct_field, None);
}

#[test]
fn several_files_layer_in_order_the_last_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
    std::fs::write(&a, "[kafka]\ngroup_id = \"a\"\nbrokers = \"a:1\"\n").unwrap();
    std::fs::write(&b, "[kafka]\ngroup_id = \"b\"\n").unwrap();
    let demo = Path::new("config/demo.toml");
    let cfg = checked(load_layers(&[DEFAULTS_TOML], &[demo, &a, &b], HashMap::new())).unwrap();
    assert_eq!((cfg.kafka.group_id.as_str(), cfg.kafka.brokers.as_str()), ("b", "a:1"));
    assert_eq!(cfg.model.dir, PathBuf::from("models/demo"));
}

#[test]
fn a_configs_secrets_are_scrubbed_from_any_message() {
    let mut cfg = Config::default();
    cfg.enrich.redis_url = "redis://app:p%40ss-word@cache:6379/0".into();
    cfg.kafka.consumer.insert("sasl.password".into(), "kafka-secret-1".into());
    cfg.kafka.producer.insert("sasl.oauthbearer.config".into(), "principal=x secret=abc".into());
    cfg.kafka.producer.insert("client.id".into(), "verdict".into());
    let s = crate::redact::Secrets::of(&cfg);
    let m = "failed: bad value 'kafka-secret-1'; auth p@ss-word rejected; oauth principal=x secret=abc; \
             url redis://app:p%40ss-word@cache:6379/0; client verdict";
    let scrubbed = s.scrub(m);
    for secret in ["kafka-secret-1", "p@ss-word", "p%40ss-word", "principal=x secret=abc"] {
        assert!(!scrubbed.contains(secret), "{secret} in {scrubbed}");
    }
    assert!(scrubbed.contains("redis://app:***@cache:6379/0"), "{scrubbed}");
    assert!(scrubbed.contains("client verdict"), "non-secrets stay: {scrubbed}");
}

#[test]
fn per_window_bucket_widths_are_checked_all_at_once() {
    let toml = r#"
[model]
dir = "models/demo"
[[enrich.entities]]
name = "card"
key = "card_id"
bucket_s = 60
windows = [
  { name = "10m", size_s = 600 },
  { name = "1h", size_s = 3600, bucket_s = 90 },
  { name = "24h", size_s = 86400, bucket_s = 7000 },
  { name = "z", size_s = 60, bucket_s = 0 },
]
[[enrich.entities]]
name = "merchant"
key = "merchant_id"
ownership = "shared"
windows = [{ name = "1h", size_s = 3600, bucket_s = 300 }]
"#;
    let joined = load_str(toml).unwrap_err().join("\n");
    for want in [
        "enrich.entities[0].windows[1].bucket_s: 90 is not a multiple of the entity's finest width (60 s)",
        "enrich.entities[0].windows[2].size_s: must be a positive multiple of the window's bucket_s (7000)",
        "enrich.entities[0].windows[3].bucket_s: must be > 0",
        "enrich.entities[1].windows[0].bucket_s: a shared entity's windows all use the entity's bucket_s",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    let ok = "[decode.fields]\nentity_key = \"card_id\"\n[model]\ndir = \"models/demo\"\n[[enrich.entities]]\nname = \"card\"\nkey = \"card_id\"\nwindows = [{ name = \"10m\", size_s = 600 }, { name = \"24h\", size_s = 86400, bucket_s = 3600 }]\n";
    let cfg = load_str(ok).expect("valid widths");
    assert_eq!(cfg.enrich.entities[0].widths_s().collect::<Vec<_>>(), vec![60, 3600]);
}

#[test]
fn window_aggregates_are_checked_all_at_once_and_offer_only_what_is_listed() {
    let toml = r#"
[model]
dir = "models/demo"
[[enrich.entities]]
name = "card"
key = "card_id"
windows = [
  { name = "10m", size_s = 600, aggregates = ["count", "median", "p99"] },
  { name = "1h", size_s = 3600, aggregates = [] },
  { name = "24h", size_s = 86400, aggregates = ["sum", "sum"] },
]
"#;
    let joined = load_str(toml).unwrap_err().join("\n");
    for want in [
        "enrich.entities[0].windows[0].aggregates: unknown 'median', 'p99' (one of count, sum, avg, min, max, distinct)",
        "enrich.entities[0].windows[1].aggregates: lists none (leave it out for all six)",
        "enrich.entities[0].windows[2].aggregates: lists one twice",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    // Offered in the canonical order whatever the listed one; a model reading one not
    // offered is refused, naming its column and what is offered.
    let mut cfg = crate::config::demo();
    cfg.enrich.entities[0].windows[2].aggregates = Some(vec!["avg".into(), "count".into()]);
    let names = crate::enrich::Enricher::new(&cfg.enrich).unwrap().names().to_vec();
    let card: Vec<&str> = names.iter().map(String::as_str).filter(|n| n.starts_with("window:")).collect();
    assert_eq!(
        card,
        [
            "window:card.10m.count",
            "window:card.10m.distinct",
            "window:card.1h.sum",
            "window:card.24h.count",
            "window:card.24h.avg",
            "window:card.since_last_s"
        ]
    );
    cfg.enrich.entities[0].windows[2].aggregates = Some(vec!["count".into()]);
    let names = crate::enrich::Enricher::new(&cfg.enrich).unwrap().names().to_vec();
    let manifest = crate::score::Manifest::load(std::path::Path::new("models/demo")).unwrap();
    let Err(refused) = crate::decode::Vectorizer::new(&manifest, &names) else { panic!("24h avg is not offered") };
    let refused = refused.to_string();
    assert!(refused.contains("card_24h_avg") && refused.contains("window:card.24h.avg"), "{refused}");
}

#[test]
fn session_windows_are_checked_all_at_once_and_a_session_alone_is_an_entity_with_state() {
    let toml = r#"
[decode.fields]
entity_key = "user_id"
[model]
dir = "models/demo"
[[enrich.entities]]
name = "user"
key = "user_id"
session = { gap_s = 0, max_distinct = 0 }
[[enrich.entities]]
name = "page"
key = "page_id"
ownership = "shared"
session = { gap_s = 60 }
"#;
    let joined = load_str(toml).unwrap_err().join("\n");
    for want in [
        "enrich.entities[0].session.gap_s: must be > 0",
        "enrich.entities[0].session.max_distinct: must be > 0",
        "enrich.entities[1].session: session windows are for partition-owned entities",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    let ok = "[decode.fields]\nentity_key = \"user_id\"\n[model]\ndir = \"models/demo\"\n[[enrich.entities]]\nname = \"user\"\nkey = \"user_id\"\nsession = { gap_s = 1800 }\n";
    let cfg = load_str(ok).expect("a session window alone");
    let user = &cfg.enrich.entities[0];
    assert_eq!(user.session.as_ref().map(|s| (s.gap_s, s.max_distinct)), Some((1800, 1000)));
    assert!(user.has_state() && user.state_width() == 4);
    assert!(cfg.enrich.has_owned_windows());
}

#[test]
fn a_feature_store_url_is_checked_with_the_others_and_its_password_is_a_secret() {
    let base = "[model]\ndir = \"models/demo\"\n[enrich]\n";
    let errs = load_str(&format!("{base}backend = \"off\"\nfeatures_redis_url = \"redis://f:6379/\"\n"))
        .unwrap_err()
        .join("\n");
    assert!(
        errs.contains(
            "enrich.features_redis_url: 'redis://f:6379/' is set, but backend = \"off\" reads no online features"
        ),
        "{errs}"
    );
    // Windows in process, online features from a feature store's Redis.
    let cfg = load_str(&format!("{base}backend = \"memory\"\nfeatures_redis_url = \"redis://f:6379/\"\n")).unwrap();
    assert!(cfg.enrich.features_apart() && cfg.enrich.reads_features());
    let reader = cfg.enrich.for_features();
    assert_eq!((reader.backend, reader.redis_url.as_str()), (crate::enrich::Backend::Redis, "redis://f:6379/"));
    let errs = load_str(&format!("{base}backend = \"memory\"\nfeatures_redis_url = \"f:6379\"\n")).unwrap_err();
    assert!(errs.join("\n").contains("enrich.features_redis_url: 'f:6379' is not a redis:// URL"), "{errs:?}");
    let errs = load_str(&format!(
        "{base}backend = \"redis\"\nfeatures_redis_url = \"http://f:6379/\"\nredis_url = \"redis://a,redis://b\"\n"
    ))
    .unwrap_err();
    let joined = errs.join("\n");
    assert!(joined.contains("enrich.features_redis_url: 'http://f:6379/' is not a redis:// URL"), "{joined}");
    assert!(joined.contains("enrich.redis_url: lists 2 URLs"), "every problem at once: {joined}");
    let cfg =
        load_str(&format!("{base}backend = \"redis\"\nfeatures_redis_url = \"redis://ml:s3cret-feature@f:6379/\"\n"))
            .unwrap();
    assert!(cfg.enrich.features_apart());
    assert_eq!(cfg.enrich.for_features().redis_url, "redis://ml:s3cret-feature@f:6379/");
    let scrubbed = crate::redact::Secrets::of(&cfg).scrub("auth s3cret-feature refused");
    assert!(!scrubbed.contains("s3cret-feature"), "{scrubbed}");
}
