//! Sessions, shared: one OPC-UA session per endpoint (URL, security policy
//! and mode, user identity, client certificate) for every device that names
//! the same one, as Modbus devices behind one gateway share a connection.
//!
//! A session is opened by the first device that needs it and lives while a
//! device uses it. async-opcua's own reconnect loop is not used: when the
//! connection or the session is lost (the server closes it, keep-alives go
//! unanswered, a request says the session is gone), the session is marked
//! lost, every device on it gets a link error, and the SDK reconnects each
//! with its backoff; the first to come back opens a new session and the
//! others join it, so subscriptions and monitored items are created anew on
//! the new session.
//!
//! Certificates live in the PKI directory ([`crate::pki`]): a server
//! certificate that is not trusted is saved in `rejected/` and the
//! connection refused, with a message naming the file to move into
//! `trusted/` (or the device's `remoteCertificate` to set).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures::StreamExt;
use mapper_sdk::{DriverError, DriverResult};
use opcua::client::{ClientBuilder, ClientEndpoint, IdentityToken, Session, SessionPollResult};
use opcua::crypto::{CertificateStore, SecurityPolicy, X509};
use opcua::types::{
    DataValue, EndpointDescription, NamespaceMap, NodeId, ReadValueId, StatusCode,
    TimestampsToReturn, UAString, UserTokenType, VariableId, Variant,
};
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::{Endpoint, Identity, mode_name, policy_name, read_password};
use crate::error::service_error;
use crate::node::NodeRef;
use crate::pki::Pki;

/// The mapper's OPC-UA application URI (in its generated certificate and
/// in every session it opens).
pub const APPLICATION_URI: &str = "urn:edge-dmi:mapper-opcua";
/// The mapper's OPC-UA application name.
pub const APPLICATION_NAME: &str = "mapper-opcua";
/// How long a closing session gets to say goodbye to the server.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Interval of the session's keep-alive reads.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered keep-alives after which the session is closed (and lost).
pub const KEEP_ALIVE_FAILURES: u64 = 2;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One open session and what was learned when it opened.
pub struct Conn {
    session: Arc<Session>,
    endpoint: Endpoint,
    lost: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    namespaces: NamespaceMap,
    /// The server's `MaxNodesPerRead` operation limit (none: no limit or not readable).
    server_max_nodes_per_read: Option<u32>,
    /// Service calls sent on this session.
    requests: AtomicU64,
    /// Node types (for writes), read once per session.
    pub(crate) types: Mutex<HashMap<NodeId, crate::convert::NodeType>>,
    _stop: DropGuard,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("endpoint", &self.endpoint)
            .field("lost", &self.lost.is_cancelled())
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// The session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// What the session was opened with.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Whether the session is gone.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Resolves when the session is gone.
    pub fn lost(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.lost.clone().cancelled_owned()
    }

    /// Why the session is gone.
    pub fn lost_reason(&self) -> String {
        lock(&self.reason)
            .clone()
            .unwrap_or_else(|| format!("the session to {} was lost", self.endpoint.url))
    }

    /// Marks the session lost (a request said it is gone).
    pub fn mark_lost(&self, why: &str) {
        if !self.lost.is_cancelled() {
            tracing::info!(endpoint = %self.endpoint, reason = why, "session lost");
            lock(&self.reason).get_or_insert_with(|| why.to_owned());
            self.lost.cancel();
        }
    }

    /// The link error devices get once the session is gone.
    pub fn lost_error(&self) -> DriverError {
        DriverError::transport(self.lost_reason())
    }

    /// The server's `MaxNodesPerRead` limit, when it gives one.
    pub fn server_max_nodes_per_read(&self) -> Option<u32> {
        self.server_max_nodes_per_read
    }

