//! The data plane: a property's `pushMethod` and `dbMethod` targets, fed by
//! the same sample as the twin (one device read, however many consumers).
//!
//! [`DataPlane`] is a [`SampleSink`]. For each device it starts, it builds the
//! routes of every property that has a `pushMethod`; for each good sample of
//! such a property, at most one per `reportCycle` (default 1 s; every sample
//! when `reportCycle` ≤ `collectCycle`; a sink is never sent more samples than
//! were read), it builds one [`Record`] and queues it on each of the
//! property's targets.
//!
//! A target is one destination (one MQTT broker, one HTTP server, one
//! database), shared by every property that names it: one connection, one
//! bounded memory queue, one on-disk spool table and one forwarding task,
//! so a slow or dead target never blocks collection or the other targets.
//!
//! # Store-and-forward
//!
//! Each target has a memory queue ([`DataOptions::memory_records`], default
//! 10 000 records; a full queue drops its oldest record, counted) and a table
//! in the mapper's spool file `<state dir>/spool.redb`
//! ([`DataOptions::spool_max_bytes`], default 64 MiB per target; beyond it the
//! oldest records are dropped, counted). Metrics per target (`sink` label):
//! `mapper_sink_queued`, `mapper_sink_spooled`,
//! `mapper_sink_delivered_total`, `mapper_sink_dropped_total`,
//! `mapper_sink_failures_total`. A failed delivery is retried with backoff
//! from [`DataOptions::retry_min`] to [`DataOptions::retry_max`].
//!
//! Order: the spool always holds the oldest records, memory the newest; the
//! forwarder delivers from the spool while it has records, then from memory,
//! and moves memory to the spool's tail (never in between), so records leave
//! in the order they came.
//!
//! Durability: while a target is healthy, records wait in memory only (a few
//! ms to one delivery). When a delivery fails, everything in memory is
//! spooled, and from then on every new record is spooled as it comes (group
//! commits, redb `Durability::Immediate`; once the target is back and the
//! spool replays, at most every 100 ms) until the spool is drained again. A
//! record in the spool survives `kill -9` and a crash of the machine; what a
//! `kill -9` can lose is the records of the current healthy batch and those
//! read within one spool commit (milliseconds; 100 ms during a replay) of the
//! kill. Delivery is at
//! least once: a batch whose acknowledgement was lost is sent again (Redis
//! members and InfluxDB points are idempotent; MySQL rows are written in one
//! transaction per batch).
//!
//! # Targets
//!
//! | method | target key | delivery |
//! |---|---|---|
//! | `mqtt` | broker address | one persistent connection (rumqttc), MQTT 3.1.1 (5 with `?version=5`), TLS with `ssl://`; QoS 1/2 wait for the broker's acknowledgement |
//! | `http` | `scheme://host:port` | POST per record on a keep-alive client; non-2xx is a failure |
//! | `otel` | endpoint URL | OTLP/HTTP JSON metrics export, one gauge per property |
//! | `influxdb2` | url + org + bucket | line protocol, one `/api/v2/write` per batch, `Authorization: Token $TOKEN` |
//! | `redis` | addr + db | `ZADD <device> <ms> <DataModel JSON>`, one pipeline per batch |
//! | `mysql` | addr + database + user | rows in `` `<ns>/<device>/<property>` `` (created if absent), one transaction per batch |
//! | `TDEngine` | addr + dbName | one REST `INSERT … USING` per batch (cargo feature `tdengine`) |
//!
//! Differences from mapper-framework (spec §4.7): every configured push and
//! DB method receives the samples (stock uses only the first of http, mqtt,
//! otel); no extra device reads; a target that is down queues instead of
//! losing samples (or, for stock MQTT before v1.22, exiting the process).
//!
//! A method that cannot work as configured (unknown scheme, malformed
//! address, a database kind left out of the build) is logged as an error
//! naming the device, property and target, counted in
//! `mapper_sink_config_errors_total`, and skipped; the twin keeps reporting.

pub mod method;
pub mod options;
pub mod record;

mod http;
mod influx;
mod mqtt;
#[cfg(feature = "mysql")]
mod mysql;
mod otel;
pub(crate) mod queue;
#[cfg(feature = "redis")]
mod redis;
pub(crate) mod target;
#[cfg(feature = "tdengine")]
mod tdengine;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use method::PushMethod;
pub use options::{DataOptions, PayloadFormat};
pub use record::Record;

