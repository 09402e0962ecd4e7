//! `pushMethod.mqtt` on rumqttc: one persistent connection per broker.
//!
//! Address forms: `tcp://host:port` or `mqtt://` (plain, default port 1883),
//! `ssl://`, `tls://`, `mqtts://` (TLS with the system's roots, or the PEM
//! file named by `MQTT_CA_FILE`; default port 8883). `?version=5` selects
//! MQTT 5 (default 3.1.1). Credentials: `user:password@` in the address, else
//! the environment (`MQTT_USERNAME`, `MQTT_PASSWORD`, or `MQTT_PASSWORD_FILE`
//! for a mounted Secret).
//!
//! A batch counts as delivered when every publish was written (QoS 0) and
//! acknowledged (PUBACK for QoS 1, PUBCOMP for QoS 2). Any connection error
//! drops the connection with its in-flight state, so rumqttc never re-sends on
//! its own; the whole batch is retried on a fresh connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::Outgoing;

use super::SinkError;
use super::method::{MqttPush, secret};
use super::options::{DataOptions, PayloadFormat};
use super::target::{Entry, Route, TargetSpec};

/// MQTT keep-alive.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Largest packet sent or accepted, bytes.
const MAX_PACKET: usize = 1 << 20;

/// Most publishes in one delivery (at least `data.batch_records`). A batch
/// ends by waiting for its acknowledgements; a broker that delays its last
/// PUBACKs (mosquitto without `set_tcp_nodelay true` holds them for a
/// delayed-ACK round, tens of ms) then costs one such wait per batch, so MQTT
/// batches are large.
pub(crate) const MQTT_BATCH: usize = 5000;

/// Connections made by this process (client id suffix).
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// The target and route of one property's `pushMethod.mqtt`.
pub(super) fn route(m: &MqttPush) -> Result<(TargetSpec, Route), SinkError> {
    let qos = u8::try_from(m.qos)
        .ok()
        .filter(|q| *q <= 2)
        .ok_or_else(|| SinkError::Config(format!("mqtt qos {} is not 0, 1 or 2", m.qos)))?;
    if m.topic.trim().is_empty() {
        return Err(SinkError::Config("mqtt topic is empty".into()));
    }
    if m.topic.contains(['+', '#']) {
        return Err(SinkError::Config(format!(
            "mqtt topic `{}` has a wildcard; publish topics cannot",
            m.topic
        )));
    }
    // MQTT 3.1.1 §1.5.3, §4.7.3: UTF-8 without NUL, at most 65 535 bytes.
    if m.topic.contains('\0') || m.topic.len() > usize::from(u16::MAX) {
        return Err(SinkError::Config(format!(
            "mqtt topic ({} bytes) has a NUL character or is longer than 65535 bytes",
            m.topic.len()
        )));
    }
    Ok((
        TargetSpec::Mqtt {
            address: m.address.trim().to_owned(),
        },
        Route::Mqtt {
            topic: m.topic.clone(),
            qos,
            retained: m.retained,
        },
    ))
}

/// A parsed broker address.
#[derive(Debug, Clone, PartialEq)]
struct Broker {
    host: String,
    port: u16,
    tls: bool,
    v5: bool,
    user: Option<String>,
    password: Option<String>,
}

fn parse(address: &str) -> Result<Broker, SinkError> {
    let bad = |why: &str| SinkError::Config(format!("mqtt address `{address}`: {why}"));
    let (scheme, rest) = address
        .split_once("://")
        .ok_or_else(|| bad("expected scheme://host:port, e.g. tcp://127.0.0.1:1883"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "tcp" | "mqtt" => false,
        "ssl" | "tls" | "mqtts" => true,
        other => {
            return Err(bad(&format!(
                "unknown scheme `{other}` (tcp, mqtt, ssl, tls, mqtts)"
            )));
        }
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, q),
        None => (rest, ""),
    };
    let mut v5 = false;
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv {
            "version=5" => v5 = true,
            "version=3" | "version=4" | "version=3.1.1" => v5 = false,
            other => return Err(bad(&format!("unknown option `{other}` (only version=5)"))),
        }
    }
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| bad(&format!("port `{p}` is not a port number (1-65535)")))?,
        ),
        _ => (hostport, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
            None => (Some(u.to_owned()), None),
        },
        None => (secret("MQTT_USERNAME"), secret("MQTT_PASSWORD")),
    };
    Ok(Broker {
        host: host.to_owned(),
        port,
        tls,
        v5,
        user,
        password,
    })
}

