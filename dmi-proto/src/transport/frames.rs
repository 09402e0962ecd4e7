//! HTTP/2 frame layout (RFC 9113 §4.1) as far as the connection wrapper needs it:
//! the 9-byte frame header, the frame types and flags it looks at, and a scanner
//! that finds frame boundaries in a byte stream it does not buffer.

pub(crate) const PREFACE_LEN: usize = 24;
pub(crate) const FRAME_HEADER_LEN: usize = 9;

pub(crate) const FRAME_DATA: u8 = 0x0;
pub(crate) const FRAME_HEADERS: u8 = 0x1;
pub(crate) const FRAME_RST_STREAM: u8 = 0x3;
pub(crate) const FRAME_CONTINUATION: u8 = 0x9;

pub(crate) const FLAG_END_STREAM: u8 = 0x1;
pub(crate) const FLAG_END_HEADERS: u8 = 0x4;
pub(crate) const FLAG_PADDED: u8 = 0x8;
pub(crate) const FLAG_PRIORITY: u8 = 0x20;

/// The fixed 9-byte header of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHead {
    /// Payload length in bytes (24 bits on the wire).
    pub(crate) len: usize,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    /// Stream identifier, reserved bit cleared.
    pub(crate) stream_id: u32,
}

impl FrameHead {
    pub(crate) fn parse(h: &[u8; FRAME_HEADER_LEN]) -> Self {
        Self {
            len: (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]),
            kind: h[3],
            flags: h[4],
            stream_id: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        }
    }

    /// True for the frames that carry a request or a response (HEADERS,
    /// CONTINUATION, DATA, RST_STREAM), as opposed to connection housekeeping
    /// (SETTINGS, PING, WINDOW_UPDATE, PRIORITY, GOAWAY).
    pub(crate) fn is_stream_traffic(&self) -> bool {
        matches!(
            self.kind,
            FRAME_DATA | FRAME_HEADERS | FRAME_CONTINUATION | FRAME_RST_STREAM
        )
    }
}

/// Finds frame headers in a byte stream fed in arbitrary pieces, holding at most
/// one partial frame header (9 bytes); payloads are skipped, never copied.
#[derive(Debug, Default)]
pub(crate) struct FrameScanner {
    header: [u8; FRAME_HEADER_LEN],
    have: usize,
    skip: usize,
}

impl FrameScanner {
    /// Consumes `bytes`, calling `on_frame` for every complete frame header.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(FrameHead)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let k = self.skip.min(bytes.len());
                self.skip -= k;
                bytes = &bytes[k..];
                continue;
            }
            let k = (FRAME_HEADER_LEN - self.have).min(bytes.len());
            self.header[self.have..self.have + k].copy_from_slice(&bytes[..k]);
            self.have += k;
            bytes = &bytes[k..];
            if self.have == FRAME_HEADER_LEN {
                self.have = 0;
                let head = FrameHead::parse(&self.header);
                self.skip = head.len;
                on_frame(head);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut out = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    }

    #[test]
    fn scanner_finds_frames_across_arbitrary_splits() {
        let mut wire = frame(0x4, 0, 0, &[0; 6]);
        wire.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, b"abc"));
        wire.extend(frame(FRAME_DATA, 0, 1, &[7; 40]));
        wire.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            b"t",
        ));
        wire.extend(frame(FRAME_RST_STREAM, 0, 3, &[0, 0, 0, 8]));
        for step in [1, 2, 5, 9, 10, 13, wire.len()] {
            let mut scanner = FrameScanner::default();
            let mut seen = Vec::new();
            for chunk in wire.chunks(step) {
                scanner.feed(chunk, |h| seen.push((h.kind, h.flags, h.stream_id, h.len)));
            }
            assert_eq!(
                seen,
                vec![
                    (0x4, 0, 0, 6),
                    (FRAME_HEADERS, FLAG_END_HEADERS, 1, 3),
                    (FRAME_DATA, 0, 1, 40),
                    (FRAME_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, 1),
                    (FRAME_RST_STREAM, 0, 3, 4),
                ],
                "chunks of {step}"
            );
        }
    }
}
