//! Prometheus metrics of a mapper, served as text at `/metrics` on the mapper's
//! HTTP port (`common.http_port`) when one is configured.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `mapper_ticks_total` | device | collect ticks |
//! | `mapper_reads_total` | device | property values read |
//! | `mapper_read_errors_total` | device | property reads that failed |
//! | `mapper_driver_requests_total` | device | protocol requests the driver made (drivers that count them, e.g. Modbus) |
//! | `mapper_last_tick_requests` | device | protocol requests of the device's last tick |
//! | `mapper_last_tick_properties` | device | properties read in the device's last tick |
//! | `mapper_desired_writes_total` | device, outcome | desired values applied or rejected |
//! | `mapper_device_online` | device | 1 while the device is online |
//! | `mapper_reports_dropped_total` | | reports EdgeCore refused (invalid, unknown device); not sent again |
//! | `mapper_reports_failed_total` | | report calls that did not arrive (transport failure, throttling); their data is sent again |
//! | `mapper_reports_throttled_total` | | report calls EdgeCore answered with "too many request" |
//! | `mapper_reports_coalesced_total` | | twins replaced by a newer value, or unchanged values not repeated while throttled, before they were sent |
//! | `mapper_sink_queued` | sink | records waiting in the target's memory queue |
//! | `mapper_sink_spooled` | sink | records waiting in the target's on-disk spool |
//! | `mapper_sink_delivered_total` | sink | records the target took |
//! | `mapper_sink_dropped_total` | sink | records dropped by a full queue or spool (oldest first) |
//! | `mapper_sink_failures_total` | sink | delivery attempts that failed (retried) |
//! | `mapper_sink_config_errors_total` | | push/db methods skipped because they cannot work as configured |

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// `device` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DeviceLabel {
    pub(crate) device: String,
}

/// `device` and `outcome` labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub(crate) device: String,
    pub(crate) outcome: String,
}

/// `sink` label: the target's key (kind and address, no credentials).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SinkLabel {
    pub(crate) sink: String,
}

/// All metrics of one mapper.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) ticks: Family<DeviceLabel, Counter>,
    pub(crate) reads: Family<DeviceLabel, Counter>,
    pub(crate) read_errors: Family<DeviceLabel, Counter>,
    pub(crate) driver_requests: Family<DeviceLabel, Counter>,
    pub(crate) last_tick_requests: Family<DeviceLabel, Gauge>,
    pub(crate) last_tick_properties: Family<DeviceLabel, Gauge>,
    pub(crate) desired_writes: Family<OutcomeLabel, Counter>,
    pub(crate) online: Family<DeviceLabel, Gauge>,
    pub(crate) reports_dropped: Counter,
    pub(crate) reports_failed: Counter,
    pub(crate) reports_throttled: Counter,
    pub(crate) reports_coalesced: Counter,
    pub(crate) sink_queued: Family<SinkLabel, Gauge>,
    pub(crate) sink_spooled: Family<SinkLabel, Gauge>,
    pub(crate) sink_delivered: Family<SinkLabel, Counter>,
    pub(crate) sink_dropped: Family<SinkLabel, Counter>,
    pub(crate) sink_failures: Family<SinkLabel, Counter>,
    pub(crate) sink_config_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            ticks: Family::default(),
            reads: Family::default(),
            read_errors: Family::default(),
            driver_requests: Family::default(),
            last_tick_requests: Family::default(),
            last_tick_properties: Family::default(),
            desired_writes: Family::default(),
            online: Family::default(),
            reports_dropped: Counter::default(),
            reports_failed: Counter::default(),
            reports_throttled: Counter::default(),
            reports_coalesced: Counter::default(),
            sink_queued: Family::default(),
            sink_spooled: Family::default(),
            sink_delivered: Family::default(),
            sink_dropped: Family::default(),
            sink_failures: Family::default(),
            sink_config_errors: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("mapper_ticks", "Collect ticks", m.ticks.clone());
        registry.register("mapper_reads", "Property values read", m.reads.clone());
        registry.register(
            "mapper_read_errors",
            "Property reads that failed",
            m.read_errors.clone(),
        );
        registry.register(
            "mapper_driver_requests",
            "Protocol requests made by the driver",
            m.driver_requests.clone(),
        );
        registry.register(
            "mapper_last_tick_requests",
            "Protocol requests of the last tick",
            m.last_tick_requests.clone(),
        );
        registry.register(
            "mapper_last_tick_properties",
            "Properties read in the last tick",
            m.last_tick_properties.clone(),
        );
        registry.register(
            "mapper_desired_writes",
            "Desired values applied or rejected",
            m.desired_writes.clone(),
        );
        registry.register(
            "mapper_device_online",
            "1 while the device is online",
            m.online.clone(),
        );
        registry.register(
            "mapper_reports_dropped",
            "Reports EdgeCore refused; not sent again",
            m.reports_dropped.clone(),
        );
        registry.register(
            "mapper_reports_failed",
            "Report calls that did not arrive; their data is sent again",
            m.reports_failed.clone(),
        );
        registry.register(
            "mapper_reports_throttled",
            "Report calls EdgeCore answered with too many request",
            m.reports_throttled.clone(),
        );
        registry.register(
            "mapper_reports_coalesced",
            "Twins superseded by a newer value, or not repeated while throttled",
            m.reports_coalesced.clone(),
        );
        registry.register(
            "mapper_sink_queued",
            "Records waiting in a sink target's memory queue",
            m.sink_queued.clone(),
        );
        registry.register(
            "mapper_sink_spooled",
            "Records waiting in a sink target's on-disk spool",
            m.sink_spooled.clone(),
        );
        registry.register(
            "mapper_sink_delivered",
            "Records a sink target took",
            m.sink_delivered.clone(),
        );
        registry.register(
            "mapper_sink_dropped",
            "Records dropped by a full sink queue or spool, oldest first",
            m.sink_dropped.clone(),
        );
        registry.register(
            "mapper_sink_failures",
            "Sink delivery attempts that failed and are retried",
            m.sink_failures.clone(),
        );
        registry.register(
            "mapper_sink_config_errors",
            "Push/db methods skipped because they cannot work as configured",
            m.sink_config_errors.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }

    pub(crate) fn device(id: &impl std::fmt::Display) -> DeviceLabel {
        DeviceLabel {
            device: id.to_string(),
        }
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
}

