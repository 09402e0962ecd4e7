//! A real tonic server on a Unix socket, fed by `UdsListener::incoming_with` and
//! configured by `ServerLimits::apply`: what peers get when they push against
//! the limits, and that ordinary clients keep being served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dmi_proto::transport::{self, ChannelOptions, ServerLimits};
use dmi_proto::v1beta1 as pb;
use dmi_proto::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use dmi_proto::v1beta1::device_manager_service_server::{
    DeviceManagerService, DeviceManagerServiceServer,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Answers at once, except `ReportDeviceStates`, which takes 3 s.
struct Svc;

#[tonic::async_trait]
impl DeviceManagerService for Svc {
    async fn mapper_register(
        &self,
        _: Request<pb::MapperRegisterRequest>,
    ) -> Result<Response<pb::MapperRegisterResponse>, Status> {
        Ok(Response::new(pb::MapperRegisterResponse::default()))
    }

    async fn report_device_status(
        &self,
        _: Request<pb::ReportDeviceStatusRequest>,
    ) -> Result<Response<pb::ReportDeviceStatusResponse>, Status> {
        Ok(Response::new(pb::ReportDeviceStatusResponse::default()))
    }

    async fn report_device_states(
        &self,
        _: Request<pb::ReportDeviceStatesRequest>,
    ) -> Result<Response<pb::ReportDeviceStatesResponse>, Status> {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(Response::new(pb::ReportDeviceStatesResponse::default()))
    }
}

struct Server {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(limits: ServerLimits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dmi.sock");
    let listener = transport::bind(&path).await.unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        limits
            .apply(tonic::transport::Server::builder())
            .add_service(DeviceManagerServiceServer::new(Svc))
            .serve_with_incoming_shutdown(listener.incoming_with(limits), s.cancelled_owned())
            .await
    });
    Server {
        _dir: dir,
        path,
        stop,
    }
}

fn client(path: &Path) -> DeviceManagerServiceClient<tonic::transport::Channel> {
    DeviceManagerServiceClient::new(transport::channel(
        path,
        ChannelOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        },
    ))
}

