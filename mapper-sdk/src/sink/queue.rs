//! Store-and-forward for one target: a bounded memory queue ([`Lane`]) fed by
//! the device tasks, an on-disk spool ([`Spool`], one redb table per target)
//! it spills to, and the forwarding task ([`forward`]) that delivers both in
//! order.
//!
//! Order: the spool always holds the oldest records, memory the newest; the
//! forwarder delivers from the spool while it has records, then from memory,
//! and moves memory to the spool's tail (never in between), so records leave
//! in the order they came.
//!
//! Durability: while a target is healthy, records wait in memory only (a few
//! ms to one delivery). When a delivery fails, everything in memory is
//! spooled, and from then on every new record is spooled as it comes (group
//! commits, redb `Durability::Immediate`) until the spool is drained again. A
//! record in the spool survives `kill -9` and a crash of the machine; what a
//! `kill -9` can lose is the records of the current healthy batch and those
//! read within one spool commit (milliseconds) of the kill. Delivery is at
//! least once: a batch whose acknowledgement was lost is sent again (Redis
//! members and InfluxDB points are idempotent; MySQL rows are written in one
//! transaction per batch).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::options::DataOptions;
use super::target::{Entry, Target, TargetSpec};
use crate::metrics::{Metrics, SinkLabel};

/// The spool's index of targets: table name → [`TargetSpec`] JSON.
const TARGETS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("targets");

/// Longest pause between two warnings about the same failing target.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Some of the oldest records of a queue, with the sequence number (memory) or
/// key (spool) of the last.
type Batch = (u64, Vec<Arc<Entry>>);

/// Counters and gauges of one target (labels `sink=<target key>`).
#[derive(Debug, Clone)]
pub(crate) struct LaneMetrics {
    pub(crate) queued: Gauge,
    pub(crate) spooled: Gauge,
    pub(crate) delivered: Counter,
    pub(crate) dropped: Counter,
    pub(crate) failures: Counter,
}

impl LaneMetrics {
    pub(crate) fn new(m: &Metrics, key: &str) -> Self {
        let l = SinkLabel {
            sink: key.to_owned(),
        };
        Self {
            queued: m.sink_queued.get_or_create(&l).clone(),
            spooled: m.sink_spooled.get_or_create(&l).clone(),
            delivered: m.sink_delivered.get_or_create(&l).clone(),
            dropped: m.sink_dropped.get_or_create(&l).clone(),
            failures: m.sink_failures.get_or_create(&l).clone(),
        }
    }
}

/// The memory half of a target's queue; device tasks push, the forwarder
/// takes.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) key: String,
    queue: Mutex<VecDeque<(u64, Arc<Entry>)>>,
    next_seq: AtomicU64,
    wake: Notify,
    cap: usize,
    pub(crate) metrics: LaneMetrics,
    /// The last delivery error and since when deliveries fail; `None` while
    /// the target takes records.
    failing: Mutex<Option<(String, std::time::SystemTime)>>,
}

impl Lane {
    pub(crate) fn new(key: String, cap: usize, metrics: LaneMetrics) -> Self {
        Self {
            key,
            queue: Mutex::new(VecDeque::new()),
            next_seq: AtomicU64::new(0),
            wake: Notify::new(),
            cap,
            metrics,
            failing: Mutex::new(None),
        }
    }

    /// `<key>: <error> (failing since <time>, <n> records waiting)` while
    /// deliveries to this target fail.
    pub(crate) fn problem(&self) -> Option<String> {
        let f = self
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let waiting = self.metrics.queued.get() + self.metrics.spooled.get();
        Some(format!(
            "{}: {} (failing since {}, {waiting} records waiting)",
            self.key,
            f.0,
            humantime::format_rfc3339_seconds(f.1)
        ))
    }

