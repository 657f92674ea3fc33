//! Health and readiness: what `/healthz` and `/readyz` report, and the HTTP server that
//! serves them with `/metrics`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::metrics::Metrics;

/// The model versions `/readyz` reports: serving, on trial as a candidate, and watched
/// after a promotion (the previous version, which a rollback would serve again).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RolloutView {
    /// The version deciding.
    pub serving_version: String,
    /// The candidate, while one is on trial.
    pub candidate_version: Option<String>,
    /// The previous version, while the promoted one is watched.
    pub previous_version: Option<String>,
}

impl Metrics {
    /// Marks the model as loaded with the execution provider in use.
    pub fn set_model(&self, name: &str, version: &str, ep: &str) {
        self.model_info.reset();
        self.model_info.with_label_values(&[name, version, ep]).set(1);
        *self.execution_provider.lock() = ep.to_string();
        self.rollout.lock().serving_version = version.to_string();
        self.model_loaded.store(true, Ordering::SeqCst);
    }

    /// Records the serving version, the candidate on trial and the previous version watched.
    pub fn set_rollout(&self, serving: &str, candidate: Option<&str>, previous: Option<&str>) {
        *self.rollout.lock() = RolloutView {
            serving_version: serving.to_string(),
            candidate_version: candidate.map(str::to_string),
            previous_version: previous.map(str::to_string),
        };
    }

    /// The execution provider of the serving model.
    pub fn execution_provider_label(&self) -> String {
        self.execution_provider.lock().clone()
    }

    /// The versions `/readyz` reports.
    pub fn rollout_view(&self) -> RolloutView {
        self.rollout.lock().clone()
    }

    /// Ready = partitions assigned, model loaded, the state store reachable, not stalled
    /// and not failed.
    pub fn ready(&self) -> bool {
        self.model_loaded.load(Ordering::SeqCst)
            && self.partitions_assigned.get() > 0
            && self.state_store_up.get() == 1
            && self.guards.stalled.get() == 0
            && self.healthy()
    }

    /// Healthy = no pipeline thread ended unexpectedly and no stop policy fired.
    pub fn healthy(&self) -> bool {
        self.guards.pipeline_failed.get() == 0
    }

    /// JSON body for `/readyz`.
    pub fn readiness(&self) -> serde_json::Value {
        serde_json::json!({
            "ready": self.ready(),
            "model_loaded": self.model_loaded.load(Ordering::SeqCst),
            "partitions_assigned": self.partitions_assigned.get(),
            "state_store_up": self.state_store_up.get() == 1,
            "stalled": self.guards.stalled.get() == 1,
            "failed": self.guards.failure(),
            "execution_provider": self.execution_provider.lock().clone(),
            "model": self.rollout_view(),
        })
    }
}

/// Serves `/metrics`, `/healthz`, `/readyz` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::{http::StatusCode, routing::get, Json, Router};
    let m1 = metrics.clone();
    let m3 = metrics.clone();
    let m2 = metrics;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m1.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let m = m3.clone();
                async move {
                    match m.guards.failure() {
                        None => (StatusCode::OK, "ok".to_string()),
                        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("failed: {why}")),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let m = m2.clone();
                async move {
                    let code = if m.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    (code, Json(m.readiness()))
                }
            }),
        );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
