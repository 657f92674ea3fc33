//! Loading: the layers (embedded defaults → files → environment) merged into one tree,
//! unknown keys and type errors collected with their paths, then [`Config::validate`].

use std::collections::HashMap;
use std::path::Path;

use super::{tracked, Config, ConfigErrors, CLICKSTREAM_TOML, DEFAULTS_TOML, DEMO_TOML};

/// Loads defaults → `file` → environment (`VERDICT__…`), then validates.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigErrors> {
    load_with_env(file, std::env::vars().collect())
}

/// Like [`load`], with an explicit environment (tests use this).
pub fn load_with_env(file: Option<&Path>, env: HashMap<String, String>) -> Result<Config, ConfigErrors> {
    checked(load_layers(&[DEFAULTS_TOML], file.as_slice(), env))
}

/// Loads defaults → each of `files` in order (`--config a.toml --config b.toml`: b wins) →
/// environment, then validates.
pub fn load_files(files: &[&Path]) -> Result<Config, ConfigErrors> {
    checked(load_layers(&[DEFAULTS_TOML], files, std::env::vars().collect()))
}

/// Loads defaults → the demo's configuration ([`DEMO_TOML`]) → `files` → environment, then
/// validates: what `verdict demo` runs with.
pub fn load_demo(files: &[&Path]) -> Result<Config, ConfigErrors> {
    checked(load_layers(&[DEFAULTS_TOML, DEMO_TOML], files, std::env::vars().collect()))
}

/// Loads defaults → the clickstream demo's configuration ([`CLICKSTREAM_TOML`]) → `files` →
/// environment, then validates.
pub fn load_clickstream_demo(files: &[&Path]) -> Result<Config, ConfigErrors> {
    checked(load_layers(&[DEFAULTS_TOML, CLICKSTREAM_TOML], files, std::env::vars().collect()))
}

/// The clickstream demo's configuration (defaults → [`CLICKSTREAM_TOML`]), unvalidated,
/// without the environment (paths relative to the repository): tests start from it.
pub fn clickstream() -> Config {
    match load_layers(&[DEFAULTS_TOML, CLICKSTREAM_TOML], &[], HashMap::new()) {
        Loaded { config: Some(cfg), problems } if problems.is_empty() => cfg,
        Loaded { problems, .. } => panic!("config/clickstream.toml is invalid: {}", problems.join("; ")),
    }
}

/// The demo's configuration (defaults → [`DEMO_TOML`]), unvalidated, without the
/// environment: its paths (`models/demo`, `schemas/transaction.avsc`) are relative to the
/// repository. Tests and benches start from it.
pub fn demo() -> Config {
    match load_layers(&[DEFAULTS_TOML, DEMO_TOML], &[], HashMap::new()) {
        Loaded { config: Some(cfg), problems } if problems.is_empty() => cfg,
        Loaded { problems, .. } => panic!("config/demo.toml is invalid: {}", problems.join("; ")),
    }
}

/// A configuration as loaded, before [`Config::validate`] is acted on.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration, when every layer parsed and the merged tree deserialized (an
    /// invalid value is dropped, reported, and takes its default).
    pub config: Option<Config>,
    /// Every problem: parse errors, unknown keys, type errors, [`Config::validate`].
    pub problems: Vec<String>,
}

/// The configuration if it has no problem, else every problem.
pub fn checked(loaded: Loaded) -> Result<Config, ConfigErrors> {
    match loaded {
        Loaded { config: Some(cfg), problems } if problems.is_empty() => Ok(cfg),
        Loaded { problems, .. } => Err(ConfigErrors(problems)),
    }
}

