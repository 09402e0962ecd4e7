//! The YAML-directory device source; see [`DirectorySource`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::limits::MAX_FILE_BYTES;
use super::read::{Fs, RealFs, Stamp, probe, read_capped};
use super::{DeviceSource, ParsedFile, SourceEvent, parse_file};
use crate::key::ObjectKey;
use crate::records::{StoredDevice, StoredModel};

/// Quiet time after a change before rescanning (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Longest wait for a quiet moment after the first change of a burst.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);
/// Rescan interval when no change events arrive.
const RESCAN: Duration = Duration::from_secs(10);
/// How long a scan waits for files being read and parsed before it sends its
/// snapshot without their new content.
const SLOW_FILE: Duration = Duration::from_secs(1);
/// As [`SLOW_FILE`], for the first scan after start: devices known from the
/// store but missing from the first snapshot would be removed.
const FIRST_SCAN_PATIENCE: Duration = Duration::from_secs(60);
/// Files read and parsed at the same time.
const PARALLEL_READS: usize = 4;
/// Errors of one file that are logged and reported; the rest are counted.
const MAX_ERRORS_PER_FILE: usize = 20;

/// The devices and models one file yielded.
type FileObjects = (Vec<Arc<StoredDevice>>, Vec<Arc<StoredModel>>);

/// What the source knows about one file.
#[derive(Debug, Default)]
struct FileState {
    /// Last good objects.
    objects: FileObjects,
    /// The content `objects` and `parse_errors` were last taken from.
    content: Option<Content>,
    /// Errors of that content.
    parse_errors: Vec<String>,
    /// Why the file could not be read at the last attempt; reported instead
    /// of `parse_errors` while set.
    read_error: Option<String>,
}

/// One version of a file's content.
#[derive(Debug, Clone, Copy)]
struct Content {
    /// Its metadata.
    stamp: Stamp,
    /// Whether `stamp` is known to change with the next edit (see
    /// [`Stamp::settled_before`]); if not, the file is read again next scan.
    settled: bool,
    /// Hash of the bytes, to skip parsing a file read again unchanged.
    hash: u64,
}

/// The outcome of reading (and parsing) one file on the blocking pool.
#[derive(Debug)]
enum Loaded {
    /// New content, parsed.
    Parsed(Content, ParsedFile),
    /// The same bytes as before (only the metadata changed).
    Same(Content),
    /// The file could not be read.
    Failed(String),
}

/// A file waiting to be read, or being read.
#[derive(Debug, Clone, Copy)]
enum Loading {
    /// In the queue.
    Waiting,
    /// On the blocking pool as task `id`.
    Running(tokio::task::Id),
}

/// What a listing of the tree found.
#[derive(Debug, Default)]
struct Listing {
    /// Candidate files and what `stat` says about them.
    files: Vec<(PathBuf, Result<Stamp, String>)>,
    /// Directories seen (to tell a file replaced by a directory from a deleted one).
    dirs: HashSet<PathBuf>,
    /// Paths whose content is unknown because listing failed, with the error;
    /// files under them keep their objects.
    failed: Vec<(PathBuf, String)>,
}

/// The YAML-directory device source: every `*.yaml`, `*.yml` and `*.json` file
/// under a directory (recursively, hidden entries skipped), watched with
/// inotify (through `notify`) plus a rescan every 10 s as a safety net.
///
/// A file that fails to parse keeps its last good objects: a typo never
/// deletes a device. Its errors are reported (file:line:col) and the rest of
/// the directory is applied normally.
///
/// The directory is untrusted input, and reading it can fail:
///
/// * **A failure is never a deletion.** When the directory (or a
///   subdirectory) cannot be listed, or a file cannot be read (out of file
///   descriptors, an I/O error, replaced by a FIFO or a directory), the
///   objects last read from it stay and the error is reported in the
///   snapshot's `errors`. Only a file that a successful listing no longer
///   contains loses its objects.
/// * **Only changes cause work.** Watch events are filtered to those that mean
///   a change (writes, creations, deletions, renames, attribute changes; not
///   the opens and reads the source itself causes), bursts are debounced
///   (200 ms of quiet, at most 1 s), and a scan reads only files whose
///   metadata (device, inode, size, mtime, ctime) changed: an unchanged
///   directory costs one `stat` per file per rescan, and an unchanged
///   snapshot is not sent again.
/// * **Reads are bounded.** Only regular files (symlinks followed) of at most
///   [`MAX_FILE_BYTES`](super::MAX_FILE_BYTES) are read, without ever
///   blocking on a FIFO or device; each document is checked against
///   [`MAX_DEPTH`](super::MAX_DEPTH) and an alias expansion budget before it
///   is parsed.
/// * **One slow file delays nothing else.** Files are read and parsed on the
///   blocking pool, four at a time; a scan waits at most 1 s for them (the
///   first scan after start up to 60 s, so that a restart does not drop
///   devices still being read) and then sends its snapshot with the last good
///   objects of files still being read; their new content comes with a later
///   snapshot.
#[derive(Debug)]
pub struct DirectorySource {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    /// Every file known, by path (sorted: snapshots and errors come in path order).
    files: BTreeMap<PathBuf, FileState>,
    /// Reads in progress.
    loads: JoinSet<(PathBuf, Loaded)>,
    /// Files waiting for or being read.
    loading: HashMap<PathBuf, Loading>,
    /// The order files wait in.
    queue: VecDeque<PathBuf>,
    /// Bumped whenever any file's objects change.
    generation: u64,
    /// Scans done so far.
    scans: Arc<AtomicU64>,
}

