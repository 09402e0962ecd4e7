//! Frame checksums: which algorithm, where the checksum sits in the frame,
//! which bytes it covers, and how it is written.
//!
//! All positions are **0-based byte indexes into the payload**: the frame as
//! received without its terminator (with `length`/`lengthByte` framing, the
//! whole frame). A negative index counts from the end of the payload: `-1` is
//! the last byte, `-2` the one before.
//!
//! * `checksumPosition`: index of the checksum's first byte. Default: the
//!   checksum is the last bytes of the payload, i.e. right before the
//!   terminator (`-1` for one byte, `-2` for CRC16 or a hex-written byte,
//!   `-4` for a hex-written CRC16).
//! * `checksumStart` (default 0) and `checksumEnd` (default: the checksum's
//!   position): the covered bytes are `checksumStart ..< checksumEnd` (the end
//!   is exclusive).
//! * `checksumEncoding`: `binary` (default; the checksum's bytes as they are)
//!   or `hex` (each byte as two ASCII hex digits, either case, as NMEA's `*47`
//!   or Modbus ASCII's LRC).
//!
//! Algorithms ([`ChecksumKind`]): `xor` (XOR of the bytes, 1 byte), `sum8`
//! (sum modulo 256, 1 byte), `lrc` (two's complement of the sum modulo 256,
//! 1 byte: Modbus ASCII's LRC, computed over the covered bytes as they are),
//! `crc16-modbus` (CRC-16/MODBUS: polynomial 0xA001 reflected, initial 0xFFFF;
//! 2 bytes, **low byte first** on the wire as Modbus RTU sends it).
//!
//! NMEA 0183 (`$GPGGA,...*47`): `checksum: xor`, `checksumEncoding: hex`,
//! `checksumStart: 1` (after `$`), `checksumEnd: -3` (before `*`), position by
//! default the last two characters.

use std::ops::Range;

use serde::Deserialize;

/// A checksum algorithm (visitor `checksum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ChecksumKind {
    /// XOR of every covered byte; 1 byte.
    #[serde(rename = "xor")]
    Xor,
    /// Sum of the covered bytes modulo 256; 1 byte.
    #[serde(rename = "sum8")]
    Sum8,
    /// CRC-16/MODBUS; 2 bytes, low byte first.
    #[serde(rename = "crc16-modbus")]
    Crc16Modbus,
    /// Longitudinal redundancy check: `-(sum mod 256)`; 1 byte.
    #[serde(rename = "lrc")]
    Lrc,
}

impl ChecksumKind {
    /// Bytes of the checksum value (before any hex encoding).
    pub fn width(self) -> usize {
        match self {
            Self::Crc16Modbus => 2,
            Self::Xor | Self::Sum8 | Self::Lrc => 1,
        }
    }

    /// The checksum of `data`, in wire order.
    pub fn compute(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Xor => vec![data.iter().fold(0u8, |a, b| a ^ b)],
            Self::Sum8 => vec![sum8(data)],
            Self::Lrc => vec![sum8(data).wrapping_neg()],
            Self::Crc16Modbus => crc16_modbus(data).to_le_bytes().to_vec(),
        }
    }
}

fn sum8(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// CRC-16/MODBUS of `data` (as a number; Modbus sends it low byte first).
pub fn crc16_modbus(data: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// How the checksum is written in the frame (visitor `checksumEncoding`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumEncoding {
    /// The checksum's bytes as they are.
    #[default]
    Binary,
    /// Each byte as two ASCII hex digits (either case when checking).
    Hex,
}

/// A checksum with its placement; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The algorithm.
    pub kind: ChecksumKind,
    /// How it is written.
    pub encoding: ChecksumEncoding,
    /// Index of its first byte in the payload; negative from the end.
    pub position: i64,
    /// First covered byte; negative from the end.
    pub start: i64,
    /// One past the last covered byte; negative from the end; `None`: the
    /// checksum's position.
    pub end: Option<i64>,
}

