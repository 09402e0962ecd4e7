//! Prometheus metrics of the node, in the text exposition format.
//!
//! Served at `GET /metrics` on the admin socket (always) and on the HTTP port
//! of the dashboard (when `--http-addr` is set). Every series is prefixed
//! `edgecore_dmi_`:
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `devices` | gauge | | devices on this node |
//! | `device_models` | gauge | | device models on this node |
//! | `devices_by_state` | gauge | `state` | devices per last reported state (`unknown`: none yet) |
//! | `mappers` | gauge | | registered mappers |
//! | `mappers_unreachable` | gauge | | registered mappers the last call could not reach |
//! | `mapper_registrations_total` | counter | `result` (`accepted`, `refused`) | `MapperRegister` calls |
//! | `reports_total` | counter | `kind` (`twins`, `state`), `result` (`accepted`, `rejected`), `reason` | `ReportDeviceStatus` / `ReportDeviceStates` calls; `reason` is empty when accepted, else `invalid`, `unknown_device`, `undeclared_property` or `metadata` |
//! | `dispatch_actions_total` | counter | `action` (`create_model`, `update_model`, `remove_model`, `register_device`, `update_device`, `remove_device`), `result` (`ok`, `refused`, `timeout`, `transport`) | calls to mappers |
//! | `store_bytes` | gauge | | size of the embedded store file |
//! | `status_queue` | gauge | | devices whose changed status waits to be written back to Kubernetes (drained only with the kubernetes source; not those held back until their refresh) |
//! | `status_patches_total` | counter | `result` (`ok`, `not_found`, `failed`) | status patches sent to the API server |
//! | `status_held_total` | counter | | status write-back rounds in which a device was not patched because its reports changed only timestamps (written later, once per `statusRefresh`) |
//!
//! `deploy/grafana-dashboard.json` is a Grafana dashboard of these series.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of `reports_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabels {
    kind: &'static str,
    result: &'static str,
    reason: &'static str,
}

/// Labels of `dispatch_actions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
    result: &'static str,
}

/// A label set with one `result`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// A label set with one `state`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// Which report a count is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// `ReportDeviceStatus` (twins).
    Twins,
    /// `ReportDeviceStates`.
    State,
}

/// What became of one call to a mapper (`result` of `dispatch_actions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionResult {
    /// Answered OK.
    Ok,
    /// Answered with an error (the mapper refused it).
    Refused,
    /// No answer within the call's deadline.
    Timeout,
    /// The mapper could not be reached.
    Transport,
}

/// A snapshot of the gauges, taken when `/metrics` is scraped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Devices on the node.
    pub devices: usize,
    /// Device models on the node.
    pub models: usize,
    /// Devices per last reported state (`unknown` when none yet).
    pub by_state: Vec<(String, usize)>,
    /// Registered mappers.
    pub mappers: usize,
    /// Registered mappers that the last call could not reach.
    pub mappers_unreachable: usize,
    /// Devices whose status waits to be written back.
    pub status_queue: usize,
}

/// The node's counters; gauges are read from the hub at scrape time
/// ([`NodeMetrics::render`]). Cheap to update from any task.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    registrations: Family<ResultLabel, Counter>,
    reports: Family<ReportLabels, Counter>,
    actions: Family<ActionLabels, Counter>,
    patches: Family<ResultLabel, Counter>,
    held: Counter,
    /// Size of the store file, bytes, as last measured.
    store_bytes: AtomicU64,
}

