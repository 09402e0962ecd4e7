//! Persistence bookkeeping: which records changed since the store was last
//! written, taken by the persister as store operations.

use super::Hub;
use crate::key::ObjectKey;
use crate::store::{Op, Table};

/// A record that changed (or went away) since the store was last written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Dirty {
    /// A device resource.
    Device(ObjectKey),
    /// A model resource.
    Model(ObjectKey),
    /// A mapper record, by mapper name.
    Mapper(String),
    /// A device's twins and state.
    Twins(ObjectKey),
}

impl Hub {
    /// Waits until something needs persisting.
    ///
    /// Cancellation safe: dropping the future loses nothing, the changes stay
    /// recorded for the next [`Hub::take_dirty`].
    pub(crate) async fn persist_needed(&self) {
        self.persist_kick.notified().await;
    }

    /// Takes up to `limit` changed records as store operations: a record that
    /// exists is put, one that went away is deleted. The rest stay recorded
    /// for the next call.
    pub(crate) fn take_dirty(&self, limit: usize) -> Vec<Op> {
        let mut st = self.lock();
        let dirty: Vec<Dirty> = if st.dirty.len() <= limit {
            std::mem::take(&mut st.dirty).into_iter().collect()
        } else {
            let some: Vec<Dirty> = st.dirty.iter().take(limit).cloned().collect();
            for d in &some {
                st.dirty.remove(d);
            }
            some
        };
        let mut ops = Vec::with_capacity(dirty.len());
        for d in dirty {
            let (table, key, bytes) = match d {
                Dirty::Device(k) => {
                    let b = st.devices.get(&k).map(|e| serde_json::to_vec(&*e.stored));
                    (Table::Devices, String::from(k), b)
                }
                Dirty::Model(k) => {
                    let b = st.models.get(&k).map(|m| serde_json::to_vec(&*m.stored));
                    (Table::Models, String::from(k), b)
                }
                Dirty::Mapper(name) => {
                    let b = st.mappers.get(&name).map(|l| serde_json::to_vec(&l.record));
                    (Table::Mappers, name, b)
                }
                Dirty::Twins(k) => {
                    let b = st.twins.get(&k).map(serde_json::to_vec);
                    (Table::Twins, String::from(k), b)
                }
            };
            match bytes {
                Some(Ok(b)) => ops.push(Op::Put(table, key, b)),
                Some(Err(e)) => {
                    tracing::error!(record = %key, error = %e, "cannot serialize record")
                }
                None => ops.push(Op::Delete(table, key)),
            }
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{NODE, device, hub, record, snapshot};
    use super::*;
    use crate::records::{MapperRecord, StoredDevice, StoredModel, TwinState};

    /// The operations as `put|delete table key`, sorted.
    fn describe(ops: &[Op]) -> Vec<String> {
        let mut out: Vec<String> = ops
            .iter()
            .map(|op| match op {
                Op::Put(t, k, _) => format!("put {t:?} {k}"),
                Op::Delete(t, k) => format!("delete {t:?} {k}"),
            })
            .collect();
        out.sort();
        out
    }

    fn put<T: serde::de::DeserializeOwned>(ops: &[Op], table: Table, key: &str) -> Option<T> {
        ops.iter().find_map(|op| match op {
            Op::Put(t, k, v) if *t == table && k == key => serde_json::from_slice(v).ok(),
            _ => None,
        })
    }

    #[tokio::test]
    async fn dirty_records_become_puts_and_deletes() {
        let hub = hub();
        snapshot(
            &hub,
            &format!("{NODE}{}{}", device("a", "1"), device("b", "1")),
        );
        hub.register_mapper(record(), false);
        hub.report_state(ObjectKey::new("", "a"), "online".into())
            .unwrap();
        let ops = hub.take_dirty(usize::MAX);
        assert_eq!(
            describe(&ops),
            [
                "put Devices default/a",
                "put Devices default/b",
                "put Mappers go-mapper",
                "put Models default/m",
                "put Twins default/a",
            ]
        );
        let a: Option<StoredDevice> = put(&ops, Table::Devices, "default/a");
        assert_eq!(a.as_ref().map(StoredDevice::origin), Some("test"));
        let m: Option<StoredModel> = put(&ops, Table::Models, "default/m");
        assert!(m.is_some());
        let r: Option<MapperRecord> = put(&ops, Table::Mappers, "go-mapper");
        assert_eq!(r, Some(record()));
        let t: Option<TwinState> = put(&ops, Table::Twins, "default/a");
        assert_eq!(t.and_then(|t| t.state).as_deref(), Some("online"));
        // Taken: nothing left.
        assert!(hub.take_dirty(usize::MAX).is_empty());

        // A device and the model leave: their records (and the device's twins)
        // are deleted.
        snapshot(&hub, &device("b", "1"));
        assert_eq!(
            describe(&hub.take_dirty(usize::MAX)),
            [
                "delete Devices default/a",
                "delete Models default/m",
                "delete Twins default/a",
            ]
        );
    }

    #[tokio::test]
    async fn dirty_records_are_taken_in_batches_until_none_is_left() {
        let hub = hub();
        let text: String = (0..7).map(|i| device(&format!("d{i}"), "1")).collect();
        snapshot(&hub, &format!("{NODE}{text}"));
        // Seven devices and the model: eight records, three at a time.
        let sizes: Vec<usize> = std::iter::from_fn(|| {
            let ops = hub.take_dirty(3);
            (!ops.is_empty()).then_some(ops.len())
        })
        .collect();
        assert_eq!(sizes, [3, 3, 2]);
    }
}