    fn set_failing(&self, error: Option<String>) {
        let mut f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            Some(e) => {
                let since = f
                    .as_ref()
                    .map(|(_, t)| *t)
                    .unwrap_or_else(std::time::SystemTime::now);
                *f = Some((e, since));
            }
            None => *f = None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<(u64, Arc<Entry>)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `entry`; never blocks. A full queue drops its oldest record
    /// (counted in `mapper_sink_dropped_total`).
    pub(crate) fn push(&self, entry: Arc<Entry>) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let dropped = {
            let mut q = self.lock();
            let dropped = q.len() >= self.cap;
            if dropped {
                q.pop_front();
            }
            q.push_back((seq, entry));
            self.metrics.queued.set(q.len() as i64);
            dropped
        };
        if dropped {
            self.metrics.dropped.inc();
        }
        self.wake.notify_one();
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Up to `n` of the oldest records, with the sequence number of the last.
    fn peek(&self, n: usize) -> Option<Batch> {
        let q = self.lock();
        let last = q.get(n.min(q.len()).checked_sub(1)?)?.0;
        Some((last, q.iter().take(n).map(|(_, e)| e.clone()).collect()))
    }

    /// Forgets every record up to sequence `last` (delivered or spooled).
    fn commit(&self, last: u64) {
        let mut q = self.lock();
        while q.front().is_some_and(|(s, _)| *s <= last) {
            q.pop_front();
        }
        self.metrics.queued.set(q.len() as i64);
    }

    /// Takes everything queued.
    fn take_all(&self) -> Vec<Arc<Entry>> {
        let mut q = self.lock();
        let all = q.drain(..).map(|(_, e)| e).collect();
        self.metrics.queued.set(0);
        all
    }
}

/// The spool file of a mapper (`<state dir>/spool.redb`), shared by its targets.
#[derive(Debug, Clone)]
pub(crate) struct SpoolFile {
    db: Arc<Database>,
}

impl SpoolFile {
    /// The file's name inside the state dir.
    pub(crate) const NAME: &'static str = "spool.redb";

    /// Opens or creates `<dir>/spool.redb`. A damaged file is moved aside
    /// (`spool.redb.damaged-<unix time>`) and a new one created, with an error
    /// log: records in it are lost, the mapper keeps running.
    pub(crate) fn open(dir: &std::path::Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join(Self::NAME);
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(format!(
                    "{} is in use by another mapper process",
                    path.display()
                ));
            }
            Err(e) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                let aside = dir.join(format!("spool.redb.damaged-{stamp}"));
                tracing::error!(
                    path = %path.display(), aside = %aside.display(), error = %e,
                    "the sink spool is damaged; moving it aside and starting an empty one (its records are lost)"
                );
                std::fs::rename(&path, &aside)
                    .map_err(|e| format!("moving {} aside: {e}", path.display()))?;
                Database::create(&path).map_err(|e| format!("{}: {e}", path.display()))?
            }
        };
        let w = db.begin_write().map_err(|e| e.to_string())?;
        w.open_table(TARGETS).map_err(|e| e.to_string())?;
        w.commit().map_err(|e| e.to_string())?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The targets that have records spooled from an earlier run.
    pub(crate) fn pending_targets(&self) -> Vec<TargetSpec> {
        let read = || -> Result<Vec<TargetSpec>, redb::Error> {
            let r = self.db.begin_read()?;
            let index = r.open_table(TARGETS)?;
            let mut out = Vec::new();
            for row in index.iter()? {
                let (name, spec) = row?;
                let def: TableDefinition<'_, u64, &[u8]> = TableDefinition::new(name.value());
                let non_empty = match r.open_table(def) {
                    Ok(t) => t.len()? > 0,
                    Err(redb::TableError::TableDoesNotExist(_)) => false,
                    Err(e) => return Err(e.into()),
                };
                if non_empty {
                    match serde_json::from_slice(spec.value()) {
                        Ok(s) => out.push(s),
                        Err(e) => {
                            tracing::error!(table = name.value(), error = %e, "unreadable target in the spool index")
                        }
                    }
                }
            }
            Ok(out)
        };
        read().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the sink spool index");
            Vec::new()
        })
    }

    /// The spool of one target (registered in the index).
    pub(crate) fn lane(&self, spec: &TargetSpec, max_bytes: u64) -> Result<Spool, String> {
        let table = spec.key();
        let json = serde_json::to_vec(spec).map_err(|e| e.to_string())?;
        let db = self.db.clone();
        let (len, bytes, next) = (|| -> Result<(u64, u64, u64), redb::Error> {
            let w = db.begin_write()?;
            w.open_table(TARGETS)?
                .insert(table.as_str(), json.as_slice())?;
            let (mut len, mut bytes, mut next) = (0, 0, 0);
            {
                let t = w.open_table(TableDefinition::<u64, &[u8]>::new(&table))?;
                for row in t.iter()? {
                    let (k, v) = row?;
                    len += 1;
                    bytes += v.value().len() as u64;
                    next = k.value() + 1;
                }
            }
            w.commit()?;
            Ok((len, bytes, next))
        })()
        .map_err(|e| format!("{table}: {e}"))?;
        Ok(Spool {
            db,
            table,
            len,
            bytes,
            next,
            max_bytes,
        })
    }
}