/// Why a frame's checksum did not check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumError {
    /// The frame is too short to hold the covered bytes and the checksum.
    OutOfFrame,
    /// The checksum in the frame differs from the computed one (both as written
    /// on the wire).
    Mismatch {
        /// Computed.
        expected: Vec<u8>,
        /// In the frame.
        got: Vec<u8>,
    },
}

/// An index of the module docs resolved against a payload of `len` bytes.
fn resolve(index: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let abs = if index < 0 { len + index } else { index };
    if (0..=len).contains(&abs) {
        usize::try_from(abs).ok()
    } else {
        None
    }
}

impl Checksum {
    /// A checksum of `kind` right before the terminator, covering everything
    /// before it.
    pub fn new(kind: ChecksumKind, encoding: ChecksumEncoding) -> Self {
        let mut c = Self {
            kind,
            encoding,
            position: 0,
            start: 0,
            end: None,
        };
        c.position = -i64::try_from(c.wire_len()).unwrap_or(1);
        c
    }

    /// Bytes the checksum takes in the frame.
    pub fn wire_len(&self) -> usize {
        match self.encoding {
            ChecksumEncoding::Binary => self.kind.width(),
            ChecksumEncoding::Hex => self.kind.width() * 2,
        }
    }

    /// The covered range and the checksum's range in a payload of `len`
    /// bytes, or `None` when they do not fit in it.
    pub fn placement(&self, len: usize) -> Option<(Range<usize>, Range<usize>)> {
        let pos = resolve(self.position, len)?;
        let sum = pos..pos.checked_add(self.wire_len())?;
        if sum.end > len {
            return None;
        }
        let start = resolve(self.start, len)?;
        let end = match self.end {
            Some(e) => resolve(e, len)?,
            None => pos,
        };
        (start <= end).then_some((start..end, sum))
    }

    /// The checksum's bytes as written on the wire for `data`.
    pub fn encode(&self, data: &[u8]) -> Vec<u8> {
        let raw = self.kind.compute(data);
        match self.encoding {
            ChecksumEncoding::Binary => raw,
            ChecksumEncoding::Hex => raw
                .iter()
                .flat_map(|b| format!("{b:02X}").into_bytes())
                .collect(),
        }
    }

