//! A property's `pushMethod` (and the `dbMethod` inside it) as the SDK reads
//! it: KubeEdge v1beta1's keys and meanings (spec §1.2 `PushMethod`, §3.1 CRD
//! `pushMethod`), converted once from the DMI message when a device arrives.

use std::collections::BTreeMap;

/// `pushMethod` of one property. Every configured target receives the
/// property's samples (stock mapper-framework uses only the first of
/// `http`, `mqtt`, `otel`; see the crate docs, "Data plane").
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PushMethod {
    /// `pushMethod.http`.
    pub http: Option<HttpPush>,
    /// `pushMethod.mqtt`.
    pub mqtt: Option<MqttPush>,
    /// `pushMethod.otel`.
    pub otel: Option<OtelPush>,
    /// `pushMethod.dbMethod`.
    pub db: DbMethod,
}

impl PushMethod {
    /// Whether no target is configured.
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.mqtt.is_none() && self.otel.is_none() && self.db.is_empty()
    }
}

/// `pushMethod.http`: a POST of each sample to `hostName:port` + `requestPath`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpPush {
    /// `hostName`, with the scheme (`http://10.0.0.5`); a bare host means `http://`.
    pub host_name: String,
    /// `port`; 0 means the scheme's default.
    pub port: i64,
    /// `requestPath` (`/api/v1/readings`).
    pub request_path: String,
    /// `timeout`, ms per request; 0 means the data plane's delivery timeout.
    pub timeout_ms: i64,
}

/// `pushMethod.mqtt`: a publish of each sample.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttPush {
    /// `address`: `tcp://host:port` (also `mqtt://`; `ssl://`, `tls://`,
    /// `mqtts://` for TLS). A `?version=5` query selects MQTT 5.
    pub address: String,
    /// `topic`.
    pub topic: String,
    /// `qos`: 0, 1 or 2.
    pub qos: i32,
    /// `retained`.
    pub retained: bool,
}

/// `pushMethod.otel`: OTLP/HTTP metrics export.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelPush {
    /// `endpointURL`, e.g. `http://collector:4318/v1/metrics`.
    pub endpoint_url: String,
}

/// `pushMethod.dbMethod`. Every configured database receives the samples.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DbMethod {
    /// `influxdb2`.
    pub influxdb2: Option<Influxdb2>,
    /// `redis`.
    pub redis: Option<RedisDb>,
    /// `TDEngine` (`tdengine` on the wire).
    pub tdengine: Option<TdEngineDb>,
    /// `mysql`.
    pub mysql: Option<MysqlDb>,
}

impl DbMethod {
    /// Whether no database is configured.
    pub fn is_empty(&self) -> bool {
        self.influxdb2.is_none()
            && self.redis.is_none()
            && self.tdengine.is_none()
            && self.mysql.is_none()
    }
}

/// `dbMethod.influxdb2`: line protocol over `/api/v2/write`; the token comes
/// from the environment variable `TOKEN` (as mapper-framework).
#[derive(Debug, Clone, PartialEq)]
pub struct Influxdb2 {
    /// `influxdb2ClientConfig.url`, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// `influxdb2ClientConfig.org`.
    pub org: String,
    /// `influxdb2ClientConfig.bucket`.
    pub bucket: String,
    /// `influxdb2DataConfig.measurement`.
    pub measurement: String,
    /// `influxdb2DataConfig.tag`.
    pub tags: BTreeMap<String, String>,
    /// `influxdb2DataConfig.fieldKey`.
    pub field_key: String,
}

/// `dbMethod.redis`: `ZADD <device> <timestamp ms> <JSON document>`; the
/// password comes from the environment variable `PASSWORD` (as mapper-framework).
#[derive(Debug, Clone, PartialEq)]
pub struct RedisDb {
    /// `redisClientConfig.addr`, `host:port`.
    pub addr: String,
    /// `redisClientConfig.db`.
    pub db: i32,
    /// `redisClientConfig.poolsize` (accepted; one multiplexed connection is used).
    pub pool_size: i32,
    /// `redisClientConfig.minIdleConns` (accepted; see `pool_size`).
    pub min_idle_conns: i32,
}

/// `dbMethod.TDEngine`: rows through TDengine's REST API; credentials from
/// `USERNAME`/`PASSWORD` (as mapper-framework; default `root`/`taosdata`).
#[derive(Debug, Clone, PartialEq)]
pub struct TdEngineDb {
    /// `tdEngineClientConfig.addr`, `host:port` of the REST API (6041).
    pub addr: String,
    /// `tdEngineClientConfig.dbName`.
    pub db_name: String,
}

/// `dbMethod.mysql`: one table per property, laid out as mapper-framework's
/// (`` `<ns>/<device>/<property>` `` with `id`, `ts DATETIME`, `field TEXT`),
/// created if absent; the password comes from `PASSWORD`.
#[derive(Debug, Clone, PartialEq)]
pub struct MysqlDb {
    /// `mysqlClientConfig.addr`, `host:port`.
    pub addr: String,
    /// `mysqlClientConfig.database`.
    pub database: String,
    /// `mysqlClientConfig.userName`.
    pub user_name: String,
}

/// Reads a secret the way mapper-framework does (environment variable `name`),
/// or from the file named by `<name>_FILE` (a mounted Kubernetes Secret).
pub(crate) fn secret(name: &str) -> Option<String> {
    if let Ok(v) = std::env::var(name) {
        return Some(v);
    }
    let path = std::env::var(format!("{name}_FILE")).ok()?;
    match std::fs::read_to_string(&path) {
        Ok(v) => Some(v.trim_end_matches(['\r', '\n']).to_owned()),
        Err(e) => {
            tracing::warn!(variable = %format!("{name}_FILE"), %path, error = %e, "cannot read the secret file");
            None
        }
    }
}