use crate::metrics::Metrics;
use crate::sample::{Quality, Sample, SampleSink};
use crate::spec::{DeviceModel, DeviceSpec, ObjectId};
use queue::{Lane, LaneMetrics, SpoolFile};
use target::{Entry, Route, Target, TargetSpec};

/// Most sink targets (distinct brokers, databases, HTTP endpoints) in one
/// mapper; beyond it a method is refused as a configuration error.
pub const MAX_TARGETS: usize = 256;

/// Why a sink target cannot take records.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// It can never work as configured (bad address, unknown scheme, feature
    /// not built).
    #[error("configuration: {0}")]
    Config(String),
    /// It could not be reached or did not answer (retried).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// It answered with a refusal: non-2xx, an authentication failure, a SQL
    /// error (retried: the cause may be fixed on the other side).
    #[error("refused: {0}")]
    Refused(String),
}

/// A TLS client configuration with the ring provider (the workspace's one
/// rustls provider) and the roots from the PEM file named by the environment
/// variable `ca_var`, else the system's.
///
/// Fails with [`SinkError::Config`] when that file cannot be read or holds no
/// usable certificate.
pub(crate) fn client_tls(ca_var: &str) -> Result<rustls::ClientConfig, SinkError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = std::env::var_os(ca_var) {
        use rustls::pki_types::pem::PemObject;
        let bad = |e: &dyn std::fmt::Display| {
            SinkError::Config(format!("{ca_var}={}: {e}", path.to_string_lossy()))
        };
        for c in rustls::pki_types::CertificateDer::pem_file_iter(&path).map_err(|e| bad(&e))? {
            roots.add(c.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        if roots.is_empty() {
            return Err(bad(&"no certificate in the file"));
        }
    } else {
        for c in rustls_native_certs::load_native_certs().certs {
            // A system certificate rustls cannot use is skipped, as browsers do.
            let _ = roots.add(c);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The routes of one property.
struct PropRoute {
    /// Methods of this property that cannot work as configured.
    config_errors: Vec<String>,
    ty: String,
    every: Duration,
    tolerance: Duration,
    last: Mutex<Option<SystemTime>>,
    outs: Vec<(Arc<Lane>, Route)>,
}

impl PropRoute {
    /// Whether a sample received at `t` is due (one per `reportCycle`).
    fn due(&self, t: SystemTime) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let due = match *last {
            None => true,
            Some(prev) => t
                .duration_since(prev)
                .is_ok_and(|d| d + self.tolerance >= self.every),
        };
        if due {
            *last = Some(t);
        }
        due
    }
}

/// The push and database sinks of one mapper; see the module docs.
pub struct DataPlane {
    opts: DataOptions,
    metrics: Arc<Metrics>,
    /// Opened at start when the file exists (an earlier run may have left
    /// records), else at the first target: a mapper without sinks never
    /// touches its state dir.
    spool: std::sync::OnceLock<Option<SpoolFile>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    lanes: Mutex<HashMap<TargetSpec, (Arc<Lane>, CancellationToken)>>,
    /// Serialises device starts and stops, so a target is never stopped
    /// between a start taking it and the start's routes naming it.
    events: Mutex<()>,
    routes: RwLock<HashMap<ObjectId, Arc<HashMap<String, PropRoute>>>>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("opts", &self.opts)
            .field("spool", &self.spool.get().is_some_and(Option::is_some))
            .finish_non_exhaustive()
    }
}

impl DataPlane {
    /// A data plane with `opts`, its forwarding tasks on `tracker`, stopping
    /// at `shutdown`. When an earlier run left a spool (see
    /// [`DataOptions::state_dir`]) it is opened now and what it holds is
    /// delivered; otherwise the spool is created with the first target. Must
    /// be called inside a tokio runtime.
    pub fn new(
        opts: DataOptions,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let plane = Self {
            opts,
            metrics,
            spool: std::sync::OnceLock::new(),
            tracker,
            shutdown,
            lanes: Mutex::new(HashMap::new()),
            events: Mutex::new(()),
            routes: RwLock::new(HashMap::new()),
        };
        let earlier = plane.opts.spool
            && plane
                .opts
                .resolved_state_dir()
                .join(SpoolFile::NAME)
                .exists();
        if let Some(s) = earlier.then(|| plane.spool()).flatten() {
            for spec in s.pending_targets() {
                tracing::info!(sink = %spec.key(), "delivering records spooled by an earlier run");
                if let Err(e) = plane.lane(&spec) {
                    tracing::error!(sink = %spec.key(), error = %e, "spooled records cannot be delivered");
                }
            }
        }
        plane
    }

    /// The spool, opened on first use (`None`: spooling off or impossible).
    fn spool(&self) -> Option<&SpoolFile> {
        self.spool
            .get_or_init(|| {
                if !self.opts.spool {
                    return None;
                }
                let dir = self.opts.resolved_state_dir();
                match SpoolFile::open(&dir) {
                    Ok(s) => {
                        tracing::info!(dir = %dir.display(), "sink spool open");
                        Some(s)
                    }
                    Err(e) => {
                        tracing::warn!(
                            dir = %dir.display(), error = %e,
                            "no sink spool: queued samples stay in memory only and do not survive a restart (set data.state_dir or --state-dir)"
                        );
                        None
                    }
                }
            })
            .as_ref()
    }

    /// The lane of `spec`, starting its target and forwarder the first time.
    fn lane(&self, spec: &TargetSpec) -> Result<Arc<Lane>, SinkError> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((l, _)) = lanes.get(spec) {
            return Ok(l.clone());
        }
        if lanes.len() >= MAX_TARGETS {
            return Err(SinkError::Config(format!(
                "{}: this mapper already has {MAX_TARGETS} sink targets (one connection, queue and spool table each); share brokers and databases between properties",
                spec.key()
            )));
        }
        let target = Target::new(spec, &self.opts)?;
        let key = spec.key();
        let spool = match self.spool() {
            Some(f) => match f.lane(spec, self.opts.spool_max_bytes) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(sink = %key, error = %e, "no spool for this target: memory queue only");
                    None
                }
            },
            None => None,
        };
        let lane = Arc::new(Lane::new(
            key.clone(),
            self.opts.memory_records,
            LaneMetrics::new(&self.metrics, &key),
        ));
        tracing::info!(sink = %key, "sink target started");
        if let Some(s) = &spool {
            // Before the forwarder runs: the target counts as busy from now.
            lane.metrics.spooled.set(s.len() as i64);
        }
        let stop = self.shutdown.child_token();
        self.tracker.spawn(queue::forward(
            lane.clone(),
            target,
            spool,
            self.opts.clone(),
            stop.clone(),
        ));
        lanes.insert(spec.clone(), (lane.clone(), stop));
        Ok(lane)
    }

    /// Stops the targets no device uses any more once they hold nothing
    /// (memory and spool empty); a target with records keeps delivering and
    /// is stopped at a later call.
    fn stop_unused(&self) {
        let used: Vec<*const Lane> = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flat_map(|d| d.values())
            .flat_map(|p| p.outs.iter().map(|(l, _)| Arc::as_ptr(l)))
            .collect();
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes.retain(|_, (lane, stop)| {
            let keep = used.contains(&Arc::as_ptr(lane)) || !lane.is_idle();
            if !keep {
                tracing::info!(sink = %lane.key, "sink target no longer used; stopped");
                stop.cancel();
            }
            keep
        });
    }

    /// The targets and routes of one property's push method.
    fn outs(
        &self,
        device: &ObjectId,
        property: &str,
        push: &PushMethod,
    ) -> Vec<Result<(TargetSpec, Route), SinkError>> {
        let mut v = Vec::new();
        if let Some(h) = &push.http {
            v.push(http::route(h));
        }
        if let Some(m) = &push.mqtt {
            v.push(mqtt::route(m));
        }
        if let Some(o) = &push.otel {
            v.push(Ok((
                TargetSpec::Otel {
                    endpoint: o.endpoint_url.trim().to_owned(),
                },
                Route::Otel,
            )));
        }
        if let Some(i) = &push.db.influxdb2 {
            v.push(influx::route(i));
        }
        if let Some(r) = &push.db.redis {
            v.push(Ok((
                TargetSpec::Redis {
                    addr: r.addr.trim().to_owned(),
                    db: r.db,
                },
                Route::Redis,
            )));
        }
        if let Some(m) = &push.db.mysql {
            // MySQL/MariaDB table names are at most 64 characters.
            let table = format!("{}/{}/{}", device.namespace, device.name, property);
            if table.chars().count() > 64 {
                v.push(Err(SinkError::Config(format!(
                    "mysql table `{table}` would be longer than the 64 characters MySQL allows"
                ))));
            } else {
                v.push(Ok((
                    TargetSpec::Mysql {
                        addr: m.addr.trim().to_owned(),
                        database: m.database.clone(),
                        user: m.user_name.clone(),
                    },
                    Route::Mysql,
                )));
            }
        }
        if let Some(t) = &push.db.tdengine {
            v.push(Ok((
                TargetSpec::Tdengine {
                    addr: t.addr.trim().to_owned(),
                    db: t.db_name.clone(),
                },
                Route::Tdengine,
            )));
        }
        v
    }
}

