//! A fake `{{protocol}}` device: a TCP server on 127.0.0.1 speaking the
//! line protocol of `src/protocol.rs`, with registers the test reads and
//! changes. When you replace the protocol, replace this with a simulator of
//! your device (or a server from your protocol crate, bound to port 0).
//!
//! Also run by hand as `cargo run --example fake-device`.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// `(register, value)` of every change, for subscriptions.
    changes: broadcast::Sender<(String, String)>,
}

#[derive(Debug, Default)]
struct State {
    values: HashMap<String, String>,
    read_only: HashSet<String>,
    /// `WRITE`s accepted, in order.
    writes: Vec<(String, String)>,
    /// Connection tasks, aborted by `drop_connections`.
    connections: Vec<JoinHandle<()>>,
    accepted: usize,
}

/// The device; it stops when dropped.
#[derive(Debug)]
pub(crate) struct FakeDevice {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeDevice {
    /// A device on 127.0.0.1 with a free port, holding `registers`.
    pub(crate) async fn start(registers: &[(&str, &str)]) -> std::io::Result<Self> {
        Self::bind("127.0.0.1:0", registers).await
    }

    /// A device listening on `addr`, holding `registers`.
    pub(crate) async fn bind(
        addr: impl ToSocketAddrs,
        registers: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                values: registers
                    .iter()
                    .map(|(r, v)| ((*r).to_owned(), (*v).to_owned()))
                    .collect(),
                ..State::default()
            }),
            changes: broadcast::channel(64).0,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    /// Where the device listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Makes `register` refuse writes.
    pub(crate) fn set_read_only(&self, register: &str) {
        lock(&self.shared).read_only.insert(register.to_owned());
    }

    /// A register's value.
    pub(crate) fn get(&self, register: &str) -> Option<String> {
        lock(&self.shared).values.get(register).cloned()
    }

    /// Changes a register as the device itself would (a new measurement);
    /// subscribers are told.
    pub(crate) fn set(&self, register: &str, value: &str) {
        lock(&self.shared)
            .values
            .insert(register.to_owned(), value.to_owned());
        let _ = self.shared.changes.send((register.to_owned(), value.to_owned()));
    }

    /// `WRITE`s the device accepted, in order.
    pub(crate) fn writes(&self) -> Vec<(String, String)> {
        lock(&self.shared).writes.clone()
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        lock(&self.shared).accepted
    }

    /// Closes every open connection (a device reboot, a cable pulled and
    /// put back); new connections are accepted.
    pub(crate) fn drop_connections(&self) {
        for c in lock(&self.shared).connections.drain(..) {
            c.abort();
        }
    }
}

impl Drop for FakeDevice {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_connections();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let task = tokio::spawn(serve(stream, shared.clone()));
        let mut s = lock(&shared);
        s.accepted += 1;
        s.connections.retain(|c| !c.is_finished());
        s.connections.push(task);
    }
}

/// Answers requests on one connection until the client closes it.
async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.splitn(3, ' ');
        let answer = match (words.next(), words.next(), words.next()) {
            (Some("READ"), Some(r), None) => match lock(&shared).values.get(r) {
                Some(v) => v.clone(),
                None => format!("ERR unknown register {r}"),
            },
            (Some("WRITE"), Some(r), Some(v)) => {
                let mut s = lock(&shared);
                if !s.values.contains_key(r) {
                    format!("ERR unknown register {r}")
                } else if s.read_only.contains(r) {
                    format!("ERR register {r} is read-only")
                } else {
                    s.values.insert(r.to_owned(), v.to_owned());
                    s.writes.push((r.to_owned(), v.to_owned()));
                    "OK".to_owned()
                }
            }
{%- if push %}
            (Some("SUBSCRIBE"), Some(first), rest) => {
                let mut registers = vec![first.to_owned()];
                registers.extend(rest.unwrap_or("").split_whitespace().map(str::to_owned));
                // Subscribe before reading the values, so no change is missed.
                let rx = shared.changes.subscribe();
                let current: Result<Vec<String>, String> = {
                    let s = lock(&shared);
                    registers
                        .iter()
                        .map(|r| match s.values.get(r) {
                            Some(v) => Ok(format!("{r} {v}\n")),
                            None => Err(format!("ERR unknown register {r}\n")),
                        })
                        .collect()
                };
                match current {
                    Ok(lines) => {
                        let mut out = String::from("OK\n");
                        out.extend(lines);
                        if write.write_all(out.as_bytes()).await.is_ok() {
                            notify(&mut write, rx, &registers).await;
                        }
                        return;
                    }
                    Err(refusal) => refusal.trim_end().to_owned(),
                }
            }
{%- endif %}
            _ => format!("ERR cannot parse `{line}`"),
        };
        if write.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}
{%- if push %}

/// Sends `<register> <value>` for every change of `registers` until the
/// client goes away (the connection is the subscription's).
async fn notify(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    mut rx: broadcast::Receiver<(String, String)>,
    registers: &[String],
) {
    loop {
        match rx.recv().await {
            Ok((r, v)) if registers.contains(&r) => {
                if write.write_all(format!("{r} {v}\n").as_bytes()).await.is_err() {
                    return;
                }
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
{%- endif %}
