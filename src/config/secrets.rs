//! The secrets of a configuration, collected on the config side so that `redact` (a bottom
//! module every stage uses) need not know the configuration tree.

use super::Config;
use crate::redact::Secrets;

impl Secrets {
    /// The secrets of `cfg`.
    pub fn of(cfg: &Config) -> Self {
        let mut values = Vec::new();
        for urls in [&cfg.enrich.redis_url, &cfg.enrich.features_redis_url, &cfg.rules.redis_url] {
            // A Redis Cluster's seed nodes: a comma-separated list, one password each.
            values.extend(crate::core::redis::seed_urls(urls).flat_map(crate::redact::url_password));
        }
        values.extend(cfg.redis.secrets());
        for (k, v) in cfg.kafka.consumer.iter().chain(&cfg.kafka.producer) {
            if crate::redact::is_secret_property(k) && !v.is_empty() {
                values.push(v.clone());
            }
        }
        values.extend(cfg.kafka.security.secret_values());
        values.extend(cfg.decode.schema_registry.secret_values());
        values.extend(cfg.publish.redact.secret_values());
        Self::from_values(values)
    }
}
