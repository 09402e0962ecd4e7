//! Kubernetes integration of edgecore-dmi (feature `kubernetes`): the device
//! source that watches this node's Devices and the models they use, and the
//! status writer that patches reported twins and state back.

mod source;
mod status;

pub use source::KubeSource;
pub use status::{RefreshPolicy, StatusMode, StatusWriter, status_patch, value_fingerprint};

/// Builds a client from `KUBECONFIG`/`~/.kube/config`, or in-cluster config.
pub async fn client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!(
            "no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {e}"
        )
    })
}
