//! The connection wrapper of every served socket: normalises the HTTP/2
//! `:authority` that gRPC clients send over Unix sockets, and enforces the
//! per-connection part of [`ServerLimits`].
//!
//! grpc-go (every stock KubeEdge mapper and EdgeCore) and gRPC C-core clients dial
//! a bare socket path and send it, percent-encoded, as `:authority`
//! (`%2Fetc%2Fkubeedge%2Fdmi.sock`). The `h2` crate under tonic rejects such an
//! authority as malformed and resets the stream before tonic sees the request.
//!
//! [`AuthorityShim`] sits between the socket and h2 on the server side. It walks
//! the client-to-server HTTP/2 frame stream; every header block (HEADERS plus
//! CONTINUATION frames) is decoded with HPACK (`loona-hpack`, keeping the
//! client's dynamic table in step), an `:authority` that is not a valid URI
//! authority is replaced by `localhost`, and the block is re-encoded with literal
//! representations that never touch the dynamic table, so h2's decoder state stays
//! consistent. All other frames, and the whole server-to-client direction, pass
//! through byte for byte. A client whose first request carries a valid authority
//! (tonic, grpcio with an explicit authority) needs no rewriting: from then on
//! its header blocks pass through undecoded and h2 decodes them under its own
//! limits.
//!
//! # Limits
//!
//! Decoding a header block here happens before h2's limits apply, so the shim
//! applies them itself, and closes the connection when one is exceeded:
//!
//! * the encoded block (payloads of HEADERS and all its CONTINUATION frames) may
//!   be at most [`ServerLimits::max_header_block`] bytes; this is checked from
//!   each frame's 9-byte header, before its payload is read or buffered, in both
//!   modes;
//! * the decoded header list may be at most [`ServerLimits::max_header_list_size`]
//!   bytes counted as h2 counts (name + value + 32 per field); the sum is kept
//!   while decoding and nothing more is kept once it is exceeded, so a small
//!   block that refers to one large dynamic-table entry many times costs no more
//!   than the limit;
//! * the HPACK dynamic table may be at most 4096 bytes (the size h2 advertises);
//!   a larger table size update is a decoding error.
//!
//! Over a limit the connection is dropped: reads fail with
//! [`io::ErrorKind::InvalidData`], h2 ends the connection without a GOAWAY, and
//! one warning per 10 s is logged. Not a GOAWAY because the write half belongs to
//! h2 (frames from the shim could land inside one of h2's), the peer that sends
//! such a block is not a gRPC client (their header lists are a few hundred
//! bytes), and the decoded block must not be allocated just to refuse it
//! politely.
//!
//! The wrapper also keeps the connection's clock: the 24-byte preface must arrive
//! within [`ServerLimits::handshake_timeout`], and after
//! [`ServerLimits::idle_timeout`] without request traffic (HEADERS, CONTINUATION,
//! DATA or RST_STREAM in either direction; SETTINGS, PING and WINDOW_UPDATE do not
//! count) the connection is closed by ending its input, which h2 takes as the
//! peer closing it. It counts the streams in flight (from the client's HEADERS to
//! the server's END_STREAM or a RST_STREAM either way) so that the accept loop
//! only ever closes a connection without a request in flight to make room for a
//! new one.

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use futures::task::{ArcWake, AtomicWaker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::conns::ConnSlot;
use super::frames::{
    FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FLAG_PRIORITY, FRAME_CONTINUATION, FRAME_DATA,
    FRAME_HEADER_LEN, FRAME_HEADERS, FRAME_RST_STREAM, FrameHead, FrameScanner, PREFACE_LEN,
};
use super::limits::{LogGate, ServerLimits};

/// Frames we emit never exceed the smallest SETTINGS_MAX_FRAME_SIZE a peer may use.
const OUT_MAX_FRAME: usize = 16_384;
/// The authority substituted for one h2 would reject.
const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";
const READ_CHUNK: usize = 16 * 1024;
/// Largest HPACK dynamic table a client may ask for: h2 advertises no
/// SETTINGS_HEADER_TABLE_SIZE, so the protocol default of 4096 bytes applies.
const HPACK_MAX_TABLE_SIZE: usize = 4096;
/// Streams tracked beyond `max_concurrent_streams`: h2 refuses the excess with a
/// RST_STREAM, which the wrapper sees a little later.
const STREAM_SLACK: usize = 32;
/// h2 counts this much per header field on top of name and value (RFC 9113 §6.5.2).
const FIELD_OVERHEAD: usize = 32;
/// Deadline used when a timeout is too large to add to an instant.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

static LIMIT_EXCEEDED: LogGate = LogGate::new(Duration::from_secs(10));

#[derive(Debug, Clone, Copy)]
enum State {
    /// Inside the 24-byte client connection preface.
    Preface { remaining: usize },
    /// Waiting for the next 9-byte frame header.
    FrameHeader,
    /// Copying the payload of a frame that needs no rewriting.
    Passthrough { remaining: usize },
    /// Collecting the payload of a header-block frame that may need rewriting
    /// (its frame header is consumed; at most `max_header_block` bytes).
    BlockFrame { head: FrameHead },
}

/// Why the wrapper closed the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// No preface within the handshake timeout.
    Handshake,
    /// No request traffic within the idle timeout.
    Idle,
    /// Closed to make room for a new connection.
    Evicted,
    /// A protocol error or an exceeded header limit.
    Refused,
}

