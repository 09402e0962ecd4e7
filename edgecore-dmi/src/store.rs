//! The embedded store (redb): devices, models, mapper records and the latest
//! twins and state, so edgecore-dmi serves from it right after a restart and
//! keeps working with no cloud. Values are JSON; keys are `namespace/name`
//! (mapper name for mappers).
//!
//! All calls are blocking; the server calls them from `spawn_blocking`.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// Page cache of the store, bytes.
pub const STORE_CACHE: usize = 4 << 20;

/// A table of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Device resources.
    Devices,
    /// DeviceModel resources.
    Models,
    /// Registered mappers.
    Mappers,
    /// Latest twins and state per device.
    Twins,
}

impl Table {
    const ALL: [Table; 4] = [Table::Devices, Table::Models, Table::Mappers, Table::Twins];

    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(match self {
            Table::Devices => "devices",
            Table::Models => "models",
            Table::Mappers => "mappers",
            Table::Twins => "twins",
        })
    }
}

/// One change.
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert or replace.
    Put(Table, String, Vec<u8>),
    /// Remove (absent keys are fine).
    Delete(Table, String),
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (another edgecore-dmi) has the store open.
    #[error(
        "store {0} is open in another process (is another edgecore-dmi using this state directory?)"
    )]
    InUse(String),
    /// The file is damaged: it could not be opened or read back.
    #[error("store {path} is damaged: {reason}")]
    Damaged {
        /// The store file.
        path: String,
        /// What failed (the redb error, or the panic it raised).
        reason: String,
    },
    /// The database could not be opened, read or written.
    #[error("store {path}: {source}")]
    Db {
        /// The store file.
        path: String,
        /// The redb failure.
        #[source]
        source: redb::Error,
    },
}

/// The embedded store.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: String,
}

/// What [`Store::open_or_recover`] did with a damaged store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Where the damaged file was moved.
    pub moved_to: std::path::PathBuf,
    /// Why it was taken for damaged.
    pub reason: String,
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

