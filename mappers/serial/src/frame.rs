//! Cutting the byte stream of a port into frames.
//!
//! A property's visitor picks one framing ([`Framing`]):
//!
//! * `terminator` (default `\r\n`): a frame ends with the terminator bytes.
//!   The payload is the frame without them. Anything that is not a valid
//!   frame is discarded up to and including the next terminator, so the
//!   reader is back in step at the next terminator whatever came before.
//! * `length`: every frame is exactly that many bytes.
//! * `lengthByte` (+ `lengthAdjust`): the byte at 0-based index `lengthByte`
//!   holds a count `n`; the frame is `lengthByte + 1 + n + lengthAdjust` bytes
//!   long (`lengthAdjust` counts the bytes after the counted ones, e.g. `2`
//!   for a trailing CRC16, and may be negative when the count includes
//!   bytes already counted).
//!
//! With the two binary framings there is no terminator to resynchronise on:
//! a frame whose checksum fails is taken to be misaligned, and the reader
//! drops one byte and tries again at the next.
//!
//! Frames are at most [`MAX_FRAME`] bytes: a terminator that does not come
//! within that many bytes discards what was buffered.

use crate::escape;

/// Longest frame, bytes.
pub const MAX_FRAME: usize = 4096;

/// How frames are cut from the byte stream (module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Framing {
    /// Frames end with these bytes (never empty).
    Terminator(Vec<u8>),
    /// Frames of exactly this many bytes (1 ..= [`MAX_FRAME`]).
    Length(usize),
    /// The byte at `index` (0-based) counts the bytes after it, plus `adjust`.
    LengthByte {
        /// 0-based index of the count byte.
        index: usize,
        /// Bytes added to the count (may be negative).
        adjust: i64,
    },
}

impl Default for Framing {
    fn default() -> Self {
        Self::Terminator(b"\r\n".to_vec())
    }
}

impl std::fmt::Display for Framing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Terminator(t) => write!(f, "terminator `{}`", escape::show(t, 16)),
            Self::Length(n) => write!(f, "length {n}"),
            Self::LengthByte { index, adjust } => {
                write!(f, "lengthByte {index} with lengthAdjust {adjust}")
            }
        }
    }
}

/// What [`Framing::split`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// A frame of this many bytes starts the buffer.
    Frame(usize),
    /// Not enough bytes yet.
    NeedMore,
    /// The buffer cannot start a frame (a count byte giving an impossible
    /// length, or no terminator within [`MAX_FRAME`] bytes): drop this many
    /// bytes and try again.
    Skip(usize),
}

impl Framing {
    /// Whether frames are cut at a terminator (resynchronisation drops whole
    /// frames) rather than by length (it drops one byte).
    pub fn has_terminator(&self) -> bool {
        matches!(self, Self::Terminator(_))
    }

    /// The fixed frame length, when there is one.
    pub fn fixed_len(&self) -> Option<usize> {
        match self {
            Self::Length(n) => Some(*n),
            _ => None,
        }
    }

    /// Looks for a frame at the start of `buf`.
    pub fn split(&self, buf: &[u8]) -> Split {
        match self {
            Self::Terminator(t) => match find(buf, t) {
                Some(i) => Split::Frame(i + t.len()),
                // Keep a possible start of the terminator.
                None if buf.len() > MAX_FRAME => Split::Skip(buf.len() + 1 - t.len().max(1)),
                None => Split::NeedMore,
            },
            Self::Length(n) => {
                if buf.len() >= *n {
                    Split::Frame(*n)
                } else {
                    Split::NeedMore
                }
            }
            Self::LengthByte { index, adjust } => {
                let Some(&count) = buf.get(*index) else {
                    return Split::NeedMore;
                };
                let total =
                    i64::try_from(*index).unwrap_or(i64::MAX) + 1 + i64::from(count) + adjust;
                match usize::try_from(total) {
                    Ok(n) if n > *index && n <= MAX_FRAME => {
                        if buf.len() >= n {
                            Split::Frame(n)
                        } else {
                            Split::NeedMore
                        }
                    }
                    _ => Split::Skip(1),
                }
            }
        }
    }

    /// The payload of a frame this framing cut: without the terminator.
    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        match self {
            Self::Terminator(t) => frame.strip_suffix(t.as_slice()).unwrap_or(frame),
            _ => frame,
        }
    }
}

/// Index of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminator_frames() {
        let f = Framing::default();
        assert_eq!(f.split(b"ST,GS,+0012.34kg\r\nrest"), Split::Frame(18));
        assert_eq!(f.payload(b"ST,GS,+0012.34kg\r\n"), b"ST,GS,+0012.34kg");
        assert_eq!(f.split(b"ST,GS,+00"), Split::NeedMore);
        assert_eq!(f.split(b"abc\r"), Split::NeedMore);
        assert_eq!(f.split(b"\r\n"), Split::Frame(2));
        let etx = Framing::Terminator(vec![0x03]);
        assert_eq!(etx.split(b"\x02PV=12\x03\x02"), Split::Frame(7));
        assert_eq!(etx.payload(b"\x02PV=12\x03"), b"\x02PV=12");
    }

    #[test]
    fn overlong_input_is_skipped_keeping_a_possible_terminator_start() {
        let f = Framing::default();
        let mut junk = vec![b'x'; MAX_FRAME];
        junk.push(b'\r');
        // Everything but the trailing '\r' goes.
        assert_eq!(f.split(&junk), Split::Skip(MAX_FRAME));
    }

    #[test]
    fn fixed_length_frames() {
        let f = Framing::Length(4);
        assert_eq!(f.split(b"abc"), Split::NeedMore);
        assert_eq!(f.split(b"abcdef"), Split::Frame(4));
        assert_eq!(f.payload(b"abcd"), b"abcd");
        assert_eq!(f.fixed_len(), Some(4));
    }

    #[test]
    fn length_byte_frames() {
        // Modbus RTU answer: unit, function, byte count, data, CRC16.
        let f = Framing::LengthByte {
            index: 2,
            adjust: 2,
        };
        let frame = [0x01, 0x03, 0x02, 0x00, 0x2A, 0x39, 0x9B];
        assert_eq!(f.split(&frame), Split::Frame(7));
        assert_eq!(f.split(&frame[..6]), Split::NeedMore);
        assert_eq!(f.split(&frame[..2]), Split::NeedMore);
        // A count that includes itself: adjust -1.
        let g = Framing::LengthByte {
            index: 0,
            adjust: -1,
        };
        assert_eq!(g.split(&[3, b'a', b'b', b'z']), Split::Frame(3));
        // A count leaving no room for the count byte itself is impossible.
        assert_eq!(g.split(&[0, 1]), Split::Skip(1));
        let big = Framing::LengthByte {
            index: 0,
            adjust: 5000,
        };
        assert_eq!(big.split(&[1]), Split::Skip(1));
    }
}