impl SampleSink for DataPlane {
    fn accept(&self, device: &ObjectId, property: &str, sample: &Sample) {
        let (Quality::Good, Some(value)) = (&sample.quality, &sample.value) else {
            return;
        };
        let routes = {
            let r = self.routes.read().unwrap_or_else(|p| p.into_inner());
            match r.get(device) {
                Some(d) => d.clone(),
                None => return,
            }
        };
        let Some(p) = routes.get(property) else {
            return;
        };
        if !p.due(sample.received_time) {
            return;
        }
        let record = Record {
            device: device.name.clone(),
            namespace: device.namespace.clone(),
            property: property.to_owned(),
            value: value.to_string(),
            ty: p.ty.clone(),
            timestamp: sample.timestamp_ms(),
        };
        for (lane, route) in &p.outs {
            lane.push(Arc::new(Entry {
                record: record.clone(),
                route: route.clone(),
            }));
        }
    }

    fn device_started(&self, spec: &DeviceSpec, model: &DeviceModel) {
        let _serial = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let mut props = HashMap::new();
        for p in &spec.properties {
            let Some(push_method) = &p.push_method else {
                continue;
            };
            let mut outs = Vec::new();
            let mut config_errors = Vec::new();
            for out in self.outs(&spec.id, &p.name, push_method) {
                let res = out.and_then(|(t, r)| self.lane(&t).map(|l| (l, r)));
                match res {
                    Ok(o) => outs.push(o),
                    Err(e) => {
                        config_errors.push(e.to_string());
                        self.metrics.sink_config_errors.inc();
                        tracing::error!(
                            device = %spec.id, property = %p.name, error = %e,
                            "push/db method cannot work as configured; skipped (the twin keeps reporting)"
                        );
                    }
                }
            }
            if outs.is_empty() && config_errors.is_empty() {
                continue;
            }
            let ty = model
                .properties
                .get(&p.name)
                .map(|m| m.type_text.trim().to_ascii_lowercase())
                .unwrap_or_else(|| "string".to_owned());
            props.insert(
                p.name.clone(),
                PropRoute {
                    config_errors,
                    ty,
                    // A report cycle at or below the collect cycle forwards
                    // every sample; above it, one per report cycle, with half
                    // a collect cycle of slack for tick jitter.
                    every: if p.report_cycle <= p.collect_cycle {
                        Duration::ZERO
                    } else {
                        p.report_cycle
                    },
                    tolerance: p.collect_cycle / 2,
                    last: Mutex::new(None),
                    outs,
                },
            );
        }
        {
            let mut r = self.routes.write().unwrap_or_else(|p| p.into_inner());
            if props.is_empty() {
                r.remove(&spec.id);
            } else {
                r.insert(spec.id.clone(), Arc::new(props));
            }
        }
        self.stop_unused();
    }

