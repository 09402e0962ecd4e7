//! The dashboard's server end to end over loopback TCP: routes, errors,
//! the `Host` check, event streams and connection limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dmi_proto::v1beta1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::key::ObjectKey;
use crate::views::StatusView;

const YAML: &str = "apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: { name: m }
spec:
  protocol: virtual
  properties:
    - { name: temp, type: FLOAT, accessMode: ReadOnly }
    - { name: mode, type: STRING, accessMode: ReadOnly }
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: { name: a }
spec:
  deviceModelRef: { name: m }
  protocol: { protocolName: virtual }
  properties:
    - { name: temp }
    - { name: mode }
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: { name: lost }
spec:
  deviceModelRef: { name: nope }
  protocol: { protocolName: virtual }
";

fn hub() -> Arc<Hub> {
    let hub = Arc::new(Hub::new(
        dmi_proto::config_data::NumberEncoding::Stock,
        dmi_proto::transport::ChannelOptions::default(),
        Box::new(|_, _| {}),
    ));
    let parsed = crate::source::parse_file("test", YAML);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    hub.apply_snapshot(
        parsed.devices.into_iter().map(Arc::new).collect(),
        parsed.models.into_iter().map(Arc::new).collect(),
        Vec::new(),
    );
    hub
}

fn report(hub: &Hub, temp: &str) {
    let tp = |v: &str| pb::TwinProperty {
        value: v.into(),
        metadata: Default::default(),
    };
    let twin = |name: &str, v: &str| pb::Twin {
        property_name: name.into(),
        reported: Some(tp(v)),
        observed_desired: Some(tp("")),
    };
    hub.report_twins(
        ObjectKey::new("", "a"),
        vec![twin("temp", temp), twin("mode", "auto")],
    )
    .unwrap();
}

/// A running dashboard on a free loopback port.
struct Running {
    addr: SocketAddr,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Running {
    async fn start(limits: HttpLimits) -> Self {
        let hub = hub();
        let cfg = HttpConfig {
            addr: Some("127.0.0.1:0".parse().unwrap()),
            allow_remote: false,
        };
        let server = WebServer::bind(&cfg, hub.clone())
            .await
            .unwrap()
            .with_limits(limits);
        let addr = server.local_addr().unwrap();
        let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
        server.spawn(&tasks, &shutdown);
        Self {
            addr,
            hub,
            shutdown,
            tasks,
        }
    }

    /// `method path` with `Host: host`; status, head and body.
    async fn request(&self, method: &str, path: &str, host: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text))
            .await
            .expect("answered in time")
            .unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    async fn get(&self, path: &str) -> (u16, String, String) {
        self.request("GET", path, &self.addr.to_string()).await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .expect("the dashboard stops at shutdown, event streams included");
    }
}

/// Reads from an event stream until `needle` arrives; what was read.
async fn read_until(s: &mut TcpStream, needle: &str, secs: u64) -> String {
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !text.contains(needle) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream closed; got {text}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    if tokio::time::timeout(Duration::from_secs(secs), read)
        .await
        .is_err()
    {
        panic!("no {needle:?} within {secs}s");
    }
    text
}

async fn open_events(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    s
}

#[test]
fn only_loopback_addresses_unless_remote_is_allowed() {
    for ok in ["127.0.0.1:8080", "127.1.2.3:0", "[::1]:8080"] {
        assert!(check_addr(ok.parse().unwrap(), false).is_ok(), "{ok}");
    }
    for remote in ["0.0.0.0:8080", "192.168.1.10:80", "[::]:8080"] {
        let e = check_addr(remote.parse().unwrap(), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(remote) && e.contains("--http-allow-remote"),
            "{e}"
        );
        assert!(check_addr(remote.parse().unwrap(), true).is_ok());
    }
}

#[test]
fn loopback_host_names() {
    for ok in [
        "localhost",
        "LOCALHOST:80",
        "127.0.0.1",
        "127.0.0.1:8080",
        "[::1]:9",
        "[::1]",
    ] {
        assert!(loopback_host(ok), "{ok}");
    }
    for no in [
        "evil.example",
        "evil.example:8080",
        "localhost.evil.example",
        "10.0.0.1:80",
        "[::2]:80",
        "",
    ] {
        assert!(!loopback_host(no), "{no}");
    }
}