impl DirectorySource {
    /// A source for `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_fs(dir, Arc::new(RealFs))
    }

    /// A source reading through `fs`.
    pub(crate) fn with_fs(dir: impl Into<PathBuf>, fs: Arc<dyn Fs>) -> Self {
        Self {
            dir: dir.into(),
            fs,
            files: BTreeMap::new(),
            loads: JoinSet::new(),
            loading: HashMap::new(),
            queue: VecDeque::new(),
            generation: 0,
            scans: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A counter of the scans done so far (one per change burst or rescan
    /// period), readable while the source runs; each scan is also logged at
    /// debug level.
    pub fn scan_counter(&self) -> Arc<AtomicU64> {
        self.scans.clone()
    }

    /// Reads the directory and builds the complete snapshot.
    ///
    /// Waits for changed files to be read and parsed, at most 1 s (60 s the
    /// first time); files not done by then keep their last good objects in
    /// this snapshot. Cancellation safe: reads in progress continue and are
    /// picked up by the next scan.
    pub async fn scan(&mut self) -> SourceEvent {
        let first = self.scans.fetch_add(1, Ordering::Relaxed) == 0;
        let patience = if first {
            FIRST_SCAN_PATIENCE
        } else {
            SLOW_FILE
        };
        let (fs, dir) = (self.fs.clone(), self.dir.clone());
        let listing = tokio::task::spawn_blocking(move || list(fs.as_ref(), &dir))
            .await
            .unwrap_or_else(|e| Listing {
                failed: vec![(self.dir.clone(), format!("listing failed: {e}"))],
                ..Listing::default()
            });
        let errors: Vec<String> = listing
            .failed
            .iter()
            .map(|(p, e)| {
                format!(
                    "{}: {e}; the last good objects of the files under it are kept",
                    p.display()
                )
            })
            .collect();

        // Only a file that a successful listing no longer contains is gone.
        let listed: HashSet<&Path> = listing.files.iter().map(|(p, _)| p.as_path()).collect();
        let before = self.files.len();
        self.files.retain(|p, _| {
            listed.contains(p.as_path())
                || listing.dirs.contains(p)
                || listing.failed.iter().any(|(d, _)| p.starts_with(d))
        });
        if self.files.len() != before {
            self.generation += 1;
        }
        for p in &listing.dirs {
            if let Some(st) = self.files.get_mut(p) {
                st.read_error = Some(format!(
                    "{}: is now a directory; its last good objects are kept until it is removed",
                    p.display()
                ));
            }
        }

        let mut to_read = 0usize;
        for (path, probed) in listing.files {
            let state = self.files.entry(path.clone()).or_default();
            match probed {
                Ok(stamp) => {
                    if state.content.is_some_and(|c| c.settled && c.stamp == stamp) {
                        state.read_error = None;
                    } else if !self.loading.contains_key(&path) {
                        to_read += 1;
                        self.loading.insert(path.clone(), Loading::Waiting);
                        self.queue.push_back(path);
                    }
                }
                Err(e) => {
                    state.read_error = Some(format!(
                        "{}: {e}; its last good objects are kept",
                        path.display()
                    ));
                }
            }
        }
        self.start_reads();
        let deadline = Instant::now() + patience;
        while !self.loads.is_empty() {
            match tokio::time::timeout_at(deadline, self.loads.join_next_with_id()).await {
                Ok(Some(done)) => self.finish(done),
                Ok(None) | Err(_) => break,
            }
        }
        tracing::debug!(
            scan = self.scans.load(Ordering::Relaxed),
            files = self.files.len(),
            read = to_read,
            still_reading = self.loading.len(),
            "scanned the devices directory"
        );
        self.snapshot(errors)
    }

    /// Moves queued files onto the blocking pool, up to [`PARALLEL_READS`].
    fn start_reads(&mut self) {
        while self.loads.len() < PARALLEL_READS {
            let Some(path) = self.queue.pop_front() else {
                return;
            };
            let fs = self.fs.clone();
            let previous = self
                .files
                .get(&path)
                .and_then(|s| s.content)
                .map(|c| c.hash);
            let p = path.clone();
            let handle = self.loads.spawn_blocking(move || {
                let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    load(fs.as_ref(), &p, previous)
                }))
                .unwrap_or_else(|_| Loaded::Failed("reading or parsing it panicked".into()));
                (p, loaded)
            });
            self.loading.insert(path, Loading::Running(handle.id()));
        }
    }

    /// Applies a finished read and starts the next one.
    fn finish(&mut self, done: Result<(tokio::task::Id, (PathBuf, Loaded)), JoinError>) {
        let (path, loaded) = match done {
            Ok((_, v)) => v,
            Err(e) => {
                let id = e.id();
                let Some(path) = self
                    .loading
                    .iter()
                    .find(|(_, l)| matches!(l, Loading::Running(i) if *i == id))
                    .map(|(p, _)| p.clone())
                else {
                    return;
                };
                (path, Loaded::Failed(format!("reading it failed: {e}")))
            }
        };
        self.loading.remove(&path);
        self.start_reads();
        // A file deleted while it was read is gone: drop the result.
        let Some(state) = self.files.get_mut(&path) else {
            return;
        };
        match loaded {
            Loaded::Failed(e) => {
                state.read_error = Some(format!(
                    "{}: {e}; its last good objects are kept",
                    path.display()
                ));
            }
            Loaded::Same(content) => {
                state.content = Some(content);
                state.read_error = None;
            }
            Loaded::Parsed(content, parsed) => {
                let origin = path.display().to_string();
                let mut errors: Vec<String> = parsed
                    .errors
                    .iter()
                    .take(MAX_ERRORS_PER_FILE)
                    .cloned()
                    .collect();
                if let Some(more) = parsed.errors.len().checked_sub(MAX_ERRORS_PER_FILE)
                    && more > 0
                {
                    errors.push(format!("{origin}: {more} more errors not shown"));
                }
                for e in &errors {
                    tracing::error!("{e}");
                }
                state.parse_errors = errors;
                state.objects = merge(&origin, &state.objects, parsed);
                state.content = Some(content);
                state.read_error = None;
                self.generation += 1;
            }
        }
    }

    /// The snapshot of every file's objects; `errors` come first.
    fn snapshot(&self, mut errors: Vec<String>) -> SourceEvent {
        let mut devices = Vec::new();
        let mut models = Vec::new();
        let mut seen = HashSet::new();
        for (path, state) in &self.files {
            match &state.read_error {
                Some(e) => errors.push(e.clone()),
                None => errors.extend(state.parse_errors.iter().cloned()),
            }
            if self.loading.contains_key(path) {
                errors.push(format!(
                    "{}: is still being read; its last good objects are kept meanwhile",
                    path.display()
                ));
            }
            let (d, m) = &state.objects;
            for dev in d {
                let k = format!("Device {}", dev.key());
                if !seen.insert(k.clone()) {
                    errors.push(format!(
                        "{}: {k} is defined in more than one file; this copy is ignored",
                        path.display()
                    ));
                    continue;
                }
                devices.push(dev.clone());
            }
            for model in m {
                let k = format!("DeviceModel {}", ObjectKey::from_meta(&model.crd.metadata));
                if !seen.insert(k.clone()) {
                    errors.push(format!(
                        "{}: {k} is defined in more than one file; this copy is ignored",
                        path.display()
                    ));
                    continue;
                }
                models.push(model.clone());
            }
        }
        SourceEvent::Snapshot {
            devices,
            models,
            errors,
        }
    }
}