async fn register(path: &Path) -> Result<(), Status> {
    client(path)
        .mapper_register(pb::MapperRegisterRequest {
            with_data: false,
            mapper: None,
        })
        .await
        .map(drop)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut out = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// Whether the server closed `s` (everything it sent read, then end of file),
/// waiting at most `wait`.
fn closed_by_server(s: &mut StdUnixStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_peers_beyond_the_limit_do_not_lock_a_client_out() {
    let server = serve(ServerLimits::default().with_max_connections(4)).await;
    let path = server.path.clone();
    // Ten idle peers: half send nothing, half complete the HTTP/2 handshake.
    let mut held = Vec::new();
    for i in 0..10 {
        let mut s = StdUnixStream::connect(&path).unwrap();
        if i % 2 == 1 {
            s.write_all(PREFACE).unwrap();
            s.write_all(&frame(0x4, 0, 0, &[])).unwrap();
        }
        held.push(s);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    register(&path).await.expect("a real client is served");
    assert!(start.elapsed() < Duration::from_secs(2));
    let closed = blocking(move || {
        held.iter_mut()
            .map(|s| closed_by_server(s, Duration::from_millis(300)))
            .filter(|&c| c)
            .count()
    })
    .await;
    // 4 slots: 10 idle peers and the client; at most 3 idle peers remain.
    assert!(closed >= 7, "{closed} of 10 idle peers closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_connection_busy_a_newcomer_is_refused_at_once() {
    let limits = ServerLimits::default()
        .with_max_connections(1)
        .with_slot_wait(Duration::from_millis(200));
    let server = serve(limits).await;
    let path = server.path.clone();
    let slow = {
        let mut c = client(&path);
        tokio::spawn(async move {
            c.report_device_states(pb::ReportDeviceStatesRequest::default())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let err = register(&path).await.expect_err("no slot");
    // The connection is closed under the client: a transport failure, which
    // callers back off from (not a refusal of the request by the server).
    assert!(
        matches!(
            dmi_proto::status::classify(&err),
            dmi_proto::status::ErrorClass::Transport
        ),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "refused, not left hanging"
    );
    slow.await.unwrap().expect("the busy call is not cut short");
    register(&path).await.expect("served once the slot is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_time_out_and_clients_reconnect() {
    let limits = ServerLimits::default()
        .with_handshake_timeout(Duration::from_millis(200))
        .with_idle_timeout(Duration::from_millis(400));
    let server = serve(limits).await;
    let path = server.path.clone();

    let silent = StdUnixStream::connect(&path).unwrap();
    let mut handshaken = StdUnixStream::connect(&path).unwrap();
    handshaken.write_all(PREFACE).unwrap();
    handshaken.write_all(&frame(0x4, 0, 0, &[])).unwrap();
    let (silent_closed, handshaken_closed) = blocking(move || {
        let mut silent = silent;
        let t = Instant::now();
        let a = closed_by_server(&mut silent, Duration::from_secs(2));
        let a_at = t.elapsed();
        let b = closed_by_server(&mut handshaken, Duration::from_secs(2));
        (a.then_some(a_at), b.then_some(t.elapsed()))
    })
    .await;
    let silent_at = silent_closed.expect("no preface: closed");
    assert!(silent_at >= Duration::from_millis(150) && silent_at < Duration::from_secs(1));
    let idle_at = handshaken_closed.expect("no request: closed");
    assert!(idle_at >= Duration::from_millis(350), "{idle_at:?}");

    // A tonic channel whose idle connection was closed reconnects by itself.
    let mut c = client(&path);
    let req = || pb::MapperRegisterRequest {
        with_data: false,
        mapper: None,
    };
    c.mapper_register(req()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.mapper_register(req())
        .await
        .expect("served after the idle close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_closes_its_connection_and_nothing_else() {
    let server = serve(ServerLimits::default()).await;
    let path = server.path.clone();
    let mut c = client(&path);
    let req = || pb::MapperRegisterRequest {
        with_data: false,
        mapper: None,
    };
    c.mapper_register(req()).await.unwrap();

    // 4 KB literal added to the dynamic table, then 40 000 one-byte references:
    // 44 KB on the wire, 160 MB decoded.
    let mut block = vec![0x83, 0x86, 0x84, 0x40, 0x01, b'x', 0x7f];
    let mut n = 4000 - 127;
    while n >= 128 {
        block.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    block.push(n as u8);
    block.extend(std::iter::repeat_n(b'v', 4000));
    block.extend(std::iter::repeat_n(0xbe, 40_000));
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(0x4, 0, 0, &[]));
    let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
    for (i, ch) in chunks.iter().enumerate() {
        let kind = if i == 0 { 0x1 } else { 0x9 };
        let flags = if i + 1 == chunks.len() { 0x4 } else { 0 };
        wire.extend(frame(kind, flags, 1, ch));
    }
    let bomb_path = path.clone();
    let closed = blocking(move || {
        let mut s = StdUnixStream::connect(&bomb_path).unwrap();
        // The server may close before reading everything.
        let _ = s.write_all(&wire);
        closed_by_server(&mut s, Duration::from_secs(3))
    })
    .await;
    assert!(closed, "the bomb's connection is closed");
    // The existing client and a new one are still served.
    c.mapper_register(req()).await.unwrap();
    register(&path).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_advertises_the_stream_and_header_limits() {
    let limits = ServerLimits::default().with_max_concurrent_streams(7);
    let server = serve(limits).await;
    let path = server.path.clone();
    let settings = blocking(move || {
        let mut s = StdUnixStream::connect(&path).unwrap();
        s.write_all(PREFACE).unwrap();
        s.write_all(&frame(0x4, 0, 0, &[])).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut head = [0u8; 9];
        s.read_exact(&mut head).unwrap();
        assert_eq!(head[3], 0x4, "the server's first frame is SETTINGS");
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        payload
            .chunks(6)
            .map(|p| {
                (
                    u16::from_be_bytes([p[0], p[1]]),
                    u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
                )
            })
            .collect::<Vec<_>>()
    })
    .await;
    assert!(
        settings.contains(&(0x3, 7)),
        "MAX_CONCURRENT_STREAMS: {settings:?}"
    );
    assert!(
        settings.contains(&(0x6, 16_384)),
        "MAX_HEADER_LIST_SIZE: {settings:?}"
    );
}