impl NodeMetrics {
    /// Counts a `MapperRegister` call.
    pub fn registration(&self, accepted: bool) {
        let result = if accepted { "accepted" } else { "refused" };
        self.registrations
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts a report; `rejected` is the reason it was refused (`invalid`,
    /// `unknown_device`, `undeclared_property`, `metadata`), `None` when it
    /// was accepted.
    pub fn report(&self, kind: ReportKind, rejected: Option<&'static str>) {
        let kind = match kind {
            ReportKind::Twins => "twins",
            ReportKind::State => "state",
        };
        let labels = match rejected {
            None => ReportLabels {
                kind,
                result: "accepted",
                reason: "",
            },
            Some(reason) => ReportLabels {
                kind,
                result: "rejected",
                reason,
            },
        };
        self.reports.get_or_create(&labels).inc();
    }

    /// Counts a call to a mapper; `action` is one of the names in the module
    /// docs.
    pub fn action(&self, action: &'static str, result: ActionResult) {
        let result = match result {
            ActionResult::Ok => "ok",
            ActionResult::Refused => "refused",
            ActionResult::Timeout => "timeout",
            ActionResult::Transport => "transport",
        };
        self.actions
            .get_or_create(&ActionLabels { action, result })
            .inc();
    }

    /// Counts a status patch: `ok`, `not_found` or `failed`.
    pub fn status_patch(&self, result: &'static str) {
        self.patches.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts a device not patched in a write-back round because its
    /// reports changed only timestamps (`status_held_total`).
    pub fn status_held(&self) {
        self.held.inc();
    }

    /// Records the store file's size, bytes.
    pub fn set_store_bytes(&self, bytes: u64) {
        self.store_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The text exposition (OpenMetrics, as `prometheus-client` encodes it)
    /// of the counters and of `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut r = Registry::with_prefix("edgecore_dmi");
        let gauge = |v: usize| {
            let g: Gauge = Gauge::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            g
        };
        r.register("devices", "Devices on this node", gauge(gauges.devices));
        r.register(
            "device_models",
            "Device models on this node",
            gauge(gauges.models),
        );
        let by_state: Family<StateLabel, Gauge> = Family::default();
        for (state, n) in &gauges.by_state {
            by_state
                .get_or_create(&StateLabel {
                    state: state.clone(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        r.register(
            "devices_by_state",
            "Devices per last reported state",
            by_state,
        );
        r.register("mappers", "Registered mappers", gauge(gauges.mappers));
        r.register(
            "mappers_unreachable",
            "Registered mappers the last call could not reach",
            gauge(gauges.mappers_unreachable),
        );
        r.register(
            "mapper_registrations",
            "MapperRegister calls",
            self.registrations.clone(),
        );
        r.register(
            "reports",
            "Twin and state reports from mappers",
            self.reports.clone(),
        );
        r.register(
            "dispatch_actions",
            "Calls to mappers (devices and models sent, updated, removed)",
            self.actions.clone(),
        );
        let store: Gauge = Gauge::default();
        store.set(i64::try_from(self.store_bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        r.register("store_bytes", "Size of the embedded store file", store);
        r.register(
            "status_queue",
            "Devices whose changed status waits to be written back to Kubernetes",
            gauge(gauges.status_queue),
        );
        r.register(
            "status_patches",
            "Status patches sent to the API server",
            self.patches.clone(),
        );
        r.register(
            "status_held",
            "Devices not patched in a write-back round: only timestamps changed",
            self.held.clone(),
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// The `Content-Type` of [`NodeMetrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics` for an axum router whose state is the hub.
pub async fn handler(
    axum::extract::State(hub): axum::extract::State<std::sync::Arc<crate::hub::Hub>>,
) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        hub.render_metrics(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn counters_and_gauges_render_with_their_labels() {
        let m = NodeMetrics::default();
        m.registration(true);
        m.report(ReportKind::Twins, None);
        m.report(ReportKind::Twins, None);
        m.report(ReportKind::State, Some("unknown_device"));
        m.action("register_device", ActionResult::Ok);
        m.action("register_device", ActionResult::Refused);
        m.status_patch("ok");
        m.status_held();
        m.status_held();
        m.set_store_bytes(4096);
        let text = m.render(&Gauges {
            devices: 3,
            models: 1,
            by_state: vec![("online".into(), 2), ("unknown".into(), 1)],
            mappers: 1,
            mappers_unreachable: 0,
            status_queue: 2,
        });
        assert_eq!(value(&text, "edgecore_dmi_devices"), Some(3.0), "{text}");
        assert_eq!(value(&text, "edgecore_dmi_device_models"), Some(1.0));
        assert_eq!(
            value(&text, "edgecore_dmi_devices_by_state{state=\"online\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "edgecore_dmi_reports_total{kind=\"twins\",result=\"accepted\",reason=\"\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "edgecore_dmi_reports_total{kind=\"state\",result=\"rejected\",reason=\"unknown_device\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "edgecore_dmi_dispatch_actions_total{action=\"register_device\",result=\"refused\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "edgecore_dmi_mapper_registrations_total{result=\"accepted\"}"
            ),
            Some(1.0)
        );
        assert_eq!(value(&text, "edgecore_dmi_store_bytes"), Some(4096.0));
        assert_eq!(value(&text, "edgecore_dmi_status_queue"), Some(2.0));
        assert_eq!(
            value(&text, "edgecore_dmi_status_patches_total{result=\"ok\"}"),
            Some(1.0)
        );
        assert_eq!(value(&text, "edgecore_dmi_status_held_total"), Some(2.0));
    }
}