    /// Service calls sent on this session.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Counts one service call.
    pub(crate) fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The NodeId of a node reference on this server.
    ///
    /// # Errors
    /// [`DriverError::Device`] when the namespace URI is not in the server's
    /// namespace array.
    pub fn resolve(&self, node: &NodeRef) -> DriverResult<NodeId> {
        match node {
            NodeRef::Id(id) => Ok(id.clone()),
            NodeRef::Uri { uri, identifier } => match self.namespaces.get_index(uri) {
                Some(ns) => Ok(NodeId::new(ns, identifier.clone())),
                None => Err(DriverError::Device(mapper_sdk::DeviceFault::new(format!(
                    "namespace URI `{uri}` is not in the server's namespace array"
                )))),
            },
        }
    }

    /// A failed service call as a driver error; link failures mark the
    /// session lost.
    pub(crate) fn failed(&self, e: &opcua::types::Error) -> DriverError {
        let err = service_error(e, self.endpoint.timeout);
        if err.is_link_failure() {
            self.mark_lost(&err.to_string());
        }
        err
    }

    /// One Read call of `nodes` (the Value attribute unless a node says
    /// otherwise).
    ///
    /// Cancellation safe: a dropped call leaves the session usable; its
    /// answer, if one comes, is discarded by async-opcua.
    ///
    /// # Errors
    /// As [`crate::error::service_error`]; a link failure marks the session lost.
    pub async fn read_values(&self, nodes: &[ReadValueId]) -> DriverResult<Vec<DataValue>> {
        if self.is_lost() {
            return Err(self.lost_error());
        }
        self.count();
        let values = self
            .session
            .read(nodes, TimestampsToReturn::Neither, 0.0)
            .await
            .map_err(|e| self.failed(&e))?;
        if values.len() != nodes.len() {
            let e = DriverError::Protocol(format!(
                "asked to read {} nodes, got {} results",
                nodes.len(),
                values.len()
            ));
            self.mark_lost(&e.to_string());
            return Err(e);
        }
        Ok(values)
    }
}

/// What devices on one endpoint share: the session of the moment.
#[derive(Debug)]
pub struct Slot {
    endpoint: Endpoint,
    current: tokio::sync::Mutex<Option<Arc<Conn>>>,
    opened: AtomicU64,
}

impl Slot {
    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sessions opened for this endpoint so far.
    pub fn sessions_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

/// Every endpoint in use by one driver value.
#[derive(Debug)]
pub struct Pool {
    pki: Arc<Pki>,
    slots: Mutex<HashMap<Endpoint, Weak<Slot>>>,
}

impl Pool {
    /// A pool whose sessions use the PKI directory `pki_dir`.
    pub fn new(pki_dir: impl Into<PathBuf>) -> Self {
        Self {
            pki: Arc::new(Pki::new(pki_dir)),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The PKI directory.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Endpoints with at least one device.
    pub fn len(&self) -> usize {
        lock(&self.slots)
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// Whether no endpoint is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, endpoint: &Endpoint) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        slots.retain(|_, w| w.strong_count() > 0);
        if let Some(s) = slots.get(endpoint).and_then(Weak::upgrade) {
            return s;
        }
        let s = Arc::new(Slot {
            endpoint: endpoint.clone(),
            current: tokio::sync::Mutex::new(None),
            opened: AtomicU64::new(0),
        });
        slots.insert(endpoint.clone(), Arc::downgrade(&s));
        s
    }

    /// The session for `endpoint`: the open one, or a new one.
    ///
    /// Cancellation safe: a dropped call leaves no half-open session (its
    /// event loop stops with it).
    ///
    /// # Errors
    /// [`DriverError::Config`] for what the server cannot fix (files that
    /// cannot be read, a PKI directory that cannot be written with security
    /// on); [`DriverError::Transport`] when the server cannot be reached,
    /// offers no matching endpoint, does not trust this mapper, is not
    /// trusted, or refuses the user; [`DriverError::Timeout`] when it does
    /// not answer within the request timeout.
    pub async fn open(&self, endpoint: &Endpoint) -> DriverResult<(Arc<Slot>, Arc<Conn>)> {
        let slot = self.slot(endpoint);
        let mut current = slot.current.lock().await;
        if let Some(c) = current.as_ref()
            && !c.is_lost()
        {
            return Ok((slot.clone(), c.clone()));
        }
        *current = None;
        let conn = Arc::new(open_session(&self.pki, endpoint).await?);
        slot.opened.fetch_add(1, Ordering::Relaxed);
        *current = Some(conn.clone());
        drop(current);
        Ok((slot, conn))
    }
}

fn endpoints_text(endpoints: &[EndpointDescription]) -> String {
    let mut seen: Vec<String> = endpoints
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                policy_name(SecurityPolicy::from_uri(e.security_policy_uri.as_ref())),
                mode_name(e.security_mode)
            )
        })
        .collect();
    seen.dedup();
    seen.join(", ")
}

