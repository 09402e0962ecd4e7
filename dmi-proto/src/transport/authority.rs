//! Normalises the HTTP/2 `:authority` that gRPC clients send over Unix sockets.
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
//! through byte for byte.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Frames we emit never exceed the smallest SETTINGS_MAX_FRAME_SIZE a peer may use.
const OUT_MAX_FRAME: usize = 16_384;
/// Largest frame payload HTTP/2 allows (2^24 - 1).
const MAX_FRAME_PAYLOAD: usize = (1 << 24) - 1;
/// Upper bound on one header block (HEADERS plus CONTINUATION), to bound memory.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// The authority substituted for one h2 would reject.
const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
enum State {
    /// Inside the 24-byte client connection preface.
    Preface { remaining: usize },
    /// Waiting for the next 9-byte frame header.
    FrameHeader,
    /// Copying the payload of a frame that needs no rewriting.
    Passthrough { remaining: usize },
    /// The client's first request carried a valid authority: it is not a client
    /// that needs rewriting (gRPC clients keep one authority per connection), so
    /// everything from here on is copied untouched.
    Transparent,
}

#[derive(Debug)]
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// A server-side connection wrapper that makes h2 accept gRPC requests whose
/// `:authority` is a percent-encoded socket path. See the module docs.
///
/// Reads are transformed, writes pass straight through.
pub struct AuthorityShim<S> {
    inner: S,
    state: State,
    input: BytesMut,
    output: BytesMut,
    decoder: loona_hpack::Decoder<'static>,
    pending: Option<PendingBlock>,
    eof: bool,
    rewritten: u64,
    seen_block: bool,
    transparent_after: bool,
}

impl<S> std::fmt::Debug for AuthorityShim<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityShim")
            .field("state", &self.state)
            .field("buffered_in", &self.input.len())
            .field("buffered_out", &self.output.len())
            .field("rewritten", &self.rewritten)
            .finish()
    }
}

impl<S> AuthorityShim<S> {
    /// Wraps the server side of a freshly accepted connection.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            state: State::Preface {
                remaining: PREFACE_LEN,
            },
            input: BytesMut::new(),
            output: BytesMut::new(),
            decoder: loona_hpack::Decoder::new(),
            pending: None,
            eof: false,
            rewritten: 0,
            seen_block: false,
            transparent_after: false,
        }
    }

    /// How many `:authority` values this connection had replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Moves as much of `input` to `output` as complete frames allow.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.state {
                State::Transparent => {
                    if self.input.is_empty() {
                        return Ok(());
                    }
                    let all = self.input.split();
                    self.output.extend_from_slice(&all);
                }
                State::Preface { remaining } => {
                    let k = remaining.min(self.input.len());
                    if k == 0 {
                        return Ok(());
                    }
                    self.output.extend_from_slice(&self.input[..k]);
                    self.input.advance(k);
                    self.state = if remaining == k {
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
                    if self.input.len() < FRAME_HEADER_LEN {
                        return Ok(());
                    }
                    let h = &self.input[..FRAME_HEADER_LEN];
                    let len =
                        (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    let kind = h[3];
                    let flags = h[4];
                    let stream_id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    let is_block = kind == FRAME_HEADERS
                        || (kind == FRAME_CONTINUATION
                            && self
                                .pending
                                .as_ref()
                                .is_some_and(|p| p.stream_id == stream_id));
                    if !is_block {
                        if self.pending.is_some() {
                            return Err(invalid(
                                "HTTP/2 header block interrupted by another frame",
                            ));
                        }
                        self.output
                            .extend_from_slice(&self.input[..FRAME_HEADER_LEN]);
                        self.input.advance(FRAME_HEADER_LEN);
                        self.state = State::Passthrough { remaining: len };
                        continue;
                    }
                    if len > MAX_FRAME_PAYLOAD {
                        return Err(invalid("HTTP/2 frame larger than the protocol allows"));
                    }
                    if self.input.len() < FRAME_HEADER_LEN + len {
                        self.input
                            .reserve(FRAME_HEADER_LEN + len - self.input.len());
                        return Ok(());
                    }
                    let frame = self.input.split_to(FRAME_HEADER_LEN + len);
                    let payload = &frame[FRAME_HEADER_LEN..];
                    if kind == FRAME_HEADERS {
                        self.start_block(stream_id, flags, payload)?;
                    } else if let Some(p) = self.pending.as_mut() {
                        append_fragment(&mut p.block, payload)?;
                    }
                    if flags & FLAG_END_HEADERS != 0 {
                        self.finish_block()?;
                        if self.transparent_after {
                            self.state = State::Transparent;
                        }
                    }
                }
            }
        }
    }

    fn start_block(&mut self, stream_id: u32, flags: u8, payload: &[u8]) -> io::Result<()> {
        if self.pending.is_some() {
            return Err(invalid("HEADERS frame while another header block is open"));
        }
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
            if p.len() < 5 {
                return Err(invalid("HEADERS frame too short for its priority fields"));
            }
            let mut prio = [0u8; 5];
            prio.copy_from_slice(&p[..5]);
            p = &p[5..];
            Some(prio)
        } else {
            None
        };
        if pad > p.len() {
            return Err(invalid("HEADERS frame padding longer than its payload"));
        }
        let mut block = Vec::new();
        append_fragment(&mut block, &p[..p.len() - pad])?;
        self.pending = Some(PendingBlock {
            stream_id,
            end_stream: flags & FLAG_END_STREAM != 0,
            priority,
            block,
        });
        Ok(())
    }

    fn finish_block(&mut self) -> io::Result<()> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        let headers = self
            .decoder
            .decode(&pending.block)
            .map_err(|e| invalid(&format!("HPACK decoding failed: {e:?}")))?;
        let first = !self.seen_block;
        self.seen_block = true;
        if first
            && headers
                .iter()
                .any(|(n, v)| n.as_slice() == b":authority" && valid_authority(v))
        {
            // Forward this block as it came and stop looking at the stream.
            self.emit_raw(&pending);
            self.transparent_after = true;
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

    /// Re-emits a header block unchanged (padding dropped, split as needed).
    fn emit_raw(&mut self, pending: &PendingBlock) {
        let block = pending.block.clone();
        self.emit_block(pending, &block);
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

fn append_fragment(block: &mut Vec<u8>, fragment: &[u8]) -> io::Result<()> {
    if block.len() + fragment.len() > MAX_HEADER_BLOCK {
        return Err(invalid("HTTP/2 header block larger than 1 MiB"));
    }
    block.extend_from_slice(fragment);
    Ok(())
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
            this.process()?;
            if !this.output.is_empty() {
                continue;
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Transparent connections read straight into the caller's buffer.
            if matches!(this.state, State::Transparent) && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
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
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut shim = AuthorityShim::new(server);
        let mut out = Vec::new();
        shim.read_to_end(&mut out).await.unwrap();
        out
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
        let out = run_through(input).await;
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
}
