//! One device: batched reads, typed writes with read-back, and
//! subscriptions (push mode).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream;
use mapper_sdk::{
    DeviceClient, DeviceFault, DriverError, DriverResult, Pushed, Subscription, Value,
};
use opcua::client::{MonitoredItem, SubscriptionCallbacks};
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, DataValue, ExtensionObject,
    MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters, NodeId, ReadValueId,
    ReferenceTypeId, StatusCode, TimestampsToReturn, Variant, WriteValue,
};
use tokio::sync::Notify;

use crate::convert::{self, Builtin, NodeType};
use crate::error::device_fault;
use crate::node::OpcuaAddress;
use crate::session::{Conn, Slot};

/// Deadline of the clean-up calls in [`DeviceClient::disconnect`].
pub(crate) const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Monitored items created per CreateMonitoredItems call.
pub(crate) const MONITORED_ITEMS_PER_CALL: usize = 1000;
/// Supertypes followed to find the built-in type of a DataType.
const MAX_SUPERTYPES: usize = 8;
/// Read plans a device keeps (one per set of properties that fall due
/// together: one per distinct collect cycle, as a rule).
const READ_PLANS: usize = 4;

/// The Read of a set of properties that fall due together: their nodes
/// resolved, de-duplicated and wrapped as `ReadValueId`s once, not every
/// tick.
#[derive(Debug)]
struct ReadPlan {
    /// The properties' nodes, in the order they were due: what the plan is for.
    due: Vec<crate::node::NodeRef>,
    /// The distinct nodes to read.
    ids: Vec<ReadValueId>,
    /// Per property: its node's index in `ids`, or why its node has none.
    slots: Vec<DriverResult<usize>>,
}

