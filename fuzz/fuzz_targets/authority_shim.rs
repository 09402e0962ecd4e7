//! The HTTP/2 connection wrapper of every served socket
//! (`dmi_proto::transport::AuthorityShim`), driven from bytes: the client's half
//! of a `tokio::io::duplex` pipe carries the fuzz input to the shim, and what the
//! shim yields (what h2 would read) is read back, at most [`MAX_OUTPUT`] bytes.
//!
//! Must never panic, and must end once the client's input ends (libFuzzer's
//! `-timeout=10`; the shim's own handshake clock is 10 s as well).
//!
//! Input layout: byte 0 holds flags; the rest is the traffic.
//!
//! * bit 0: small limits (256-byte header lists, 512-byte header blocks)
//!   instead of the defaults, so the limit paths are reached with short inputs;
//! * bit 1: the traffic is a sequence of records `[op][len][len bytes]`: an even
//!   `op` is bytes the client sends, an odd one bytes the server (h2) writes
//!   through the shim; after each record the shim's ready output is read.
//!   Otherwise all of the traffic is what the client sends, at once.
//! * bit 2: the standard client preface is sent first (the shim copies the
//!   first 24 bytes, whatever they are; h2 would check them).

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use dmi_proto::transport::{AuthorityShim, ServerLimits};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::runtime::Runtime;
use tokio::task::coop::unconstrained;

/// Most the target reads from the shim per input.
const MAX_OUTPUT: usize = 8 << 20;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One current-thread runtime (with the clock the shim's timers need) for all inputs.
static RT: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread tokio runtime")
});

/// Polls `f` once; `None` when it is not ready.
fn now<F: Future>(f: F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Reads what `shim` has ready without waiting; false once it ended or failed
/// or the output cap is reached.
fn drain_ready<S: AsyncRead + Unpin>(shim: &mut S, buf: &mut [u8], total: &mut usize) -> bool {
    loop {
        match now(shim.read(buf)) {
            None => return true,
            Some(Ok(0) | Err(_)) => return false,
            Some(Ok(n)) => {
                *total += n;
                if *total >= MAX_OUTPUT {
                    return false;
                }
            }
        }
    }
}

async fn run(flags: u8, traffic: &[u8]) {
    let limits = if flags & 1 != 0 {
        ServerLimits::default()
            .with_max_header_list_size(256)
            .with_max_header_block(512)
    } else {
        ServerLimits::default()
    };
    // Room for everything either side writes, so no write waits for a reader.
    let room = 2 * (traffic.len() + PREFACE.len()) + 1024;
    let (mut client, server): (DuplexStream, DuplexStream) = tokio::io::duplex(room);
    let mut shim = AuthorityShim::with_limits(server, &limits);
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0usize;

    if flags & 4 != 0 && now(client.write_all(PREFACE)).is_none() {
        return;
    }
    if flags & 2 != 0 {
        let mut rest = traffic;
        while let [op, len, tail @ ..] = rest {
            let (chunk, tail) = tail.split_at(usize::from(*len).min(tail.len()));
            rest = tail;
            let wrote = if op & 1 == 0 {
                now(client.write_all(chunk))
            } else {
                now(shim.write_all(chunk))
            };
            match wrote {
                Some(Ok(())) => {}
                // The shim refused to go on (it closed the connection): done.
                Some(Err(_)) => return,
                None => panic!("a write into a duplex pipe with room for it did not complete"),
            }
            if !drain_ready(&mut shim, &mut buf, &mut total) {
                return;
            }
        }
    } else if now(client.write_all(traffic)).is_none() {
        panic!("a write into a duplex pipe with room for it did not complete");
    }

    // The client is done sending: the shim must yield the rest and then end.
    let _ = client.shutdown().await;
    while total < MAX_OUTPUT {
        match shim.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    let _ = (shim.rewritten(), shim.open_streams());
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, traffic)) = data.split_first() else {
        return;
    };
    // Unconstrained: tokio's duplex pipe spends the task's cooperative budget
    // (128 operations) and then answers Pending until the task yields, which
    // `run` never does between its single polls; that is the pipe pacing the
    // task, not the shim waiting for input.
    RT.block_on(unconstrained(run(flags, traffic)));
});