fn token_type_of(identity: &Identity) -> UserTokenType {
    match identity {
        Identity::Anonymous => UserTokenType::Anonymous,
        Identity::UserName { .. } => UserTokenType::UserName,
        Identity::X509 { .. } => UserTokenType::Certificate,
    }
}

fn token_name(t: UserTokenType) -> &'static str {
    match t {
        UserTokenType::Anonymous => "Anonymous",
        UserTokenType::UserName => "UserName",
        UserTokenType::Certificate => "Certificate",
        UserTokenType::IssuedToken => "IssuedToken",
    }
}

/// Picks the server's endpoint for `ep`'s policy and mode, offering the
/// identity's token type.
fn choose(endpoints: &[EndpointDescription], ep: &Endpoint) -> DriverResult<EndpointDescription> {
    let policy = ep.policy.policy();
    let mode = ep.mode.mode();
    let matching: Vec<&EndpointDescription> = endpoints
        .iter()
        .filter(|e| {
            e.security_mode == mode
                && SecurityPolicy::from_uri(e.security_policy_uri.as_ref()) == policy
        })
        .collect();
    if matching.is_empty() {
        return Err(DriverError::transport(format!(
            "{} offers no endpoint with securityPolicy {} and securityMode {} (it offers {})",
            ep.url,
            ep.policy.0,
            ep.mode.0,
            endpoints_text(endpoints)
        )));
    }
    let wanted = token_type_of(&ep.identity);
    let offers = |e: &EndpointDescription| match &e.user_identity_tokens {
        None => wanted == UserTokenType::Anonymous,
        Some(t) => t.iter().any(|p| p.token_type == wanted),
    };
    let Some(found) = matching.iter().find(|e| offers(e)) else {
        let offered: Vec<&str> = matching
            .iter()
            .flat_map(|e| e.user_identity_tokens.iter().flatten())
            .map(|p| token_name(p.token_type))
            .collect();
        return Err(DriverError::transport(format!(
            "{} ({}/{}) does not accept {} user identity tokens (it accepts {})",
            ep.url,
            ep.policy.0,
            ep.mode.0,
            token_name(wanted),
            if offered.is_empty() {
                "none".to_owned()
            } else {
                offered.join(", ")
            }
        )));
    };
    let mut chosen = (*found).clone();
    // The server may advertise a host name the mapper cannot reach: use the
    // configured URL (async-opcua's matching does the same).
    chosen.endpoint_url = UAString::from(ep.url.as_str());
    Ok(chosen)
}

fn identity_token(identity: &Identity) -> DriverResult<IdentityToken> {
    Ok(match identity {
        Identity::Anonymous => IdentityToken::Anonymous,
        Identity::UserName {
            user,
            password_file,
        } => IdentityToken::new_user_name(user.clone(), read_password(password_file)?),
        Identity::X509 {
            certificate,
            private_key,
        } => IdentityToken::new_x509_path(certificate, private_key).map_err(|e| {
            DriverError::Config(format!(
                "`userCertificate` {} / `userPrivateKey` {}: {e}",
                certificate.display(),
                private_key.display()
            ))
        })?,
    })
}