    fn problem(&self, device: &ObjectId, property: &str) -> Option<String> {
        let routes = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(device)?
            .clone();
        let p = routes.get(property)?;
        let all: Vec<String> = p
            .config_errors
            .iter()
            .cloned()
            .chain(p.outs.iter().filter_map(|(l, _)| l.problem()))
            .collect();
        (!all.is_empty()).then(|| all.join("; "))
    }

    fn device_stopped(&self, id: &ObjectId) {
        let _serial = self.events.lock().unwrap_or_else(|p| p.into_inner());
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.stop_unused();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(every_ms: u64, collect_ms: u64) -> PropRoute {
        let (every, collect) = (
            Duration::from_millis(every_ms),
            Duration::from_millis(collect_ms),
        );
        PropRoute {
            config_errors: Vec::new(),
            ty: "int".into(),
            every: if every <= collect {
                Duration::ZERO
            } else {
                every
            },
            tolerance: collect / 2,
            last: Mutex::new(None),
            outs: Vec::new(),
        }
    }

    #[test]
    fn one_sample_per_report_cycle_with_jitter_slack() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Report 1 s, collect 100 ms: one in ten, a late tick still counts.
        let r = route(1000, 100);
        let due: Vec<u64> = (0..30)
            .map(|i| i * 100 + if i == 10 { 40 } else { 0 })
            .filter(|ms| r.due(at(*ms)))
            .collect();
        assert_eq!(due, [0, 1040, 2000]);
        // Report at or below collect: every sample, whatever the jitter.
        let r = route(100, 100);
        assert!([0, 100, 140, 200, 230].iter().all(|ms| r.due(at(*ms))));
    }

