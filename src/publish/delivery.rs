//! The producer's context: librdkafka's logs and errors through the rate limit, and each
//! delivery report counted down in its batch's [`Deliveries`] (`core::delivery`).

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};

pub use crate::core::delivery::{Deliveries, Failed, Opaque, Waited};
use crate::lograte::LimitedContext;

/// The producer's context: rate-limited logs and errors, and per-batch delivery counting.
pub struct DeliveryContext {
    limited: LimitedContext,
}

impl DeliveryContext {
    /// Around the rate-limited logging context.
    pub fn new(limited: LimitedContext) -> Self {
        Self { limited }
    }
}

impl ClientContext for DeliveryContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.limited.generate_oauth_token(config)
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.limited.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.limited.error(error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Opaque;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Opaque) {
        let Some(count) = opaque.into_count() else {
            return; // nobody waits for it
        };
        match result {
            Ok(_) => count.report(None),
            Err((error, msg)) => count.report(Some((error.clone(), msg.detach()))),
        }
    }
}
