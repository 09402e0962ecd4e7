//! The dashboard's feed: one task that takes the hub's accepted reports
//! ([`Hub::subscribe_changes`]), records numeric values in the [`History`],
//! and once per [`FRAME_INTERVAL`] publishes a [`Frame`] for the event
//! streams: the points recorded since the last frame and, when something
//! changed (or every [`STATUS_REFRESH`] anyway, for changes that are not
//! reports: files edited, mappers registering), the status.
//!
//! Frames are built once for all clients, and only while a client listens.
//! They go out through a `watch` channel that holds the latest frame only: a
//! client that falls behind skips frames, notices the gap in the sequence
//! numbers and is told to fetch the history again ([`EventKind::Resync`]). If
//! the feed itself falls behind the hub's broadcast (`Lagged`), every client
//! is told the same.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::history::{History, Point};
use crate::hub::{Change, Hub};

/// How often a frame is published to the event streams.
pub const FRAME_INTERVAL: Duration = Duration::from_secs(1);
/// The status goes out at least this often while clients listen, even when
/// no report arrived.
pub const STATUS_REFRESH: Duration = Duration::from_secs(5);
/// Points carried by one frame, at most; beyond that the frame says
/// `truncated` and clients fetch the history instead.
pub const MAX_FRAME_POINTS: usize = 5_000;
/// How often expired points and series are dropped from the history.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// Feed losses (hub broadcast lagged) are logged at most once per 10 s.
static LAG_LOG: edge_rt::logging::Throttle =
    edge_rt::logging::Throttle::new(Duration::from_secs(10));

/// What an event of the stream is (its SSE `event:` name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The [`crate::views::StatusView`] JSON, as `GET /api/v1/status`.
    Status,
    /// [`Samples`]: points recorded since the previous frame.
    Samples,
    /// Points were lost on the way: fetch the history again.
    Resync,
}

impl EventKind {
    /// The SSE event name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Samples => "samples",
            Self::Resync => "resync",
        }
    }
}

/// One recorded point, as a `samples` event carries it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// The device, `namespace/name`.
    pub device: String,
    /// The property.
    pub property: String,
    /// When it was reported, ms since the epoch.
    pub t: u64,
    /// The value.
    pub v: f64,
}

/// The data of a `samples` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Samples {
    /// The server's clock, ms since the epoch (charts end here).
    pub now_ms: u64,
    /// Points recorded since the previous frame, in report order.
    pub points: Vec<Sample>,
    /// Points were left out (more than [`MAX_FRAME_POINTS`]): fetch the
    /// history.
    pub truncated: bool,
}

/// What one tick publishes to every event stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    /// Sequence number, from 1; 0 is "nothing published yet".
    pub seq: u64,
    /// Events of this frame, in order: name and JSON data.
    pub events: Vec<(EventKind, Arc<str>)>,
}

/// The feed (see the module docs): built before the server starts, so no
/// report accepted after that is missed.
#[derive(Debug)]
pub struct Feed {
    hub: Arc<Hub>,
    history: Arc<History>,
    changes: broadcast::Receiver<Change>,
    frames: watch::Sender<Arc<Frame>>,
}

impl Feed {
    /// Subscribes to `hub`'s reports, recording into `history`.
    pub fn new(hub: Arc<Hub>, history: Arc<History>) -> Self {
        let changes = hub.subscribe_changes();
        Self {
            hub,
            history,
            changes,
            frames: watch::Sender::new(Arc::new(Frame::default())),
        }
    }

    /// The hub it observes.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The history it records into.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// The sender of the frames: each event stream subscribes to it (the
    /// feed builds frames only while one does).
    pub(crate) fn frame_sender(&self) -> watch::Sender<Arc<Frame>> {
        self.frames.clone()
    }

    /// Runs until `shutdown` (or until the hub is gone). Cancellation safe:
    /// stopping it loses only the points of the frame being gathered.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(FRAME_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(PRUNE_INTERVAL);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gathered = Gathered::default();
        let mut since_status = Duration::ZERO;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = self.changes.recv() => match r {
                    Ok(change) => self.take(&change, &mut gathered),
                    Err(RecvError::Lagged(n)) => {
                        gathered.lost = true;
                        if let Some(held_back) = LAG_LOG.allow() {
                            tracing::warn!(lost = n, held_back, "dashboard: reports arrived faster than they were recorded; some points are missing");
                        }
                    }
                    Err(RecvError::Closed) => return Ok(()),
                },
                _ = prune.tick() => {
                    self.history.prune(super::now_ms());
                }
                _ = tick.tick() => {
                    since_status += FRAME_INTERVAL;
                    if self.frames.receiver_count() == 0 {
                        // Nobody listens: nothing to build.
                        gathered = Gathered::default();
                        continue;
                    }
                    let with_status = gathered.changed || since_status >= STATUS_REFRESH;
                    if with_status {
                        since_status = Duration::ZERO;
                    }
                    let frame = self.frame(std::mem::take(&mut gathered), with_status);
                    if !frame.events.is_empty() {
                        self.frames.send_replace(Arc::new(frame));
                    }
                }
            }
        }
    }

    /// Records `change` in the history and in `gathered`.
    fn take(&self, change: &Change, gathered: &mut Gathered) {
        gathered.changed = true;
        let Change::Twins(t) = change else {
            return;
        };
        for u in &t.updated {
            let Some(Point(at, v)) = self.history.record(
                &t.device,
                &u.property,
                u.current.updated_ms,
                &u.current.reported,
            ) else {
                continue;
            };
            if gathered.points.len() >= MAX_FRAME_POINTS {
                gathered.truncated = true;
                continue;
            }
            gathered.points.push(Sample {
                device: t.device.as_str().to_owned(),
                property: u.property.clone(),
                t: at,
                v,
            });
        }
    }

    /// The next frame from what was gathered.
    fn frame(&self, gathered: Gathered, with_status: bool) -> Frame {
        let seq = self.frames.borrow().seq + 1;
        let mut events = Vec::new();
        if gathered.lost {
            events.push((EventKind::Resync, Arc::from(r#"{"reason":"lagged"}"#)));
        }
        if with_status && let Some(json) = to_json(&self.hub.status()) {
            events.push((EventKind::Status, json));
        }
        if !gathered.points.is_empty() || gathered.truncated {
            let samples = Samples {
                now_ms: super::now_ms(),
                points: gathered.points,
                truncated: gathered.truncated,
            };
            if let Some(json) = to_json(&samples) {
                events.push((EventKind::Samples, json));
            }
        }
        Frame { seq, events }
    }
}

/// What arrived since the last frame.
#[derive(Debug, Default)]
struct Gathered {
    /// A report was accepted.
    changed: bool,
    /// Numeric points recorded.
    points: Vec<Sample>,
    /// More than [`MAX_FRAME_POINTS`] arrived.
    truncated: bool,
    /// Reports were lost (the feed lagged).
    lost: bool,
}

/// `value` as JSON; logged and `None` if it cannot be encoded (it always
/// can: plain structs of strings and numbers).
pub(crate) fn to_json<T: Serialize>(value: &T) -> Option<Arc<str>> {
    match serde_json::to_string(value) {
        Ok(s) => Some(Arc::from(s)),
        Err(e) => {
            tracing::error!(error = %e, "dashboard: cannot encode an event");
            None
        }
    }
}