    #[tokio::test]
    async fn a_mapper_without_sinks_never_touches_its_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let opts = DataOptions {
            state_dir: Some(state.clone()),
            ..Default::default()
        };
        let plane = DataPlane::new(
            opts,
            Arc::new(Metrics::new()),
            TaskTracker::new(),
            CancellationToken::new(),
        );
        assert!(plane.problem(&ObjectId::new("n", "d"), "p").is_none());
        assert!(!state.exists());
    }
}

#[cfg(test)]
mod lifecycle_tests {
    use super::*;
    use crate::spec::PropertySpec;

    fn device(push: PushMethod) -> (DeviceSpec, DeviceModel) {
        let id = ObjectId::new("default", "d");
        let spec = DeviceSpec {
            id: id.clone(),
            model: ObjectId::new("default", "m"),
            protocol_name: "virtual".into(),
            protocol_config: Default::default(),
            properties: vec![PropertySpec {
                name: "p".into(),
                desired: None,
                visitor: Default::default(),
                collect_cycle: Duration::from_millis(100),
                report_cycle: Duration::from_millis(100),
                report_to_cloud: true,
                push_method: (!push.is_empty()).then(|| Box::new(push)),
            }],
            state_report: None,
            methods: Vec::new(),
        };
        let model = DeviceModel {
            id: ObjectId::new("default", "m"),
            properties: Default::default(),
        };
        (spec, model)
    }

    #[tokio::test]
    async fn targets_no_device_uses_are_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let plane = DataPlane::new(
            DataOptions {
                state_dir: Some(dir.path().to_owned()),
                ..Default::default()
            },
            Arc::new(Metrics::new()),
            TaskTracker::new(),
            CancellationToken::new(),
        );
        let push = PushMethod {
            http: Some(method::HttpPush {
                host_name: "http://127.0.0.1".into(),
                port: 9,
                request_path: "/x".into(),
                timeout_ms: 0,
            }),
            ..Default::default()
        };
        let (spec, model) = device(push);
        plane.device_started(&spec, &model);
        assert_eq!(plane.lanes.lock().unwrap().len(), 1);
        // Restarting the device keeps its target.
        plane.device_started(&spec, &model);
        assert_eq!(plane.lanes.lock().unwrap().len(), 1);
        plane.device_stopped(&spec.id);
        assert_eq!(plane.lanes.lock().unwrap().len(), 0);
        // A method that cannot work is reported as the property's problem.
        let bad = PushMethod {
            mqtt: Some(method::MqttPush {
                address: "ftp://x".into(),
                topic: "t".into(),
                qos: 0,
                retained: false,
            }),
            ..Default::default()
        };
        let (spec, model) = device(bad);
        plane.device_started(&spec, &model);
        let problem = plane.problem(&spec.id, "p").unwrap();
        assert!(problem.contains("unknown scheme `ftp`"), "{problem}");
    }
}