/// Explains a failed session activation.
fn connect_failure(
    pki: &Pki,
    ep: &Endpoint,
    chosen: &EndpointDescription,
    status: StatusCode,
) -> DriverError {
    let name = status.sub_code();
    let untrusted = [
        StatusCode::BadCertificateUntrusted,
        StatusCode::BadSecurityChecksFailed,
        StatusCode::BadCertificateInvalid,
    ]
    .iter()
    .any(|c| c.sub_code() as u32 == name as u32);
    if untrusted && ep.policy.policy() != SecurityPolicy::None {
        // Did this side reject the server's certificate?
        if let Ok(cert) = X509::from_byte_string(&chosen.server_certificate) {
            let file = CertificateStore::cert_file_name(&cert);
            let rejected = pki.rejected_dir().join(&file);
            if rejected.exists() {
                return DriverError::transport(format!(
                    "the server certificate of {} is not trusted ({name}); it was saved as {}: move it to {} to trust it, or set the device's `remoteCertificate` to the server's certificate file",
                    ep.url,
                    rejected.display(),
                    pki.trusted_dir().display()
                ));
            }
        }
        let own = match &ep.client_keys {
            Some((c, _)) => c.clone(),
            None => pki.own_certificate(),
        };
        return DriverError::transport(format!(
            "{} refused the secure channel ({name}); the server must trust this mapper's certificate {}",
            ep.url,
            own.display()
        ));
    }
    let identity_refused = [
        StatusCode::BadIdentityTokenRejected,
        StatusCode::BadIdentityTokenInvalid,
        StatusCode::BadUserAccessDenied,
        StatusCode::BadUserSignatureInvalid,
    ]
    .iter()
    .any(|c| c.sub_code() as u32 == name as u32);
    if identity_refused {
        let who = match &ep.identity {
            Identity::Anonymous => "anonymous access".to_owned(),
            Identity::UserName { user, .. } => format!("user `{user}`"),
            Identity::X509 { certificate, .. } => {
                format!("the user certificate {}", certificate.display())
            }
        };
        return DriverError::transport(format!("{} refused {who} ({name})", ep.url));
    }
    if name as u32 == StatusCode::BadTimeout.sub_code() as u32 {
        return DriverError::Timeout(ep.timeout);
    }
    DriverError::transport(format!("opening a session to {} failed: {name}", ep.url))
}

