//! Semantic checks of the whole tree: every problem, each with its dotted path.

use super::Config;

impl Config {
    /// Every semantic problem, each as `path: what is wrong`.
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            e.push("kafka.brokers: must not be empty".into());
        }
        if k.group_id.trim().is_empty() {
            e.push("kafka.group_id: must not be empty".into());
        }
        if k.input_topics.is_empty() {
            e.push("kafka.input_topics: at least one topic is required".into());
        }
        for (i, t) in k.input_topics.iter().enumerate() {
            if t.trim().is_empty() {
                e.push(format!("kafka.input_topics[{i}]: must not be empty"));
            }
            if [&k.decisions_topic, &k.review_topic, &k.dead_letter_topic].contains(&t) {
                e.push(format!("kafka.input_topics[{i}]: '{t}' is also an output topic"));
            }
        }
        for (name, v) in [
            ("decisions_topic", &k.decisions_topic),
            ("review_topic", &k.review_topic),
            ("dead_letter_topic", &k.dead_letter_topic),
        ] {
            if v.trim().is_empty() {
                e.push(format!("kafka.{name}: must not be empty"));
            }
        }
        if k.commit_interval_ms == 0 {
            e.push("kafka.commit_interval_ms: must be > 0".into());
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&k.compression.as_str()) {
            e.push(format!("kafka.compression: '{}' is not one of none, gzip, snappy, lz4, zstd", k.compression));
        }
        e.extend(k.security.validate());
        let b = &self.batch;
        if b.max_events == 0 || b.max_events > 100_000 {
            e.push(format!("batch.max_events: must be in 1..=100000, got {}", b.max_events));
        }
        if b.queue_batches == 0 {
            e.push("batch.queue_batches: must be > 0".into());
        }
        if b.max_unacked_batches == 0 {
            e.push("batch.max_unacked_batches: must be > 0".into());
        }
        e.extend(self.decode.schema_registry.validate());
        if self.decode.max_payload_bytes == 0 {
            e.push("decode.max_payload_bytes: must be > 0".into());
        }
        if self.decode.event_time_max_ahead_ms < 0 {
            e.push(format!(
                "decode.event_time_max_ahead_ms: must be >= 0, got {}",
                self.decode.event_time_max_ahead_ms
            ));
        }
        let p = &self.publish;
        if p.dead_letter_max_bytes != 0 && p.dead_letter_max_bytes < 4096 {
            e.push(format!(
                "publish.dead_letter_max_bytes: must be 0 (the producer's limit) or at least 4096, got {}",
                p.dead_letter_max_bytes
            ));
        }
        let ids = crate::publish::redact::IdPaths {
            event_id: &self.decode.fields.event_id,
            entity_key: &self.decode.fields.entity_key,
        };
        e.extend(p.redact.validate(ids));
        for (id, path) in &self.decode.avro_schemas {
            if id.parse::<u32>().is_err() {
                e.push(format!("decode.avro_schemas.{id}: schema id must be an unsigned integer"));
            }
            if !path.exists() {
                e.push(format!("decode.avro_schemas.{id}: file {} not found", path.display()));
            }
        }
        for (name, v) in [
            ("event_id", &self.decode.fields.event_id),
            ("entity_key", &self.decode.fields.entity_key),
            ("event_time", &self.decode.fields.event_time),
        ] {
            if v.trim().is_empty() {
                e.push(format!("decode.fields.{name}: must not be empty"));
            }
        }
        let mut redis_urls = vec![("enrich.redis_url", self.enrich.redis_url.as_str())];
        if !self.rules.redis_url.is_empty() {
            redis_urls.push(("rules.redis_url", self.rules.redis_url.as_str()));
        }
        if !self.enrich.features_redis_url.is_empty() {
            redis_urls.push(("enrich.features_redis_url", self.enrich.features_redis_url.as_str()));
        }
        let seeds: Vec<(&str, &str)> = redis_urls
            .iter()
            .flat_map(|&(key, urls)| crate::core::redis::seed_urls(urls).map(move |url| (key, url)))
            .collect();
        e.extend(self.redis.validate(&seeds));
        e.extend(crate::core::redis::validate_urls(&redis_urls, self.enrich.redis_cluster, &self.enrich.key_prefix));
        e.extend(self.enrich.validate());
        e.extend(self.enrich.validate_ownership(&self.decode.fields.entity_key));
        let m = &self.model;
        if m.dir.as_os_str().is_empty() {
            e.push("model.dir: required: the directory holding manifest.json and the model it names".into());
        } else if !m.dir.join("manifest.json").exists() {
            e.push(format!("model.dir: {} has no manifest.json", m.dir.display()));
        }
        if m.workers == 0 || m.workers > 64 {
            e.push(format!("model.workers: must be in 1..=64, got {}", m.workers));
        }
        if m.intra_threads == 0 {
            e.push("model.intra_threads: must be > 0".into());
        }
        if let Some(eps) = &m.execution_providers {
            for (i, ep) in eps.iter().enumerate() {
                if crate::score::ExecutionProviderKind::parse(ep).is_none() {
                    e.push(format!("model.execution_providers[{i}]: '{ep}' is not one of cpu, cuda, tensorrt"));
                }
            }
        }
        let d = &self.decide;
        for (name, v) in [("review_at", d.review_at), ("decline_at", d.decline_at)] {
            if !(0.0..=1.0).contains(&v) {
                e.push(format!("decide.{name}: must be within [0, 1], got {v}"));
            }
        }
        let in_range = |v: f64| (0.0..=1.0).contains(&v);
        if in_range(d.review_at) && in_range(d.decline_at) && d.review_at <= d.decline_at {
            if let Err(problems) = d.vocabulary() {
                e.extend(problems);
            }
        }
        if !(0.0..=1.0).contains(&self.model.shadow_sample) {
            e.push(format!("model.shadow_sample: must be within [0, 1], got {}", self.model.shadow_sample));
        }
        e.extend(self.model.rollout.validate());
        let dr = &self.drift;
        if dr.window_s == 0 {
            e.push("drift.window_s: must be at least 1".into());
        }
        if dr.window_events == 0 {
            e.push("drift.window_events: must be at least 1".into());
        }
        if !(dr.psi_warn > 0.0 && dr.psi_warn < dr.psi_alert) {
            e.push(format!(
                "drift.psi_warn: must be above 0 and below psi_alert, got {} / {}",
                dr.psi_warn, dr.psi_alert
            ));
        }
        if dr.enabled && dr.topic.trim().is_empty() {
            e.push("drift.topic: must not be empty".into());
        }
        if in_range(d.review_at) && in_range(d.decline_at) && d.review_at > d.decline_at {
            e.push(format!("decide.review_at: {} is above decide.decline_at {}", d.review_at, d.decline_at));
        }
        let t = &self.telemetry;
        if !t.listen.is_empty() && t.listen.parse::<std::net::SocketAddr>().is_err() {
            e.push(format!("telemetry.listen: '{}' is not an address like 0.0.0.0:9464", t.listen));
        }
        if !["pretty", "json"].contains(&t.log_format.as_str()) {
            e.push(format!("telemetry.log_format: '{}' is not one of pretty, json", t.log_format));
        }
        if self.shutdown.timeout_s == 0 {
            e.push("shutdown.timeout_s: must be > 0".into());
        }
        e.extend(self.cost.validate());
        e
    }
}
