//! Sink targets: one per destination (one MQTT broker, one database, one HTTP
//! endpoint), shared by every property that sends there, each with one
//! forwarding task ([`super::queue`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::SinkError;
use super::options::DataOptions;
use super::record::Record;

/// Which destination a target is; also its name in logs, metrics (`sink`
/// label) and the spool (one table per target). Serialised into the spool so
/// that what was queued before a restart is delivered even before any device
/// names the target again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum TargetSpec {
    /// An MQTT broker (`pushMethod.mqtt.address`).
    Mqtt { address: String },
    /// An HTTP endpoint, `scheme://host:port/path` (`pushMethod.http`).
    Http { base: String },
    /// An OTLP/HTTP metrics endpoint (`pushMethod.otel.endpointURL`).
    Otel { endpoint: String },
    /// An InfluxDB v2 bucket.
    Influxdb2 {
        url: String,
        org: String,
        bucket: String,
    },
    /// A Redis database.
    Redis { addr: String, db: i32 },
    /// A MySQL/MariaDB database.
    Mysql {
        addr: String,
        database: String,
        user: String,
    },
    /// A TDengine database (REST API).
    Tdengine { addr: String, db: String },
}

impl TargetSpec {
    /// The target's name: kind and address, no secrets.
    pub(crate) fn key(&self) -> String {
        match self {
            TargetSpec::Mqtt { address } => format!("mqtt {}", strip_userinfo(address)),
            TargetSpec::Http { base } => format!("http {base}"),
            TargetSpec::Otel { endpoint } => format!("otel {endpoint}"),
            TargetSpec::Influxdb2 { url, org, bucket } => {
                format!("influxdb2 {url} {org}/{bucket}")
            }
            TargetSpec::Redis { addr, db } => format!("redis {addr}/{db}"),
            TargetSpec::Mysql {
                addr,
                database,
                user,
            } => format!("mysql {user}@{addr}/{database}"),
            TargetSpec::Tdengine { addr, db } => format!("tdengine {addr}/{db}"),
        }
    }

    /// The spool table of this target: [`TargetSpec::key`] plus a fingerprint
    /// of the whole spec, so two targets that differ only in what the key
    /// leaves out (an MQTT password) never share a table.
    pub(crate) fn table(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{} #{:016x}", self.key(), fingerprint(&json))
    }
}

/// `scheme://user:pass@host` as `scheme://user@host` (no password).
fn strip_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = url[s + 3..at].split(':').next().unwrap_or_default();
            let user = if user.is_empty() {
                String::new()
            } else {
                format!("{user}@")
            };
            format!("{}{user}{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// FNV-1a, 64 bits: a stable short fingerprint (not a secret hash).
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a record needs besides the target: the per-property part of the
/// push or DB method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "lowercase")]
pub(crate) enum Route {
    /// Publish on `topic`.
    Mqtt {
        topic: String,
        qos: u8,
        retained: bool,
    },
    /// POST to the target's URL followed by `path` (empty: the target's URL
    /// is the whole endpoint); `timeout_ms` 0 = the data plane's delivery
    /// timeout.
    Http { path: String, timeout_ms: u64 },
    /// A gauge point.
    Otel,
    /// A point of `measurement` with `tags`, value under `field_key`.
    Influxdb2 {
        measurement: String,
        tags: BTreeMap<String, String>,
        field_key: String,
    },
    /// `ZADD <device>`.
    Redis,
    /// A row in the property's table.
    Mysql,
    /// A row in the device's super table.
    Tdengine,
}

/// One queued delivery: a record and how it goes to its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The reading.
    pub(crate) record: Record,
    /// Per-property method parameters.
    pub(crate) route: Route,
}

/// A connected (or connectable) target.
pub(crate) enum Target {
    Mqtt(super::mqtt::MqttTarget),
    Http(super::http::HttpTarget),
    Otel(super::otel::OtelTarget),
    Influxdb2(super::influx::InfluxTarget),
    #[cfg(feature = "redis")]
    Redis(super::redis::RedisTarget),
    #[cfg(feature = "mysql")]
    Mysql(super::mysql::MysqlTarget),
    #[cfg(feature = "tdengine")]
    Tdengine(super::tdengine::TdengineTarget),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Target")
    }
}