#[tokio::test]
async fn a_remote_address_is_refused_at_bind() {
    let cfg = HttpConfig {
        addr: Some("0.0.0.0:0".parse().unwrap()),
        allow_remote: false,
    };
    let e = WebServer::bind(&cfg, hub()).await.unwrap_err().to_string();
    assert!(e.contains("--http-allow-remote"), "{e}");
}

#[tokio::test]
async fn status_is_the_cli_view() {
    let r = Running::start(HttpLimits::default()).await;
    report(&r.hub, "21.5");
    let (code, head, body) = r.get("/api/v1/status").await;
    assert_eq!(code, 200, "{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let served: StatusView = serde_json::from_str(&body).unwrap();
    let mut direct = r.hub.status();
    // Ages move on between the two views; everything else is the same.
    let mut served = served;
    for v in [&mut served, &mut direct] {
        for d in &mut v.devices {
            for p in &mut d.properties {
                p.age_ms = p.age_ms.map(|_| 0);
            }
        }
    }
    assert_eq!(served, direct);
    let lost = served.devices.iter().find(|d| d.name == "lost").unwrap();
    assert_eq!(lost.errors, ["model default/nope not found"]);
    r.stop().await;
}

#[tokio::test]
async fn history_of_a_device_or_one_property() {
    let r = Running::start(HttpLimits::default()).await;
    // The feed subscribed to reports when the server was bound.
    for v in ["1", "2.5", "3"] {
        report(&r.hub, v);
    }
    let json = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap();
    let (code, _, body) = r
        .get("/api/v1/history?device=default/a&property=temp")
        .await;
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["device"], "default/a");
    assert_eq!(v["window_ms"], 600_000);
    assert_eq!(v["max_points"], 600);
    assert!(v["now_ms"].as_u64().unwrap() > 0);
    // The feed runs on its own task: wait for it to take the reports.
    let values = |v: &serde_json::Value| -> Vec<f64> {
        v["series"][0]["points"]
            .as_array()
            .map(|p| p.iter().map(|p| p[1].as_f64().unwrap()).collect())
            .unwrap_or_default()
    };
    let mut got = values(&v);
    for _ in 0..50 {
        if got.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        got = values(&json(
            &r.get("/api/v1/history?device=a&property=temp").await.2,
        ));
    }
    assert_eq!(got, [1.0, 2.5, 3.0]);
    // All series of the device: only the numeric one.
    let v = json(&r.get("/api/v1/history?device=default%2Fa").await.2);
    let names: Vec<&str> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["property"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["temp"]);
    // A device with no numeric values yet: an empty list.
    let (code, _, body) = r.get("/api/v1/history?device=default/lost").await;
    assert_eq!(
        (code, json(&body)["series"].as_array().unwrap().len()),
        (200, 0)
    );
    // Errors.
    let (code, _, body) = r.get("/api/v1/history").await;
    assert_eq!(code, 400);
    assert!(json(&body)["error"].as_str().unwrap().contains("device="));
    let (code, _, body) = r.get("/api/v1/history?device=default/ghost").await;
    assert_eq!(code, 404);
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("default/ghost")
    );
    r.stop().await;
}

