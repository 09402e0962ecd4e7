//! Prometheus metrics of the controller (`/metrics`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    kind: String,
    result: String,
}

/// `device_controller_reconciles_total{kind,result}` and `device_controller_leader`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    /// 1 while this replica leads.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<Labels, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "device_controller_reconciles",
            "Reconciles by kind and result",
            reconciles.clone(),
        );
        registry.register(
            "device_controller_leader",
            "1 while this replica holds the lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            leader,
        }
    }
}

impl Metrics {
    /// Counts one reconcile.
    pub fn reconciled(&self, kind: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&Labels {
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics` and `/healthz` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    m: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move { m.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(m);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
