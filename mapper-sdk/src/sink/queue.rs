//! Store-and-forward for one target: a bounded memory queue ([`Lane`]) fed by
//! the device tasks, an on-disk spool ([`Spool`], one redb table per target)
//! it spills to, and the forwarding task ([`forward`]) that delivers both in
//! order.
//!
//! Order: the spool always holds the oldest records, memory the newest; the
//! forwarder delivers from the spool while it has records, then from memory,
//! and moves memory to the spool's tail (never in between), so records leave
//! in the order they came. One exception: for [`SPOOL_RETRY`] after the spool
//! failed to write or read (a full disk), memory is delivered while spooled
//! records wait, so those leave later than newer ones.
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

/// How long a lane works from memory only after a spool write failed.
const SPOOL_RETRY: Duration = Duration::from_secs(5);

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

    /// Whether nothing waits for this target, in memory or in its spool.
    pub(crate) fn is_idle(&self) -> bool {
        self.len() == 0 && self.metrics.spooled.get() == 0
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

    /// Takes everything queued, with sequence numbers.
    fn take_all(&self) -> Vec<(u64, Arc<Entry>)> {
        let mut q = self.lock();
        let all = q.drain(..).collect();
        self.metrics.queued.set(0);
        all
    }

    /// Puts records taken by [`Lane::take_all`] back at the front (they are
    /// older than anything queued since); beyond the bound the oldest are
    /// dropped (counted).
    fn requeue_front(&self, taken: Vec<(u64, Arc<Entry>)>) {
        let dropped = {
            let mut q = self.lock();
            for item in taken.into_iter().rev() {
                q.push_front(item);
            }
            let over = q.len().saturating_sub(self.cap);
            q.drain(..over);
            self.metrics.queued.set(q.len() as i64);
            over as u64
        };
        self.metrics.dropped.inc_by(dropped);
    }
}

/// redb's page cache for the spool, bytes (redb's default is 1 GiB).
const SPOOL_CACHE: usize = 4 << 20;

/// The spool file of a mapper (`<state dir>/spool.redb`), shared by its
/// targets.
#[derive(Debug, Clone)]
pub(crate) struct SpoolFile {
    db: Arc<SpoolDb>,
}

/// The database behind a [`SpoolFile`]. redb refuses every call after an I/O
/// error until the database is opened again (a full disk, a file removed
/// under it), and its code panics on some kinds of damage; this wrapper turns
/// panics into errors and re-opens the database on the next call after an
/// error, moving a damaged file aside.
#[derive(Debug)]
struct SpoolDb {
    path: std::path::PathBuf,
    db: Mutex<Option<Database>>,
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

impl SpoolDb {
    /// Opens `path`, creating it (mode 0600: the spool holds readings and
    /// target addresses). Only damage (redb reports corruption, or panics) moves the
    /// file aside to `spool.redb.damaged-<unix time>` and starts an empty one,
    /// with an error log; any other failure (permissions, a full disk, a
    /// second process) is returned and the file is left alone.
    fn open(path: &std::path::Path) -> Result<Database, String> {
        let attempt = || {
            std::panic::catch_unwind(|| {
                redb::Builder::new()
                    .set_cache_size(SPOOL_CACHE)
                    .create(path)
            })
        };
        let damage = match attempt() {
            Ok(Ok(db)) => {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
                return Ok(db);
            }
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
                return Err(format!(
                    "{} is in use by another mapper process",
                    path.display()
                ));
            }
            // Permissions, a full disk: not the file's fault; leave it.
            // (redb reports a file that is not a database as invalid data.)
            Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                return Err(format!("{}: {e}", path.display()));
            }
            Ok(Err(e)) => e.to_string(),
            Err(p) => format!(
                "the database library panicked reading it: {}",
                panic_text(&*p)
            ),
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let aside = path.with_file_name(format!("{}.damaged-{stamp}", SpoolFile::NAME));
        tracing::error!(
            path = %path.display(), aside = %aside.display(), error = %damage,
            "the sink spool is damaged; moving it aside and starting an empty one (its records are lost)"
        );
        std::fs::rename(path, &aside)
            .map_err(|e| format!("moving {} aside: {e}", path.display()))?;
        match attempt() {
            Ok(Ok(db)) => Ok(db),
            Ok(Err(e)) => Err(format!("{}: {e}", path.display())),
            Err(p) => Err(format!("{}: {}", path.display(), panic_text(&*p))),
        }
    }