impl Target {
    /// Builds the client of `spec`; nothing is connected yet.
    ///
    /// Fails with [`SinkError::Config`] when the target can never work as
    /// configured (unknown scheme, malformed address, a database kind this
    /// build leaves out).
    pub(crate) fn new(spec: &TargetSpec, opts: &DataOptions) -> Result<Self, SinkError> {
        Ok(match spec {
            TargetSpec::Mqtt { address } => {
                Target::Mqtt(super::mqtt::MqttTarget::new(address, opts)?)
            }
            TargetSpec::Http { base } => Target::Http(super::http::HttpTarget::new(base, opts)?),
            TargetSpec::Otel { endpoint } => {
                Target::Otel(super::otel::OtelTarget::new(endpoint, opts)?)
            }
            TargetSpec::Influxdb2 { url, org, bucket } => {
                Target::Influxdb2(super::influx::InfluxTarget::new(url, org, bucket, opts)?)
            }
            #[cfg(feature = "redis")]
            TargetSpec::Redis { addr, db } => {
                Target::Redis(super::redis::RedisTarget::new(addr, *db)?)
            }
            #[cfg(feature = "mysql")]
            TargetSpec::Mysql {
                addr,
                database,
                user,
            } => Target::Mysql(super::mysql::MysqlTarget::new(addr, database, user)?),
            #[cfg(feature = "tdengine")]
            TargetSpec::Tdengine { addr, db } => {
                Target::Tdengine(super::tdengine::TdengineTarget::new(addr, db, opts)?)
            }
            #[allow(unreachable_patterns)]
            other => {
                return Err(SinkError::Config(format!(
                    "{}: this mapper was built without support for it (cargo feature `{}` of mapper-sdk)",
                    other.key(),
                    match other {
                        TargetSpec::Redis { .. } => "redis",
                        TargetSpec::Mysql { .. } => "mysql",
                        _ => "tdengine",
                    }
                )));
            }
        })
    }

    /// Delivers `batch` in order. `Ok` means the target took every entry
    /// (acknowledged where the protocol acknowledges); on `Err` none may be
    /// assumed delivered and the whole batch is tried again later.
    pub(crate) async fn deliver(&mut self, batch: &[Arc<Entry>]) -> Result<(), SinkError> {
        match self {
            Target::Mqtt(t) => t.deliver(batch).await,
            Target::Http(t) => t.deliver(batch).await,
            Target::Otel(t) => t.deliver(batch).await,
            Target::Influxdb2(t) => t.deliver(batch).await,
            #[cfg(feature = "redis")]
            Target::Redis(t) => t.deliver(batch).await,
            #[cfg(feature = "mysql")]
            Target::Mysql(t) => t.deliver(batch).await,
            #[cfg(feature = "tdengine")]
            Target::Tdengine(t) => t.deliver(batch).await,
        }
    }

    /// Most records per delivery, given the configured `data.batch_records`
    /// and `data.memory_records` (a batch from memory stays well below the
    /// memory bound, which new records keep filling while it is delivered).
    pub(crate) fn max_batch(&self, configured: usize, memory: usize) -> usize {
        match self {
            Target::Mqtt(_) => configured.max(super::mqtt::MQTT_BATCH.min(memory / 4)),
            _ => configured,
        }
    }

    /// Keeps an idle connection alive (MQTT keep-alive pings); never returns
    /// for targets that need nothing. Cancel-safe.
    pub(crate) async fn idle(&mut self) {
        match self {
            Target::Mqtt(t) => t.idle().await,
            _ => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hide_credentials_and_round_trip() {
        let s = TargetSpec::Mqtt {
            address: "tcp://u:secret@broker:1883".into(),
        };
        assert_eq!(s.key(), "mqtt tcp://u@broker:1883");
        assert!(!s.table().contains("secret"));
        let other = TargetSpec::Mqtt {
            address: "tcp://u:other@broker:1883".into(),
        };
        assert_eq!(other.key(), s.key());
        assert_ne!(other.table(), s.table());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<TargetSpec>(&json).unwrap(), s);
        let e = Entry {
            record: Record {
                device: "d".into(),
                namespace: "n".into(),
                property: "p".into(),
                value: "1".into(),
                ty: "int".into(),
                timestamp: 5,
            },
            route: Route::Mqtt {
                topic: "t".into(),
                qos: 1,
                retained: false,
            },
        };
        let json = serde_json::to_vec(&e).unwrap();
        assert_eq!(serde_json::from_slice::<Entry>(&json).unwrap(), e);
    }
}