/// The payload of `e` in the configured format.
fn payload(e: &Entry, topic: &str, format: PayloadFormat) -> Vec<u8> {
    match format {
        PayloadFormat::Json => e.record.document_bytes(),
        PayloadFormat::Stock => e.record.stock_mqtt_text(topic).into_bytes(),
    }
}

/// The names the macros below need, per protocol version.
mod v4 {
    pub(super) use rumqttc::{Event, Incoming, QoS};
}
mod v5 {
    pub(super) use rumqttc::v5::mqttbytes::QoS;
    pub(super) use rumqttc::v5::{Event, Incoming};
}

/// Publishes `batch` on a connection and waits until each publish is written
/// and acknowledged as its QoS requires. One macro for both protocol
/// versions, whose client types mirror each other.
macro_rules! deliver_on {
    ($m:ident, $conn:expr, $batch:expr, $fmt:expr) => {{
        let (client, eventloop) = $conn;
        let mut writes = 0usize;
        let mut acks = 0usize;
        for e in $batch {
            let Route::Mqtt {
                topic,
                qos,
                retained,
            } = &e.route
            else {
                continue;
            };
            let q = match qos {
                0 => $m::QoS::AtMostOnce,
                1 => $m::QoS::AtLeastOnce,
                _ => $m::QoS::ExactlyOnce,
            };
            if *qos > 0 {
                acks += 1;
            }
            writes += 1;
            client
                .try_publish(topic.clone(), q, *retained, payload(e, topic, $fmt))
                .map_err(|e| SinkError::Unreachable(format!("queueing a publish: {e}")))?;
        }
        while writes > 0 || acks > 0 {
            match eventloop.poll().await {
                Ok($m::Event::Outgoing(Outgoing::Publish(_))) => writes = writes.saturating_sub(1),
                Ok($m::Event::Incoming($m::Incoming::PubAck(..)))
                | Ok($m::Event::Incoming($m::Incoming::PubComp(..))) => {
                    acks = acks.saturating_sub(1)
                }
                Ok(_) => {}
                Err(e) => return Err(refusal(&e)),
            }
        }
        Ok(())
    }};
}

/// Waits for the CONNACK of a new connection.
macro_rules! connect_on {
    ($m:ident, $eventloop:expr) => {{
        loop {
            match $eventloop.poll().await {
                Ok($m::Event::Incoming($m::Incoming::ConnAck(..))) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(refusal(&e)),
            }
        }
    }};
}

/// A broker's CONNACK refusal (bad credentials, not authorised) is a
/// refusal; everything else means it could not be reached.
fn refusal(e: &dyn std::fmt::Display) -> SinkError {
    let text = e.to_string();
    if text.starts_with("Connection refused, return code") {
        SinkError::Refused(text)
    } else {
        SinkError::Unreachable(text)
    }
}

enum Conn {
    V4(rumqttc::AsyncClient, Box<rumqttc::EventLoop>),
    V5(rumqttc::v5::AsyncClient, Box<rumqttc::v5::EventLoop>),
}

/// One broker.
pub(crate) struct MqttTarget {
    broker: Broker,
    tls: Option<Arc<rustls::ClientConfig>>,
    client_name: String,
    capacity: usize,
    format: PayloadFormat,
    conn: Option<Conn>,
}

impl MqttTarget {
    /// A client of the broker at `address` (not connected yet).
    pub(crate) fn new(address: &str, opts: &DataOptions) -> Result<Self, SinkError> {
        let broker = parse(address)?;
        let tls = if broker.tls {
            Some(Arc::new(super::client_tls("MQTT_CA_FILE")?))
        } else {
            None
        };
        Ok(Self {
            broker,
            tls,
            client_name: opts.client_name.clone(),
            capacity: opts.batch_records.max(MQTT_BATCH) + 16,
            format: opts.payload,
            conn: None,
        })
    }

