//! The node manager of the simulated namespace: async-opcua's in-memory
//! address space for the structure, [`Model`] for values and statuses, and
//! the injected latency on Read and Write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use opcua::nodes::{AccessLevel, DefaultTypeTree, NodeType, VariableBuilder};
use opcua::server::SubscriptionCache;
use opcua::server::address_space::AddressSpace;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{
    InMemoryNodeManager, InMemoryNodeManagerBuilder, InMemoryNodeManagerImpl,
};
use opcua::server::node_manager::{
    NodeManagerBuilder, ParsedReadValueId, RequestContext, ServerContext, WriteNode,
};
use opcua::sync::RwLock;
use opcua::types::{
    AttributeId, DataValue, LocalizedText, NodeId, QualifiedName, StatusCode, TimestampsToReturn,
    VariableTypeId,
};

use crate::model::{Layout, Model, SIM_NAMESPACE};
use crate::value;

/// What the node manager, the tick task and the commands share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) namespace: String,
    pub(crate) layout: Layout,
    pub(crate) model: Mutex<Model>,
    /// Added to every Read and Write of simulated nodes, ms.
    pub(crate) latency_ms: AtomicU64,
}

/// Locks the model. Lock order: an address space lock first, then the model;
/// never the other way round.
pub(crate) fn lock(m: &Mutex<Model>) -> MutexGuard<'_, Model> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The node manager type the server holds.
pub(crate) type SimNodeManager = InMemoryNodeManager<SimNodes>;

/// Behaviour of the simulated namespace.
pub(crate) struct SimNodes {
    shared: Arc<Shared>,
    namespace: NamespaceMetadata,
}

/// Builds the node manager: registers the namespace and fills the address
/// space from the layout and the model's current values.
pub(crate) fn builder(shared: Arc<Shared>) -> impl NodeManagerBuilder {
    InMemoryNodeManagerBuilder::new(move |ctx: ServerContext, space: &mut AddressSpace| {
        let index = ctx
            .type_tree
            .write()
            .namespaces_mut()
            .add_namespace(&shared.namespace);
        space.add_namespace(&shared.namespace, index);
        if index == SIM_NAMESPACE {
            populate(space, &shared);
        } else {
            // Simulator::start refuses to run in this case and says why.
            tracing::error!(index, "the simulated namespace did not get index 2");
        }
        SimNodes {
            namespace: NamespaceMetadata {
                namespace_uri: shared.namespace.clone(),
                namespace_index: index,
                ..Default::default()
            },
            shared,
        }
    })
}

fn populate(space: &mut AddressSpace, shared: &Shared) {
    for f in &shared.layout.folders {
        space.add_folder(
            &f.id,
            QualifiedName::new(SIM_NAMESPACE, f.name.as_str()),
            LocalizedText::new("", &f.name),
            &f.parent,
        );
    }
    let model = lock(&shared.model);
    for (v, p) in shared.layout.vars.iter().zip(&model.points) {
        let access = if v.writable {
            AccessLevel::CURRENT_READ | AccessLevel::CURRENT_WRITE
        } else {
            AccessLevel::CURRENT_READ
        };
        let mut b = VariableBuilder::new(
            &v.id,
            QualifiedName::new(SIM_NAMESPACE, v.browse_name.as_str()),
            LocalizedText::new("", &v.display_name),
        )
        .data_type(v.ty.data_type_id())
        .value_rank(if v.array { 1 } else { -1 })
        .access_level(access)
        .user_access_level(access)
        .historizing(false)
        .has_type_definition(VariableTypeId::BaseDataVariableType)
        .organized_by(v.parent.clone());
        if v.array {
            b = b.array_dimensions(&[0]);
        }
        if let Some(d) = &v.description {
            b = b.description(LocalizedText::new("", d));
        }
        b.insert(space);
        set_node_value(space, &v.id, p.data_value());
    }
}

