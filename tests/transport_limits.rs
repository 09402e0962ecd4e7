//! What a peer can make the real servers hold through their sockets is bounded:
//! an HPACK decompression bomb closes its own connection without costing
//! memory, idle connections beyond the connection limit neither lock real
//! clients out nor make the server spin, and a low open-file limit is respected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dmi_proto::status::{ErrorClass, classify};
use dmi_proto::transport::{ChannelOptions, channel};
use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use dmi_proto::v1beta1::device_mapper_service_client::DeviceMapperServiceClient;
use e2e_tests::{Node, bin, wait_for};
use tonic::Code;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn proc_status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Peak resident memory of `pid`, in KiB.
fn peak_rss_kb(pid: u32) -> u64 {
    proc_status_kb(pid, "VmHWM:")
}

/// CPU time used by `pid` so far, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut out = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// One request whose header block is a 4000-byte literal added to the HPACK
/// dynamic table followed by `refs` one-byte references to it, sent as HEADERS
/// plus CONTINUATION frames of 16 KiB: `refs` + 4 KB on the wire,
/// `refs` × 4 KB decoded.
fn hpack_bomb(refs: usize) -> Vec<u8> {
    let mut block = vec![0x83, 0x86, 0x84, 0x40, 0x01, b'x'];
    // 4000 as an HPACK integer with a 7-bit prefix.
    block.extend([0x7f, 0xa1, 0x1e]);
    block.extend(std::iter::repeat_n(b'v', 4000));
    block.extend(std::iter::repeat_n(0xbe, refs));
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(0x4, 0, 0, &[]));
    let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
    for (i, c) in chunks.iter().enumerate() {
        let kind = if i == 0 { 0x1 } else { 0x9 };
        let flags = if i + 1 == chunks.len() { 0x4 } else { 0 };
        wire.extend(frame(kind, flags, 1, c));
    }
    wire
}

