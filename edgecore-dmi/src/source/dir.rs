//! The YAML-directory device source: every `*.yaml`, `*.yml` and `*.json` file
//! under a directory (recursively, hidden entries skipped), watched with
//! inotify (through `notify`) plus a periodic rescan as a safety net.
//!
//! A file that fails to parse keeps its last good objects: a typo never deletes
//! a device. Its errors are reported (file:line:col) and the rest of the
//! directory is applied normally.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{DeviceSource, SourceEvent, parse_file};
use crate::model::{StoredDevice, StoredModel};

/// Quiet time after a change before rescanning (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(150);
/// Rescan interval when no change events arrive.
const RESCAN: Duration = Duration::from_secs(10);

/// See the module docs.
#[derive(Debug)]
pub struct DirectorySource {
    dir: PathBuf,
    /// Last good objects per file.
    last_good: BTreeMap<PathBuf, (Vec<StoredDevice>, Vec<StoredModel>)>,
    /// Content of each file at the last scan, to skip unchanged files.
    last_text: BTreeMap<PathBuf, String>,
}

impl DirectorySource {
    /// A source for `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            last_good: BTreeMap::new(),
            last_text: BTreeMap::new(),
        }
    }

    async fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(mut rd) = tokio::fs::read_dir(&d).await else {
                continue;
            };
            while let Ok(Some(e)) = rd.next_entry().await {
                let p = e.path();
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                match e.file_type().await {
                    Ok(t) if t.is_dir() => stack.push(p),
                    Ok(_)
                        if matches!(
                            p.extension().and_then(|x| x.to_str()),
                            Some("yaml" | "yml" | "json")
                        ) =>
                    {
                        out.push(p)
                    }
                    _ => {}
                }
            }
        }
        out.sort();
        out
    }

    /// Reads the directory and builds the complete snapshot.
    pub async fn scan(&mut self) -> SourceEvent {
        let files = Self::files(&self.dir).await;
        let present: HashSet<&PathBuf> = files.iter().collect();
        self.last_good.retain(|p, _| present.contains(p));
        self.last_text.retain(|p, _| present.contains(p));
        let mut errors = Vec::new();
        for path in &files {
            let text = match tokio::fs::read_to_string(path).await {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("{}: cannot read: {e}", path.display()));
                    continue;
                }
            };
            let unchanged = self.last_text.get(path) == Some(&text);
            let origin = path.display().to_string();
            let parsed = parse_file(&origin, &text);
            if !unchanged {
                for e in &parsed.errors {
                    tracing::error!("{e}");
                }
            }
            errors.extend(parsed.errors.iter().cloned());
            let (mut devices, mut models) = (parsed.devices, parsed.models);
            if !parsed.errors.is_empty()
                && let Some((old_d, old_m)) = self.last_good.get(path)
            {
                // Keep the previous version of objects this file no longer yields.
                let have_d: HashSet<String> =
                    devices.iter().map(|d| dkey(&d.crd.metadata)).collect();
                let have_m: HashSet<String> =
                    models.iter().map(|m| dkey(&m.crd.metadata)).collect();
                let syntax_broken = parsed.failed_objects.len() < parsed.errors.len();
                let failed: HashSet<String> = parsed
                    .failed_objects
                    .iter()
                    .map(|(_, id)| id.clone())
                    .collect();
                for d in old_d {
                    let k = dkey(&d.crd.metadata);
                    if !have_d.contains(&k) && (syntax_broken || failed.contains(&k)) {
                        tracing::warn!(device = %k, file = %origin, "keeping the last good version of the device");
                        devices.push(d.clone());
                    }
                }
                for m in old_m {
                    let k = dkey(&m.crd.metadata);
                    if !have_m.contains(&k) && (syntax_broken || failed.contains(&k)) {
                        models.push(m.clone());
                    }
                }
            }
            self.last_good.insert(path.clone(), (devices, models));
            self.last_text.insert(path.clone(), text);
        }
        let mut devices = Vec::new();
        let mut models = Vec::new();
        let mut seen = HashSet::new();
        for (path, (d, m)) in &self.last_good {
            for dev in d {
                let k = format!("Device {}", dkey(&dev.crd.metadata));
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
                let k = format!("DeviceModel {}", dkey(&model.crd.metadata));
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

fn dkey(m: &device_crds::ObjectMeta) -> String {
    format!("{}/{}", m.namespace_or_default(), m.name)
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
                if res.is_ok() {
                    // A full channel already holds a pending rescan.
                    let _ = ev_tx.try_send(());
                }
            })?;
        let watching = watcher.watch(&self.dir, notify::RecursiveMode::Recursive);
        if let Err(e) = &watching {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot watch directory; rescanning every {RESCAN:?}");
        }
        tracing::info!(dir = %self.dir.display(), "watching device definitions");
        loop {
            let snapshot = self.scan().await;
            if tx.send(snapshot).await.is_err() {
                return Ok(());
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = ev_rx.recv() => {
                    // Debounce: wait until changes stop for a moment.
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(DEBOUNCE) => break,
                            _ = ev_rx.recv() => {}
                        }
                    }
                }
                _ = tokio::time::sleep(RESCAN) => {}
            }
        }
    }
}