/// Merges the embedded `layers`, then `files` (in order), then `env`, deserializes the result and
/// validates it, collecting every problem with its path. `verdict check-config` uses the
/// configuration even when it has problems, to check what it can of the rest.
pub fn load_layers(layers: &[&str], files: &[&Path], mut env: HashMap<String, String>) -> Loaded {
    use config::{Environment, File, FileFormat};
    let verbatim = super::verbatim::take(&mut env);
    let fail = |problems| Loaded { config: None, problems };
    let mut builder = config::Config::builder();
    for layer in layers {
        builder = builder.add_source(File::from_str(layer, FileFormat::Toml));
    }
    for &path in files {
        if !path.exists() {
            return fail(vec![format!("{}: file not found", path.display())]);
        }
        builder = builder.add_source(File::from(path).format(FileFormat::Toml));
    }
    let unparsed: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| {
            let key = k.to_ascii_lowercase().strip_prefix("verdict__").map(|r| r.replace("__", "."));
            key.is_some_and(|key| VERBATIM_ENV_KEYS.contains(&key.as_str()))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    builder = builder.add_source(
        Environment::with_prefix("VERDICT")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("kafka.input_topics")
            .with_list_parse_key("model.execution_providers")
            .try_parsing(true)
            .source(Some(env)),
    );
    // Again, unparsed, for the keys that are strings whatever they look like.
    builder = builder
        .add_source(Environment::with_prefix("VERDICT").prefix_separator("__").separator("__").source(Some(unparsed)));
    let merged = match builder.build() {
        Ok(m) => m,
        Err(e) => return fail(vec![e.to_string()]),
    };
    let mut tree: serde_json::Value = match merged.try_deserialize() {
        Ok(t) => t,
        Err(e) => return fail(vec![e.to_string()]),
    };
    super::verbatim::put(&mut tree, verbatim);

    let mut problems = Vec::new();
    let known = serde_json::to_value(Config::default()).expect("defaults serialize");
    strip_unknown(&mut tree, &known, "", &mut problems);
    entity_defaults(&mut tree, &mut problems);
    let (config, errors) = tracked::from_tree::<Config>(tree);
    problems.extend(errors);
    if let Some(cfg) = &config {
        // A value already reported (and replaced by its default) is not reported again.
        let path = |p: &String| p.split(':').next().unwrap_or_default().to_string();
        let reported: std::collections::HashSet<String> = problems.iter().map(path).collect();
        problems.extend(cfg.validate().into_iter().filter(|p| !reported.contains(&path(p))));
    }
    Loaded { config, problems }
}

/// Keys whose environment value is taken as written: a password of digits (or `true`) must
/// not become a number (the other keys' values are parsed: `VERDICT__BATCH__MAX_EVENTS=500`).
const VERBATIM_ENV_KEYS: &[&str] = &[
    "redis.username",
    "redis.password",
    "redis.password_file",
    "redis.tls_ca_file",
    "redis.tls_cert_file",
    "redis.tls_key_file",
    "decode.schema_registry.username",
    "decode.schema_registry.password",
    "decode.schema_registry.password_file",
];

/// Neutral values of the optional keys of an `[[enrich.entities]]` entry. `name` and `key`
/// have none: an entry without them is an error naming `enrich.entities[i].name` / `.key`.
/// (The enrich stage's own struct default is the demo's `card` entity; filling the tree
/// here keeps it from ever applying to a configuration file.)
const ENTITY_DEFAULTS: &[(&str, &str)] = &[
    ("bucket_s", "60"),
    ("windows", "[]"),
    ("value_field", "null"),
    ("distinct_field", "null"),
    ("features", "[]"),
    ("max_feature_age_s", "604800"),
];

/// Fills each entity entry's missing optional keys with [`ENTITY_DEFAULTS`] and reports a
/// missing `name` or `key`.
fn entity_defaults(tree: &mut serde_json::Value, problems: &mut Vec<String>) {
    let Some(entities) = tree.pointer_mut("/enrich/entities").and_then(|e| e.as_array_mut()) else {
        return;
    };
    for (i, entity) in entities.iter_mut().enumerate() {
        let Some(map) = entity.as_object_mut() else { continue };
        for required in ["name", "key"] {
            if !map.contains_key(required) {
                problems.push(format!("enrich.entities[{i}].{required}: required (no default)"));
                map.insert(required.into(), serde_json::Value::String(String::new()));
            }
        }
        for (k, v) in ENTITY_DEFAULTS {
            if !map.contains_key(*k) {
                map.insert((*k).into(), serde_json::from_str(v).expect("entity default"));
            }
        }
    }
}

/// Free-form maps whose keys are not checked (librdkafka properties, schema ids).
const FREE_MAPS: &[&str] = &["kafka.consumer", "kafka.producer", "decode.avro_schemas", "publish.redact.fields"];

/// Removes keys not present in the default tree, recording each as an error.
fn strip_unknown(value: &mut serde_json::Value, known: &serde_json::Value, path: &str, errors: &mut Vec<String>) {
    let (Some(map), Some(known_map)) = (value.as_object_mut(), known.as_object()) else {
        return;
    };
    if FREE_MAPS.contains(&path) {
        return;
    }
    let unknown: Vec<String> = map.keys().filter(|k| !known_map.contains_key(*k)).cloned().collect();
    for key in unknown {
        let full = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        errors.push(format!("{full}: unknown key"));
        map.remove(&key);
    }
    for (key, child) in map.iter_mut() {
        let full = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        if let Some(known_child) = known_map.get(key) {
            strip_unknown(child, known_child, &full, errors);
        }
    }
}
