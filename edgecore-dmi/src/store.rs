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

impl Store {
    /// Opens (creating if needed) the store at `path`. Fails if another process
    /// has it open.
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
        let db = redb::Builder::new()
            .set_cache_size(STORE_CACHE)
            .create(path)
            .map_err(|e| err(e.into()))?;
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
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let tab = r.open_table(t.def()).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in tab.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
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
        assert!(Store::open(&path).is_err());
    }
}