impl Store {
    /// Size of the store file, bytes (0 when it cannot be read).
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Opens the store at `path` and reads every table once to prove it is
    /// sound. A store another process holds is an error ([`StoreError::InUse`]);
    /// a damaged one (it fails to open or to read, or redb panics on it) is
    /// moved aside to `<path>.damaged-<unix seconds>` and a new, empty store is
    /// created in its place: edgecore-dmi then rebuilds its state from the
    /// device source and the mappers' registrations, instead of crash-looping
    /// on its own file.
    ///
    /// # Errors
    /// [`StoreError::InUse`]; [`StoreError::Db`] when even a new store cannot
    /// be created (directory not writable, disk full).
    pub fn open_or_recover(path: &Path) -> Result<(Self, Option<Recovered>), StoreError> {
        let attempt = std::panic::catch_unwind(|| {
            let s = Self::open(path)?;
            for t in Table::ALL {
                s.scan(t).map_err(|e| StoreError::Damaged {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
            Ok::<_, StoreError>(s)
        });
        let reason = match attempt {
            Ok(Ok(s)) => return Ok((s, None)),
            Ok(Err(StoreError::InUse(p))) => return Err(StoreError::InUse(p)),
            Ok(Err(e)) => e.to_string(),
            Err(p) => format!("reading it panicked: {}", panic_text(p)),
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".damaged-{stamp}"));
        let aside = std::path::PathBuf::from(aside);
        std::fs::rename(path, &aside).map_err(|e| StoreError::Db {
            path: path.display().to_string(),
            source: redb::Error::Io(e),
        })?;
        let s = Self::open(path)?;
        Ok((
            s,
            Some(Recovered {
                moved_to: aside,
                reason,
            }),
        ))
    }

    /// Opens (creating if needed) the store at `path`. Fails if another process
    /// has it open ([`StoreError::InUse`]) or the file cannot be opened.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let p = path.display().to_string();
        let err = |e: redb::Error| StoreError::Db {
            path: p.clone(),
            source: e,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(redb::Error::Io(e)))?;
        }
        // A small page cache: the store holds little and is read at start only.
        let db = match redb::Builder::new()
            .set_cache_size(STORE_CACHE)
            .create(path)
        {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::InUse(p)),
            Err(e) => return Err(err(e.into())),
        };
        let w = db.begin_write().map_err(|e| err(e.into()))?;
        for t in Table::ALL {
            w.open_table(t.def()).map_err(|e| err(e.into()))?;
        }
        w.commit().map_err(|e| err(e.into()))?;
        Ok(Self { db, path: p })
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            source: e.into(),
        }
    }

    /// Applies changes in one transaction.
    pub fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write().map_err(|e| self.err(e))?;
        for op in ops {
            match op {
                Op::Put(t, k, v) => {
                    let mut tab = w.open_table(t.def()).map_err(|e| self.err(e))?;
                    tab.insert(k.as_str(), v.as_slice())
                        .map_err(|e| self.err(e))?;
                }
                Op::Delete(t, k) => {
                    let mut tab = w.open_table(t.def()).map_err(|e| self.err(e))?;
                    tab.remove(k.as_str()).map_err(|e| self.err(e))?;
                }
            }
        }
        w.commit().map_err(|e| self.err(e))
    }

    /// Every entry of a table, sorted by key.
    pub fn scan(&self, t: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        self.scan_each(t, |k, v| out.push((k.to_owned(), v.to_vec())))?;
        Ok(out)
    }

    /// Calls `f(key, value)` for every entry of a table, in key order, without
    /// copying the table into memory first (a node's 10 000 devices are read
    /// one at a time).
    pub fn scan_each(&self, t: Table, mut f: impl FnMut(&str, &[u8])) -> Result<(), StoreError> {
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let tab = r.open_table(t.def()).map_err(|e| self.err(e))?;
        for item in tab.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            f(k.value(), v.value());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_scan_delete_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/store.redb");
        {
            let s = Store::open(&path).unwrap();
            s.apply(&[
                Op::Put(Table::Devices, "ns/a".into(), b"1".to_vec()),
                Op::Put(Table::Devices, "ns/b".into(), b"2".to_vec()),
                Op::Put(Table::Twins, "ns/a".into(), b"t".to_vec()),
            ])
            .unwrap();
            s.apply(&[Op::Delete(Table::Devices, "ns/b".into())])
                .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.scan(Table::Devices).unwrap(),
            vec![("ns/a".to_owned(), b"1".to_vec())]
        );
        assert_eq!(s.scan(Table::Twins).unwrap().len(), 1);
        assert!(s.scan(Table::Mappers).unwrap().is_empty());
    }

    #[test]
    fn second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let _first = Store::open(&path).unwrap();
        assert!(matches!(Store::open(&path), Err(StoreError::InUse(_))));
        // In use is not damage: nothing is moved aside.
        assert!(matches!(
            Store::open_or_recover(&path),
            Err(StoreError::InUse(_))
        ));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    fn filled(path: &Path) -> u64 {
        let s = Store::open(path).unwrap();
        let ops: Vec<Op> = (0..2000)
            .map(|i| Op::Put(Table::Twins, format!("ns/d{i}"), vec![b'x'; 300]))
            .collect();
        s.apply(&ops).unwrap();
        drop(s);
        std::fs::metadata(path).unwrap().len()
    }

    #[test]
    fn a_truncated_store_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let size = filled(&path);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(size / 2).unwrap();
        drop(f);
        // The first start recovers; the next finds a sound store.
        for first in [true, false] {
            let (s, rec) = Store::open_or_recover(&path).unwrap();
            assert_eq!(rec.is_some(), first, "{rec:?}");
            if let Some(r) = rec {
                assert!(r.moved_to.exists(), "{r:?}");
                assert!(r.moved_to.to_string_lossy().contains(".damaged-"));
            }
            assert!(s.scan(Table::Twins).unwrap().is_empty());
        }
    }

    #[test]
    fn a_store_with_a_damaged_header_is_moved_aside_and_replaced() {
        use std::io::{Seek, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        filled(&path);
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(&[0xff; 8]).unwrap();
        drop(f);
        let (s, rec) = Store::open_or_recover(&path).unwrap();
        let rec = rec.expect("damage was noticed");
        assert!(!rec.reason.contains("another"), "{}", rec.reason);
        s.apply(&[Op::Put(Table::Devices, "ns/a".into(), b"1".to_vec())])
            .unwrap();
    }
}