/// Lists the candidate files under `root` and `stat`s each (blocking).
fn list(fs: &dyn Fs, root: &Path) -> Listing {
    let mut out = Listing::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match fs.list(&d) {
            Ok((entries, broke_off)) => {
                if let Some(e) = broke_off {
                    out.failed
                        .push((d.clone(), format!("listing the directory broke off: {e}")));
                }
                entries
            }
            // A subdirectory deleted since its parent was listed is gone; the
            // devices directory itself missing is an error like any other.
            Err(e) if d != root && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.failed
                    .push((d.clone(), format!("cannot list the directory: {e}")));
                continue;
            }
        };
        for (p, file_type) in entries {
            if p.file_name()
                .is_none_or(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            match file_type {
                Ok(t) if t.is_dir() => {
                    out.dirs.insert(p.clone());
                    stack.push(p);
                }
                Ok(_)
                    if matches!(
                        p.extension().and_then(|x| x.to_str()),
                        Some("yaml" | "yml" | "json")
                    ) =>
                {
                    let probed = probe(fs, &p, MAX_FILE_BYTES).map_err(|e| e.to_string());
                    out.files.push((p, probed));
                }
                Ok(_) => {}
                Err(e) => out
                    .failed
                    .push((p, format!("cannot tell what this entry is: {e}"))),
            }
        }
    }
    out.files.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Reads and parses one file (blocking). `previous` is the hash of the
