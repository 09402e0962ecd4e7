//! The YAML-directory device source: every `*.yaml`, `*.yml` and `*.json` file
//! under a directory (recursively, hidden entries skipped), watched with
//! inotify (through `notify`) plus a periodic rescan as a safety net.
//!
//! A file that fails to parse keeps its last good objects: a typo never deletes
//! a device. Its errors are reported (file:line:col) and the rest of the
//! directory is applied normally.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{DeviceSource, SourceEvent, parse_file};
use crate::key::ObjectKey;
use crate::records::{StoredDevice, StoredModel};

/// Quiet time after a change before rescanning (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(150);
/// Rescan interval when no change events arrive.
const RESCAN: Duration = Duration::from_secs(10);

/// The devices and models one file yielded.
type FileObjects = (Vec<Arc<StoredDevice>>, Vec<Arc<StoredModel>>);

/// See the module docs.
#[derive(Debug)]
pub struct DirectorySource {
    dir: PathBuf,
    /// Last good objects per file.
    last_good: BTreeMap<PathBuf, FileObjects>,
    /// Fingerprint of each file's content and its errors at the last scan, to
    /// skip unchanged files.
    last_text: BTreeMap<PathBuf, (u64, Vec<String>)>,
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
            let text_hash = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                text.hash(&mut h);
                h.finish()
            };
            if let Some((old, old_errors)) = self.last_text.get(path)
                && *old == text_hash
            {
                errors.extend(old_errors.iter().cloned());
                continue;
            }
            let origin = path.display().to_string();
            let parsed = parse_file(&origin, &text);
            for e in &parsed.errors {
                tracing::error!("{e}");
            }
            errors.extend(parsed.errors.iter().cloned());
            let file_errors = parsed.errors.clone();
            let mut devices = shared(parsed.devices);
            let mut models = shared(parsed.models);
            if !parsed.errors.is_empty()
                && let Some((old_d, old_m)) = self.last_good.get(path)
            {
                // Keep the previous version of objects this file no longer yields.
                let have_d: HashSet<ObjectKey> = devices
                    .iter()
                    .map(|d| ObjectKey::from_meta(&d.crd.metadata))
                    .collect();
                let have_m: HashSet<ObjectKey> = models
                    .iter()
                    .map(|m| ObjectKey::from_meta(&m.crd.metadata))
                    .collect();
                let syntax_broken = parsed.failed_objects.len() < parsed.errors.len();
                let failed: HashSet<String> = parsed
                    .failed_objects
                    .iter()
                    .map(|(_, id)| id.clone())
                    .collect();
                for d in old_d {
                    let k = ObjectKey::from_meta(&d.crd.metadata);
                    if !have_d.contains(&k) && (syntax_broken || failed.contains(k.as_str())) {
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
            }
            self.last_good.insert(path.clone(), (devices, models));
            self.last_text
                .insert(path.clone(), (text_hash, file_errors));
        }
        let mut devices = Vec::new();
        let mut models = Vec::new();
        let mut seen = HashSet::new();
        for (path, (d, m)) in &self.last_good {
            for dev in d {
                let k = format!("Device {}", ObjectKey::from_meta(&dev.crd.metadata));
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

/// The items behind `Arc`s, in an exactly sized vector: collecting in place would
/// keep the parser's buffer, sized for whole objects, behind a vector of pointers.
fn shared<T>(items: Vec<T>) -> Vec<Arc<T>> {
    let mut v = Vec::with_capacity(items.len());
    v.extend(items.into_iter().map(Arc::new));
    v
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

#[cfg(test)]
mod tests {
    use device_crds::MetaExt;

    use super::*;

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
            devices
                .iter()
                .map(|d| d.crd.metadata.name_str().to_owned())
                .collect(),
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
}
