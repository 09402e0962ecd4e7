//! One reading of one property, as every consumer sees it.
//!
//! Each collect tick reads a property once (a polled batch, or a value the
//! device pushed) and turns the result into a [`Sample`]; the same sample then
//! feeds every consumer: the twin engine ([`crate::twin`]), the snapshot that
//! `GetDevice` and metrics read, and the push and database sinks.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::value::Value;

/// How far a sample can be trusted.
#[derive(Debug, Clone, PartialEq)]
pub enum Quality {
    /// A value as the device gave it (coerced to the model's type).
    Good,
    /// No usable value: the device refused, the link failed, or the answer did
    /// not fit the model; the text says which.
    Bad(String),
}

/// One reading of one property.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The value, when `quality` is [`Quality::Good`].
    pub value: Option<Value>,
    /// Whether it can be used.
    pub quality: Quality,
    /// When the device says the value was taken, if it says (push mode,
    /// OPC-UA source timestamps).
    pub source_time: Option<SystemTime>,
    /// When the mapper got it.
    pub received_time: SystemTime,
}

impl Sample {
    /// A good sample received now.
    pub fn good(value: Value, source_time: Option<SystemTime>) -> Self {
        Self {
            value: Some(value),
            quality: Quality::Good,
            source_time,
            received_time: SystemTime::now(),
        }
    }

    /// A good sample received at `received_time`.
    pub fn good_at(
        value: Value,
        source_time: Option<SystemTime>,
        received_time: SystemTime,
    ) -> Self {
        Self {
            value: Some(value),
            quality: Quality::Good,
            source_time,
            received_time,
        }
    }

    /// A bad sample received at `received_time`.
    pub fn bad_at(reason: impl Into<String>, received_time: SystemTime) -> Self {
        Self {
            value: None,
            quality: Quality::Bad(reason.into()),
            source_time: None,
            received_time,
        }
    }

    /// A bad sample received now.
    pub fn bad(reason: impl Into<String>) -> Self {
        Self {
            value: None,
            quality: Quality::Bad(reason.into()),
            source_time: None,
            received_time: SystemTime::now(),
        }
    }

    /// The time the value stands for (source time when known), ms since the epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.source_time
            .unwrap_or(self.received_time)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default()
    }
}

/// A consumer of every sample, beside the twin engine and the snapshot: push
/// targets, databases, a data panel. The runtime calls [`SampleSink::accept`]
/// from the device's task right after each reading, so it must return quickly
/// and never block: a sink buffers (boundedly) and does its I/O on its own task.
pub trait SampleSink: Send + Sync + 'static {
    /// One reading of `property` of `device`.
    fn accept(&self, device: &crate::spec::ObjectId, property: &str, sample: &Sample);

    /// A device (re)started with `spec` and `model`; called before its first
    /// sample, under the supervisor's lock, so it must be quick. Default: nothing.
    fn device_started(&self, spec: &crate::spec::DeviceSpec, model: &crate::spec::DeviceModel) {
        let _ = (spec, model);
    }

    /// What is wrong with this sink's handling of `property` of `device`, if
    /// anything (a target that cannot work as configured, or one failing
    /// right now); reported in the twin's `reported.metadata.sinkError`.
    /// Called for each twin of a property with push or db methods. Default:
    /// nothing.
    fn problem(&self, device: &crate::spec::ObjectId, property: &str) -> Option<String> {
        let _ = (device, property);
        None
    }

    /// A device was removed; no more samples of it follow. Default: nothing.
    fn device_stopped(&self, id: &crate::spec::ObjectId) {
        let _ = id;
    }
}
