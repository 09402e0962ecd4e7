//! The running simulator: the async-opcua server, the pattern tick, faults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use opcua::crypto::{CertificateStore, SecurityPolicy, X509Data};
use opcua::server::{
    ANONYMOUS_USER_TOKEN_ID, ServerBuilder, ServerEndpoint, ServerHandle, ServerUserToken,
    SubscriptionCache,
};
use opcua::types::{
    ApplicationDescription, ApplicationType, DataValue, LocalizedText, MessageSecurityMode, NodeId,
    StatusCode, UAString,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Error;
use crate::config::{EndpointKind, SimConfig};
use crate::model::{self, Point, SIM_NAMESPACE};
use crate::nodes::{self, Shared, SimNodeManager};
use crate::value;

/// How long a stopping server may take to close its connections.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One server instance; `drop` replaces it with a new one on the same port.
struct Running {
    handle: ServerHandle,
    nodes: Arc<SimNodeManager>,
    server: JoinHandle<()>,
}

struct Inner {
    cfg: SimConfig,
    shared: Arc<Shared>,
    addr: SocketAddr,
    url: String,
    cert_path: PathBuf,
    pki_dir: PathBuf,
    running: Mutex<Option<Running>>,
    /// Serialises `drop` restarts.
    restart: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// A running simulated OPC-UA server. Dropping it stops the server.
///
/// ```no_run
/// # async fn demo() -> Result<(), opcua_sim::Error> {
/// let yaml = "nodes: [{ nodeId: s=Temp, dataType: Double, value: 21.5, writable: true }]";
/// let mut cfg: opcua_sim::SimConfig = yaml_serde::from_str(yaml).expect("valid YAML");
/// cfg.pki_dir = std::env::temp_dir().join("opcua-sim-pki");
/// let sim = opcua_sim::Simulator::start(cfg).await?;
/// println!("{} {}", sim.endpoint_url(), sim.certificate_path().display());
/// sim.bad("s=Temp", "BadSensorFailure")?;
/// sim.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Simulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("url", &self.inner.url)
            .field("nodes", &self.inner.shared.layout.vars.len())
            .finish()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
    }
}

fn lock_running(m: &Mutex<Option<Running>>) -> MutexGuard<'_, Option<Running>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Creates the server's certificate and private key in `pki_dir` unless both
/// exist: RSA 2048, valid for a year, alternative names `localhost`,
/// `127.0.0.1`, the host name and `host`. Returns the certificate path.
async fn ensure_certificate(cfg: &SimConfig, pki_dir: &Path, url: &str) -> Result<PathBuf, Error> {
    let cert = pki_dir.join("own").join("cert.der");
    let key = pki_dir.join("private").join("private.pem");
    if tokio::fs::try_exists(&cert).await.unwrap_or(false)
        && tokio::fs::try_exists(&key).await.unwrap_or(false)
    {
        return Ok(cert);
    }
    let pki_failed = |reason: String| Error::PkiFailed {
        path: pki_dir.to_path_buf(),
        reason,
    };
    for dir in ["own", "private"] {
        tokio::fs::create_dir_all(pki_dir.join(dir))
            .await
            .map_err(|e| pki_failed(e.to_string()))?;
    }
    let description = ApplicationDescription {
        application_uri: UAString::from(cfg.application_uri.as_str()),
        product_uri: UAString::from(cfg.application_uri.as_str()),
        application_name: LocalizedText::new("", &cfg.application_name),
        application_type: ApplicationType::Server,
        gateway_server_uri: UAString::null(),
        discovery_profile_uri: UAString::null(),
        discovery_urls: Some(vec![UAString::from(url)]),
    };
    let extra = match cfg.host.as_str() {
        "localhost" | "127.0.0.1" | "0.0.0.0" | "::" | "::1" => None,
        other => Some(vec![other.to_owned()]),
    };
    let (cert_path, key_path) = (cert.clone(), key);
    // Key generation takes CPU seconds; the host name lookup may block.
    tokio::task::spawn_blocking(move || {
        let data = X509Data::from((description, extra));
        CertificateStore::create_certificate_and_key(&data, false, &cert_path, &key_path)
            .map(|_| ())
    })
    .await
    .map_err(|e| pki_failed(e.to_string()))?
    .map_err(pki_failed)?;
    Ok(cert)
}

