//! Building the enrich stage: what every worker shares (the partition-owned state, the
//! shared-windows enricher and its turnstile, the online-feature cache) and what each worker
//! gets of its own (a feature reader with its own connection, a handle on the owned state).

use std::sync::Arc;

use super::breaker::Breaker;
use super::cache::{FeatureCache, SharedFeatureCache};
use super::owned::{OwnedWindows, Partitions};
use super::stage::EnrichParts;
use super::{EnrichConfig, EnrichError, Enricher, FailurePolicy, Ownership, Part, Turnstile};
use crate::core::redis::RedisConfig;
use crate::telemetry::Metrics;

/// The enrich stage's shared parts, built once per pipeline.
pub struct EnrichSetup {
    /// `enrich.on_failure`.
    pub policy: FailurePolicy,
    /// Values per event.
    pub width: usize,
    /// Shared windows, one batch at a time in sequence order.
    pub shared: Option<Arc<Turnstile<Enricher>>>,
    /// Partition-owned windows.
    pub partitions: Option<Arc<Partitions>>,
    /// Online features are read by each worker.
    features: bool,
    /// The workers' readers' one feature cache (`cache_capacity` entries in all).
    feature_cache: Option<SharedFeatureCache>,
    cfg: EnrichConfig,
    security: RedisConfig,
    metrics: Arc<Metrics>,
    /// Whether the features' Redis answers: the pipeline's breaker for its Redis, or one
    /// of their own when they live apart (`features_redis_url`).
    features_breaker: Arc<Breaker>,
    /// Key paths of the entities whose ids are not logged ([`Enricher::hide_ids`]).
    hidden_ids: Vec<String>,
}

impl EnrichSetup {
    /// From the config, the `[redis]` security settings and the pipeline's enricher (which
    /// serves the shared windows); None when nothing is enriched. Checks the state layout in Redis.
    pub fn new(
        cfg: &EnrichConfig,
        security: &RedisConfig,
        enricher: Enricher,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Self>, EnrichError> {
        if !enricher.is_enabled() {
            return Ok(None);
        }
        let width = enricher.names().len();
        let hidden_ids = enricher.hidden_ids();
        let breaker = Arc::new(Breaker::default());
        let partitions = Partitions::new(cfg, security, enricher.owned_entities(), metrics.clone(), &breaker)?;
        let features = cfg.reads_features()
            && cfg.entities.iter().any(|e| {
                !e.features.is_empty()
                    && (e.ownership != Ownership::Shared || e.windows.is_empty() || cfg.features_apart())
            });
        let feature_cache =
            (features && cfg.cache_capacity > 0).then(|| FeatureCache::shared(cfg.cache_capacity, cfg.cache_ttl_ms));
        // Two Redis servers fail apart: one breaker each.
        let features_breaker = if cfg.features_apart() { Arc::default() } else { breaker.clone() };
        let shared = enricher.with_breaker(&breaker).for_part(Part::Shared);
        let shared = shared.serves_any().then(|| Arc::new(Turnstile::new(shared)));
        Ok(Some(Self {
            policy: cfg.on_failure,
            width,
            shared,
            partitions,
            features,
            feature_cache,
            cfg: cfg.clone(),
            security: security.clone(),
            metrics: metrics.clone(),
            features_breaker,
            hidden_ids,
        }))
    }

    /// A worker's own parts: a feature reader (its own connection to the features' Redis)
    /// and a handle on the partition-owned state.
    pub fn worker_parts(&self) -> Result<EnrichParts, EnrichError> {
        let features = if self.features {
            let reader = Enricher::connect_features(&self.cfg, &self.security)?
                .with_metrics(&self.metrics)
                .with_breaker(&self.features_breaker)
                .with_feature_cache(self.feature_cache.clone());
            Some(reader.hide_ids(|key| self.hidden_ids.iter().any(|h| h == key)))
        } else {
            None
        };
        let owned = self.partitions.as_ref().map(|p| OwnedWindows::new(p.clone())).transpose()?;
        Ok(EnrichParts { features, owned, shared: self.shared.clone(), width: self.width })
    }

    /// Whether offsets wait for checkpoints (partition-owned state in Redis).
    pub fn durable(&self) -> bool {
        self.partitions.as_ref().is_some_and(|p| p.durable())
    }
}
