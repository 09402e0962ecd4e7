//! The bridge's MQTT connection (rumqttc): one persistent client, two tasks.
//!
//! * **connection**: drives the client's event loop. It connects (a broker
//!   that is down at start is not an error), reconnects after any failure
//!   with [`edge_rt::Backoff`] from [`RECONNECT_MIN`] to [`RECONNECT_MAX`],
//!   and hands every message arriving on `.../twin/update` to
//!   [`super::handle_twin_update`]. Each connection is a clean session; the
//!   subscriptions are made again after every connect.
//! * **publisher**: turns the hub's accepted reports into messages
//!   ([`super::publications`]) and publishes them while connected, plus the
//!   answers to twin updates.
//!
//! Nothing here ever holds up the hub: reports reach the publisher through
//! the hub's change broadcast, a ring of [`crate::hub::CHANGE_QUEUE`]
//! changes that never blocks its sender. While the broker is unreachable or
//! slow the oldest changes are overwritten; they are counted, and the count
//! is logged at most once per [`DROP_LOG_INTERVAL`]. At most
//! [`REQUEST_QUEUE`] messages wait inside the client, so what is published
//! after a reconnect is recent.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use edge_rt::Backoff;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter,
    TlsConfiguration, Transport,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Publication, SUBSCRIPTIONS, handle_twin_update, publications};
use crate::config::MqttConfig;
use crate::hub::{Change, Hub};

/// First delay before reconnecting.
pub const RECONNECT_MIN: Duration = Duration::from_millis(500);
/// Longest delay between connection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// Messages waiting inside the MQTT client, at most.
pub const REQUEST_QUEUE: usize = 64;
/// Answers to twin updates waiting for the publisher, at most.
pub const REPLY_QUEUE: usize = 64;
/// Dropped messages are logged at most this often.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Largest message accepted from the broker, bytes.
pub const MAX_INCOMING_PACKET: usize = 1024 * 1024;
/// Largest message published, bytes (a larger one is dropped and logged).
pub const MAX_OUTGOING_PACKET: usize = 1024 * 1024;
/// MQTT keep-alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Connect timeout (TCP, TLS and CONNACK), seconds.
const CONNECT_TIMEOUT_SECS: u64 = 5;
/// While the broker stays unreachable, a warning at most this often (the
/// other attempts are logged at debug level).
const UNREACHABLE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// CA bundles tried for TLS when no `mqttCaFile` is configured (after
/// `$SSL_CERT_FILE`).
const SYSTEM_CA_FILES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// A broker address: `tcp://` or `mqtt://` (plain, port 1883 by default),
/// `ssl://`, `tls://` or `mqtts://` (TLS, port 8883 by default), with an
/// optional `user[:password]@`. No path or query.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// TLS or plain TCP.
    pub tls: bool,
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any (never shown by `Display` or `Debug`).
    pub password: Option<String>,
}

impl FromStr for BrokerUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            format!(
                "MQTT broker `{s}`: {why} (expected tcp://host:port, mqtt://, ssl:// or mqtts://)"
            )
        };
        let (scheme, rest) = s.trim().split_once("://").ok_or_else(|| bad("no scheme"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "tcp" | "mqtt" => false,
            "ssl" | "tls" | "mqtts" => true,
            _ => return Err(bad(&format!("unsupported scheme `{scheme}`"))),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(bad("a path or query is not supported"));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (Some(user.to_owned()), Some(pass.to_owned())),
                None => (Some(u.to_owned()), None),
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed `[` in the host"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after `]`"))?),
            };
            (host, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(&format!("bad port `{p}`")))?,
        };
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            username,
            password,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "ssl" } else { "tcp" };
        let user = self
            .username
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        if self.host.contains(':') {
            write!(f, "{scheme}://{user}[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{user}{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({self})")
    }
}

/// The bridge, built and ready to run (not connected yet).
pub struct MqttBridge {
    broker: BrokerUrl,
    qos: QoS,
    client: AsyncClient,
    eventloop: EventLoop,
    hub: Arc<Hub>,
    changes: broadcast::Receiver<Change>,
}

impl fmt::Debug for MqttBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttBridge")
            .field("broker", &self.broker)
            .field("qos", &self.qos)
            .finish()
    }
}

/// A default client id: unique per process.
fn default_client_id() -> String {
    use rand::RngExt;
    let n: u32 = rand::rng().random();
    format!("edgecore-dmi-{}-{n:08x}", std::process::id())
}