async fn bind(addr: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::ListenFailed {
            addr: addr.to_owned(),
            source,
        })
}

fn check_security(cfg: &SimConfig) -> Result<(), Error> {
    let s = &cfg.security;
    if s.endpoints.is_empty() {
        return Err(Error::ConfigInvalid(
            "security.endpoints is empty".to_owned(),
        ));
    }
    if !s.anonymous && s.users.is_empty() {
        return Err(Error::ConfigInvalid(
            "security: anonymous is off and there are no users".to_owned(),
        ));
    }
    for (i, u) in s.users.iter().enumerate() {
        if u.username.is_empty() {
            return Err(Error::ConfigInvalid(format!(
                "security.users[{i}]: empty username"
            )));
        }
        if s.users[..i].iter().any(|o| o.username == u.username) {
            return Err(Error::ConfigInvalid(format!(
                "security.users: {} is listed twice",
                u.username
            )));
        }
    }
    Ok(())
}

impl Inner {
    /// A fresh async-opcua server for this configuration.
    fn server_builder(&self) -> ServerBuilder {
        let cfg = &self.cfg;
        let mut b = ServerBuilder::new()
            .application_name(cfg.application_name.as_str())
            .application_uri(cfg.application_uri.as_str())
            .product_uri(cfg.application_uri.as_str())
            .pki_dir(&self.pki_dir)
            .create_sample_keypair(false)
            .trust_client_certs(cfg.security.trust_client_certs)
            .host(cfg.host.as_str())
            .port(self.addr.port())
            .discovery_urls(vec![self.url.clone()])
            .diagnostics_enabled(false)
            .token(self.shutdown.child_token())
            .with_node_manager(nodes::builder(self.shared.clone()));
        let mut token_ids: Vec<String> = Vec::new();
        if cfg.security.anonymous {
            token_ids.push(ANONYMOUS_USER_TOKEN_ID.to_owned());
        }
        for (i, u) in cfg.security.users.iter().enumerate() {
            let id = format!("user{i}");
            b = b.add_user_token(
                &id,
                ServerUserToken::user_pass(u.username.as_str(), u.password.as_str()),
            );
            token_ids.push(id);
        }
        for kind in &cfg.security.endpoints {
            let (id, policy, mode) = match kind {
                EndpointKind::None => ("none", SecurityPolicy::None, MessageSecurityMode::None),
                EndpointKind::Basic256Sha256Sign => (
                    "basic256sha256_sign",
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::Sign,
                ),
                EndpointKind::Basic256Sha256SignAndEncrypt => (
                    "basic256sha256_sign_encrypt",
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::SignAndEncrypt,
                ),
            };
            b = b.add_endpoint(id, ServerEndpoint::new("/", policy, mode, &token_ids));
        }
        let limits = b.limits_mut();
        limits.operational.max_nodes_per_read = cfg.limits.max_nodes_per_read;
        limits.operational.max_nodes_per_write = cfg.limits.max_nodes_per_write;
        limits.max_sessions = cfg.limits.max_sessions;
        b
    }

    /// Builds a server and starts it on `listener`.
    fn launch(&self, listener: TcpListener) -> Result<Running, Error> {
        // `build` reads the certificate and key (a few KB) synchronously; the
        // expensive key generation already ran on a blocking thread.
        let (server, handle) = self
            .server_builder()
            .build()
            .map_err(Error::ServerBuildFailed)?;
        let index = handle.get_namespace_index(&self.cfg.namespace);
        if index != Some(SIM_NAMESPACE) {
            handle.cancel();
            return Err(Error::ServerBuildFailed(format!(
                "namespace {} got index {index:?}, not {SIM_NAMESPACE}",
                self.cfg.namespace
            )));
        }
        let Some(nodes) = handle.node_managers().get_of_type::<SimNodeManager>() else {
            handle.cancel();
            return Err(Error::ServerBuildFailed(
                "the simulated node manager is missing".to_owned(),
            ));
        };
        let addr = self.addr;
        let server = self.tasks.spawn(async move {
            if let Err(e) = server.run_with(listener).await {
                tracing::error!(%addr, error = %e, "OPC-UA server failed");
            }
        });
        Ok(Running {
            handle,
            nodes,
            server,
        })
    }