/// content last parsed, to skip parsing the same bytes again.
fn load(fs: &dyn Fs, path: &Path, previous: Option<u64>) -> Loaded {
    let read_at = fs.now();
    let (stamp, bytes) = match read_capped(fs, path, MAX_FILE_BYTES) {
        Ok(v) => v,
        Err(e) => return Loaded::Failed(e.to_string()),
    };
    let hash = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        h.finish()
    };
    let content = Content {
        stamp,
        settled: stamp.settled_before(read_at),
        hash,
    };
    if previous == Some(hash) {
        return Loaded::Same(content);
    }
    let origin = path.display().to_string();
    let parsed = match std::str::from_utf8(&bytes) {
        Ok(text) => parse_file(&origin, text),
        Err(e) => ParsedFile {
            errors: vec![format!(
                "{origin}: not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            )],
            ..ParsedFile::default()
        },
    };
    Loaded::Parsed(content, parsed)
}

/// The objects of a newly parsed file: what it yields, plus, where it has
/// errors, the previous version of objects it no longer yields because of
/// them (all of them when a document could not be identified).
fn merge(origin: &str, previous: &FileObjects, parsed: ParsedFile) -> FileObjects {
    let syntax_broken = parsed.failed_objects.len() < parsed.errors.len();
    let mut devices = shared(parsed.devices);
    let mut models = shared(parsed.models);
    if parsed.errors.is_empty() {
        return (devices, models);
    }
    let (old_d, old_m) = previous;
    let have_d: HashSet<ObjectKey> = devices.iter().map(|d| d.key().clone()).collect();
    let have_m: HashSet<ObjectKey> = models
        .iter()
        .map(|m| ObjectKey::from_meta(&m.crd.metadata))
        .collect();
    let failed: HashSet<&str> = parsed
        .failed_objects
        .iter()
        .map(|(_, id)| id.as_str())
        .collect();
    for d in old_d {
        let k = d.key();
        if !have_d.contains(k) && (syntax_broken || failed.contains(k.as_str())) {
            tracing::warn!(device = %k, file = %origin, "keeping the last good version of the device");
            devices.push(d.clone());
        }
    }
    for m in old_m {
        let k = ObjectKey::from_meta(&m.crd.metadata);
        if !have_m.contains(&k) && (syntax_broken || failed.contains(k.as_str())) {
            models.push(m.clone());
        }
    }
    (devices, models)
}

/// The items behind `Arc`s, in an exactly sized vector: collecting in place would
/// keep the parser's buffer, sized for whole objects, behind a vector of pointers.
fn shared<T>(items: Vec<T>) -> Vec<Arc<T>> {
    let mut v = Vec::with_capacity(items.len());
    v.extend(items.into_iter().map(Arc::new));
    v
}

/// Whether a watch event can mean that a definition changed. Opens and reads
/// (which the source's own scans cause) do not.
fn is_change(event: &notify::Result<notify::Event>) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    let Ok(event) = event else {
        // The watcher lost track of something: look.
        return true;
    };
    if event.need_rescan() {
        return true;
    }
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        EventKind::Any | EventKind::Other => true,
    }
}