/// Whether the server closed `s` within `wait` (all it sent read, then EOF).
fn closed_by_server(s: &mut UnixStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Whether the server has already closed `s` (all it sent read, then EOF).
fn closed_already(mut s: &UnixStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Sends `wire` on a new connection to `sock`; whether the server closed it.
fn send_and_see_closed(sock: &Path, wire: &[u8]) -> bool {
    let mut s = UnixStream::connect(sock).unwrap();
    // The server may close the connection before reading all of it.
    let _ = s.write_all(wire);
    closed_by_server(&mut s, Duration::from_secs(5))
}

/// A DMI call edgecore-dmi answers itself (InvalidArgument: bad state string),
/// made on a fresh connection; the time it took.
fn served_by_edgecore(rt: &tokio::runtime::Runtime, node: &Node) -> Duration {
    let start = Instant::now();
    let err = rt.block_on(async {
        let mut c =
            DeviceManagerServiceClient::new(channel(node.dmi_sock(), ChannelOptions::default()));
        c.report_device_states(pb::ReportDeviceStatesRequest {
            device_name: "thermostat-1".into(),
            device_namespace: "default".into(),
            state: "sleeping".into(),
        })
        .await
        .unwrap_err()
    });
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "answered, not failed: {err}"
    );
    start.elapsed()
}

/// Starts edgecore-dmi as `Node::start_edgecore` does, under `ulimit -n nofile`.
fn start_edgecore_with_fd_limit(node: &mut Node, nofile: u32) {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.path("edgecore.log"))
        .unwrap();
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(r#"ulimit -n {nofile} && exec "$0" "$@""#))
        .arg(bin("edgecore-dmi"))
        .arg("--dmi-socket")
        .arg(node.dmi_sock())
        .arg("serve")
        .arg("--state-dir")
        .arg(node.path("state"))
        .arg("--devices-dir")
        .arg(node.path("devices"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    node.edgecore = Some(child);
    wait_for("edgecore-dmi to answer", 20, || node.status());
}

/// Opens `n` connections to `sock` and holds them idle; every other one sends
/// the HTTP/2 preface and SETTINGS first, the rest send nothing.
fn hold_idle(sock: &Path, n: usize) -> Vec<UnixStream> {
    (0..n)
        .map(|i| {
            let mut s = UnixStream::connect(sock).unwrap();
            if i % 2 == 1 {
                s.write_all(PREFACE).unwrap();
                s.write_all(&frame(0x4, 0, 0, &[])).unwrap();
            }
            s
        })
        .collect()
}

#[test]
fn an_hpack_bomb_costs_no_memory_and_the_servers_keep_serving() {
    let mut node = Node::new(&["examples/devices/thermostat.yaml"]);
    node.start_edgecore();
    node.start_virtual_mapper();
    let mapper_sock = node.path("virtual.sock");
    wait_for("the mapper socket", 20, || {
        mapper_sock.exists().then_some(())
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    served_by_edgecore(&rt, &node);
    let dmi_pid = node.edgecore.as_ref().unwrap().id();
    let mapper_pid = node.mappers[0].id();
    let dmi_before = peak_rss_kb(dmi_pid);
    let mapper_before = peak_rss_kb(mapper_pid);

    // 64 KB on the wire, 240 MB decoded: under the encoded cap, over the
    // decoded one. Then 200 KB on the wire (800 MB decoded): over the encoded
    // cap, refused before it is buffered.
    for refs in [60_000, 200_000] {
        let bomb = hpack_bomb(refs);
        assert!(
            send_and_see_closed(&node.dmi_sock(), &bomb),
            "edgecore-dmi, {refs}"
        );
        assert!(send_and_see_closed(&mapper_sock, &bomb), "mapper, {refs}");
    }

    let dmi_grown = (peak_rss_kb(dmi_pid) - dmi_before) / 1024;
    let mapper_grown = (peak_rss_kb(mapper_pid) - mapper_before) / 1024;
    assert!(
        dmi_grown < 32,
        "edgecore-dmi peak RSS grew by {dmi_grown} MB"
    );
    assert!(
        mapper_grown < 32,
        "mapper peak RSS grew by {mapper_grown} MB"
    );

    // Both still serve ordinary clients.
    assert!(
        node.edgecore
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none()
    );
    served_by_edgecore(&rt, &node);
    let answer = rt.block_on(async {
        let mut c =
            DeviceMapperServiceClient::new(channel(&mapper_sock, ChannelOptions::default()));
        c.get_device(pb::GetDeviceRequest {
            device_name: "thermostat-1".into(),
            device_namespace: "default".into(),
        })
        .await
    });
    if let Err(e) = answer {
        assert!(
            !matches!(classify(&e), ErrorClass::Transport),
            "the mapper answers: {e}"
        );
    }
    assert!(
        node.logs()
            .contains("closing connection: header list of more than 16384 bytes decoded"),
        "the refusal is logged"
    );
}

#[test]
fn idle_connections_beyond_the_limit_neither_lock_clients_out_nor_spin() {
    let mut node = Node::new(&["examples/devices/thermostat.yaml"]);
    node.start_edgecore();
    let pid = node.edgecore.as_ref().unwrap().id();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fds_before = open_fds(pid);

    // 300 idle peers against the default limit of 256 connections.
    let held = hold_idle(&node.dmi_sock(), 300);
    std::thread::sleep(Duration::from_millis(500));
    let fds = open_fds(pid);
    assert!(
        fds <= fds_before + 256 + 2,
        "{fds} descriptors open (from {fds_before}): bounded by the limit"
    );

    let ticks = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - ticks;
    assert!(
        used < 40,
        "{used} CPU ticks in 2 s with idle peers held (200 = a core)"
    );

    // A real client is served at once: an idle peer makes room.
    let took = served_by_edgecore(&rt, &node);
    assert!(took < Duration::from_secs(3), "served after {took:?}");
    std::thread::sleep(Duration::from_millis(200));
    let closed = held.iter().filter(|s| closed_already(s)).count();
    assert!(closed > 300 - 256, "{closed} of 300 idle peers closed");
}

#[test]
fn a_low_open_file_limit_is_never_exhausted_by_peers() {
    let mut node = Node::new(&["examples/devices/thermostat.yaml"]);
    // As stock systemd units and f2: at 128 descriptors, at most 64 connections.
    start_edgecore_with_fd_limit(&mut node, 128);
    let pid = node.edgecore.as_ref().unwrap().id();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let devices = node.status().unwrap().devices.len();
    assert_eq!(devices, 1);

    let _held = hold_idle(&node.dmi_sock(), 200);
    std::thread::sleep(Duration::from_millis(500));
    let fds = open_fds(pid);
    assert!(fds < 120, "{fds} of 128 descriptors open");
    // Any change makes the source rescan the directory: it still can.
    std::fs::write(node.path("devices/unrelated.txt"), "x").unwrap();

    let ticks = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - ticks;
    assert!(used < 40, "{used} CPU ticks in 2 s (200 = a core)");

    served_by_edgecore(&rt, &node);
    let status = node.status().expect("admin API answers");
    assert_eq!(status.devices.len(), devices, "no device lost");
    let logs = node.logs();
    assert!(logs.contains("connection limit lowered to half the open-file limit"));
    assert!(
        !logs.contains("accepting a connection failed"),
        "never out of descriptors"
    );
}