/// The rustls client configuration (ring) for `cfg`.
fn tls_config(cfg: &MqttConfig) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let ca_file: PathBuf = match &cfg.ca_file {
        Some(p) => p.clone(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .into_iter()
            .chain(SYSTEM_CA_FILES.iter().map(PathBuf::from))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                anyhow::anyhow!("no CA bundle found for the MQTT broker's TLS; set mqttCaFile")
            })?,
    };
    let read_certs = |p: &Path| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        CertificateDer::pem_file_iter(p)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading certificates from {}", p.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(read_certs(&ca_file)?);
    if roots.is_empty() {
        anyhow::bail!(
            "{}: no usable CA certificate ({unusable} unusable)",
            ca_file.display()
        );
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS set-up")?
    .with_root_certificates(roots);
    Ok(match (&cfg.cert_file, &cfg.key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading the private key {}", key.display()))?;
            builder
                .with_client_auth_cert(read_certs(cert)?, key)
                .context("the MQTT client certificate")?
        }
        _ => anyhow::bail!("mqttCertFile and mqttKeyFile must be given together"),
    })
}

impl MqttBridge {
    /// Builds the bridge for `cfg` (its broker must be set) around `hub`.
    /// Nothing connects yet; this already observes the hub's reports.
    ///
    /// # Errors
    /// A malformed broker URL, a QoS other than 0 or 1, or unreadable TLS
    /// files: configuration errors, reported before the server starts.
    pub fn new(cfg: &MqttConfig, hub: Arc<Hub>) -> anyhow::Result<Self> {
        let url = cfg
            .broker
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("no MQTT broker configured"))?;
        let broker: BrokerUrl = url.parse().map_err(anyhow::Error::msg)?;
        let qos = match cfg.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            q => anyhow::bail!("mqttQos must be 0 or 1, not {q}"),
        };
        let host = if broker.host.contains(':') {
            format!("[{}]", broker.host)
        } else {
            broker.host.clone()
        };
        let client_id = cfg.client_id.clone().unwrap_or_else(default_client_id);
        let mut opts = MqttOptions::new(client_id, host, broker.port);
        opts.set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        if let Some(user) = &broker.username {
            opts.set_credentials(user.clone(), broker.password.clone().unwrap_or_default());
        }
        if broker.tls {
            let tls = tls_config(cfg)?;
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(tls),
            )));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, REQUEST_QUEUE);
        let mut net = eventloop.network_options();
        net.set_connection_timeout(CONNECT_TIMEOUT_SECS);
        eventloop.set_network_options(net);
        let changes = hub.subscribe_changes();
        Ok(Self {
            broker,
            qos,
            client,
            eventloop,
            hub,
            changes,
        })
    }

    /// The broker it connects to.
    pub fn broker(&self) -> &BrokerUrl {
        &self.broker
    }

    /// Spawns the connection and the publisher on `tasks` (as critical tasks:
    /// they only end at `shutdown`).
    pub(crate) fn spawn(self, tasks: &TaskTracker, shutdown: &CancellationToken) {
        let (connected_tx, connected_rx) = watch::channel(0u64);
        let (reply_tx, reply_rx) = mpsc::channel(REPLY_QUEUE);
        tracing::info!(broker = %self.broker, qos = self.qos as u8, "MQTT bridge starting");
        let connection = Connection {
            broker: self.broker,
            client: self.client.clone(),
            eventloop: self.eventloop,
            hub: self.hub,
            connected: connected_tx,
            replies: reply_tx,
        };
        crate::app::spawn_critical(
            tasks,
            shutdown,
            "MQTT bridge connection",
            connection.run(shutdown.clone()),
        );
        let publisher = Publisher {
            client: self.client,
            qos: self.qos,
            changes: self.changes,
            replies: reply_rx,
            connected: connected_rx,
            drops: DropLog::new("the oldest reports"),
            skip_log: edge_rt::logging::Throttle::new(DROP_LOG_INTERVAL),
        };
        crate::app::spawn_critical(
            tasks,
            shutdown,
            "MQTT bridge publisher",
            publisher.run(shutdown.clone()),
        );
    }
}