impl ReadPlan {
    /// Whether the plan reads exactly the properties `at`, in that order.
    fn fits(&self, at: &[&OpcuaAddress]) -> bool {
        self.due.len() == at.len() && self.due.iter().zip(at).all(|(n, a)| n == a.node())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a device collects.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// `maxNodesPerRead`, when given.
    pub(crate) max_nodes_per_read: Option<u32>,
    /// Monitored items instead of polling.
    pub(crate) subscribe: bool,
    /// The subscription's publishing interval.
    pub(crate) publishing_interval: Duration,
}

/// One device on a (shared) session.
///
/// A value lives from one [`mapper_sdk::Driver::connect`] to the next; when
/// the session is lost every device on it gets a link error, and the SDK
/// connects it again (on a new session, with a new subscription).
#[derive(Debug)]
pub struct OpcuaDevice {
    conn: Arc<Conn>,
    slot: Arc<Slot>,
    /// Nodes per Read call (halved when the server says too many).
    max_nodes: AtomicU32,
    settings: Settings,
    requests: AtomicU64,
    subscription: Mutex<Option<u32>>,
    /// Recent read plans, newest last (at most [`READ_PLANS`]).
    plans: Mutex<VecDeque<Arc<ReadPlan>>>,
}

/// Milliseconds as OPC-UA's Duration (a double).
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn system_time(dv: &DataValue) -> Option<SystemTime> {
    let t = dv.source_timestamp.as_ref()?;
    if t.is_null() {
        return None;
    }
    let ms = t.as_chrono().timestamp_millis();
    u64::try_from(ms)
        .ok()
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

/// The value of one read result (Bad status: that property's fault).
fn decode(dv: &DataValue, node: &NodeId) -> DriverResult<Value> {
    let status = dv.status();
    if status.is_bad() {
        return Err(device_fault(status, &node.to_string()));
    }
    match &dv.value {
        Some(v) => convert::to_value(v),
        None => Err(DriverError::Value(format!(
            "{node}: the server sent no value"
        ))),
    }
}

impl OpcuaDevice {
    pub(crate) fn new(conn: Arc<Conn>, slot: Arc<Slot>, settings: Settings) -> Self {
        let limit = match (
            conn.server_max_nodes_per_read(),
            settings.max_nodes_per_read,
        ) {
            (Some(server), Some(mine)) => server.min(mine),
            (Some(server), None) => server,
            (None, Some(mine)) => mine,
            (None, None) => crate::config::DEFAULT_MAX_NODES_PER_READ,
        }
        .max(1);
        Self {
            conn,
            slot,
            max_nodes: AtomicU32::new(limit),
            settings,
            requests: AtomicU64::new(0),
            subscription: Mutex::new(None),
            plans: Mutex::new(VecDeque::new()),
        }
    }

    /// Service calls this device sent (reads, writes, subscription calls),
    /// since [`mapper_sdk::Driver::connect`].
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Nodes per Read call: the server's `MaxNodesPerRead` operation limit
    /// when it gives one, else `maxNodesPerRead` (default 1000); the smaller
    /// when both are known; halved each time the server answers
    /// `BadTooManyOperations`.
    pub fn max_nodes_per_read(&self) -> u32 {
        self.max_nodes.load(Ordering::Relaxed)
    }

    /// The shared session.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Sessions opened for this device's endpoint so far (by any device on it).
    pub fn sessions_opened(&self) -> u64 {
        self.slot.sessions_opened()
    }

    /// Whether the device's subscription is active.
    pub fn subscribed(&self) -> bool {
        lock(&self.subscription).is_some()
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    async fn read_ids(&self, ids: &[ReadValueId]) -> DriverResult<Vec<DataValue>> {
        self.count();
        self.conn.read_values(ids).await
    }

    /// Reads `nodes` in as few Read calls as the limit allows; one result
    /// per node. A link failure is every remaining node's error.
    async fn read_nodes(&self, nodes: &[ReadValueId]) -> Vec<DriverResult<DataValue>> {
        let mut out: Vec<DriverResult<DataValue>> = Vec::with_capacity(nodes.len());
        let mut start = 0;
        while start < nodes.len() {
            let limit = self.max_nodes_per_read() as usize;
            let end = (start + limit).min(nodes.len());
            let ids = &nodes[start..end];
            match self.read_ids(ids).await {
                Ok(values) => {
                    out.extend(values.into_iter().map(Ok));
                    start = end;
                }
                Err(DriverError::Device(f))
                    if f.code.is_some_and(|c| {
                        StatusCode::from(c).sub_code() as u32
                            == StatusCode::BadTooManyOperations.sub_code() as u32
                    }) && ids.len() > 1 =>
                {
                    let half = (ids.len() / 2).max(1) as u32;
                    tracing::info!(
                        endpoint = %self.conn.endpoint(),
                        nodes = ids.len(),
                        now = half,
                        "the server refused a Read of this many nodes; reading fewer per call"
                    );
                    self.max_nodes.store(half, Ordering::Relaxed);
                }
                Err(e) => {
                    let link = e.is_link_failure();
                    out.extend((start..end).map(|_| Err(e.clone())));
                    start = end;
                    if link {
                        out.extend((start..nodes.len()).map(|_| Err(e.clone())));
                        break;
                    }
                }
            }
        }
        out
    }

    /// The plan that reads `at`: a kept one when the same properties fell
    /// due before, else a new one (kept; beyond [`READ_PLANS`] the least
    /// recently used is dropped, so the plans in steady use stay).
    fn read_plan(&self, at: &[&OpcuaAddress]) -> Arc<ReadPlan> {
        let mut plans = lock(&self.plans);
        if let Some(plan) = plans
            .iter()
            .position(|p| p.fits(at))
            .and_then(|i| plans.remove(i))
        {
            plans.push_back(plan.clone());
            return plan;
        }
        let mut unique: Vec<NodeId> = Vec::new();
        let mut index: HashMap<NodeId, usize> = HashMap::new();
        let slots = at
            .iter()
            .map(|a| {
                self.conn.resolve(a.node()).map(|id| {
                    *index.entry(id.clone()).or_insert_with(|| {
                        unique.push(id);
                        unique.len() - 1
                    })
                })
            })
            .collect();
        let plan = Arc::new(ReadPlan {
            due: at.iter().map(|a| a.node().clone()).collect(),
            ids: unique.into_iter().map(ReadValueId::from).collect(),
            slots,
        });
        if plans.len() == READ_PLANS {
            plans.pop_front();
        }
        plans.push_back(plan.clone());
        plan
    }

    /// The type the node at `id` holds, read once per session (the Value's
    /// type when it has one, else its DataType and ValueRank).
    async fn node_type(&self, id: &NodeId) -> DriverResult<NodeType> {
        if let Some(t) = lock(&self.conn.types).get(id) {
            return Ok(*t);
        }
        let t = node_type(&self.conn, id, || self.count()).await?;
        lock(&self.conn.types).insert(id.clone(), t);
        Ok(t)
    }
}

/// The built-in type of DataType `dt`, following its supertypes.
pub(crate) async fn builtin_of(
    conn: &Conn,
    dt: &NodeId,
    mut counted: impl FnMut(),
) -> DriverResult<Option<Builtin>> {
    let mut current = dt.clone();
    for _ in 0..MAX_SUPERTYPES {
        if let Some(b) = Builtin::from_data_type(&current) {
            return Ok(Some(b));
        }
        if conn.is_lost() {
            return Err(conn.lost_error());
        }
        counted();
        conn.count();
        let up = BrowseDescription {
            node_id: current.clone(),
            browse_direction: BrowseDirection::Inverse,
            reference_type_id: ReferenceTypeId::HasSubtype.into(),
            include_subtypes: false,
            node_class_mask: 0,
            result_mask: 0,
        };
        let results = conn
            .session()
            .browse(&[up], 1, None)
            .await
            .map_err(|e| conn.failed(&e))?;
        let parent = results
            .into_iter()
            .next()
            .and_then(|r| r.references)
            .and_then(|r| r.into_iter().next())
            .map(|r| r.node_id.node_id);
        match parent {
            Some(p) => current = p,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// The type of the node at `id`, as the server describes it.
pub(crate) async fn node_type(
    conn: &Conn,
    id: &NodeId,
    mut counted: impl FnMut(),
) -> DriverResult<NodeType> {
    if conn.is_lost() {
        return Err(conn.lost_error());
    }
    let ids = [
        ReadValueId::new(id.clone(), AttributeId::DataType),
        ReadValueId::new(id.clone(), AttributeId::ValueRank),
        ReadValueId::new(id.clone(), AttributeId::Value),
    ];
    counted();
    let r = conn.read_values(&ids).await?;
    let dt_status = r[0].status();
    if dt_status.is_bad() {
        return Err(device_fault(dt_status, &id.to_string()));
    }
    if r[2].status().is_good()
        && let Some(t) = r[2].value.as_ref().and_then(convert::type_of)
    {
        return Ok(t);
    }
    let rank = match &r[1].value {
        Some(Variant::Int32(v)) => *v,
        _ => -1,
    };
    if rank > 1 {
        return Err(DriverError::Value(format!(
            "{id} holds a {rank}-dimensional array; only one dimension is supported"
        )));
    }
    let Some(Variant::NodeId(dt)) = &r[0].value else {
        return Err(DriverError::Protocol(format!(
            "{id}: the DataType attribute is not a NodeId"
        )));
    };
    match builtin_of(conn, dt, counted).await? {
        Some(builtin) => Ok(NodeType {
            builtin,
            array: rank == 1 || rank == 0,
        }),
        None => Err(DriverError::Value(format!(
            "{id} has DataType {dt}, which this mapper cannot write; set the visitor's `dataType`"
        ))),
    }
}

/// Latest notification per monitored item, in arrival order: bounded by the
/// number of items whatever the server sends.
#[derive(Default)]
struct Inbox {
    latest: Vec<Option<DataValue>>,
    order: VecDeque<usize>,
    /// The server ended the subscription.
    ended: Option<String>,
}

struct Mailbox {
    inbox: Mutex<Inbox>,
    notify: Notify,
}

impl Mailbox {
    fn put(&self, index: usize, dv: DataValue) {
        let mut b = lock(&self.inbox);
        let Some(slot) = b.latest.get_mut(index) else {
            return;
        };
        if slot.is_none() {
            b.order.push_back(index);
        }
        b.latest[index] = Some(dv);
        drop(b);
        self.notify.notify_one();
    }

    fn end(&self, why: String) {
        lock(&self.inbox).ended.get_or_insert(why);
        self.notify.notify_one();
    }

    fn take(&self) -> Result<Option<(usize, DataValue)>, String> {
        let mut b = lock(&self.inbox);
        while let Some(i) = b.order.pop_front() {
            if let Some(dv) = b.latest.get_mut(i).and_then(Option::take) {
                return Ok(Some((i, dv)));
            }
        }
        match &b.ended {
            Some(why) => Err(why.clone()),
            None => Ok(None),
        }
    }
}

impl DeviceClient for OpcuaDevice {
    type Address = OpcuaAddress;

    fn io_requests(&self) -> Option<u64> {
        Some(self.requests())
    }

    async fn read(&self, at: &OpcuaAddress) -> DriverResult<Value> {
        self.read_batch(&[at])
            .await
            .pop()
            .unwrap_or_else(|| Err(DriverError::Protocol("no result".into())))
    }

    /// All due properties in one Read call (several when there are more
    /// nodes than the limit, see [`OpcuaDevice::max_nodes_per_read`]); a
    /// node read by several properties is read once. A Bad status is that
    /// property's [`DriverError::Device`] fault, named
    /// (`ns=2;s=X: BadNodeIdUnknown: ...`).
    async fn read_batch(&self, at: &[&OpcuaAddress]) -> Vec<DriverResult<Value>> {
        let plan = self.read_plan(at);
        let before = self.requests();
        let read = self.read_nodes(&plan.ids).await;
        tracing::debug!(
            properties = at.len(),
            nodes = plan.ids.len(),
            calls = self.requests() - before,
            "opcua read tick"
        );
        plan.slots
            .iter()
            .map(|s| {
                let i = *s.as_ref().map_err(Clone::clone)?;
                match &read[i] {
                    Ok(dv) => decode(dv, &plan.ids[i].node_id),
                    Err(e) => Err(e.clone()),
                }
            })
            .collect()
    }

    /// Writes the value encoded as the node's DataType (read once per
    /// session; the visitor's `dataType` instead when given), then reads it
    /// back to confirm.
    ///
    /// # Errors
    /// [`DriverError::Value`] when the value does not fit the node's type;
    /// [`DriverError::Device`] with the status name when the server refuses
    /// (`BadNotWritable`, `BadTypeMismatch`, `BadUserAccessDenied`, ...) or
    /// the value read back differs.
    async fn write(&self, at: &OpcuaAddress, value: &Value) -> DriverResult<()> {
        let id = self.conn.resolve(at.node())?;
        let ty = match at.write_type() {
            Some(t) => t,
            None => self.node_type(&id).await?,
        };
        let variant = convert::to_variant(value, ty)?;
        let wv = WriteValue {
            node_id: id.clone(),
            attribute_id: AttributeId::Value as u32,
            index_range: Default::default(),
            value: DataValue {
                value: Some(variant.clone()),
                ..Default::default()
            },
        };
        if self.conn.is_lost() {
            return Err(self.conn.lost_error());
        }
        self.count();
        self.conn.count();
        let status = self
            .conn
            .session()
            .write(&[wv])
            .await
            .map_err(|e| self.conn.failed(&e))?
            .into_iter()
            .next()
            .ok_or_else(|| DriverError::Protocol("Write returned no result".into()))?;
        if status.is_bad() {
            return Err(device_fault(status, &format!("writing {ty} to {id}")));
        }
        let back = self.read_ids(&[ReadValueId::from(id.clone())]).await?;
        let Some(dv) = back.into_iter().next() else {
            return Err(DriverError::Protocol("Read returned no result".into()));
        };
        if dv.status().is_bad() {
            return Err(device_fault(dv.status(), &format!("reading back {id}")));
        }
        let got = dv.value.unwrap_or_default();
        if !convert::same(&variant, &got) {
            let shown = |v: &Variant| {
                convert::to_value(v).map_or_else(|_| format!("{v:?}"), |v| v.to_string())
            };
            return Err(DriverError::Device(DeviceFault::new(format!(
                "{id}: read back `{}` after writing `{}`",
                shown(&got),
                shown(&variant)
            ))));
        }
        Ok(())
    }

    /// With `subscribe: true`: one subscription per device (publishing
    /// interval `publishingInterval`) and a monitored item per property
    /// (sampling interval = its collect cycle, queue of 1). A property whose
    /// item the server refuses (an unknown node, say) is left to polling,
    /// which reports its error; the others are pushed. The stream ends with
    /// a link error when the session is lost or the server ends the
    /// subscription.
    async fn subscribe(&self, at: &[&OpcuaAddress]) -> DriverResult<Option<Subscription>> {
        if !self.settings.subscribe || at.is_empty() {
            return Ok(None);
        }
        let mailbox = Arc::new(Mailbox {
            inbox: Mutex::new(Inbox {
                latest: vec![None; at.len()],
                ..Inbox::default()
            }),
            notify: Notify::new(),
        });
        let (m1, m2) = (mailbox.clone(), mailbox.clone());
        let callbacks = SubscriptionCallbacks::new(
            move |status| {
                if status.status.is_bad() {
                    m1.end(format!(
                        "the server ended the subscription ({})",
                        status.status.sub_code()
                    ));
                }
            },
            move |dv: DataValue, item: &MonitoredItem| {
                if let Some(i) = (item.client_handle() as usize).checked_sub(1) {
                    m2.put(i, dv);
                }
            },
            |_, _| {},
        );
        let interval = self.settings.publishing_interval;
        let keep_alive = (10_000 / interval.as_millis().max(1)).clamp(1, 1000) as u32;
        if self.conn.is_lost() {
            return Err(self.conn.lost_error());
        }
        self.count();
        self.conn.count();
        let sub = self
            .conn
            .session()
            .create_subscription(interval, keep_alive * 6, keep_alive, 0, 0, true, callbacks)
            .await
            .map_err(|e| self.conn.failed(&e))?;
        *lock(&self.subscription) = Some(sub);
        let mut requests = Vec::new();
        let mut wanted = Vec::new();
        for (i, a) in at.iter().enumerate() {
            let Ok(id) = self.conn.resolve(a.node()) else {
                continue; // polled; the read reports the unknown namespace
            };
            wanted.push(i);
            requests.push(MonitoredItemCreateRequest {
                item_to_monitor: ReadValueId::from(id),
                monitoring_mode: MonitoringMode::Reporting,
                requested_parameters: MonitoringParameters {
                    client_handle: (i + 1) as u32,
                    sampling_interval: ms(a.sampling_interval()),
                    filter: ExtensionObject::null(),
                    queue_size: 1,
                    discard_oldest: true,
                },
            });
        }
        let mut covered = vec![false; at.len()];
        for (chunk, idx) in requests
            .chunks(MONITORED_ITEMS_PER_CALL)
            .zip(wanted.chunks(MONITORED_ITEMS_PER_CALL))
        {
            self.count();
            self.conn.count();
            let created = self
                .conn
                .session()
                .create_monitored_items(sub, TimestampsToReturn::Source, chunk.to_vec())
                .await
                .map_err(|e| self.conn.failed(&e))?;
            for (c, i) in created.iter().zip(idx) {
                if c.result.status_code.is_good() {
                    covered[*i] = true;
                } else {
                    tracing::warn!(
                        node = %at[*i].node(), status = %c.result.status_code,
                        "the server refused a monitored item; the property is polled"
                    );
                }
            }
        }
        let Some(first) = covered.iter().position(|c| *c) else {
            return Ok(None);
        };
        let nodes: Vec<String> = at.iter().map(|a| a.node().to_string()).collect();
        let conn = self.conn.clone();
        let items = stream::unfold(
            (mailbox, conn, nodes, false),
            move |(mb, conn, nodes, done)| async move {
                if done {
                    return None;
                }
                loop {
                    match mb.take() {
                        Ok(Some((index, dv))) => {
                            let value = decode_pushed(&dv, &nodes[index]);
                            let source_time = system_time(&dv);
                            return Some((
                                Pushed {
                                    index,
                                    value,
                                    source_time,
                                },
                                (mb, conn, nodes, false),
                            ));
                        }
                        Err(why) => {
                            let lost = Pushed {
                                index: first,
                                value: Err(DriverError::transport(why)),
                                source_time: None,
                            };
                            return Some((lost, (mb, conn, nodes, true)));
                        }
                        Ok(None) => {}
                    }
                    if conn.is_lost() {
                        let lost = Pushed {
                            index: first,
                            value: Err(conn.lost_error()),
                            source_time: None,
                        };
                        return Some((lost, (mb, conn, nodes, true)));
                    }
                    tokio::select! {
                        _ = mb.notify.notified() => {}
                        _ = conn.lost() => {}
                    }
                }
            },
        );
        Ok(Some(Subscription {
            stream: Box::pin(items),
            covered,
        }))
    }

    /// Deletes the device's subscription (the session stays for the other
    /// devices on it; it closes when the last one lets go).
    async fn disconnect(self) {
        let sub = lock(&self.subscription).take();
        if let Some(id) = sub
            && !self.conn.is_lost()
        {
            let _ = tokio::time::timeout(
                DISCONNECT_TIMEOUT,
                self.conn.session().delete_subscription(id),
            )
            .await;
        }
    }
}

fn decode_pushed(dv: &DataValue, node: &str) -> DriverResult<Value> {
    let status = dv.status();
    if status.is_bad() {
        return Err(device_fault(status, node));
    }
    match &dv.value {
        Some(v) => convert::to_value(v),
        None => Err(DriverError::Value(format!(
            "{node}: the server sent no value"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mailbox_keeps_the_latest_value_per_item_in_arrival_order() {
        let mb = Mailbox {
            inbox: Mutex::new(Inbox {
                latest: vec![None; 3],
                ..Inbox::default()
            }),
            notify: Notify::new(),
        };
        let dv = |i: i32| DataValue {
            value: Some(Variant::Int32(i)),
            ..Default::default()
        };
        mb.put(2, dv(1));
        mb.put(0, dv(2));
        mb.put(2, dv(3));
        mb.put(7, dv(9)); // unknown handle: dropped
        let (i, v) = mb.take().unwrap().unwrap();
        assert_eq!((i, v.value), (2, Some(Variant::Int32(3))));
        let (i, _) = mb.take().unwrap().unwrap();
        assert_eq!(i, 0);
        assert!(mb.take().unwrap().is_none());
        mb.end("gone".into());
        assert_eq!(mb.take().unwrap_err(), "gone");
    }

    #[test]
    fn bad_statuses_are_that_propertys_named_fault() {
        let dv = DataValue {
            status: Some(StatusCode::BadNodeIdUnknown),
            ..Default::default()
        };
        let e = decode(&dv, &NodeId::new(2, "Missing")).unwrap_err();
        assert!(matches!(e, DriverError::Device(_)));
        assert!(
            e.to_string().contains("ns=2;s=Missing: BadNodeIdUnknown"),
            "{e}"
        );
    }
}