/// Waits until `events` has been quiet for [`DEBOUNCE`], at most [`DEBOUNCE_MAX`].
async fn debounce(events: &mut mpsc::Receiver<()>) {
    let limit = tokio::time::sleep(DEBOUNCE_MAX);
    tokio::pin!(limit);
    loop {
        tokio::select! {
            _ = &mut limit => return,
            _ = tokio::time::sleep(DEBOUNCE) => return,
            e = events.recv() => if e.is_none() { return },
        }
    }
}

impl DeviceSource for DirectorySource {
    async fn run(
        mut self,
        tx: mpsc::Sender<SourceEvent>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        tokio::fs::create_dir_all(&self.dir).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot create devices directory {}: {e}",
                self.dir.display()
            )
        })?;
        let (ev_tx, mut ev_rx) = mpsc::channel::<()>(1);
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if is_change(&res) {
                    // A full channel already holds a pending rescan.
                    let _ = ev_tx.try_send(());
                }
            })?;
        let watching = watcher.watch(&self.dir, notify::RecursiveMode::Recursive);
        if let Err(e) = &watching {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot watch directory; rescanning every {RESCAN:?}");
        }
        tracing::info!(dir = %self.dir.display(), "watching device definitions");
        // What the last snapshot sent held; an unchanged one is not sent again.
        let mut sent: Option<(u64, Vec<String>)> = None;
        loop {
            let snapshot = self.scan().await;
            let SourceEvent::Snapshot { errors, .. } = &snapshot;
            let now = (self.generation, errors.clone());
            if sent.as_ref() != Some(&now) {
                if tx.send(snapshot).await.is_err() {
                    return Ok(());
                }
                sent = Some(now);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = ev_rx.recv() => debounce(&mut ev_rx).await,
                // A slow file finished after its scan gave up waiting.
                Some(done) = self.loads.join_next_with_id(), if !self.loads.is_empty() => {
                    self.finish(done);
                }
                _ = tokio::time::sleep(RESCAN) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{File, Metadata};
    use std::io;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::time::SystemTime;

    use super::super::read::Listed;
    use super::*;

    /// The real file system with failures and delays on demand, a count of
    /// opens, and a clock far enough ahead that every file looks settled.
    #[derive(Debug, Default)]
    struct TestFs {
        /// Directories whose listing fails, with the errno.
        fail_list: Mutex<HashMap<PathBuf, i32>>,
        /// Files whose open fails, with the errno.
        fail_open: Mutex<HashMap<PathBuf, i32>>,
        /// Files whose open takes this long.
        slow_open: Mutex<HashMap<PathBuf, Duration>>,
        /// Opens so far.
        opens: AtomicUsize,
    }

    impl Fs for TestFs {
        fn list(&self, dir: &Path) -> io::Result<Listed> {
            if let Some(errno) = self.fail_list.lock().unwrap().get(dir) {
                return Err(io::Error::from_raw_os_error(*errno));
            }
            RealFs.list(dir)
        }
        fn metadata(&self, path: &Path) -> io::Result<Metadata> {
            RealFs.metadata(path)
        }
        fn open(&self, path: &Path) -> io::Result<File> {
            self.opens.fetch_add(1, Ordering::SeqCst);
            let slow = self.slow_open.lock().unwrap().get(path).copied();
            if let Some(d) = slow {
                std::thread::sleep(d);
            }
            if let Some(errno) = self.fail_open.lock().unwrap().get(path) {
                return Err(io::Error::from_raw_os_error(*errno));
            }
            RealFs.open(path)
        }
        fn now(&self) -> SystemTime {
            SystemTime::now() + Duration::from_secs(3600)
        }
    }

    fn source(dir: &Path) -> (DirectorySource, Arc<TestFs>) {
        let fs = Arc::new(TestFs::default());
        (DirectorySource::with_fs(dir, fs.clone()), fs)
    }

    fn device(name: &str) -> String {
        A.split("---")
            .nth(1)
            .unwrap()
            .replace("name: a", &format!("name: {name}"))
    }

    const A: &str = "apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: m
spec:
  protocol: virtual
  properties:
    - name: p
      type: INT
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: a
spec:
  deviceModelRef:
    name: m
  protocol:
    protocolName: virtual
  properties:
    - name: p
      collectCycle: 1000
";

    fn names(ev: &SourceEvent) -> (Vec<String>, usize, Vec<String>) {
        let SourceEvent::Snapshot {
            devices,
            models,
            errors,
        } = ev;
        (
            devices.iter().map(|d| d.key().name().to_owned()).collect(),
            models.len(),
            errors.clone(),
        )
    }

    #[tokio::test]
    async fn broken_edits_keep_last_good_objects() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), A).unwrap();
        std::fs::write(
            dir.path().join("b.yml"),
            A.split("---").nth(1).unwrap().replace("name: a", "name: b"),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let mut src = DirectorySource::new(dir.path());
        let (devs, models, errs) = names(&src.scan().await);
        assert_eq!(
            (devs, models, errs.len()),
            (vec!["a".to_owned(), "b".to_owned()], 1, 0)
        );

        // A syntax error: nothing from a.yaml is lost.
        std::fs::write(dir.path().join("a.yaml"), format!("{A}\n  - [broken")).unwrap();
        let (devs, models, errs) = names(&src.scan().await);
        assert_eq!((devs.len(), models), (2, 1));
        assert!(errs[0].contains("a.yaml:"), "{errs:?}");

        // A field error in device a: the old device a stays, the model is re-read.
        std::fs::write(
            dir.path().join("a.yaml"),
            A.replace("collectCycle: 1000", "collectCycle: often"),
        )
        .unwrap();
        let (devs, models, errs) = names(&src.scan().await);
        assert_eq!((devs.len(), models), (2, 1));
        assert!(errs[0].contains("collectCycle"), "{errs:?}");
        // Unchanged files keep reporting their errors on rescans.
        let (_, _, again) = names(&src.scan().await);
        assert_eq!(again, errs);

        // Deleting a file deletes its objects.
        std::fs::remove_file(dir.path().join("b.yml")).unwrap();
        let (devs, _, _) = names(&src.scan().await);
        assert_eq!(devs, vec!["a".to_owned()]);
    }

    #[tokio::test]
    async fn an_unreadable_directory_keeps_every_object() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), A).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.yaml"), device("b")).unwrap();
        let (mut src, fs) = source(dir.path());
        assert_eq!(names(&src.scan().await).0, ["a", "b"]);

        // Out of file descriptors: the listing fails, nothing is removed.
        fs.fail_list
            .lock()
            .unwrap()
            .insert(dir.path().to_path_buf(), libc::EMFILE);
        let (devs, models, errs) = names(&src.scan().await);
        assert_eq!((devs, models), (vec!["a".to_owned(), "b".to_owned()], 1));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("cannot list the directory")
                && errs[0].contains("Too many open files"),
            "{errs:?}"
        );
        // Deletions while it cannot be listed are applied once it can.
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        assert_eq!(names(&src.scan().await).0, ["a", "b"]);
        fs.fail_list.lock().unwrap().clear();
        let (devs, models, errs) = names(&src.scan().await);
        assert_eq!((devs, models, errs), (vec!["b".to_owned()], 0, vec![]));

        // A subdirectory that cannot be listed keeps only its own files.
        std::fs::write(dir.path().join("a.yaml"), A).unwrap();
        fs.fail_list
            .lock()
            .unwrap()
            .insert(dir.path().join("sub"), libc::EIO);
        std::fs::write(dir.path().join("c.yaml"), device("c")).unwrap();
        let (devs, _, errs) = names(&src.scan().await);
        assert_eq!(devs, ["a", "c", "b"]);
        assert!(
            errs[0].contains("sub: cannot list the directory"),
            "{errs:?}"
        );
        // A directory deleted for real takes its files with it.
        fs.fail_list.lock().unwrap().clear();
        std::fs::remove_dir_all(dir.path().join("sub")).unwrap();
        let (devs, _, errs) = names(&src.scan().await);
        assert_eq!((devs, errs), (vec!["a".to_owned(), "c".to_owned()], vec![]));
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_opened_keeps_its_objects() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, A).unwrap();
        let (mut src, fs) = source(dir.path());
        assert_eq!(names(&src.scan().await).0, ["a"]);

        // Edited while descriptors are exhausted: the old objects stay.
        std::fs::write(&a, A.replace("name: a", "name: a2")).unwrap();
        fs.fail_open.lock().unwrap().insert(a.clone(), libc::EMFILE);
        let (devs, models, errs) = names(&src.scan().await);
        assert_eq!((devs, models), (vec!["a".to_owned()], 1));
        assert!(
            errs.len() == 1 && errs[0].contains("a.yaml: cannot open the file"),
            "{errs:?}"
        );
        // Tried again on the next scan, and applied once it can be read.
        fs.fail_open.lock().unwrap().clear();
        let (devs, _, errs) = names(&src.scan().await);
        assert_eq!((devs, errs), (vec!["a2".to_owned()], vec![]));
    }

    #[tokio::test]
    async fn fifos_devices_and_directories_keep_objects_and_never_block() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, A).unwrap();
        std::fs::write(dir.path().join("b.yaml"), device("b")).unwrap();
        let (mut src, _fs) = source(dir.path());
        assert_eq!(names(&src.scan().await).0, ["a", "b"]);

        // a.yaml replaced by a FIFO (atomically, as `mv` does), plus a FIFO, a
        // symlink to it and one to /dev/zero: reported, nothing blocks.
        let mkfifo = |p: &Path| {
            assert!(
                std::process::Command::new("mkfifo")
                    .arg(p)
                    .status()
                    .unwrap()
                    .success()
            );
        };
        mkfifo(&dir.path().join("tmp"));
        std::fs::rename(dir.path().join("tmp"), &a).unwrap();
        mkfifo(&dir.path().join("pipe.yaml"));
        std::os::unix::fs::symlink(dir.path().join("pipe.yaml"), dir.path().join("l.yaml"))
            .unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.yml")).unwrap();
        let scanned = tokio::time::timeout(Duration::from_secs(10), src.scan())
            .await
            .expect("a FIFO blocked the scan");
        let (devs, models, errs) = names(&scanned);
        assert_eq!((devs, models), (vec!["a".to_owned(), "b".to_owned()], 1));
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(
            errs[0].contains("a.yaml: not a regular file but a FIFO"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains("l.yaml: not a regular file but a FIFO"),
            "{errs:?}"
        );
        assert!(
            errs[2].contains("pipe.yaml: not a regular file"),
            "{errs:?}"
        );
        assert!(
            errs[3].contains("zero.yml: not a regular file but a character device"),
            "{errs:?}"
        );

        // Replaced by a directory: still kept, and said so.
        std::fs::remove_file(&a).unwrap();
        std::fs::create_dir(&a).unwrap();
        let (devs, _, errs) = names(&src.scan().await);
        assert_eq!(devs, ["a", "b"]);
        assert!(errs[0].contains("a.yaml: is now a directory"), "{errs:?}");

        // Really gone: removed.
        std::fs::remove_dir(&a).unwrap();
        for f in ["pipe.yaml", "l.yaml", "zero.yml"] {
            std::fs::remove_file(dir.path().join(f)).unwrap();
        }
        let (devs, models, errs) = names(&src.scan().await);
        assert_eq!((devs, models, errs), (vec!["b".to_owned()], 0, vec![]));
    }

    #[tokio::test]
    async fn oversized_and_deeply_nested_files_are_refused_and_keep_objects() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, A).unwrap();
        let (mut src, _fs) = source(dir.path());
        assert_eq!(names(&src.scan().await).0, ["a"]);

        std::fs::write(&a, format!("{A}# {}\n", "x".repeat(MAX_FILE_BYTES))).unwrap();
        let (devs, _, errs) = names(&src.scan().await);
        assert_eq!(devs, ["a"]);
        assert!(errs[0].contains("a.yaml: the file is 4194"), "{errs:?}");
        assert!(errs[0].contains("the limit is 4194304 bytes"), "{errs:?}");

        let started = std::time::Instant::now();
        std::fs::write(&a, format!("{A}---\n{}", "[".repeat(100_000))).unwrap();
        std::fs::write(dir.path().join("b.yaml"), device("b")).unwrap();
        let (devs, _, errs) = names(&src.scan().await);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(devs, ["a", "b"]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("a.yaml:24:64: nesting deeper than 64 levels"),
            "{errs:?}"
        );
    }

    #[tokio::test]
    async fn unchanged_files_are_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, A).unwrap();
        std::fs::write(dir.path().join("b.yaml"), device("b")).unwrap();
        let (mut src, fs) = source(dir.path());
        src.scan().await;
        assert_eq!(fs.opens.load(Ordering::SeqCst), 2);
        for _ in 0..3 {
            assert_eq!(names(&src.scan().await).0, ["a", "b"]);
        }
        assert_eq!(fs.opens.load(Ordering::SeqCst), 2);
        assert_eq!(src.scan_counter().load(Ordering::SeqCst), 4);

        // Any change to the metadata: read again, even with the same size.
        std::fs::write(&a, A.replace("name: a", "name: x")).unwrap();
        assert_eq!(names(&src.scan().await).0, ["x", "b"]);
        assert_eq!(fs.opens.load(Ordering::SeqCst), 3);
        // Replaced by another file (new inode), same bytes: read, not re-parsed.
        std::fs::write(dir.path().join("tmp"), A.replace("name: a", "name: x")).unwrap();
        std::fs::rename(dir.path().join("tmp"), &a).unwrap();
        let generation = src.generation;
        assert_eq!(names(&src.scan().await).0, ["x", "b"]);
        assert_eq!(fs.opens.load(Ordering::SeqCst), 4);
        assert_eq!(src.generation, generation);
    }

    #[tokio::test]
    async fn recently_changed_files_are_read_until_settled() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), A).unwrap();
        // The real clock: the file changed just now, so its stamp may not show
        // an edit made within the same tick; it is read again (not parsed).
        let mut src = DirectorySource::new(dir.path());
        src.scan().await;
        let generation = src.generation;
        src.scan().await;
        assert!(
            src.files
                .values()
                .all(|f| f.content.is_some_and(|c| !c.settled))
        );
        assert_eq!(src.generation, generation);
    }

    #[tokio::test]
    async fn a_slow_file_does_not_delay_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, A).unwrap();
        let (mut src, fs) = source(dir.path());
        assert_eq!(names(&src.scan().await).0, ["a"]);

        std::fs::write(&a, A.replace("name: a", "name: a2")).unwrap();
        fs.slow_open
            .lock()
            .unwrap()
            .insert(a.clone(), Duration::from_secs(3));
        std::fs::write(dir.path().join("b.yaml"), device("b")).unwrap();
        let started = std::time::Instant::now();
        let (devs, _, errs) = names(&src.scan().await);
        assert!(started.elapsed() < SLOW_FILE + Duration::from_millis(500));
        assert_eq!(devs, ["a", "b"]);
        assert!(errs[0].contains("a.yaml: is still being read"), "{errs:?}");
        // Not started twice; the result lands with a later scan.
        let (devs, _, _) = names(&src.scan().await);
        assert_eq!(devs, ["a", "b"]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (devs, _, errs) = names(&src.scan().await);
        assert_eq!(
            (devs, errs),
            (vec!["a2".to_owned(), "b".to_owned()], vec![])
        );
        assert_eq!(fs.opens.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn only_events_that_mean_change_trigger_a_scan() {
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, EventKind, Flag, MetadataKind,
            ModifyKind, RemoveKind, RenameMode,
        };
        let ev = |k| Ok(notify::Event::new(k));
        for quiet in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
        ] {
            assert!(!is_change(&ev(quiet)), "{quiet:?}");
        }
        for change in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
        ] {
            assert!(is_change(&ev(change)), "{change:?}");
        }
        assert!(is_change(&Ok(
            notify::Event::new(EventKind::Other).set_flag(Flag::Rescan)
        )));
        assert!(is_change(&Err(notify::Error::generic("queue overflow"))));
    }

    #[tokio::test]
    async fn the_source_reads_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), A).unwrap();
        let (src, fs) = source(dir.path());
        let scans = src.scan_counter();
        let (tx, mut rx) = mpsc::channel(4);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(src.run(tx, shutdown.clone()));
        assert_eq!(names(&rx.recv().await.unwrap()).0, ["a"]);
        // Idle: no scans, though the scan itself opened the file.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(scans.load(Ordering::SeqCst), 1);
        assert_eq!(fs.opens.load(Ordering::SeqCst), 1);
        // A burst of writes: one scan, one snapshot.
        for i in 0..5 {
            std::fs::write(dir.path().join("b.yaml"), device(&format!("b{i}"))).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (devs, _, _) = names(&rx.recv().await.unwrap());
        assert_eq!(devs, ["a", "b4"]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(scans.load(Ordering::SeqCst), 2);
        assert!(rx.try_recv().is_err());
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_file_reports_at_most_twenty_errors() {
        let dir = tempfile::tempdir().unwrap();
        let docs = vec!["kind: Device\nmetadata: {name: x}\n"; 30].join("---\n");
        std::fs::write(dir.path().join("bad.yaml"), docs).unwrap();
        let (mut src, _fs) = source(dir.path());
        let (_, _, errs) = names(&src.scan().await);
        assert_eq!(errs.len(), 21, "{errs:?}");
        assert!(
            errs[20].ends_with("bad.yaml: 10 more errors not shown"),
            "{errs:?}"
        );
    }
}