    /// The current server's node manager and subscriptions (none while a
    /// `drop` restarts it).
    fn current(&self) -> Option<(Arc<SimNodeManager>, Arc<SubscriptionCache>)> {
        lock_running(&self.running)
            .as_ref()
            .map(|r| (r.nodes.clone(), r.handle.subscriptions().clone()))
    }

    /// Evaluates the patterns and publishes changed values.
    fn tick(&self) {
        let Some((nodes, subscriptions)) = self.current() else {
            nodes::lock(&self.shared.model).tick();
            return;
        };
        let mut space = nodes.address_space().write();
        let ids: Vec<NodeId> = {
            let mut model = nodes::lock(&self.shared.model);
            for i in model.tick() {
                let p = &model.points[i];
                if !p.status.is_bad() {
                    nodes::set_node_value(&mut space, &p.id, p.data_value());
                }
            }
            // Every node, not only the changed ones: async-opcua's server
            // holds back a change that comes sooner than an item's sampling
            // interval after the previous one, and forgets it if the item
            // is not notified again (a `bad`, `good` or `set` command, or a
            // client write, on a node whose pattern no longer moves). An
            // unchanged value is filtered out by the server as before.
            model.points.iter().map(|p| p.id.clone()).collect()
        };
        nodes::notify(&subscriptions, &space, &ids);
    }

    /// Copies every value and status from the model to the address space.
    fn sync_all(&self) {
        let Some((nodes, subscriptions)) = self.current() else {
            return;
        };
        let mut space = nodes.address_space().write();
        let ids: Vec<NodeId> = {
            let model = nodes::lock(&self.shared.model);
            model
                .points
                .iter()
                .map(|p| {
                    nodes::set_node_value(&mut space, &p.id, p.data_value());
                    p.id.clone()
                })
                .collect()
        };
        nodes::notify(&subscriptions, &space, &ids);
    }

    /// Changes one point and publishes it.
    fn change(
        &self,
        node: &str,
        f: impl FnOnce(&mut Point) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let id = model::parse_node_id(node).map_err(Error::InvalidArgument)?;
        let current = self.current();
        let mut space = current.as_ref().map(|(n, _)| n.address_space().write());
        let dv = {
            let mut model = nodes::lock(&self.shared.model);
            let i = model
                .find(&id)
                .ok_or_else(|| Error::UnknownNode(node.to_owned()))?;
            let p = &mut model.points[i];
            f(p)?;
            p.data_value()
        };
        if let (Some(space), Some((_, subscriptions))) = (space.as_mut(), current.as_ref()) {
            nodes::set_node_value(space, &id, dv);
            nodes::notify(subscriptions, space, &[id]);
        }
        Ok(())
    }
}