/// Messages dropped, logged at most once per [`DROP_LOG_INTERVAL`].
#[derive(Debug)]
struct DropLog {
    /// What was dropped, for the log.
    what: &'static str,
    total: u64,
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl DropLog {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            total: 0,
            unlogged: 0,
            last_logged: None,
        }
    }

    fn add(&mut self, n: u64) {
        self.total = self.total.saturating_add(n);
        self.unlogged = self.unlogged.saturating_add(n);
        self.log_if_due();
    }

    fn log_if_due(&mut self) {
        if self.unlogged == 0
            || self
                .last_logged
                .is_some_and(|t| t.elapsed() < DROP_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            dropped = self.unlogged,
            total = self.total,
            "MQTT bridge dropped {}: the broker is unreachable or too slow",
            self.what
        );
        self.unlogged = 0;
        self.last_logged = Some(Instant::now());
    }
}

/// The connection task's state.
struct Connection {
    broker: BrokerUrl,
    client: AsyncClient,
    eventloop: EventLoop,
    hub: Arc<Hub>,
    /// The connection's generation (counts connects), 0 while disconnected.
    connected: watch::Sender<u64>,
    replies: mpsc::Sender<Publication>,
}

impl Connection {
    async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
        let mut generation = 0u64;
        let mut failures = 0u64;
        let mut last_warning: Option<Instant> = None;
        let mut dropped_replies = DropLog::new("answers to twin updates");
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                e = self.eventloop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    generation += 1;
                    tracing::info!(broker = %self.broker, after_failures = failures, "MQTT bridge connected");
                    backoff.reset();
                    failures = 0;
                    last_warning = None;
                    self.connected.send_replace(generation);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(reply) = handle_twin_update(&self.hub, &p.topic, &p.payload)
                        && self.replies.try_send(reply).is_err()
                    {
                        dropped_replies.add(1);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let was_connected = *self.connected.borrow() != 0;
                    self.connected.send_replace(0);
                    failures += 1;
                    let delay = backoff.next_delay();
                    if was_connected {
                        tracing::warn!(broker = %self.broker, error = %e, "MQTT bridge lost the broker; reconnecting");
                        last_warning = Some(Instant::now());
                    } else if last_warning.is_none_or(|t| t.elapsed() >= UNREACHABLE_LOG_INTERVAL) {
                        tracing::warn!(broker = %self.broker, error = %e, attempts = failures,
                            "MQTT bridge cannot reach the broker; retrying (DMI is not affected)");
                        last_warning = Some(Instant::now());
                    } else {
                        tracing::debug!(broker = %self.broker, error = %e, attempts = failures, retry_in = ?delay, "MQTT connect failed");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
            dropped_replies.log_if_due();
        }
        // A clean goodbye when connected; never waits long.
        if *self.connected.borrow() != 0 && self.client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    match self.eventloop.poll().await {
                        Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
        }
        self.connected.send_replace(0);
        Ok(())
    }
}

/// The publisher task's state.
struct Publisher {
    client: AsyncClient,
    qos: QoS,
    changes: broadcast::Receiver<Change>,
    replies: mpsc::Receiver<Publication>,
    connected: watch::Receiver<u64>,
    drops: DropLog,
    /// Messages skipped (too large, unpublishable topic, refused by the
    /// client) are logged at most this often.
    skip_log: edge_rt::logging::Throttle,
}

/// Why `topic` cannot be published (MQTT 3.1.1 §4.7: no wildcards in a
/// topic name, no NUL, at most 65 535 bytes).
fn publishable_topic(topic: &str) -> Result<(), &'static str> {
    if topic.contains(['#', '+']) {
        Err("the topic has an MQTT wildcard (a device name with `#` or `+`)")
    } else if topic.contains('\0') {
        Err("the topic has a NUL character")
    } else if topic.len() > usize::from(u16::MAX) {
        Err("the topic is longer than 65535 bytes")
    } else {
        Ok(())
    }
}