    /// Runs `f` on the database, opening it first if an earlier error closed
    /// it; a panic in `f` is an error, and after an error the database is
    /// closed so that the next call opens it again.
    fn with<R>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, redb::Error>,
    ) -> Result<R, redb::Error> {
        let mut g = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            let db =
                Self::open(&self.path).map_err(|e| redb::Error::Io(std::io::Error::other(e)))?;
            tracing::info!(path = %self.path.display(), "sink spool opened again");
            *g = Some(db);
        }
        let Some(db) = g.as_ref() else {
            return Err(redb::Error::DatabaseClosed);
        };
        let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(db))) {
            Ok(r) => r,
            Err(p) => Err(redb::Error::Corrupted(format!(
                "the database library panicked: {}",
                panic_text(&*p)
            ))),
        };
        if matches!(
            r,
            Err(redb::Error::PreviousIo | redb::Error::Io(_) | redb::Error::Corrupted(_))
        ) {
            *g = None;
        }
        r
    }
}

impl SpoolFile {
    /// The file's name inside the state dir.
    pub(crate) const NAME: &'static str = "spool.redb";

    /// Opens or creates `<dir>/spool.redb` (see [`SpoolDb::open`]).
    pub(crate) fn open(dir: &std::path::Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join(Self::NAME);
        let db = SpoolDb::open(&path)?;
        let w = db.begin_write().map_err(|e| e.to_string())?;
        w.open_table(TARGETS).map_err(|e| e.to_string())?;
        w.commit().map_err(|e| e.to_string())?;
        Ok(Self {
            db: Arc::new(SpoolDb {
                path,
                db: Mutex::new(Some(db)),
            }),
        })
    }