#[tokio::test]
async fn the_page_and_its_assets() {
    let r = Running::start(HttpLimits::default()).await;
    let (code, head, body) = r.get("/").await;
    assert_eq!(code, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    assert!(body.contains("app.js") && body.contains("style.css"));
    let (code, head, body) = r.get("/app.js").await;
    assert_eq!(code, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(body.contains("EventSource"));
    let (code, head, _) = r.get("/style.css").await;
    assert_eq!(code, 200);
    assert!(head.contains("content-type: text/css"), "{head}");
    let (code, head, body) = r.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.contains("\nedgecore_dmi_devices 2\n"), "{body}");
    r.stop().await;
}

#[tokio::test]
async fn read_only_unknown_paths_and_foreign_hosts() {
    let r = Running::start(HttpLimits::default()).await;
    let host = r.addr.to_string();
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in ["/", "/api/v1/status", "/api/v1/history", "/api/v1/events"] {
            let (code, head, _) = r.request(method, path, &host).await;
            assert_eq!(code, 405, "{method} {path}");
            assert!(head.contains("allow: get,head"), "{head}");
        }
    }
    let (code, head, body) = r.request("HEAD", "/api/v1/status", &host).await;
    assert_eq!((code, body.as_str()), (200, ""), "{head}");
    let (code, _, body) = r.get("/api/v2/status").await;
    assert_eq!(code, 404);
    assert!(body.contains("\"error\""));
    // DNS rebinding: a page of another site that resolves to 127.0.0.1.
    let (code, _, body) = r
        .request("GET", "/api/v1/status", "evil.example:8080")
        .await;
    assert_eq!(code, 403, "{body}");
    let (code, _, _) = r.request("GET", "/api/v1/status", "localhost").await;
    assert_eq!(code, 200);
    r.stop().await;
}

#[tokio::test]
async fn events_stream_status_and_samples() {
    // The header deadline does not cut a stream that outlives it.
    let r = Running::start(HttpLimits {
        header_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    })
    .await;
    let mut s = open_events(r.addr).await;
    let text = read_until(&mut s, "\n\n", 5).await;
    assert!(text.contains("content-type: text/event-stream"), "{text}");
    let text = if text.contains("event: status") {
        text
    } else {
        read_until(&mut s, "event: status", 5).await
    };
    assert!(text.contains("\"devices\""), "{text}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    report(&r.hub, "42.5");
    let text = read_until(&mut s, "event: samples", 5).await;
    let data = text
        .lines()
        .skip_while(|l| *l != "event: samples")
        .find_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned);
    let data = match data {
        Some(d) => d,
        None => read_until(&mut s, "}\n", 5)
            .await
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap()
            .to_owned(),
    };
    let v: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(v["points"][0]["device"], "default/a");
    assert_eq!(v["points"][0]["property"], "temp");
    assert_eq!(v["points"][0]["v"], 42.5);
    assert_eq!(v["truncated"], false);
    // The report brought the status along, in the same frame.
    assert!(text.contains("event: status"), "{text}");
    // Streams end at shutdown: the server stops in time.
    r.stop().await;
}

#[tokio::test]
async fn event_streams_are_bounded() {
    let r = Running::start(HttpLimits {
        max_event_clients: 2,
        ..HttpLimits::default()
    })
    .await;
    let mut a = open_events(r.addr).await;
    let mut b = open_events(r.addr).await;
    read_until(&mut a, "event: status", 5).await;
    read_until(&mut b, "event: status", 5).await;
    let (code, head, body) = r.get("/api/v1/events").await;
    assert_eq!(code, 503, "{body}");
    assert!(head.contains("retry-after: 10"), "{head}");
    assert!(body.contains("too many event streams"), "{body}");
    // A client that goes away gives its slot back.
    drop(a);
    let mut served = false;
    for _ in 0..50 {
        let mut c = open_events(r.addr).await;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the slot of a closed stream was not given back");
    r.stop().await;
}

#[tokio::test]
async fn silent_connections_are_closed_and_bounded() {
    let r = Running::start(HttpLimits {
        max_connections: 2,
        header_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    })
    .await;
    // Peers that connect and send nothing, or half a request head, hold
    // every slot...
    let mut silent = Vec::new();
    for i in 0..4 {
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: loc").await.unwrap();
        }
        silent.push(s);
    }
    // ...until the header deadline closes them; a real client is then served.
    let started = std::time::Instant::now();
    let (code, _, _) = r.get("/api/v1/status").await;
    assert_eq!(code, 200);
    assert!(started.elapsed() < Duration::from_secs(3));
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(2), silent[0].read(&mut buf))
        .await
        .expect("closed by the header deadline")
        .unwrap_or(0);
    assert!(
        n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    r.stop().await;
}
