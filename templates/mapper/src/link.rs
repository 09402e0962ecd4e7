//! One TCP connection to a device: send a request line, read an answer line.
//!
//! Replace it with your transport (a serial port, a UDP socket, a client of
//! a protocol crate). Keep two properties the SDK relies on:
//!
//! * **Errors are classified**: I/O errors are
//!   [`DriverError::Transport`] (the SDK reports the device `offline` and
//!   reconnects with backoff); an answer that breaks the protocol is
//!   [`DriverError::Protocol`] (also a reconnect).
//! * **Cancellation**: the SDK drops a request whose deadline passed. A
//!   request dropped between sending and reading leaves its answer in flight,
//!   so the link is marked unclean ([`Link::is_clean`]) and the device opens
//!   a new one for the next request instead of reading that stale answer.
//!   [`Link::read_line`] keeps partial input in the link, so dropping it
//!   loses nothing.

use std::sync::Arc;

use mapper_sdk::{DriverError, DriverResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::MAX_LINE;

/// A line-oriented TCP connection to one device.
#[derive(Debug)]
pub struct Link {
    stream: TcpStream,
    /// Bytes received and not yet returned as a line.
    buf: Vec<u8>,
    /// False while a request is unanswered (see the module docs).
    clean: bool,
}

impl Link {
    /// Connects to `host:port`.
    ///
    /// # Errors
    /// [`DriverError::Transport`] naming the address (refused, unreachable,
    /// unknown host): retried by the SDK with backoff.
    pub async fn open(host: &str, port: u16) -> DriverResult<Self> {
        let stream = TcpStream::connect((host, port)).await.map_err(|e| {
            DriverError::Transport(Arc::new(std::io::Error::new(
                e.kind(),
                format!("connecting to {host}:{port}: {e}"),
            )))
        })?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            clean: true,
        })
    }

    /// Whether every request sent on this link has been answered.
    pub fn is_clean(&self) -> bool {
        self.clean
    }

    /// Sends `request` and returns the answer line (without `\n`).
    ///
    /// # Errors
    /// As [`Link::send`] and [`Link::read_line`].
    pub async fn exchange(&mut self, request: &[u8]) -> DriverResult<String> {
        self.clean = false;
        self.send(request).await?;
        let answer = self.read_line().await?;
        self.clean = true;
        Ok(answer)
    }

    /// Sends `bytes`.
    ///
    /// # Errors
    /// [`DriverError::Transport`] when the connection failed.
    pub async fn send(&mut self, bytes: &[u8]) -> DriverResult<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// The next line from the device, without its `\n` (and `\r`).
    /// Cancellation safe: partial input stays in the link.
    ///
    /// # Errors
    /// [`DriverError::Transport`] when the device closed the connection or
    /// it failed; [`DriverError::Protocol`] for a line longer than
    /// [`MAX_LINE`] or not UTF-8.
    pub async fn read_line(&mut self) -> DriverResult<String> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return String::from_utf8(line)
                    .map_err(|_| DriverError::Protocol("the device sent a line that is not UTF-8".into()));
            }
            if self.buf.len() > MAX_LINE {
                return Err(DriverError::Protocol(format!(
                    "the device sent a line longer than {MAX_LINE} bytes"
                )));
            }
            self.buf.reserve(256);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(DriverError::transport("the device closed the connection"));
            }
        }
    }

    /// Closes the connection politely (the device sees an orderly end).
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }
}