#[derive(Debug, Clone, Copy)]
struct ShimLimits {
    max_header_list_size: usize,
    max_header_block: usize,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    max_tracked_streams: usize,
}

impl From<&ServerLimits> for ShimLimits {
    fn from(l: &ServerLimits) -> Self {
        Self {
            max_header_list_size: usize::try_from(l.max_header_list_size).unwrap_or(usize::MAX),
            max_header_block: l.max_header_block,
            handshake_timeout: l.handshake_timeout,
            idle_timeout: l.idle_timeout,
            max_tracked_streams: usize::try_from(l.max_concurrent_streams)
                .unwrap_or(usize::MAX)
                .saturating_add(STREAM_SLACK),
        }
    }
}

/// Which half of the connection is polling.
#[derive(Debug, Clone, Copy)]
enum Side {
    Read,
    Write,
}

/// Wakes whoever polled the reading and the writing half last: the clock and
/// the eviction request concern both.
#[derive(Debug, Default)]
struct Wakers {
    read: AtomicWaker,
    write: AtomicWaker,
}

impl ArcWake for Wakers {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.read.wake();
        arc_self.write.wake();
    }
}

/// The header block being received: its stream and encoded size so far.
#[derive(Debug, Clone, Copy)]
struct OpenBlock {
    stream_id: u32,
    encoded: usize,
}

#[derive(Debug)]
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// A server-side connection wrapper that makes h2 accept gRPC requests whose
/// `:authority` is a percent-encoded socket path, and bounds what the peer can
/// make the server hold (header block sizes, idle time). See the module docs.
///
/// Reads are transformed; writes pass straight through (they are only watched
/// for frame boundaries, to count the streams in flight).
pub struct AuthorityShim<S> {
    inner: S,
    limits: ShimLimits,
    state: State,
    input: BytesMut,
    output: BytesMut,
    decoder: loona_hpack::Decoder<'static>,
    /// The header block being collected for rewriting.
    pending: Option<PendingBlock>,
    /// The header block being received, in either mode.
    open_block: Option<OpenBlock>,
    eof: bool,
    rewritten: u64,
    seen_block: bool,
    /// False once the client's first request carried a valid authority: it is
    /// not a client that needs rewriting (gRPC clients keep one authority per
    /// connection), so its header blocks are copied untouched from then on.
    rewrite: bool,
    slot: Option<ConnSlot>,
    accepted: Instant,
    last_activity: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    wakers: Arc<Wakers>,
    closed: Option<Closed>,
    open_streams: Vec<u32>,
    last_client_stream: u32,
    written: FrameScanner,
}