/// Connections the HTTP port serves at once; more are closed at accept.
pub(crate) const MAX_HTTP_CONNECTIONS: usize = 64;
/// Time a client has to send a request's headers, on a new or kept-alive
/// connection.
pub(crate) const HTTP_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest life of one connection (keep-alive included).
pub(crate) const HTTP_CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves `/metrics`, `/healthz` and `panel` (the REST data panel) on `addr`
/// until `shutdown`, with the bounds above: a peer can hold at most
/// [`MAX_HTTP_CONNECTIONS`] connections, each for at most
/// [`HTTP_CONNECTION_LIFETIME`], and must send headers within
/// [`HTTP_HEADER_TIMEOUT`]; accept errors (descriptors exhausted) back off.
pub(crate) async fn serve(
    addr: SocketAddr,
    m: Arc<Metrics>,
    panel: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics at /metrics, data panel at /api/v1/");
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(m)
        .merge(panel);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    let refused_log = edge_rt::logging::Throttle::new(std::time::Duration::from_secs(60));
    let mut backoff = edge_rt::Backoff::new(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_secs(1),
    );
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((s, _)) => {
                backoff.reset();
                s
            }
            Err(e) => {
                let delay = backoff.next_delay();
                if let Some(held_back) = refused_log.allow() {
                    tracing::warn!(%addr, error = %e, held_back, retry_in = ?delay, "HTTP port cannot accept");
                }
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(held_back) = refused_log.allow() {
                tracing::warn!(%addr, held_back, "HTTP port: {MAX_HTTP_CONNECTIONS} connections open; closing a new one");
            }
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HTTP_HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::timeout(HTTP_CONNECTION_LIFETIME, conn) => {}
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        m.reads.get_or_create(&Metrics::device(&"ns/a")).inc_by(3);
        m.reports_dropped.inc();
        let text = m.render();
        assert!(
            text.contains("mapper_reads_total{device=\"ns/a\"} 3"),
            "{text}"
        );
        assert!(text.contains("mapper_reports_dropped_total 1"), "{text}");
    }
}
