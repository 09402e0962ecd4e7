//! The `data` section of the mapper's config file (an extension of this
//! project; mapper-framework has no such settings).
//!
//! ```yaml
//! data:
//!   state_dir: /var/lib/edge-dmi/modbus-mapper  # spool location (default below)
//!   spool: true                # spill to disk while a target is down
//!   memory_records: 10000      # per target, in memory
//!   spool_max_bytes: 67108864  # per target, on disk (64 MiB)
//!   batch_records: 500         # most records per delivery
//!   delivery_timeout: 10s      # one delivery attempt
//!   payload: json              # json | stock (mapper-framework's text forms)
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How MQTT and HTTP sinks encode a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// The JSON document of [`super::Record::document`] (`application/json`).
    #[default]
    Json,
    /// mapper-framework's forms, for drop-in compatibility: MQTT
    /// `time is <datetime>  <topic>: <value>`, HTTP form body
    /// `<property>=<value>&time=<datetime>`.
    Stock,
}

/// Data-plane settings. Defaults: spool on, 10 000 records in memory and
/// 64 MiB on disk per target, batches of 500, 10 s per delivery attempt, JSON
/// payloads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataOptions {
    /// Where the spool lives (`spool.redb`). Default: `$STATE_DIRECTORY`
    /// (systemd) if set, else `/var/lib/edge-dmi/<mapper name>`. When it
    /// cannot be created the mapper runs with memory queues only and says so.
    pub state_dir: Option<PathBuf>,
    /// Spill to the on-disk spool while a target is down (and when its memory
    /// queue is three quarters full), so queued samples survive a restart.
    pub spool: bool,
    /// Records held in memory per target; beyond it the oldest is dropped
    /// (counted in `mapper_sink_dropped_total`).
    pub memory_records: usize,
    /// Bytes of encoded records spooled per target; beyond it the oldest are
    /// dropped (counted).
    pub spool_max_bytes: u64,
    /// Most records sent in one delivery (one HTTP write, one SQL
    /// transaction, one Redis pipeline; MQTT bursts are at least 5000
    /// publishes, see the crate docs).
    pub batch_records: usize,
    /// Deadline of one delivery attempt.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// MQTT and HTTP payload encoding.
    pub payload: PayloadFormat,
    /// First retry delay after a failed delivery.
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Client name the targets identify with (MQTT client id prefix); the
    /// mapper's name, set by the mapper.
    #[serde(skip)]
    pub client_name: String,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            state_dir: None,
            spool: true,
            memory_records: 10_000,
            spool_max_bytes: 64 << 20,
            batch_records: 500,
            delivery_timeout: Duration::from_secs(10),
            payload: PayloadFormat::Json,
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(10),
            client_name: "mapper".to_owned(),
        }
    }
}

impl DataOptions {
    /// The spool directory: `state_dir`, else `$STATE_DIRECTORY`, else
    /// `/var/lib/edge-dmi/<client_name>`.
    pub fn resolved_state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
            // systemd may list several, separated by ':'.
            let first = d
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned();
            return PathBuf::from(first);
        }
        PathBuf::from("/var/lib/edge-dmi").join(&self.client_name)
    }

    /// Checks the bounds.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.memory_records == 0 {
            return Err("data.memory_records must be above zero".into());
        }
        if self.batch_records == 0 {
            return Err("data.batch_records must be above zero".into());
        }
        if self.delivery_timeout.is_zero() {
            return Err("data.delivery_timeout must be above zero".into());
        }
        if self.retry_min > self.retry_max {
            return Err("data.retry_min is above data.retry_max".into());
        }
        Ok(())
    }
}