impl<S> std::fmt::Debug for AuthorityShim<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityShim")
            .field("state", &self.state)
            .field("buffered_in", &self.input.len())
            .field("buffered_out", &self.output.len())
            .field("rewritten", &self.rewritten)
            .field("open_streams", &self.open_streams.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl<S> AuthorityShim<S> {
    /// Wraps the server side of a freshly accepted connection, with the default
    /// [`ServerLimits`].
    pub fn new(inner: S) -> Self {
        Self::with_limits(inner, &ServerLimits::default())
    }

    /// Wraps the server side of a freshly accepted connection, applying the
    /// per-connection part of `limits` (header block sizes, handshake and idle
    /// timeouts). The clock starts now.
    pub fn with_limits(inner: S, limits: &ServerLimits) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_MAX_TABLE_SIZE);
        let now = Instant::now();
        Self {
            inner,
            limits: limits.into(),
            state: State::Preface {
                remaining: PREFACE_LEN,
            },
            input: BytesMut::new(),
            output: BytesMut::new(),
            decoder,
            pending: None,
            open_block: None,
            eof: false,
            rewritten: 0,
            seen_block: false,
            rewrite: true,
            slot: None,
            accepted: now,
            last_activity: now,
            timer: None,
            wakers: Arc::default(),
            closed: None,
            open_streams: Vec::new(),
            last_client_stream: 0,
            written: FrameScanner::default(),
        }
    }

    /// As [`Self::with_limits`], holding `slot` of the listener's connection
    /// limit until dropped.
    pub(crate) fn limited(inner: S, slot: ConnSlot, limits: &ServerLimits) -> Self {
        let mut shim = Self::with_limits(inner, limits);
        shim.slot = Some(slot);
        shim
    }

    /// How many `:authority` values this connection had replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Streams this connection has in flight, as far as the wrapper can tell.
    pub fn open_streams(&self) -> usize {
        self.open_streams.len()
    }

    /// Moves as much of `input` to `output` as complete frames allow.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.state {
                State::Preface { remaining } => {
                    let k = remaining.min(self.input.len());
                    if k == 0 {
                        return Ok(());
                    }
                    self.output.extend_from_slice(&self.input[..k]);
                    self.input.advance(k);
                    self.state = if remaining == k {
                        // The idle clock starts with the handshake done.
                        self.last_activity = Instant::now();
                        State::FrameHeader
                    } else {
                        State::Preface {
                            remaining: remaining - k,
                        }
                    };
                }
                State::Passthrough { remaining } => {
                    if remaining == 0 {
                        self.state = State::FrameHeader;
                        continue;
                    }
                    let k = remaining.min(self.input.len());
                    if k == 0 {
                        return Ok(());
                    }
                    self.output.extend_from_slice(&self.input[..k]);
                    self.input.advance(k);
                    self.state = State::Passthrough {
                        remaining: remaining - k,
                    };
                }
                State::FrameHeader => {
                    let Some(raw) = self.input.first_chunk::<FRAME_HEADER_LEN>() else {
                        return Ok(());
                    };
                    let head = FrameHead::parse(raw);
                    let in_block = self.client_frame(&head)?;
                    if in_block && self.rewrite {
                        self.input.advance(FRAME_HEADER_LEN);
                        // Bounded by `max_header_block`, checked in `client_frame`.
                        self.input
                            .reserve(head.len.saturating_sub(self.input.len()));
                        self.state = State::BlockFrame { head };
                    } else {
                        self.output
                            .extend_from_slice(&self.input[..FRAME_HEADER_LEN]);
                        self.input.advance(FRAME_HEADER_LEN);
                        self.state = State::Passthrough {
                            remaining: head.len,
                        };
                    }
                }
                State::BlockFrame { head } => {
                    if self.input.len() < head.len {
                        return Ok(());
                    }
                    let frame = self.input.split_to(head.len);
                    if head.kind == FRAME_HEADERS {
                        self.start_block(head.stream_id, head.flags, &frame)?;
                    } else if let Some(p) = self.pending.as_mut() {
                        p.block.extend_from_slice(&frame);
                    }
                    self.state = State::FrameHeader;
                    if head.flags & FLAG_END_HEADERS != 0 {
                        self.finish_block()?;
                    }
                }
            }
        }
    }

    /// Accounts for one client frame from its header alone: header-block
    /// framing and its encoded size, streams opened and reset, activity.
    /// Returns whether the frame belongs to a header block.
    fn client_frame(&mut self, head: &FrameHead) -> io::Result<bool> {
        let in_block = match (head.kind, self.open_block) {
            (FRAME_HEADERS, None) => true,
            (FRAME_HEADERS, Some(_)) => {
                return Err(invalid("HEADERS frame while another header block is open"));
            }
            (FRAME_CONTINUATION, Some(b)) if b.stream_id == head.stream_id => true,
            // A CONTINUATION outside a block: h2 rejects it.
            (FRAME_CONTINUATION, None) => false,
            (_, Some(_)) => {
                return Err(invalid("HTTP/2 header block interrupted by another frame"));
            }
            (_, None) => false,
        };
        if in_block {
            let encoded = self
                .open_block
                .map_or(0, |b| b.encoded)
                .saturating_add(head.len);
            let max = self.limits.max_header_block;
            if encoded > max {
                return Err(self.over_limit(format_args!(
                    "header block of at least {encoded} bytes on the wire, more than the {max} allowed"
                )));
            }
            self.open_block = (head.flags & FLAG_END_HEADERS == 0).then_some(OpenBlock {
                stream_id: head.stream_id,
                encoded,
            });
        }
        if head.kind == FRAME_HEADERS && head.stream_id > self.last_client_stream {
            self.last_client_stream = head.stream_id;
            if self.open_streams.len() < self.limits.max_tracked_streams {
                self.open_streams.push(head.stream_id);
            }
            self.sync_slot();
        }
        if head.kind == FRAME_RST_STREAM {
            self.stream_closed(head.stream_id);
        }
        if head.is_stream_traffic() {
            self.activity();
        }
        Ok(in_block)
    }

    /// Accounts for one frame the server wrote.
    fn server_frame(&mut self, head: FrameHead) {
        if !head.is_stream_traffic() {
            return;
        }
        self.activity();
        let ends = match head.kind {
            FRAME_HEADERS | FRAME_DATA => head.flags & FLAG_END_STREAM != 0,
            FRAME_RST_STREAM => true,
            _ => false,
        };
        if ends {
            self.stream_closed(head.stream_id);
        }
    }

    fn server_wrote(&mut self, bytes: &[u8]) {
        let mut scanner = std::mem::take(&mut self.written);
        scanner.feed(bytes, |head| self.server_frame(head));
        self.written = scanner;
    }

    fn stream_closed(&mut self, stream_id: u32) {
        if let Some(i) = self.open_streams.iter().position(|&s| s == stream_id) {
            self.open_streams.swap_remove(i);
            self.sync_slot();
        }
    }

    fn sync_slot(&self) {
        if let Some(slot) = &self.slot {
            slot.set_in_flight(self.open_streams.len());
        }
    }

    fn activity(&mut self) {
        self.last_activity = Instant::now();
        if let Some(slot) = &self.slot {
            slot.touch();
        }
    }

    /// Logs (rate-limited) and records an exceeded header limit; the returned
    /// error ends the connection.
    fn over_limit(&mut self, what: std::fmt::Arguments<'_>) -> io::Error {
        let msg = format!("closing connection: {what}");
        if let Some(held_back) = LIMIT_EXCEEDED.check() {
            tracing::warn!(held_back, "{msg}");
        }
        self.closed = Some(Closed::Refused);
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }

    /// When the connection must be closed by its clock.
    fn deadline(&self) -> Instant {
        let (from, after) = match self.state {
            State::Preface { .. } => (self.accepted, self.limits.handshake_timeout),
            _ => (self.last_activity, self.limits.idle_timeout),
        };
        from.checked_add(after)
            .unwrap_or_else(|| Instant::now() + FAR_FUTURE)
    }

    /// Checks the clock and the listener's eviction request, registering `cx` to
    /// be woken by either (as the reader or the writer: both are woken, in case
    /// they are polled from different tasks). `Some` when the connection is
    /// (now) closed.
    fn poll_guard(&mut self, cx: &mut Context<'_>, side: Side) -> Option<Closed> {
        if self.closed.is_some() {
            return self.closed;
        }
        match side {
            Side::Read => self.wakers.read.register(cx.waker()),
            Side::Write => self.wakers.write.register(cx.waker()),
        }
        let wakers = self.wakers.clone();
        let waker = futures::task::waker_ref(&wakers);
        let cx = &mut Context::from_waker(&waker);
        if let Some(slot) = &self.slot
            && slot.poll_evicted(cx, self.open_streams.len())
        {
            tracing::debug!("closing an idle connection to make room for a new one");
            self.closed = Some(Closed::Evicted);
            return self.closed;
        }
        let deadline = self.deadline();
        let mut timer = self
            .timer
            .take()
            .unwrap_or_else(|| Box::pin(tokio::time::sleep_until(deadline)));
        // A later deadline is picked up when the timer fires; an earlier one (the
        // idle timeout replacing the handshake timeout) must be set now.
        if deadline < timer.deadline() {
            timer.as_mut().reset(deadline);
        }
        let closed = loop {
            if timer.as_mut().poll(cx).is_pending() {
                break None;
            }
            let due = self.deadline();
            if due <= Instant::now() {
                let why = if matches!(self.state, State::Preface { .. }) {
                    Closed::Handshake
                } else {
                    Closed::Idle
                };
                tracing::debug!(reason = ?why, "closing a connection without traffic");
                break Some(why);
            }
            timer.as_mut().reset(due);
        };
        self.timer = Some(timer);
        self.closed = closed;
        closed
    }

    fn start_block(&mut self, stream_id: u32, flags: u8, payload: &[u8]) -> io::Result<()> {
        let mut p = payload;
        let mut pad = 0usize;
        if flags & FLAG_PADDED != 0 {
            let (&n, rest) = p
                .split_first()
                .ok_or_else(|| invalid("padded HEADERS frame without pad length"))?;
            pad = usize::from(n);
            p = rest;
        }
        let priority = if flags & FLAG_PRIORITY != 0 {
            let Some((prio, rest)) = p.split_first_chunk::<5>() else {
                return Err(invalid("HEADERS frame too short for its priority fields"));
            };
            p = rest;
            Some(*prio)
        } else {
            None
        };
        if pad > p.len() {
            return Err(invalid("HEADERS frame padding longer than its payload"));
        }
        self.pending = Some(PendingBlock {
            stream_id,
            end_stream: flags & FLAG_END_STREAM != 0,
            priority,
            block: p[..p.len() - pad].to_vec(),
        });
        Ok(())
    }

    fn finish_block(&mut self) -> io::Result<()> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        let limit = self.limits.max_header_list_size;
        let mut size = 0usize;
        let mut over = false;
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        // The decoder cannot be stopped half-way (its dynamic table must stay in
        // step), but past the limit nothing is copied: references to table
        // entries are borrowed, so decoding the rest costs no memory.
        self.decoder
            .decode_with_cb(
                &pending.block,
                |name: Cow<'_, [u8]>, value: Cow<'_, [u8]>| {
                    if over {
                        return;
                    }
                    size = size.saturating_add(name.len() + value.len() + FIELD_OVERHEAD);
                    if size > limit {
                        over = true;
                        headers = Vec::new();
                        return;
                    }
                    headers.push((name.into_owned(), value.into_owned()));
                },
            )
            .map_err(|e| invalid(&format!("HPACK decoding failed: {e}")))?;
        if over {
            return Err(self.over_limit(format_args!(
                "header list of more than {limit} bytes decoded (from {} bytes on the wire)",
                pending.block.len()
            )));
        }
        let first = !self.seen_block;
        self.seen_block = true;
        if first
            && headers
                .iter()
                .any(|(n, v)| n.as_slice() == b":authority" && valid_authority(v))
        {
            // Forward this block as it came and stop rewriting.
            self.emit_block(&pending, &pending.block);
            self.rewrite = false;
            return Ok(());
        }
        let mut block = Vec::with_capacity(pending.block.len() + 16);
        for (name, value) in &headers {
            let value: &[u8] = if name.as_slice() == b":authority" && !valid_authority(value) {
                self.rewritten += 1;
                REPLACEMENT_AUTHORITY
            } else {
                value
            };
            encode_literal(&mut block, name, value)?;
        }
        self.emit_block(&pending, &block);
        Ok(())
    }

    fn emit_block(&mut self, pending: &PendingBlock, block: &[u8]) {
        let prio_len = if pending.priority.is_some() { 5 } else { 0 };
        let first_len = block.len().min(OUT_MAX_FRAME - prio_len);
        let (first, mut rest) = block.split_at(first_len);
        let mut flags = 0u8;
        if pending.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if pending.priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        put_frame_header(
            &mut self.output,
            first.len() + prio_len,
            FRAME_HEADERS,
            flags,
            pending.stream_id,
        );
        if let Some(prio) = pending.priority {
            self.output.extend_from_slice(&prio);
        }
        self.output.extend_from_slice(first);
        while !rest.is_empty() {
            let n = rest.len().min(OUT_MAX_FRAME);
            let (chunk, tail) = rest.split_at(n);
            let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
            put_frame_header(
                &mut self.output,
                n,
                FRAME_CONTINUATION,
                flags,
                pending.stream_id,
            );
            self.output.extend_from_slice(chunk);
            rest = tail;
        }
    }
}