/// Stores a value in the address space node.
pub(crate) fn set_node_value(space: &mut AddressSpace, id: &NodeId, dv: DataValue) {
    if let Some(NodeType::Variable(var)) = space.find_mut(id) {
        var.set_data_value(dv);
    }
}

/// Tells subscriptions about changed values, sampling them from the space.
pub(crate) fn notify(subscriptions: &SubscriptionCache, space: &AddressSpace, ids: &[NodeId]) {
    if ids.is_empty() {
        return;
    }
    subscriptions.maybe_notify(
        ids.iter().map(|id| (id, AttributeId::Value)),
        |id, attribute, range, encoding| {
            space.find(id)?.as_node().get_attribute(
                TimestampsToReturn::Both,
                attribute,
                range,
                encoding,
            )
        },
    );
}

impl SimNodes {
    async fn delay(&self) {
        let ms = self.shared.latency_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    fn write_one(
        &self,
        context: &RequestContext,
        space: &mut AddressSpace,
        type_tree: &DefaultTypeTree,
        model: &mut Model,
        write: &WriteNode,
    ) -> StatusCode {
        let w = write.value();
        let point = model.find(&w.node_id);
        // Read-only variables answer BadNotWritable (async-opcua's own check
        // would say BadUserAccessDenied).
        if point.is_some_and(|i| !model.points[i].writable) || w.attribute_id != AttributeId::Value
        {
            if space.find(&w.node_id).is_none() {
                return StatusCode::BadNodeIdUnknown;
            }
            return StatusCode::BadNotWritable;
        }
        if let Err(e) = space.validate_node_write(context, w, type_tree) {
            return e;
        }
        if w.index_range.has_range() {
            return StatusCode::BadWriteNotSupported;
        }
        let Some(i) = point else {
            return StatusCode::BadNotWritable;
        };
        let point = &mut model.points[i];
        if point.status.is_bad() {
            return point.status;
        }
        let Some(v) = w.value.value.as_ref() else {
            return StatusCode::BadTypeMismatch;
        };
        if !value::check_type(point.ty, point.array, v) {
            return StatusCode::BadTypeMismatch;
        }
        if !point.in_bounds(v) {
            return StatusCode::BadOutOfRange;
        }
        point.set(v.clone());
        set_node_value(space, &w.node_id, point.data_value());
        StatusCode::Good
    }
}

#[async_trait]
impl InMemoryNodeManagerImpl for SimNodes {
    async fn init(&self, _address_space: &mut AddressSpace, _context: ServerContext) {}

    fn name(&self) -> &str {
        "opcua-sim"
    }

    fn namespaces(&self) -> Vec<NamespaceMetadata> {
        vec![self.namespace.clone()]
    }

    async fn read_values(
        &self,
        context: &RequestContext,
        address_space: &RwLock<AddressSpace>,
        nodes: &[&ParsedReadValueId],
        max_age: f64,
        timestamps_to_return: TimestampsToReturn,
    ) -> Vec<DataValue> {
        self.delay().await;
        let space = address_space.read();
        nodes
            .iter()
            .map(|n| space.read(context, n, max_age, timestamps_to_return))
            .collect()
    }

    async fn write(
        &self,
        context: &RequestContext,
        address_space: &RwLock<AddressSpace>,
        nodes_to_write: &mut [&mut WriteNode],
    ) -> Result<(), StatusCode> {
        self.delay().await;
        let mut space = address_space.write();
        let mut changed = Vec::new();
        {
            let type_tree = context.type_tree.read();
            let mut model = lock(&self.shared.model);
            for w in nodes_to_write.iter_mut() {
                let status = self.write_one(context, &mut space, &type_tree, &mut model, w);
                w.set_status(status);
                if status.is_good() {
                    changed.push(w.value().node_id.clone());
                }
            }
        }
        notify(&context.subscriptions, &space, &changed);
        Ok(())
    }
}