    /// The targets that have records spooled from an earlier run.
    pub(crate) fn pending_targets(&self) -> Vec<TargetSpec> {
        let read = |db: &Database| -> Result<Vec<TargetSpec>, redb::Error> {
            let r = db.begin_read()?;
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
        self.db.with(read).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the sink spool index");
            Vec::new()
        })
    }

    /// The spool of one target (registered in the index).
    pub(crate) fn lane(&self, spec: &TargetSpec, max_bytes: u64) -> Result<Spool, String> {
        let table = spec.table();
        let json = serde_json::to_vec(spec).map_err(|e| e.to_string())?;
        let (len, bytes, next) = self
            .db
            .with(|db| {
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
            })
            .map_err(|e| format!("{table}: {e}"))?;
        Ok(Spool {
            db: self.db.clone(),
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
    db: Arc<SpoolDb>,
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
    /// Records spooled.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends `entries` in one commit; drops the oldest records beyond the
    /// byte bound.
    fn append(&mut self, entries: &[(u64, Arc<Entry>)]) -> Result<Appended, redb::Error> {
        let table = self.table.clone();
        let (len0, bytes0, next0, max) = (self.len, self.bytes, self.next, self.max_bytes);
        let (len, bytes, next, dropped) = self.db.with(|db| {
            let w = db.begin_write()?;
            let (mut len, mut bytes, mut next, mut dropped) = (len0, bytes0, next0, 0);
            {
                let mut t = w.open_table(TableDefinition::<u64, &[u8]>::new(&table))?;
                for (_, e) in entries {
                    let v = serde_json::to_vec(&**e).map_err(|e| redb::Error::Io(e.into()))?;
                    t.insert(next, v.as_slice())?;
                    next += 1;
                    len += 1;
                    bytes += v.len() as u64;
                }
                while bytes > max {
                    let Some((_, v)) = t.pop_first()? else { break };
                    bytes -= v.value().len() as u64;
                    len -= 1;
                    dropped += 1;
                }
            }
            w.commit()?;
            Ok((len, bytes, next, dropped))
        })?;
        (self.len, self.bytes, self.next) = (len, bytes, next);
        Ok(Appended { dropped })
    }

    /// Up to `n` of the oldest records, with the key of the last. Unreadable
    /// records are skipped with an error log (and deleted with the batch).
    fn peek(&self, n: usize) -> Result<Option<Batch>, redb::Error> {
        let cap = n.min(self.len as usize);
        self.db.with(|db| {
            let r = db.begin_read()?;
            let t = r.open_table(TableDefinition::<u64, &[u8]>::new(&self.table))?;
            let mut out = Vec::with_capacity(cap);
            let mut last = None;
            for row in t.iter()?.take(n) {
                let (k, v) = row?;
                last = Some(k.value());
                match serde_json::from_slice::<Entry>(v.value()) {
                    Ok(e) => out.push(Arc::new(e)),
                    Err(e) => tracing::error!(table = %self.table, key = k.value(), error = %e, "unreadable spooled record skipped"),
                }
            }
            Ok(last.map(|l| (l, out)))
        })
    }

    /// Deletes every record up to key `last`. The commit is not synced to
    /// disk unless it empties the spool (the next append or the last delete
    /// syncs it): a crash can only bring delivered records back, which
    /// at-least-once delivery allows, and replay is not slowed by a second
    /// `fsync` per batch.
    fn commit(&mut self, last: u64) -> Result<(), redb::Error> {
        let table = self.table.clone();
        let (len0, bytes0) = (self.len, self.bytes);
        let (len, bytes) = self.db.with(|db| {
            let mut w = db.begin_write()?;
            let (mut len, mut bytes) = (len0, bytes0);
            {
                let mut t = w.open_table(TableDefinition::<u64, &[u8]>::new(&table))?;
                // `pop_first` in a loop: in redb 3.1 it is several times
                // faster than `extract_from_if`/`retain_in` over a range,
                // which rewrite the tree key by key (measured in benches/).
                while t.first()?.is_some_and(|(k, _)| k.value() <= last) {
                    if let Some((_, v)) = t.pop_first()? {
                        bytes = bytes.saturating_sub(v.value().len() as u64);
                        len = len.saturating_sub(1);
                    }
                }
            }
            if len > 0 {
                w.set_durability(redb::Durability::None)
                    .map_err(|e| redb::Error::Io(std::io::Error::other(e.to_string())))?;
            }
            w.commit()?;
            Ok((len, bytes))
        })?;
        (self.len, self.bytes) = (len, bytes);
        Ok(())
    }
}

/// Runs blocking spool I/O off the async workers.
async fn blocking<T: Send + 'static>(
    spool: Spool,
    f: impl FnOnce(&mut Spool) -> Result<T, redb::Error> + Send + 'static,
) -> (Spool, Result<T, redb::Error>) {
    let handle = tokio::task::spawn_blocking(move || {
        let mut s = spool;
        let out = f(&mut s);
        (s, out)
    });
    match handle.await {
        Ok(r) => r,
        // `SpoolDb::with` turns panics into errors, so this is the runtime
        // shutting down: nothing is left to continue with.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// While the spool replays, records arriving meanwhile are moved behind it
/// this often (at once when memory is half full): each move is one durable
/// commit, and one per delivered batch held a debug build's replay below its
/// intake. What a `kill -9` during a replay can lose is what arrived within
/// about this long (plus the spill's own commit).
const SPILL_EVERY: Duration = Duration::from_millis(100);

/// Whether records in memory go behind a non-empty spool now: memory half
/// full, or [`SPILL_EVERY`] since the last spill.
fn spill_due(lane: &Lane, last_spill: Instant) -> bool {
    lane.len() > 0 && (lane.len() * 2 >= lane.cap || last_spill.elapsed() >= SPILL_EVERY)
}

/// Moves everything in `lane`'s memory to the tail of its spool in one
/// commit. On failure nothing is lost: the records go back to memory
/// (bounded) and `false` says to leave the spool alone for a while.
async fn spill_all(lane: &Lane, s: Spool, log: &edge_rt::logging::Throttle) -> (Spool, bool) {
    let taken = lane.take_all();
    let (s, res) = blocking(s, move |s| {
        let r = s.append(&taken);
        Ok((r, taken))
    })
    .await;
    let ok = match res {
        Ok((Ok(a), _)) => {
            lane.metrics.dropped.inc_by(a.dropped);
            true
        }
        Ok((Err(e), taken)) => {
            lane.requeue_front(taken);
            if let Some(held_back) = log.allow() {
                tracing::error!(sink = %lane.key, error = %e, held_back, "cannot write the spool; records stay in memory (bounded) and the spool is tried again in {SPOOL_RETRY:?}");
            }
            false
        }
        // `blocking` never returns an error of its own.
        Err(_) => false,
    };
    lane.metrics.spooled.set(s.len as i64);
    (s, ok)
}

/// On shutdown: what is still in memory goes to the spool's tail (when
/// there is a spool), for the next start to deliver.
async fn spool_at_shutdown(lane: &Lane, spool: Option<Spool>) {
    let Some(s) = spool else { return };
    let entries = lane.take_all();
    if entries.is_empty() {
        return;
    }
    let n = entries.len();
    let (_, res) = blocking(s, move |s| s.append(&entries).map(|_| ())).await;
    match res {
        Ok(_) => {
            tracing::info!(sink = %lane.key, records = n, "queued records spooled for the next start")
        }
        Err(e) => {
            tracing::error!(sink = %lane.key, error = %e, "cannot spool the queued records at shutdown")
        }
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
    // After a spool write fails, the lane keeps records in memory until then.
    let mut spool_retry_at: Option<Instant> = None;
    let spool_log = edge_rt::logging::Throttle::new(WARN_EVERY);
    let mut last_spill = Instant::now();
    let m = lane.metrics.clone();
    if let Some(s) = &spool {
        m.spooled.set(s.len as i64);
    }
    loop {
        let spool_usable = spool_retry_at.is_none_or(|t| Instant::now() >= t);
        if spool_usable && let Some(s) = spool.take() {
            // Spill while the target is down, behind a non-empty spool (order;
            // at most every SPILL_EVERY while it replays, so the replay is not
            // spent on commits), or when memory is three quarters full
            // (before it drops).
            let behind = s.len > 0 && spill_due(&lane, last_spill);
            let spill = (!healthy || behind || lane.len() * 4 >= lane.cap * 3) && lane.len() > 0;
            spool = Some(if spill {
                last_spill = Instant::now();
                let (s, ok) = spill_all(&lane, s, &spool_log).await;
                spool_retry_at = (!ok).then(|| Instant::now() + SPOOL_RETRY);
                s
            } else {
                s
            });
        }
        if shutdown.is_cancelled() {
            spool_at_shutdown(&lane, spool.take()).await;
            return;
        }
        let waiting = retry_at.is_some_and(|t| Instant::now() < t);
        let batch = if waiting {
            None
        } else {
            match spool.take() {
                Some(s) if s.len > 0 && spool_usable => {
                    let n = target.max_batch(opts.batch_records, opts.memory_records);
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
                    lane.peek(target.max_batch(opts.batch_records, opts.memory_records))
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
                    spool_at_shutdown(&lane, spool.take()).await;
                    return;
                }
            }
            continue;
        };
        let n = entries.len() as u64;
        let outcome = if entries.is_empty() {
            Ok(())
        } else {
            let delivery = tokio::time::timeout(opts.delivery_timeout, target.deliver(&entries));
            tokio::pin!(delivery);
            // While a batch from the spool is out, what arrives goes behind it
            // on disk (it is newer than the whole spool) instead of filling
            // memory until the oldest is dropped. The spill runs beside the
            // delivery, never instead of it: a spill takes as long as the
            // disk does, and a delivery polled only between spills missed its
            // deadline under load, again and again (no record delivered while
            // the spool grew).
            let mut spilling = None;
            let r = loop {
                tokio::select! {
                    r = &mut delivery => break r,
                    (s, ok) = async {
                        match spilling.as_mut() {
                            Some(f) => f.await,
                            None => std::future::pending::<(Spool, bool)>().await,
                        }
                    }, if spilling.is_some() => {
                        spilling = None;
                        spool_retry_at = (!ok).then(|| Instant::now() + SPOOL_RETRY);
                        spool = Some(s);
                    }
                    // A record that arrived too soon after the last spill
                    // used up its wake-up: spill it once SPILL_EVERY is over.
                    () = tokio::time::sleep_until((last_spill + SPILL_EVERY).into()),
                        if from_spool
                            && spool.is_some()
                            && spilling.is_none()
                            && lane.len() > 0
                            && spool_retry_at.is_none_or(|t| Instant::now() >= t) =>
                    {
                        if let Some(s) = spool.take() {
                            last_spill = Instant::now();
                            spilling = Some(Box::pin(spill_all(&lane, s, &spool_log)));
                        }
                    }
                    () = lane.wake.notified(), if from_spool && spool.is_some() && spilling.is_none() => {
                        if spill_due(&lane, last_spill)
                            && spool_retry_at.is_none_or(|t| Instant::now() >= t)
                            && let Some(s) = spool.take()
                        {
                            last_spill = Instant::now();
                            spilling = Some(Box::pin(spill_all(&lane, s, &spool_log)));
                        }
                    }
                }
            };
            if let Some(f) = spilling.take() {
                let (s, ok) = f.await;
                spool_retry_at = (!ok).then(|| Instant::now() + SPOOL_RETRY);
                spool = Some(s);
            }
            match r {
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
            s.append(&(0..5).map(|v| (v, entry(v))).collect::<Vec<_>>())
                .unwrap();
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
        s.append(&[(5, entry(5))]).unwrap();
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
            .append(&(6..10).map(|v| (v, entry(v))).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(a.dropped, 2);
        assert_eq!(values(&small.peek(10).unwrap().unwrap()), ["8", "9"]);
    }

    #[test]
    fn a_truncated_spool_is_moved_aside_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let spec = TargetSpec::Redis {
            addr: "h:1".into(),
            db: 0,
        };
        {
            let f = SpoolFile::open(dir.path()).unwrap();
            let mut s = f.lane(&spec, 1 << 30).unwrap();
            for chunk in 0..20 {
                let batch: Vec<_> = (chunk * 100..chunk * 100 + 100)
                    .map(|v| (v, entry(v)))
                    .collect();
                s.append(&batch).unwrap();
            }
        }
        let path = dir.path().join(SpoolFile::NAME);
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        // Whatever redb makes of it (an error or a panic inside), the mapper
        // gets a usable spool and the damaged file is kept aside.
        let f = SpoolFile::open(dir.path()).unwrap();
        let mut s = f.lane(&spec, 1 << 20).unwrap();
        s.append(&[(1, entry(1))]).unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let damaged = names.iter().any(|n| n.starts_with("spool.redb.damaged-"));
        // redb may also repair a truncated file by itself; then nothing is
        // moved aside, but the data it kept is readable.
        assert!(damaged || s.peek(10).is_ok(), "{names:?}");
    }

    #[test]
    fn the_spool_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let _f = SpoolFile::open(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SpoolFile::NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
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