async fn open_session(pki: &Arc<Pki>, ep: &Endpoint) -> DriverResult<Conn> {
    let secure = ep.policy.policy() != SecurityPolicy::None;
    if ep.client_keys.is_none()
        && let Err(e) = pki.ensure_own_keys().await
    {
        if secure {
            return Err(DriverError::Config(format!(
                "{e} (the mapper keeps its certificate under its state directory: set --state-dir or data.state_dir to a writable directory)"
            )));
        }
        tracing::debug!(error = %e, "no PKI directory; fine without security");
    }
    if let Some(remote) = &ep.remote_certificate {
        pki.trust(remote).await?;
    }
    let mut builder = ClientBuilder::new()
        .application_name(APPLICATION_NAME)
        .application_uri(APPLICATION_URI)
        .product_uri(APPLICATION_URI)
        .pki_dir(pki.dir())
        .create_sample_keypair(false)
        .trust_server_certs(false)
        .verify_server_certs(false)
        .session_retry_limit(0)
        .request_timeout(ep.timeout)
        .publish_timeout(ep.timeout.max(Duration::from_secs(10)))
        .session_timeout(u32::try_from(ep.session_timeout.as_millis()).unwrap_or(u32::MAX))
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .max_failed_keep_alive_count(KEEP_ALIVE_FAILURES)
        .recreate_subscriptions(false)
        .session_name(APPLICATION_NAME)
        // Unused (sessions are built from the server's own description), but
        // an empty list makes async-opcua warn on every connect.
        .endpoint(APPLICATION_NAME, ClientEndpoint::new(ep.url.as_str()))
        .default_endpoint(APPLICATION_NAME);
    if let Some((cert, key)) = &ep.client_keys {
        builder = builder.certificate_path(cert).private_key_path(key);
    }
    // Client::new reads the certificate files.
    let mut client = tokio::task::spawn_blocking(move || builder.client())
        .await
        .map_err(|e| DriverError::Config(format!("client set-up: {e}")))?
        .map_err(|e| DriverError::Config(format!("client set-up: {}", e.join("; "))))?;
    let endpoints = tokio::time::timeout(
        ep.timeout,
        client.get_server_endpoints_from_url(ep.url.as_str()),
    )
    .await
    .map_err(|_| DriverError::Timeout(ep.timeout))?
    .map_err(|e| DriverError::transport(format!("{}: GetEndpoints failed: {e}", ep.url)))?;
    let chosen = choose(&endpoints, ep)?;
    let identity = identity_token(&ep.identity)?;
    let (session, event_loop) = client
        .connect_to_endpoint_directly(chosen.clone(), identity)
        .map_err(|e| DriverError::Config(format!("`url` {}: {e}", ep.url)))?;
    let stop = CancellationToken::new();
    let lost = CancellationToken::new();
    let reason = Arc::new(Mutex::new(None));
    let (ready_tx, ready_rx) = oneshot::channel();
    tokio::spawn(drive(
        event_loop,
        session.clone(),
        ready_tx,
        stop.clone(),
        lost.clone(),
        reason.clone(),
        ep.to_string(),
    ));
    let stop = stop.drop_guard();
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(status)) => return Err(connect_failure(pki, ep, &chosen, status)),
        Err(_) => {
            return Err(DriverError::transport(format!(
                "the session to {} ended while opening",
                ep.url
            )));
        }
    }
    let mut conn = Conn {
        session,
        endpoint: ep.clone(),
        lost,
        reason,
        namespaces: NamespaceMap::new(),
        server_max_nodes_per_read: None,
        requests: AtomicU64::new(0),
        types: Mutex::new(HashMap::new()),
        _stop: stop,
    };
    // What the server says about itself, in one Read.
    let about = [
        ReadValueId::from(NodeId::from(VariableId::Server_NamespaceArray)),
        ReadValueId::from(NodeId::from(
            VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
        )),
    ];
    let values = conn.read_values(&about).await?;
    if let Some(Variant::Array(a)) = &values[0].value {
        match NamespaceMap::new_from_variant_array(&a.values) {
            Ok(map) => {
                conn.session.set_namespaces(map.clone());
                conn.namespaces = map;
            }
            Err(e) => {
                tracing::warn!(endpoint = %ep, error = %e, "the server's namespace array does not decode")
            }
        }
    }
    conn.server_max_nodes_per_read = match &values[1].value {
        Some(Variant::UInt32(n)) if *n > 0 => Some(*n),
        _ => None,
    };
    tracing::info!(
        endpoint = %ep,
        max_nodes_per_read = ?conn.server_max_nodes_per_read,
        "session open"
    );
    Ok(conn)
}