/// True when h2 (through the `http` crate) accepts `value` as a URI authority.
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// HPACK "literal header field without indexing, new name" (RFC 7541 §6.2.2),
/// no Huffman coding: leaves the peer's dynamic table untouched.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> io::Result<()> {
    out.push(0x00);
    loona_hpack::encoder::encode_integer_into(name.len(), 7, 0, out)?;
    out.extend_from_slice(name);
    loona_hpack::encoder::encode_integer_into(value.len(), 7, 0, out)?;
    out.extend_from_slice(value);
    Ok(())
}

fn put_frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream_id: u32) {
    // `len` is at most OUT_MAX_FRAME, so it fits the 24-bit field.
    let len = len as u32;
    out.put_u8((len >> 16) as u8);
    out.put_u8((len >> 8) as u8);
    out.put_u8(len as u8);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id & 0x7fff_ffff);
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// The error writes get once the wrapper has closed the connection.
fn closed_error(why: Closed) -> io::Error {
    let msg = match why {
        Closed::Handshake => "no HTTP/2 preface within the handshake timeout",
        Closed::Idle => "connection idle for longer than the idle timeout",
        Closed::Evicted => "connection closed to make room for a new one",
        Closed::Refused => "connection refused by the HTTP/2 limits",
    };
    io::Error::new(io::ErrorKind::ConnectionAborted, msg)
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityShim<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = buf.remaining().min(this.output.len());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.closed.is_some() {
                // h2 takes the end of input as the peer closing the connection.
                return Poll::Ready(Ok(()));
            }
            if let Err(e) = this.process() {
                this.closed = Some(Closed::Refused);
                return Poll::Ready(Err(e));
            }
            if !this.output.is_empty() {
                continue;
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.poll_guard(cx, Side::Read).is_some() {
                continue;
            }
            // Fast path: payload bytes of a passthrough frame go straight to the caller.
            if let State::Passthrough { remaining } = this.state
                && remaining > 0
                && this.input.is_empty()
            {
                let max = remaining.min(buf.remaining());
                let mut sub = ReadBuf::new(buf.initialize_unfilled_to(max));
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut sub))?;
                let n = sub.filled().len();
                if n == 0 {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                buf.advance(n);
                this.state = State::Passthrough {
                    remaining: remaining - n,
                };
                return Poll::Ready(Ok(()));
            }
            this.input.reserve(READ_CHUNK);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.input
            ))?;
            if n == 0 {
                this.eof = true;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityShim<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Checked here too: a peer that stops reading stalls h2's writes, and
        // then h2 may not read again until they complete.
        if let Some(why) = this.poll_guard(cx, Side::Write) {
            return Poll::Ready(Err(closed_error(why)));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.server_wrote(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(why) = this.poll_guard(cx, Side::Write) {
            return Poll::Ready(Err(closed_error(why)));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(why) = this.poll_guard(cx, Side::Write) {
            return Poll::Ready(Err(closed_error(why)));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let k = left.min(b.len());
            this.server_wrote(&b[..k]);
            left -= k;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityShim<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_frame_header(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out.to_vec()
    }

    async fn run_through(input: Vec<u8>) -> Vec<u8> {
        run_through_with(input, &ServerLimits::default())
            .await
            .unwrap()
    }

    /// What h2 would read from the shim, given everything the client sends.
    async fn run_through_with(input: Vec<u8>, limits: &ServerLimits) -> io::Result<Vec<u8>> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut shim = AuthorityShim::with_limits(server, limits);
        let mut out = Vec::new();
        shim.read_to_end(&mut out).await.map(|_| out)
    }

    fn decode_headers(bytes: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut dec = loona_hpack::Decoder::new();
        dec.decode(bytes).unwrap()
    }

    /// A header block as grpc-go writes it: `:authority` as a literal with
    /// incremental indexing, so the next request refers to it by dynamic index 62.
    fn grpc_go_block(first: bool) -> Vec<u8> {
        let authority = b"%2Fetc%2Fkubeedge%2Fdmi.sock";
        let path = b"/v1beta1.DeviceManagerService/MapperRegister";
        let mut b = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
        b.push(0x04); // :path, literal without indexing, static name index 4
        b.push(path.len() as u8);
        b.extend_from_slice(path);
        if first {
            b.push(0x41); // :authority, literal with incremental indexing
            b.push(authority.len() as u8);
            b.extend_from_slice(authority);
        } else {
            b.push(0xbe); // dynamic index 62: the authority added above
        }
        b
    }

    #[tokio::test]
    async fn rewrites_percent_encoded_authority_and_keeps_other_frames() {
        let settings = frame(0x4, 0, 0, &[]);
        let headers = frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &grpc_go_block(true));
        let data = frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\x02\x08\x01");
        let mut input = PREFACE.to_vec();
        input.extend(&settings);
        input.extend(&headers);
        input.extend(&data);
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            3,
            &grpc_go_block(false),
        ));

        let out = run_through(input).await;
        assert_eq!(&out[..24], PREFACE);
        assert_eq!(&out[24..24 + settings.len()], &settings[..]);
        let mut rest = &out[24 + settings.len()..];
        let mut h2dec = loona_hpack::Decoder::new();
        for expected_stream in [1u32, 3] {
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            assert_eq!(rest[3], FRAME_HEADERS);
            assert_ne!(rest[4] & FLAG_END_HEADERS, 0);
            assert_eq!(
                u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]),
                expected_stream
            );
            let got = h2dec.decode(&rest[9..9 + len]).unwrap();
            assert_eq!(
                got,
                vec![
                    (b":method".to_vec(), b"POST".to_vec()),
                    (b":scheme".to_vec(), b"http".to_vec()),
                    (
                        b":path".to_vec(),
                        b"/v1beta1.DeviceManagerService/MapperRegister".to_vec()
                    ),
                    (b":authority".to_vec(), b"localhost".to_vec()),
                ]
            );
            rest = &rest[9 + len..];
            if expected_stream == 1 {
                assert_eq!(&rest[..data.len()], &data[..]);
                rest = &rest[data.len()..];
            }
        }
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn valid_authority_is_kept_and_continuation_and_padding_are_handled() {
        let mut enc = loona_hpack::Encoder::new();
        let long = vec![b'a'; 40_000];
        let hdrs: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":authority", b"localhost"),
            (b"x-big", &long),
        ];
        let block = enc.encode(hdrs);
        // HEADERS (padded, with priority) + two CONTINUATION frames.
        let (a, rest) = block.split_at(10_000);
        let (b, c) = rest.split_at(20_000);
        let mut first = vec![3u8];
        first.extend([0, 0, 0, 0, 16]);
        first.extend(a);
        first.extend([0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
            5,
            &first,
        ));
        input.extend(frame(FRAME_CONTINUATION, 0, 5, b));
        input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 5, c));
        // 40 KB of headers: above the default limits, within these.
        let limits = ServerLimits::default().with_max_header_list_size(48 * 1024);
        let out = run_through_with(input, &limits).await.unwrap();
        let mut rest = &out[24..];
        let mut joined = Vec::new();
        let mut frames = 0;
        while !rest.is_empty() {
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            assert!(len <= OUT_MAX_FRAME);
            let payload = &rest[9..9 + len];
            if frames == 0 {
                assert_eq!(rest[3], FRAME_HEADERS);
                assert_eq!(
                    rest[4] & (FLAG_END_STREAM | FLAG_PRIORITY),
                    FLAG_END_STREAM | FLAG_PRIORITY
                );
                assert_eq!(&payload[..5], &[0, 0, 0, 0, 16]);
                joined.extend(&payload[5..]);
            } else {
                assert_eq!(rest[3], FRAME_CONTINUATION);
                joined.extend(payload);
            }
            frames += 1;
            rest = &rest[9 + len..];
        }
        assert!(frames >= 3);
        let got = decode_headers(&joined);
        assert_eq!(got[1], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(got[2].1.len(), 40_000);
    }

    #[tokio::test]
    async fn a_client_with_a_valid_authority_is_passed_through_untouched() {
        let mut enc = loona_hpack::Encoder::new();
        let hdrs: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":authority", b"localhost"),
            (b":path", b"/x"),
        ];
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &enc.encode(hdrs.clone()),
        ));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, b"payload"));
        input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &enc.encode(hdrs)));
        let out = run_through(input.clone()).await;
        assert_eq!(out, input, "byte for byte");
    }

    #[tokio::test]
    async fn interrupted_header_block_is_an_error() {
        let mut enc = loona_hpack::Encoder::new();
        let block = enc.encode(vec![(&b":method"[..], &b"POST"[..])]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_HEADERS, 0, 1, &block));
        input.extend(frame(0x0, 0, 1, b"x"));
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut shim = AuthorityShim::new(server);
        let mut out = Vec::new();
        let err = shim.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn authority_validity_matches_h2() {
        assert!(valid_authority(b"localhost"));
        assert!(valid_authority(b"127.0.0.1:50051"));
        assert!(!valid_authority(b"%2Fetc%2Fkubeedge%2Fdmi.sock"));
        assert!(!valid_authority(b"/etc/kubeedge/dmi.sock"));
    }

    // ---- limits ----

    fn hpack_int(value: usize, prefix: u8, flags: u8) -> Vec<u8> {
        let mut out = Vec::new();
        loona_hpack::encoder::encode_integer_into(value, prefix, flags, &mut out).unwrap();
        out
    }

    /// `:method POST`, `:scheme http`, `:path /`, then a literal `x: v...`
    /// (`value_len` bytes) added to the dynamic table, then `refs` one-byte
    /// references to it (dynamic index 62). Decoded size:
    /// 43 + 43 + 38 + (refs + 1) * (value_len + 33) bytes.
    fn bomb_block(value_len: usize, refs: usize) -> Vec<u8> {
        let mut b = vec![0x83, 0x86, 0x84];
        b.push(0x40);
        b.extend(hpack_int(1, 7, 0));
        b.push(b'x');
        b.extend(hpack_int(value_len, 7, 0));
        b.extend(std::iter::repeat_n(b'v', value_len));
        b.extend(std::iter::repeat_n(0xbe, refs));
        b
    }

    /// A header block as HEADERS plus CONTINUATION frames of `chunk` bytes.
    fn header_frames(stream: u32, block: &[u8], chunk: usize) -> Vec<u8> {
        let chunks: Vec<&[u8]> = block.chunks(chunk).collect();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let kind = if i == 0 {
                FRAME_HEADERS
            } else {
                FRAME_CONTINUATION
            };
            let flags = if i + 1 == chunks.len() {
                FLAG_END_HEADERS
            } else {
                0
            };
            out.extend(frame(kind, flags, stream, c));
        }
        out
    }

    fn peak_rss_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    /// Feeds `input` and keeps the client open; the result of reading until
    /// the shim ends or errors, which must happen within 2 s.
    async fn feed_open(input: Vec<u8>, limits: &ServerLimits) -> io::Result<Vec<u8>> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&input).await.unwrap();
        let mut shim = AuthorityShim::with_limits(server, limits);
        let mut out = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(2), shim.read_to_end(&mut out))
            .await
            .expect("the shim must decide without more input");
        drop(client);
        r.map(|_| out)
    }

    #[tokio::test]
    async fn a_small_block_that_decodes_huge_is_refused_without_the_memory() {
        // 64 KB on the wire (just under the encoded cap), 240 MB decoded.
        let block = bomb_block(4000, 60_000);
        assert!(block.len() < DEFAULT_MAX_HEADER_BLOCK_FOR_TESTS);
        let mut input = PREFACE.to_vec();
        input.extend(header_frames(1, &block, OUT_MAX_FRAME));
        let before = peak_rss_kb();
        let err = feed_open(input, &ServerLimits::default())
            .await
            .unwrap_err();
        let grown_mb = (peak_rss_kb() - before) / 1024;
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("more than 16384 bytes decoded"),
            "{err}"
        );
        assert!(grown_mb < 32, "peak RSS grew by {grown_mb} MB");
    }

    #[tokio::test]
    async fn the_decoded_limit_counts_as_h2_does() {
        // 43 (:method POST) + 43 (:scheme http) + 38 (:path /) + 33 + len (x).
        let limit = 1000;
        let limits = ServerLimits::default().with_max_header_list_size(limit);
        let at_limit = (limit as usize) - 43 - 43 - 38 - 33;
        let mut input = PREFACE.to_vec();
        input.extend(header_frames(1, &bomb_block(at_limit, 0), OUT_MAX_FRAME));
        let out = run_through_with(input, &limits).await.unwrap();
        let got = decode_headers(&out[24 + 9..]);
        assert_eq!(
            got[3].1.len(),
            at_limit,
            "a list of exactly the limit passes"
        );

        let mut input = PREFACE.to_vec();
        input.extend(header_frames(
            1,
            &bomb_block(at_limit + 1, 0),
            OUT_MAX_FRAME,
        ));
        let err = run_through_with(input, &limits).await.unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidData,
            "one byte more does not"
        );
    }

    /// The encoded cap of the default limits, spelled out.
    const DEFAULT_MAX_HEADER_BLOCK_FOR_TESTS: usize = 64 * 1024;

    #[tokio::test]
    async fn an_oversize_block_over_continuation_frames_is_refused_before_buffering() {
        // HEADERS + 3 CONTINUATION of 16 KiB: exactly the 64 KiB cap, accepted so
        // far; then a CONTINUATION header announcing 16 KiB more, whose payload is
        // never sent: the shim must refuse from the frame header alone.
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_HEADERS, 0, 1, &[0x83; 16_384]));
        for _ in 0..3 {
            input.extend(frame(FRAME_CONTINUATION, 0, 1, &[0x83; 16_384]));
        }
        let mut announce = BytesMut::new();
        put_frame_header(&mut announce, 16_384, FRAME_CONTINUATION, 0, 1);
        input.extend_from_slice(&announce);
        let err = feed_open(input, &ServerLimits::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("on the wire"), "{err}");
    }

    #[tokio::test]
    async fn one_huge_headers_frame_is_refused_from_its_header() {
        let mut input = PREFACE.to_vec();
        // A 9-byte frame header announcing 16 MiB - 1 of header block.
        input.extend([
            0xff,
            0xff,
            0xff,
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            0,
            0,
            0,
            1,
        ]);
        let err = feed_open(input, &ServerLimits::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn the_encoded_cap_holds_for_clients_that_need_no_rewriting() {
        let mut enc = loona_hpack::Encoder::new();
        let ok: Vec<(&[u8], &[u8])> = vec![(b":method", b"POST"), (b":authority", b"localhost")];
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &enc.encode(ok)));
        input.extend(frame(FRAME_HEADERS, 0, 3, &[0x83; 16_384]));
        for _ in 0..4 {
            input.extend(frame(FRAME_CONTINUATION, 0, 3, &[0x83; 16_384]));
        }
        let err = feed_open(input, &ServerLimits::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_dynamic_table_larger_than_h2_allows_is_refused() {
        let mut block = hpack_int(1 << 20, 5, 0x20); // table size update to 1 MiB
        block.extend([0x83, 0x86, 0x84]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block));
        let err = feed_open(input, &ServerLimits::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_connection_without_a_preface_is_closed_after_the_handshake_timeout() {
        let (_client, server) = tokio::io::duplex(1 << 10);
        let limits = ServerLimits::default().with_handshake_timeout(Duration::from_millis(100));
        let mut shim = AuthorityShim::with_limits(server, &limits);
        let start = std::time::Instant::now();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), shim.read_to_end(&mut out))
            .await
            .expect("closed")
            .unwrap();
        assert!(out.is_empty());
        assert!(start.elapsed() >= Duration::from_millis(100));
        // Writes fail from now on.
        assert!(shim.write_all(b"x").await.is_err());
    }

    fn valid_request(stream: u32) -> Vec<u8> {
        let mut enc = loona_hpack::Encoder::new();
        let hdrs: Vec<(&[u8], &[u8])> = vec![(b":method", b"POST"), (b":authority", b"localhost")];
        frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            stream,
            &enc.encode(hdrs),
        )
    }

    const PING: [u8; 17] = [0, 0, 8, 0x6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];

    #[tokio::test]
    async fn an_idle_connection_is_closed_and_pings_do_not_keep_it() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let limits = ServerLimits::default().with_idle_timeout(Duration::from_millis(300));
        let shim = AuthorityShim::with_limits(server, &limits);
        let (mut rd, mut wr) = tokio::io::split(shim);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        input.extend(valid_request(1));
        client.write_all(&input).await.unwrap();
        let start = std::time::Instant::now();
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            rd.read_to_end(&mut out)
                .await
                .map(|_| std::time::Instant::now())
        });
        // The server answers at 150 ms; the client then only pings.
        tokio::time::sleep(Duration::from_millis(150)).await;
        wr.write_all(&frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            b"\x88",
        ))
        .await
        .unwrap();
        let pinger = tokio::spawn(async move {
            for _ in 0..40 {
                if client.write_all(&PING).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let ended = tokio::time::timeout(Duration::from_secs(3), reader)
            .await
            .expect("closed by the idle timeout")
            .unwrap()
            .unwrap();
        let after = ended - start;
        assert!(
            after >= Duration::from_millis(440) && after < Duration::from_millis(1500),
            "closed after {after:?}: 300 ms after the response at 150 ms"
        );
        pinger.abort();
    }

    #[tokio::test]
    async fn request_traffic_keeps_a_connection_open() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let limits = ServerLimits::default().with_idle_timeout(Duration::from_millis(500));
        let mut shim = AuthorityShim::with_limits(server, &limits);
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &grpc_go_block(true),
        ));
        client.write_all(&input).await.unwrap();
        let mut buf = vec![0u8; 1 << 16];
        // 1.2 s of a request trickling in, 100 ms apart: longer than the idle
        // timeout in total, never idle for that long.
        for _ in 0..12 {
            client.write_all(&frame(0x0, 0, 1, b"data")).await.unwrap();
            let n = tokio::time::timeout(Duration::from_millis(500), shim.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "still open");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads whatever the shim has to give within 100 ms.
    async fn drain<S: AsyncRead + Unpin>(shim: &mut AuthorityShim<S>) {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(r) =
            tokio::time::timeout(Duration::from_millis(100), shim.read(&mut buf)).await
        {
            if r.unwrap() == 0 {
                break;
            }
        }
    }

    #[tokio::test]
    async fn streams_in_flight_are_counted_from_request_to_end_or_reset() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut shim = AuthorityShim::new(server);
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &grpc_go_block(true),
        ));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0"));
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            3,
            &grpc_go_block(false),
        ));
        client.write_all(&input).await.unwrap();
        drain(&mut shim).await;
        assert_eq!(shim.open_streams(), 2);
        // The response to 1: headers, data, trailers with END_STREAM, written in
        // pieces that split frame headers.
        let mut response = frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, b"\x88");
        response.extend(frame(0x0, 0, 1, b"\0\0\0\0\0"));
        assert_eq!(shim.open_streams(), 2);
        response.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            b"\x40",
        ));
        for piece in response.chunks(4) {
            shim.write_all(piece).await.unwrap();
        }
        assert_eq!(shim.open_streams(), 1);
        // The client gives up on 3.
        client
            .write_all(&frame(FRAME_RST_STREAM, 0, 3, &[0, 0, 0, 8]))
            .await
            .unwrap();
        drain(&mut shim).await;
        assert_eq!(shim.open_streams(), 0);
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_to_make_room_and_a_busy_one_is_not() {
        use super::super::conns::ConnRegistry;
        let reg = ConnRegistry::new(1);
        let limits = ServerLimits::default();

        // Busy: a request in flight. The newcomer gets no slot.
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut busy = AuthorityShim::limited(server, reg.try_acquire().unwrap(), &limits);
        let mut input = PREFACE.to_vec();
        input.extend(valid_request(1));
        client.write_all(&input).await.unwrap();
        drain(&mut busy).await;
        assert_eq!(busy.open_streams(), 1);
        let waiting = {
            let reg = reg.clone();
            tokio::spawn(async move { reg.acquire(Duration::from_millis(300)).await })
        };
        drain(&mut busy).await;
        assert!(waiting.await.unwrap().is_none());
        let mut buf = [0u8; 16];
        let still_open =
            tokio::time::timeout(Duration::from_millis(100), busy.read(&mut buf)).await;
        assert!(still_open.is_err(), "a busy connection is left alone");

        // Once answered, it is idle and makes room.
        busy.write_all(&frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            b"\x88",
        ))
        .await
        .unwrap();
        let waiting = {
            let reg = reg.clone();
            tokio::spawn(async move { reg.acquire(Duration::from_secs(2)).await })
        };
        let n = tokio::time::timeout(Duration::from_secs(1), busy.read(&mut buf))
            .await
            .expect("closed")
            .unwrap();
        assert_eq!(n, 0, "end of input for h2");
        drop(busy);
        assert!(waiting.await.unwrap().is_some());
        drop(client);
    }
}