    fn client_id(&self) -> String {
        format!(
            "{}-{}-{}",
            self.client_name,
            std::process::id(),
            CONNECTIONS.fetch_add(1, Ordering::Relaxed)
        )
    }

    async fn connect(&mut self) -> Result<(), SinkError> {
        let b = &self.broker;
        let transport = match &self.tls {
            Some(c) => {
                rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(c.clone()))
            }
            None => rumqttc::Transport::tcp(),
        };
        let mut conn = if b.v5 {
            let mut o = rumqttc::v5::MqttOptions::new(self.client_id(), b.host.clone(), b.port);
            o.set_keep_alive(KEEP_ALIVE)
                .set_clean_start(true)
                .set_transport(transport);
            if let Some(u) = &b.user {
                o.set_credentials(u.clone(), b.password.clone().unwrap_or_default());
            }
            let (c, e) = rumqttc::v5::AsyncClient::new(o, self.capacity);
            Conn::V5(c, Box::new(e))
        } else {
            let mut o = rumqttc::MqttOptions::new(self.client_id(), b.host.clone(), b.port);
            o.set_keep_alive(KEEP_ALIVE)
                .set_clean_session(true)
                .set_max_packet_size(MAX_PACKET, MAX_PACKET)
                .set_transport(transport);
            if let Some(u) = &b.user {
                o.set_credentials(u.clone(), b.password.clone().unwrap_or_default());
            }
            let (c, e) = rumqttc::AsyncClient::new(o, self.capacity);
            Conn::V4(c, Box::new(e))
        };
        match &mut conn {
            Conn::V4(_, e) => connect_on!(v4, e)?,
            Conn::V5(_, e) => connect_on!(v5, e)?,
        }
        self.conn = Some(conn);
        Ok(())
    }

    /// Publishes `batch` (see the module docs for when it counts as delivered).
    pub(crate) async fn deliver(&mut self, batch: &[Arc<Entry>]) -> Result<(), SinkError> {
        if self.conn.is_none() {
            self.connect().await?;
        }
        let format = self.format;
        let res = match &mut self.conn {
            Some(Conn::V4(c, e)) => {
                async { deliver_on!(v4, (&*c, &mut *e), batch.iter().map(|e| &**e), format) }.await
            }
            Some(Conn::V5(c, e)) => {
                async { deliver_on!(v5, (&*c, &mut *e), batch.iter().map(|e| &**e), format) }.await
            }
            None => Err(SinkError::Unreachable("not connected".into())),
        };
        if res.is_err() {
            self.conn = None;
        }
        res
    }

    /// Drives an idle connection (keep-alive pings); drops it on error.
    pub(crate) async fn idle(&mut self) {
        let failed = match &mut self.conn {
            Some(Conn::V4(_, e)) => e.poll().await.is_err(),
            Some(Conn::V5(_, e)) => e.poll().await.is_err(),
            None => std::future::pending().await,
        };
        if failed {
            self.conn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let b = parse("tcp://127.0.0.1:1883").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.tls, b.v5),
            ("127.0.0.1", 1883, false, false)
        );
        let b = parse("ssl://u:p@broker.local?version=5").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.tls, b.v5),
            ("broker.local", 8883, true, true)
        );
        assert_eq!(
            (b.user.as_deref(), b.password.as_deref()),
            (Some("u"), Some("p"))
        );
        let b = parse("mqtt://[::1]:1884").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 1884));
        for bad in [
            "127.0.0.1:1883",
            "http://x:1",
            "tcp://:1883",
            "tcp://h:port",
            "tcp://h:1?qos=1",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn routes_check_qos_and_topic() {
        let m = |qos, topic: &str| MqttPush {
            address: "tcp://h:1".into(),
            topic: topic.into(),
            qos,
            retained: false,
        };
        assert!(route(&m(1, "a/b")).is_ok());
        assert!(
            route(&m(3, "a/b"))
                .unwrap_err()
                .to_string()
                .contains("qos 3")
        );
        assert!(
            route(&m(0, "a/#"))
                .unwrap_err()
                .to_string()
                .contains("wildcard")
        );
        assert!(route(&m(0, " ")).is_err());
    }
}