/// Polls the session's event loop: reports when the session is open (or
/// could not be opened), marks it lost when the connection goes, and closes
/// it politely when `stop` is cancelled (the last device let go of it).
async fn drive<T>(
    event_loop: opcua::client::SessionEventLoop<T>,
    session: Arc<Session>,
    ready: oneshot::Sender<Result<(), StatusCode>>,
    stop: CancellationToken,
    lost: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    endpoint: String,
) where
    T: opcua::client::transport::Connector + Send + Sync + 'static,
{
    let stream = event_loop.enter();
    futures::pin_mut!(stream);
    let mark = |why: String| {
        lock(&reason).get_or_insert(why);
        lost.cancel();
    };
    let mut ready = Some(ready);
    loop {
        let item = tokio::select! {
            _ = stop.cancelled() => break,
            item = stream.next() => item,
        };
        match item {
            Some(Ok(SessionPollResult::Reconnected(_))) => {
                if let Some(r) = ready.take() {
                    // No reconnects by async-opcua: the SDK owns the backoff.
                    session.disable_reconnects();
                    let _ = r.send(Ok(()));
                }
            }
            Some(Ok(SessionPollResult::ConnectionLost(code))) => {
                mark(format!(
                    "the connection to {endpoint} was lost ({})",
                    code.sub_code()
                ));
                return;
            }
            Some(Ok(SessionPollResult::ReconnectFailed(code))) | Some(Err(code)) => {
                match ready.take() {
                    Some(r) => {
                        let _ = r.send(Err(code));
                    }
                    None => mark(format!(
                        "the session to {endpoint} failed ({})",
                        code.sub_code()
                    )),
                }
                lost.cancel();
                return;
            }
            Some(Ok(SessionPollResult::Subscription(
                opcua::client::SubscriptionActivity::FatalFailure(code),
            ))) => {
                tracing::warn!(endpoint = %endpoint, status = %code, "subscription failure");
            }
            Some(Ok(_)) => {}
            None => {
                if ready.is_none() {
                    mark(format!("the session to {endpoint} was closed"));
                }
                lost.cancel();
                return;
            }
        }
    }
    // Stopped: close the session while the event loop still runs.
    lost.cancel();
    if ready.is_none() {
        let close = session.disconnect();
        futures::pin_mut!(close);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            loop {
                tokio::select! {
                    _ = &mut close => return,
                    item = stream.next() => if item.is_none() { return },
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModeKey, PolicyKey};
    use opcua::types::{MessageSecurityMode, UserTokenPolicy};

    fn ep(policy: &'static str, mode: &'static str, identity: Identity) -> Endpoint {
        Endpoint {
            url: "opc.tcp://127.0.0.1:4840/x".into(),
            policy: PolicyKey(policy),
            mode: ModeKey(mode),
            identity,
            client_keys: None,
            remote_certificate: None,
            timeout: Duration::from_secs(1),
            session_timeout: Duration::from_secs(60),
        }
    }

    fn offered(
        policy: SecurityPolicy,
        mode: MessageSecurityMode,
        tokens: &[UserTokenType],
    ) -> EndpointDescription {
        EndpointDescription {
            endpoint_url: "opc.tcp://server-host:4840/x".into(),
            security_policy_uri: policy.to_uri().into(),
            security_mode: mode,
            user_identity_tokens: Some(
                tokens
                    .iter()
                    .map(|t| UserTokenPolicy {
                        token_type: *t,
                        ..UserTokenPolicy::anonymous()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn endpoints_are_chosen_by_policy_mode_and_token() {
        let server = vec![
            offered(
                SecurityPolicy::None,
                MessageSecurityMode::None,
                &[UserTokenType::Anonymous],
            ),
            offered(
                SecurityPolicy::Basic256Sha256,
                MessageSecurityMode::SignAndEncrypt,
                &[UserTokenType::UserName],
            ),
        ];
        let c = choose(&server, &ep("None", "None", Identity::Anonymous)).unwrap();
        assert_eq!(c.endpoint_url.as_ref(), "opc.tcp://127.0.0.1:4840/x");
        let user = Identity::UserName {
            user: "u".into(),
            password_file: "/x".into(),
        };
        let c = choose(
            &server,
            &ep("Basic256Sha256", "SignAndEncrypt", user.clone()),
        )
        .unwrap();
        assert_eq!(c.security_mode, MessageSecurityMode::SignAndEncrypt);
        let e = choose(&server, &ep("Basic256Sha256", "Sign", user))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("offers no endpoint with securityPolicy Basic256Sha256 and securityMode Sign (it offers None/None, Basic256Sha256/SignAndEncrypt)"),
            "{e}"
        );
        let e = choose(
            &server,
            &ep("Basic256Sha256", "SignAndEncrypt", Identity::Anonymous),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("does not accept Anonymous user identity tokens (it accepts UserName)"),
            "{e}"
        );
    }
}
