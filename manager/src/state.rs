//! What every handler shares ([`AppState`]): the stores, the credentials
//! and their limits, the audit trail, the outputs bucket and the metrics.

use crate::store::Store;

/// What handlers share: the stores, and the outputs bucket when configured.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub outputs: Option<std::sync::Arc<crate::outputs::OutputBucket>>,
    /// Cancelled when the manager shuts down: open event streams end, so
    /// they do not hold up the graceful shutdown.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub auth: std::sync::Arc<crate::auth::AuthConfig>,
    pub tokens: crate::tokens::Tokens,
    pub audit: crate::audit::Audit,
    pub streams: crate::streams::StreamLimits,
    /// Set when the manager sits behind Google's Identity-Aware Proxy.
    pub iap: Option<std::sync::Arc<crate::iap::Iap>>,
    pub metrics: crate::metrics::Shared,
}

impl axum::extract::FromRef<AppState> for Store {
    fn from_ref(state: &AppState) -> Store {
        state.store.clone()
    }
}

impl axum::extract::FromRef<AppState> for crate::metrics::Shared {
    fn from_ref(state: &AppState) -> crate::metrics::Shared {
        state.metrics.clone()
    }
}

impl axum::extract::FromRef<AppState> for Option<std::sync::Arc<crate::outputs::OutputBucket>> {
    fn from_ref(state: &AppState) -> Self {
        state.outputs.clone()
    }
}
