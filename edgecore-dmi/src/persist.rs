//! Between the hub and the embedded store: the store's records loaded into the
//! hub at start, and the persister task that writes the hub's changed records
//! back (at once when kicked, and at least every [`PERSIST_INTERVAL`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::key::ObjectKey;
use crate::records::{MapperRecord, StoredDevice, StoredModel, TwinState};
use crate::store::{Store, Table};

/// How often reported twins are written to the store.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// Records written per store transaction (records, each about 0.5 KiB).
const WRITE_BATCH: usize = 500;

/// Opens the store at `path` (off the async threads). A damaged store is
/// moved aside and replaced by an empty one ([`Store::open_or_recover`]);
/// the state is then rebuilt from the device source and the mappers, and an
/// error says so.
pub(crate) async fn open(path: PathBuf) -> anyhow::Result<Arc<Store>> {
    let (store, recovered) =
        tokio::task::spawn_blocking(move || Store::open_or_recover(&path)).await??;
    if let Some(r) = recovered {
        tracing::error!(
            moved_to = %r.moved_to.display(), reason = %r.reason,
            "the store was damaged; it was moved aside and a new one created: devices come back from the device source, mappers when they register again, reported twins from their next reports"
        );
    }
    Ok(Arc::new(store))
}

/// The rows of `table`, decoded; unreadable rows are logged and skipped.
fn decode_rows<T: serde::de::DeserializeOwned>(
    store: &Store,
    table: Table,
) -> anyhow::Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    store.scan_each(table, |k, v| match serde_json::from_slice(v) {
        Ok(t) => out.push((k.to_owned(), t)),
        Err(e) => {
            tracing::error!(record = %k, ?table, error = %e, "skipping unreadable stored record")
        }
    })?;
    Ok(out)
}

/// Loads what the store holds into `hub` (devices, models, mappers, twins),
/// before the device source's first scan.
pub(crate) async fn restore(store: &Arc<Store>, hub: &Hub) -> anyhow::Result<()> {
    let s = store.clone();
    let (devices, models, mappers, twins) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            Ok((
                decode_rows::<StoredDevice>(&s, Table::Devices)?,
                decode_rows::<StoredModel>(&s, Table::Models)?,
                decode_rows::<MapperRecord>(&s, Table::Mappers)?,
                decode_rows::<TwinState>(&s, Table::Twins)?,
            ))
        })
        .await??;
    tracing::info!(
        devices = devices.len(),
        models = models.len(),
        mappers = mappers.len(),
        "restored from the store"
    );
    hub.restore(
        devices.into_iter().map(|(_, d)| Arc::new(d)).collect(),
        models.into_iter().map(|(_, m)| Arc::new(m)).collect(),
        mappers.into_iter().map(|(_, m)| m).collect(),
        twins
            .into_iter()
            .map(|(k, t)| (ObjectKey::parse(&k), t))
            .collect(),
    );
    Ok(())
}

/// Writes the hub's changed records to the store until `shutdown`, then once
/// more. A failed write is logged; those changes are not retried (the next
/// change of the same record writes it again).
pub(crate) async fn run(
    hub: Arc<Hub>,
    store: Arc<Store>,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    hub.metrics().set_store_bytes(store.file_bytes());
    loop {
        let stop = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = hub.persist_needed() => false,
            _ = tokio::time::sleep(interval) => false,
        };
        // In batches: the first write of 10 000 devices would otherwise hold
        // all their records and one huge transaction in memory at once.
        loop {
            let ops = hub.take_dirty(WRITE_BATCH);
            if ops.is_empty() {
                break;
            }
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.apply(&ops)).await {
                Ok(Ok(())) => hub.metrics().set_store_bytes(store.file_bytes()),
                Ok(Err(e)) => tracing::error!(error = %e, "store write failed"),
                Err(e) => tracing::error!(error = %e, "store writer panicked"),
            }
        }
        if stop {
            return Ok(());
        }
    }
}