impl Publisher {
    async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut subscribed = 0u64;
        loop {
            self.drops.log_if_due();
            let generation = *self.connected.borrow_and_update();
            if generation == 0 {
                // Disconnected: leave the reports in the hub's ring, which
                // keeps the newest.
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    r = self.connected.changed() => if r.is_err() { return Ok(()) },
                }
                continue;
            }
            if generation != subscribed {
                let filters = SUBSCRIPTIONS
                    .iter()
                    .map(|f| SubscribeFilter::new((*f).to_owned(), self.qos));
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    r = self.client.subscribe_many(filters) => r.context("MQTT subscribe")?,
                }
                subscribed = generation;
            }
            let batch = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                r = self.connected.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    continue;
                }
                r = self.replies.recv() => match r {
                    Some(p) => vec![p],
                    None => return Ok(()),
                },
                r = self.changes.recv() => match r {
                    Ok(change) => publications(&change),
                    Err(RecvError::Lagged(n)) => {
                        self.drops.add(n);
                        continue;
                    }
                    Err(RecvError::Closed) => return Ok(()),
                },
            };
            for p in batch {
                if p.payload.len() + p.topic.len() + 16 > MAX_OUTGOING_PACKET {
                    if let Some(held_back) = self.skip_log.allow() {
                        tracing::warn!(topic = %p.topic, bytes = p.payload.len(), held_back, "MQTT message too large; not published");
                    }
                    continue;
                }
                if let Err(why) = publishable_topic(&p.topic) {
                    // A device name with `#`, `+` or NUL makes a topic MQTT
                    // cannot carry: that device's messages are skipped, the
                    // bridge and everything else keep going.
                    if let Some(held_back) = self.skip_log.allow() {
                        tracing::warn!(topic = %p.topic, held_back, "{why}; not published");
                    }
                    continue;
                }
                let topic = p.topic.clone();
                let sent = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    r = self.client.publish(p.topic, self.qos, false, p.payload) => r,
                };
                if let Err(e) = sent
                    && let Some(held_back) = self.skip_log.allow()
                {
                    tracing::warn!(%topic, error = %e, held_back, "MQTT publish failed; message dropped");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Result<BrokerUrl, String> {
        s.parse()
    }

    #[test]
    fn unpublishable_topics_are_named() {
        assert!(publishable_topic("$hw/events/device/default/pump-1/twin/update/document").is_ok());
        for bad in ["a/pump#1/b", "a/x+y/b", "a/\0/b"] {
            assert!(publishable_topic(bad).is_err(), "{bad:?}");
        }
        assert!(publishable_topic(&"x".repeat(70_000)).is_err());
    }

    #[test]
    fn broker_urls() {
        let u = url("tcp://127.0.0.1:1883").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 1883));
        let u = url("mqtt://broker.local").unwrap();
        assert_eq!((u.tls, u.port), (false, 1883));
        let u = url("ssl://broker.local").unwrap();
        assert_eq!((u.tls, u.port), (true, 8883));
        let u = url("MQTTS://user:secret@broker.local:9000/").unwrap();
        assert_eq!((u.tls, u.port), (true, 9000));
        assert_eq!(u.username.as_deref(), Some("user"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.to_string(), "ssl://user@broker.local:9000");
        assert!(!format!("{u:?}").contains("secret"));
        let u = url("tcp://[::1]:1884").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1884));
        assert_eq!(u.to_string(), "tcp://[::1]:1884");
        for bad in [
            "127.0.0.1:1883",
            "ws://h:1",
            "tcp://",
            "tcp://h:0",
            "tcp://h:x",
            "tcp://h:1/topic",
            "tcp://[::1",
        ] {
            let e = url(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn configuration_errors_are_reported_up_front() {
        let hub = Arc::new(Hub::new(
            dmi_proto::config_data::NumberEncoding::Stock,
            dmi_proto::transport::ChannelOptions::default(),
            Box::new(|_, _| {}),
        ));
        let cfg = |broker: &str, qos| MqttConfig {
            broker: Some(broker.to_owned()),
            qos,
            ..MqttConfig::default()
        };
        let e = MqttBridge::new(&cfg("tcp://h:1", 2), hub.clone()).unwrap_err();
        assert!(e.to_string().contains("mqttQos must be 0 or 1"), "{e}");
        assert!(MqttBridge::new(&cfg("nope", 0), hub.clone()).is_err());
        let missing = MqttConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..cfg("ssl://h", 0)
        };
        let e = MqttBridge::new(&missing, hub.clone()).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/ca.pem"), "{e:#}");
        let b = MqttBridge::new(&cfg("tcp://127.0.0.1:1", 1), hub).unwrap();
        assert_eq!(b.broker().port, 1);
    }

    #[test]
    fn drops_are_counted_and_logged_at_most_once_per_interval() {
        let mut d = DropLog::new("test messages");
        d.add(3);
        assert_eq!((d.total, d.unlogged), (3, 0));
        d.add(2);
        d.add(4);
        assert_eq!((d.total, d.unlogged), (9, 6));
    }
}