    /// Checks the checksum of `payload`.
    ///
    /// # Errors
    /// [`ChecksumError::OutOfFrame`] when the payload is too short for the
    /// placement, [`ChecksumError::Mismatch`] when the values differ.
    pub fn verify(&self, payload: &[u8]) -> Result<(), ChecksumError> {
        let (cover, sum) = self
            .placement(payload.len())
            .ok_or(ChecksumError::OutOfFrame)?;
        let expected = self.encode(&payload[cover]);
        let got = &payload[sum];
        let same = match self.encoding {
            ChecksumEncoding::Binary => expected == got,
            ChecksumEncoding::Hex => expected.eq_ignore_ascii_case(got),
        };
        if same {
            Ok(())
        } else {
            Err(ChecksumError::Mismatch {
                expected,
                got: got.to_vec(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nmea() -> Checksum {
        Checksum {
            start: 1,
            end: Some(-3),
            ..Checksum::new(ChecksumKind::Xor, ChecksumEncoding::Hex)
        }
    }

    #[test]
    fn crc16_modbus_known_vectors() {
        // Read 10 holding registers from unit 1: CRC C5 CD on the wire.
        assert_eq!(
            ChecksumKind::Crc16Modbus.compute(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A]),
            vec![0xC5, 0xCD]
        );
        assert_eq!(crc16_modbus(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A]), 0xCDC5);
        // CRC-16/MODBUS check value of "123456789".
        assert_eq!(crc16_modbus(b"123456789"), 0x4B37);
        assert_eq!(crc16_modbus(&[]), 0xFFFF);
        // A register answer: 01 03 02 00 2A, CRC 39 9B on the wire.
        assert_eq!(
            ChecksumKind::Crc16Modbus.compute(&[0x01, 0x03, 0x02, 0x00, 0x2A]),
            vec![0x39, 0x9B]
        );
        let c = Checksum::new(ChecksumKind::Crc16Modbus, ChecksumEncoding::Binary);
        assert_eq!(c.position, -2);
        assert_eq!(c.verify(&[1, 3, 0, 0, 0, 0x0A, 0xC5, 0xCD]), Ok(()));
        assert!(matches!(
            c.verify(&[1, 3, 0, 0, 0, 0x0A, 0xCD, 0xC5]),
            Err(ChecksumError::Mismatch { .. })
        ));
    }

    #[test]
    fn xor_sum8_and_lrc_known_vectors() {
        // The classic NMEA sentence: checksum 47.
        let line = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47";
        assert_eq!(nmea().verify(line), Ok(()));
        let lower = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*4a";
        assert!(matches!(
            nmea().verify(lower),
            Err(ChecksumError::Mismatch { expected, .. }) if expected == b"47"
        ));
        // Modbus ASCII ":010300000001FB": LRC of 01 03 00 00 00 01 is FB.
        assert_eq!(
            ChecksumKind::Lrc.compute(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x01]),
            vec![0xFB]
        );
        assert_eq!(ChecksumKind::Sum8.compute(&[0xFF, 0x02, 0x10]), vec![0x11]);
        assert_eq!(ChecksumKind::Xor.compute(&[0x0F, 0xF0, 0x01]), vec![0xFE]);
        // Hex checks either case.
        let c = Checksum::new(ChecksumKind::Sum8, ChecksumEncoding::Hex);
        assert_eq!(c.verify(b"\xFF\x02\x1011"), Ok(()));
        let c = Checksum::new(ChecksumKind::Xor, ChecksumEncoding::Hex);
        assert_eq!(c.verify(b"AB03"), Ok(()), "'A' ^ 'B' = 0x03");
        assert_eq!(c.verify(b"\x0f\xf0ff"), Ok(()), "lower-case hex");
    }

    #[test]
    fn placement_and_short_frames() {
        let c = Checksum::new(ChecksumKind::Crc16Modbus, ChecksumEncoding::Binary);
        assert_eq!(c.placement(8), Some((0..6, 6..8)));
        assert_eq!(c.placement(2), Some((0..0, 0..2)));
        assert_eq!(c.placement(1), None);
        assert_eq!(c.verify(&[1]), Err(ChecksumError::OutOfFrame));
        // A checksum in the middle: STX, data, checksum, ETX.
        let mid = Checksum {
            position: -2,
            start: 1,
            end: Some(-2),
            ..Checksum::new(ChecksumKind::Xor, ChecksumEncoding::Binary)
        };
        assert_eq!(mid.placement(6), Some((1..4, 4..5)));
        assert_eq!(mid.verify(&[0x02, 1, 2, 4, 7, 0x03]), Ok(()));
        // Covered range reversed on a short frame.
        assert_eq!(nmea().placement(3), None);
        assert_eq!(nmea().verify(b"$*4"), Err(ChecksumError::OutOfFrame));
        // Positions past the frame.
        let far = Checksum {
            position: 10,
            ..Checksum::new(ChecksumKind::Xor, ChecksumEncoding::Binary)
        };
        assert_eq!(far.placement(10), None);
        assert_eq!(far.placement(11), Some((0..10, 10..11)));
    }

    #[test]
    fn encode_writes_wire_form() {
        let c = Checksum::new(ChecksumKind::Crc16Modbus, ChecksumEncoding::Hex);
        assert_eq!(c.wire_len(), 4);
        assert_eq!(c.encode(&[1, 3, 0, 0, 0, 0x0A]), b"C5CD");
    }
}