/// The on-disk half of one target's queue.
#[derive(Debug)]
pub(crate) struct Spool {
    db: Arc<Database>,
    table: String,
    len: u64,
    bytes: u64,
    next: u64,
    max_bytes: u64,
}

/// What one spool append did.
struct Appended {
    dropped: u64,
}

impl Spool {
    fn def(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.table)
    }

    /// Appends `entries` in one commit; drops the oldest records beyond the
    /// byte bound.
    fn append(&mut self, entries: &[Arc<Entry>]) -> Result<Appended, redb::Error> {
        let w = self.db.begin_write()?;
        let mut dropped = 0;
        let (mut len, mut bytes, mut next) = (self.len, self.bytes, self.next);
        {
            let mut t = w.open_table(self.def())?;
            for e in entries {
                let v = serde_json::to_vec(&**e).map_err(|e| redb::Error::Io(e.into()))?;
                t.insert(next, v.as_slice())?;
                next += 1;
                len += 1;
                bytes += v.len() as u64;
            }
            while bytes > self.max_bytes {
                let Some((_, v)) = t.pop_first()? else { break };
                bytes -= v.value().len() as u64;
                len -= 1;
                dropped += 1;
            }
        }
        w.commit()?;
        (self.len, self.bytes, self.next) = (len, bytes, next);
        Ok(Appended { dropped })
    }

    /// Up to `n` of the oldest records, with the key of the last. Unreadable
    /// records are skipped with an error log (and deleted with the batch).
    fn peek(&self, n: usize) -> Result<Option<Batch>, redb::Error> {
        let r = self.db.begin_read()?;
        let t = r.open_table(self.def())?;
        let mut out = Vec::with_capacity(n.min(self.len as usize));
        let mut last = None;
        for row in t.iter()?.take(n) {
            let (k, v) = row?;
            last = Some(k.value());
            match serde_json::from_slice::<Entry>(v.value()) {
                Ok(e) => out.push(Arc::new(e)),
                Err(e) => {
                    tracing::error!(table = %self.table, key = k.value(), error = %e, "unreadable spooled record skipped")
                }
            }
        }
        Ok(last.map(|l| (l, out)))
    }

    /// Deletes every record up to key `last`.
    fn commit(&mut self, last: u64) -> Result<(), redb::Error> {
        let w = self.db.begin_write()?;
        let (mut len, mut bytes) = (self.len, self.bytes);
        {
            let mut t = w.open_table(self.def())?;
            loop {
                let first = t.first()?.map(|(k, _)| k.value());
                match first {
                    Some(k) if k <= last => {
                        if let Some((_, v)) = t.pop_first()? {
                            bytes -= v.value().len() as u64;
                            len -= 1;
                        }
                    }
                    _ => break,
                }
            }
        }
        w.commit()?;
        (self.len, self.bytes) = (len, bytes);
        Ok(())
    }
}

