//! `verdict check-config` (a module of the binary): everything `run` does with a
//! configuration before it consumes, short of connecting to anything.
//!
//! `run` would load ONNX Runtime and the model (manifest checks and a validated session),
//! build the librdkafka consumer and producer configurations, load the Avro schemas, build
//! the enrich stage and the model's input rows from its names, parse the rules file and the
//! drift baseline. Each of those is done here, and each failure is reported with the key
//! that causes it, so a configuration that passes here does not fail `run` at start-up for
//! a reason it could have named (an unreachable broker or Redis is left to `run`).
//! [`online`] (`check-config --online`) also asks the schema registry, if one is set.

use std::collections::BTreeMap;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, ProducerContext};

use verdict::config::{is_secret_key, Config};
use verdict::core::kafka_security::SecurityError;
use verdict::decode::{LocalSchemas, Vectorizer};
use verdict::enrich::{Backend, Enricher};
use verdict::redact::Secrets;
use verdict::score::{init_runtime, ModelSpec, OnnxScorer};

/// Every problem `run` would meet before consuming, as `key.path: what is wrong`.
/// `known` are the problems already reported by loading; a check whose keys already have
/// one is skipped (it would only repeat it).
pub fn check(cfg: &Config, known: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let has = |prefix: &str| known.iter().any(|p| p.starts_with(prefix));

    // The whole client configuration includes verdict's own settings (kafka.compression is
    // compression.type): a problem loading found in them would only be repeated.
    let whole = !has("kafka");
    let secrets = Secrets::of(cfg);
    let consumer = verdict::consume::consumer_config(&cfg.kafka, cfg.telemetry.stats_interval_ms);
    let consumer = consumer.map(|c| (c, create::<BaseConsumer<Quiet>> as Create));
    check_kafka("kafka.consumer", whole.then_some(consumer), &cfg.kafka.consumer, &secrets, &mut out);
    let producer = verdict::publish::producer_config(&cfg.kafka);
    let producer = producer.map(|c| (c, create::<BaseProducer<Quiet>> as Create));
    check_kafka("kafka.producer", whole.then_some(producer), &cfg.kafka.producer, &secrets, &mut out);

    if !has("decode.avro_schemas") {
        if let Err(e) = LocalSchemas::load(&cfg.decode.avro_schemas) {
            out.push(e.to_string()); // each entry names its `decode.avro_schemas.<id>` key
        }
    }

    let spec = if has("model.dir") { None } else { check_model(cfg, &mut out) };

    // The names the enrich stage produces; built without connecting (a Redis backend is
    // checked for a well-formed URL, its names are those of the in-process store). A value
    // already reported has taken its default here; a failure then only repeats it.
    let names = {
        let mut enrich = cfg.enrich.clone();
        if enrich.reads_features() {
            // The clients as `run` builds them: the URL, the [redis] files read and their PEM parsed.
            let mut urls = Vec::new();
            if enrich.backend == Backend::Redis {
                urls.push(("enrich.redis_url", &enrich.redis_url));
            }
            if enrich.features_apart() {
                urls.push(("enrich.features_redis_url", &enrich.features_redis_url));
            }
            for (key, url) in urls {
                let client = verdict::core::redis::Client::new(key, url, &cfg.redis, enrich.redis_cluster);
                if let (false, Err(e)) = (has(key) || has("redis."), client) {
                    out.push(e.to_string());
                }
            }
            enrich.backend = Backend::Memory;
        }
        match Enricher::new(&enrich) {
            Ok(e) => Some(e.names().to_vec()),
            Err(e) => {
                if !has("enrich") {
                    out.push(format!("enrich: {e}"));
                }
                None
            }
        }
    };

    if let (Some(spec), Some(names)) = (&spec, &names) {
        if let Err(e) = Vectorizer::new(&spec.manifest, names) {
            out.push(format!("enrich.entities: the model in {} needs what they do not give: {e}", spec.dir.display()));
        }
        if let Err(e) = verdict::drift::Baseline::from_manifest(&spec.manifest) {
            out.push(format!("model.dir: {}: drift baseline: {e}", spec.dir.display()));
        }
    }
    // `features.<name>` must name one of the model's inputs (the rest was checked on loading).
    if let (Some(spec), false) = (&spec, has("publish.redact")) {
        let ids = verdict::publish::redact::IdPaths {
            event_id: &cfg.decode.fields.event_id,
            entity_key: &cfg.decode.fields.entity_key,
        };
        let r = &cfg.publish.redact;
        if let Err(e) = verdict::publish::redact::Redactor::new(r, ids, &cfg.enrich.record_key, &spec.manifest.inputs) {
            out.extend(e.0);
        }
    }

    if !cfg.rules.file.is_empty() && !has("rules") {
        match &names {
            Some(names) => {
                let classes = spec.as_ref().map(|s| &s.manifest.classes[..]).unwrap_or_default();
                let names = verdict::rules::readable_names(names, classes);
                if let Err(errors) = verdict::rules::RuleSet::load(
                    std::path::Path::new(&cfg.rules.file),
                    &names,
                    &cfg.decide.vocabulary().unwrap_or_default(),
                ) {
                    out.extend(errors.into_iter().map(|e| format!("rules.file: {e}")));
                }
            }
            None => out.push(format!("rules.file: {}: not checked (fix enrich first)", cfg.rules.file)),
        }
    }
    out
}