impl Simulator {
    /// Checks the configuration, creates the server certificate if the PKI
    /// directory has none, binds the port and starts serving. Errors name the
    /// node or setting at fault.
    pub async fn start(cfg: SimConfig) -> Result<Simulator, Error> {
        let (layout, mut model) = model::build(&cfg).map_err(Error::ConfigInvalid)?;
        check_security(&cfg)?;
        let pki_dir = std::path::absolute(&cfg.pki_dir).map_err(|e| Error::PkiFailed {
            path: cfg.pki_dir.clone(),
            reason: e.to_string(),
        })?;
        let listener = bind(&format!("{}:{}", cfg.host, cfg.port)).await?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::ListenFailed {
                addr: format!("{}:{}", cfg.host, cfg.port),
                source,
            })?;
        let url = format!("opc.tcp://{}:{}/", cfg.host, addr.port());
        let cert_path = ensure_certificate(&cfg, &pki_dir, &url).await?;
        model.restart_clock();
        let shared = Arc::new(Shared {
            namespace: cfg.namespace.clone(),
            layout,
            model: Mutex::new(model),
            latency_ms: AtomicU64::new(cfg.latency_ms),
        });
        let tick = Duration::from_millis(cfg.tick_ms);
        let inner = Arc::new(Inner {
            cfg,
            shared,
            addr,
            url,
            cert_path,
            pki_dir,
            running: Mutex::new(None),
            restart: tokio::sync::Mutex::new(()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let running = inner.launch(listener)?;
        *lock_running(&inner.running) = Some(running);
        let ticker = inner.clone();
        inner.tasks.spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    () = ticker.shutdown.cancelled() => break,
                    _ = interval.tick() => ticker.tick(),
                }
            }
        });
        Ok(Simulator { inner })
    }

    /// `opc.tcp://HOST:PORT/`, the endpoint URL of every endpoint.
    pub fn endpoint_url(&self) -> &str {
        &self.inner.url
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The server's certificate (DER), `<pkiDir>/own/cert.der`.
    pub fn certificate_path(&self) -> &Path {
        &self.inner.cert_path
    }

    /// The PKI directory (absolute).
    pub fn pki_dir(&self) -> &Path {
        &self.inner.pki_dir
    }

    /// The namespace index of the simulated nodes (always 2).
    pub fn namespace_index(&self) -> u16 {
        SIM_NAMESPACE
    }

    /// A variable's current DataValue (what a Read would return), from the
    /// simulator's state. `node` as in the configuration (`s=..`, `ns=2;i=..`).
    pub fn get(&self, node: &str) -> Result<DataValue, Error> {
        let id = model::parse_node_id(node).map_err(Error::InvalidArgument)?;
        let model = nodes::lock(&self.inner.shared.model);
        let i = model
            .find(&id)
            .ok_or_else(|| Error::UnknownNode(node.to_owned()))?;
        Ok(model.points[i].data_value())
    }

    /// Sets a value as a client write would (read-only nodes too); the
    /// node's pattern stops. `value` is command text: JSON (`21.5`, `true`,
    /// `[1, 2]`, `"text"`) or, for text-like types, the text itself.
    pub fn set(&self, node: &str, value: &str) -> Result<(), Error> {
        self.inner.change(node, |p| {
            let v = value::from_text(p.ty, p.array, value).map_err(Error::InvalidArgument)?;
            p.set(v);
            Ok(())
        })
    }

    /// Makes reads of a node answer `status` (a Bad or Uncertain status
    /// code name such as `BadSensorFailure`); writes to it get a Bad status
    /// back. The pattern keeps running underneath.
    pub fn bad(&self, node: &str, status: &str) -> Result<(), Error> {
        let code = model::parse_status(status).map_err(Error::InvalidArgument)?;
        self.inner.change(node, |p| {
            p.set_status(code);
            Ok(())
        })
    }

    /// Clears a fault set by [`Simulator::bad`].
    pub fn good(&self, node: &str) -> Result<(), Error> {
        self.inner.change(node, |p| {
            p.set_status(StatusCode::Good);
            Ok(())
        })
    }

    /// Delays every later Read and Write of simulated nodes by `latency`
    /// (each request waits on its own; zero turns it off).
    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.inner.shared.latency_ms.store(ms, Ordering::Relaxed);
    }

    /// Closes every connection and session: the server stops (closing its
    /// connections) and a new one starts on the same port with the same
    /// values, certificate and settings. Clients must reconnect and create new
    /// sessions (and subscriptions). While it restarts (typically well under a
    /// second) connections are refused.
    ///
    /// Cancel safety: not cancellation safe; if the future is dropped midway,
    /// the server may stay stopped until the next call.
    pub async fn drop_connections(&self) -> Result<(), Error> {
        let _one_at_a_time = self.inner.restart.lock().await;
        let old = lock_running(&self.inner.running).take();
        if let Some(old) = old {
            old.handle.cancel();
            let mut server = old.server;
            if tokio::time::timeout(STOP_GRACE, &mut server).await.is_err() {
                tracing::warn!("server did not stop within {STOP_GRACE:?}; aborting it");
                server.abort();
            }
        }
        let addr = self.inner.addr.to_string();
        let mut attempt = 0;
        let listener = loop {
            match bind(&addr).await {
                Ok(l) => break l,
                Err(e) if attempt >= 50 => return Err(e),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let running = self.inner.launch(listener)?;
        *lock_running(&self.inner.running) = Some(running);
        self.inner.sync_all();
        Ok(())
    }

    /// Stops the server and the tick task and waits for them (at most 5 s).
    pub async fn shutdown(self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(STOP_GRACE, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("simulator tasks did not stop within {STOP_GRACE:?}");
        }
    }
}