/// Runs blocking spool I/O off the async workers.
async fn blocking<T: Send + 'static>(
    spool: Spool,
    f: impl FnOnce(&mut Spool) -> T + Send + 'static,
) -> (Spool, T) {
    let handle = tokio::task::spawn_blocking(move || {
        let mut s = spool;
        let out = f(&mut s);
        (s, out)
    });
    match handle.await {
        Ok(r) => r,
        // spawn_blocking only fails when the closure panicked or the runtime
        // is shutting down; neither leaves a spool to continue with.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The forwarding task of one target: delivers the spool, then memory, in
/// order; spools while the target is down; retries with backoff; spills
/// memory to the spool on shutdown.
pub(crate) async fn forward(
    lane: Arc<Lane>,
    mut target: Target,
    mut spool: Option<Spool>,
    opts: DataOptions,
    shutdown: CancellationToken,
) {
    let mut backoff = edge_rt::Backoff::new(opts.retry_min, opts.retry_max);
    let mut healthy = true;
    let mut retry_at: Option<Instant> = None;
    let mut last_warn: Option<Instant> = None;
    let mut failing_since: Option<Instant> = None;
    let m = lane.metrics.clone();
    if let Some(s) = &spool {
        m.spooled.set(s.len as i64);
    }
    loop {
        // Spill: while unhealthy, or behind a non-empty spool, or half full.
        if let Some(s) = spool.take() {
            let spill = (!healthy || s.len > 0 || lane.len() * 2 >= lane.cap) && lane.len() > 0;
            spool = Some(if spill {
                let entries = lane.take_all();
                let (s, res) = blocking(s, move |s| s.append(&entries)).await;
                match res {
                    Ok(a) => {
                        m.dropped.inc_by(a.dropped);
                    }
                    Err(e) => {
                        // The records taken are lost; say how many.
                        tracing::error!(sink = %lane.key, error = %e, "cannot write the spool; records lost");
                    }
                }
                m.spooled.set(s.len as i64);
                s
            } else {
                s
            });
        }
        if shutdown.is_cancelled() {
            return;
        }
        let waiting = retry_at.is_some_and(|t| Instant::now() < t);
        let batch = if waiting {
            None
        } else {
            match spool.take() {
                Some(s) if s.len > 0 => {
                    let n = opts.batch_records;
                    let (s, res) = blocking(s, move |s| s.peek(n)).await;
                    spool = Some(s);
                    match res {
                        Ok(b) => b.map(|(last, v)| (true, last, v)),
                        Err(e) => {
                            tracing::error!(sink = %lane.key, error = %e, "cannot read the spool");
                            retry_at = Some(Instant::now() + backoff.next_delay());
                            None
                        }
                    }
                }
                other => {
                    spool = other;
                    lane.peek(opts.batch_records)
                        .map(|(last, v)| (false, last, v))
                }
            }
        };
        let Some((from_spool, last, entries)) = batch else {
            // Nothing to do now: wait for records, the retry time, or shutdown.
            let until = retry_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = lane.wake.notified() => {}
                () = tokio::time::sleep_until(until.into()) => { retry_at = None; }
                () = target.idle() => {}
                () = shutdown.cancelled() => {
                    if let Some(s) = spool.take() {
                        let entries = lane.take_all();
                        if !entries.is_empty() {
                            let n = entries.len();
                            let (_, res) = blocking(s, move |s| s.append(&entries)).await;
                            match res {
                                Ok(_) => tracing::info!(sink = %lane.key, records = n, "queued records spooled for the next start"),
                                Err(e) => tracing::error!(sink = %lane.key, error = %e, "cannot spool the queued records at shutdown"),
                            }
                        }
                    }
                    return;
                }
            }
            continue;
        };
        let n = entries.len() as u64;
        let outcome = if entries.is_empty() {
            Ok(())
        } else {
            match tokio::time::timeout(opts.delivery_timeout, target.deliver(&entries)).await {
                Ok(r) => r,
                Err(_) => Err(super::SinkError::Unreachable(format!(
                    "no answer within {:?}",
                    opts.delivery_timeout
                ))),
            }
        };
        match outcome {
            Ok(()) => {
                if from_spool {
                    if let Some(s) = spool.take() {
                        let (s, res) = blocking(s, move |s| s.commit(last)).await;
                        if let Err(e) = res {
                            tracing::error!(sink = %lane.key, error = %e, "cannot remove delivered records from the spool; they will be sent again");
                        }
                        m.spooled.set(s.len as i64);
                        spool = Some(s);
                    }
                } else {
                    lane.commit(last);
                }
                m.delivered.inc_by(n);
                lane.set_failing(None);
                if !healthy {
                    let down = failing_since.map(|t| t.elapsed()).unwrap_or_default();
                    tracing::info!(sink = %lane.key, after = ?down, "target reachable again; delivering what was queued");
                }
                healthy = true;
                failing_since = None;
                retry_at = None;
                backoff.reset();
            }
            Err(e) => {
                m.failures.inc();
                lane.set_failing(Some(e.to_string()));
                let now = Instant::now();
                if healthy || last_warn.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
                    tracing::warn!(sink = %lane.key, error = %e, queued = lane.len(), spooled = spool.as_ref().map(|s| s.len).unwrap_or(0), "delivery failed; records stay queued and are retried");
                    last_warn = Some(now);
                }
                if healthy {
                    failing_since = Some(now);
                }
                healthy = false;
                retry_at = Some(now + backoff.next_delay());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::record::Record;
    use crate::sink::target::Route;

    fn entry(v: u64) -> Arc<Entry> {
        Arc::new(Entry {
            record: Record {
                device: "d".into(),
                namespace: "n".into(),
                property: "p".into(),
                value: v.to_string(),
                ty: "int".into(),
                timestamp: v,
            },
            route: Route::Redis,
        })
    }

    fn values(b: &Batch) -> Vec<String> {
        b.1.iter().map(|e| e.record.value.clone()).collect()
    }

    #[test]
    fn spool_keeps_order_across_reopen_and_drops_oldest_beyond_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let spec = TargetSpec::Redis {
            addr: "h:1".into(),
            db: 0,
        };
        {
            let f = SpoolFile::open(dir.path()).unwrap();
            let mut s = f.lane(&spec, 1 << 20).unwrap();
            s.append(&(0..5).map(entry).collect::<Vec<_>>()).unwrap();
            let b = s.peek(3).unwrap().unwrap();
            assert_eq!(values(&b), ["0", "1", "2"]);
            s.commit(b.0).unwrap();
            assert_eq!(s.len, 2);
        }
        // A new process finds the rest, in order, and the target it belongs to.
        let f = SpoolFile::open(dir.path()).unwrap();
        assert_eq!(f.pending_targets(), std::slice::from_ref(&spec));
        let mut s = f.lane(&spec, 1 << 20).unwrap();
        assert_eq!(s.len, 2);
        s.append(&[entry(5)]).unwrap();
        assert_eq!(values(&s.peek(10).unwrap().unwrap()), ["3", "4", "5"]);
        // Bound: each record is about 130 bytes; 300 bytes keep the newest two.
        let one = serde_json::to_vec(&*entry(6)).unwrap().len() as u64;
        let mut small = f
            .lane(
                &TargetSpec::Redis {
                    addr: "h:2".into(),
                    db: 0,
                },
                2 * one + one / 2,
            )
            .unwrap();
        let a = small
            .append(&(6..10).map(entry).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(a.dropped, 2);
        assert_eq!(values(&small.peek(10).unwrap().unwrap()), ["8", "9"]);
    }

    #[test]
    fn a_damaged_spool_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("spool.redb"), b"not a database at all").unwrap();
        let f = SpoolFile::open(dir.path()).unwrap();
        assert!(f.pending_targets().is_empty());
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("spool.redb.damaged-")
            });
        assert!(aside);
    }

    #[test]
    fn memory_lane_drops_oldest_and_commits_by_sequence() {
        let m = Metrics::new();
        let lane = Lane::new("t".into(), 3, LaneMetrics::new(&m, "t"));
        for v in 0..5 {
            lane.push(entry(v));
        }
        let b = lane.peek(2).unwrap();
        assert_eq!(values(&b), ["2", "3"]);
        // A push that drops the front while a batch is out does not confuse
        // the commit: it removes by sequence number.
        lane.push(entry(5));
        lane.commit(b.0);
        assert_eq!(values(&lane.peek(10).unwrap()), ["4", "5"]);
        assert!(
            m.render()
                .contains("mapper_sink_dropped_total{sink=\"t\"} 3")
        );
    }
}