/// `check-config --online`: reaches the schema registry, if one is configured
/// (`GET /subjects`), and reports what it answered.
pub fn online(cfg: &Config) -> Vec<String> {
    let reg = &cfg.decode.schema_registry;
    if reg.url.is_empty() {
        return Vec::new();
    }
    let secrets = Secrets::of(cfg);
    let reached = verdict::decode::registry::RegistryClient::new(reg).and_then(|c| c.get("/subjects"));
    match reached {
        Ok(subjects) => {
            let n = subjects.as_array().map_or(0, Vec::len);
            println!("schema registry {}: reachable, {n} subjects", reg.url.trim_end_matches('/'));
            Vec::new()
        }
        Err(e) => vec![format!("decode.schema_registry.url: {}", secrets.scrub(&e.to_string()))],
    }
}

/// Loads ONNX Runtime, the manifest and one session (the manifest/session checks `run`
/// makes for each worker), and the shadow model if one is configured.
fn check_model(cfg: &Config, out: &mut Vec<String>) -> Option<ModelSpec> {
    let env = match init_runtime(cfg.model.ort_library.as_deref()) {
        Ok(env) => Some(env),
        Err(e) => {
            out.push(format!("model.ort_library: {e}"));
            None
        }
    };
    let dir = cfg.model.dir.display();
    let spec = match ModelSpec::from_config(&cfg.model) {
        Ok(spec) => spec,
        Err(e) => {
            out.push(format!("model.dir: {dir}: {e}"));
            return None;
        }
    };
    // A model that does not load is reported; the shadow model is still checked.
    let loads = match env.map(|env| OnnxScorer::load(&spec, env)) {
        Some(Err(e)) => {
            out.push(format!("model.dir: {dir}: {e}"));
            false
        }
        _ => true,
    };
    if let Some(shadow_dir) = &cfg.model.shadow_dir {
        let shadow_cfg = verdict::config::ModelConfig { dir: shadow_dir.clone(), ..cfg.model.clone() };
        let shadow = shadow_dir.display();
        match ModelSpec::from_config(&shadow_cfg) {
            Err(e) => out.push(format!("model.shadow_dir: {shadow}: {e}")),
            Ok(s) if s.manifest.inputs != spec.manifest.inputs || s.manifest.lanes() != spec.manifest.lanes() => {
                out.push(format!("model.shadow_dir: {shadow}: takes other inputs than the serving model {dir}"))
            }
            Ok(s) => {
                if let Some(env) = env {
                    if let Err(e) = OnnxScorer::load(&s, env) {
                        out.push(format!("model.shadow_dir: {shadow}: {e}"));
                    }
                }
            }
        }
    }
    loads.then_some(spec)
}

/// Creates a client of one kind from a configuration, to see whether librdkafka accepts it.
type Create = fn(&ClientConfig) -> Result<(), KafkaError>;

/// A client context that keeps librdkafka's own log lines (a client without brokers warns
/// that it has none) out of `check-config`'s output.
struct Quiet;

impl ClientContext for Quiet {
    // OAUTHBEARER tokens (an OAuth token endpoint, or the unsecured test token).
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        verdict::core::kafka_security::oauth::token(config)
    }

    fn log(&self, _: RDKafkaLogLevel, _: &str, _: &str) {}
    fn error(&self, _: KafkaError, _: &str) {}
}

impl ConsumerContext for Quiet {}

impl ProducerContext for Quiet {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Creates (and drops) a client from `cc` without its brokers: librdkafka checks the TLS
/// files, keys and the SASL mechanism's provider and credentials when a client is created,
/// not when a property is set, and with no broker it connects to nothing.
fn create<C: FromClientConfigAndContext<Quiet>>(cc: &ClientConfig) -> Result<(), KafkaError> {
    let mut cc = cc.clone();
    cc.remove("bootstrap.servers");
    C::from_config_and_context(&cc, Quiet).map(drop)
}

/// Validates every librdkafka property of one client: each property the user set on its own
/// (so each bad one is named), then (if given) the whole configuration, and then a client is
/// created from it (without connecting).
fn check_kafka(
    section: &str,
    full: Option<Result<(ClientConfig, Create), SecurityError>>,
    user: &BTreeMap<String, String>,
    secrets: &Secrets,
    out: &mut Vec<String>,
) {
    let before = out.len();
    for (key, value) in user {
        let mut one = ClientConfig::new();
        one.set(key, value);
        if let Err(e) = one.create_native_config() {
            out.push(format!("{section}.\"{key}\": {}", kafka_reason(&e, key, value)));
        }
    }
    let (full, create) = match full {
        None => return,
        Some(Err(e)) => return out.extend(e.0), // a secret file gone since loading
        Some(Ok(full)) => full,
    };
    if out.len() == before {
        if let Err(e) = full.create_native_config() {
            let key = match &e {
                KafkaError::ClientConfig(_, _, key, _) => key.as_str(),
                _ => "",
            };
            let value = full.get(key).unwrap_or_default();
            out.push(format!("kafka: {}", kafka_reason(&e, key, value)));
        } else if let Err(e) = create(&full) {
            let kind = section.trim_start_matches("kafka.");
            out.push(format!("kafka: librdkafka cannot create the {kind}: {}", secrets.scrub(&e.to_string())));
        }
    }
}

/// librdkafka's own description of a refused property, without the value of a secret.
fn kafka_reason(e: &KafkaError, key: &str, value: &str) -> String {
    let reason = match e {
        KafkaError::ClientConfig(_, desc, _, _) => desc.clone(),
        other => other.to_string(),
    };
    if is_secret_key(key) && !value.is_empty() {
        reason.replace(value, "***")
    } else {
        reason
    }
}
