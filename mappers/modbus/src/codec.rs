//! Register and bit values ⇄ typed values: data types, byte order (`isSwap`),
//! word order (`isRegisterSwap`), `scale` and `valueOffset`.
//!
//! Registers are big-endian 16-bit words on the wire. Multi-register values are
//! read high word first; `isRegisterSwap` reverses the word order (for 4-register
//! values, all four words), `isSwap` swaps the two bytes inside every register.
//! A numeric value is `raw × scale + valueOffset`, rounded by
//! [`mapper_sdk::scale_linear`] to the decimals its inputs imply (raw 217 with
//! scale 0.1 is 21.7, not 21.700000000000003); writes apply the inverse, drop
//! its binary noise (15 significant digits) and round to the register type, so
//! 21.7 with scale 0.1 writes 217.
//!
//! Text (`string`) is the registers' bytes after the swaps, up to the first NUL
//! byte: a fixed-width field holding a C string ends there, whatever follows
//! it. Trailing spaces (space padding) are dropped too.

use mapper_sdk::{DriverError, DriverResult, Value, scale_linear};

use crate::config::{DataType, ModbusAddress, StringEncoding};

/// Applies `isSwap`/`isRegisterSwap` and returns the value's bytes, big-endian.
pub fn to_bytes(words: &[u16], byte_swap: bool, word_swap: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(words.len() * 2);
    let mut push = |w: u16| {
        let w = if byte_swap { w.swap_bytes() } else { w };
        out.extend_from_slice(&w.to_be_bytes());
    };
    if word_swap {
        words.iter().rev().copied().for_each(&mut push);
    } else {
        words.iter().copied().for_each(&mut push);
    }
    out
}

/// The inverse of [`to_bytes`].
pub fn from_bytes(bytes: &[u8], byte_swap: bool, word_swap: bool) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
            if byte_swap { w.swap_bytes() } else { w }
        })
        .collect();
    if word_swap {
        words.reverse();
    }
    words
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// The f64 with the fewest significant digits that is still this f32: 1.8f reads
/// as 1.8, not 1.7999999523162842 (what Display of the f32 prints, without
/// formatting and parsing text on a hot path).
pub fn f32_as_short_f64(f: f32) -> f64 {
    let x = f64::from(f);
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let magnitude = x.abs().log10().floor() as i32;
    for digits in 1..=9 {
        let scale = 10f64.powi(digits - 1 - magnitude);
        let r = (x * scale).round() / scale;
        if r as f32 == f {
            return r;
        }
    }
    x
}

/// `x` with at most `digits` significant digits: removes the binary noise of a
/// division (216.99999999999997 → 217 at 15 digits).
fn round_significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let decimals = digits - (x.abs().log10().floor() as i32 + 1);
    if !(0..=22).contains(&decimals) {
        return x;
    }
    let p = 10f64.powi(decimals);
    (x * p).round() / p
}

fn transform(a: &ModbusAddress, raw: Value) -> Value {
    let (scale, offset) = (a.scale.unwrap_or(1.0), a.value_offset.unwrap_or(0.0));
    if scale == 1.0 && offset == 0.0 {
        return raw;
    }
    match raw {
        Value::Int(i) => Value::Float(scale_linear(i as f64, 0, scale, offset)),
        Value::Float(x) => Value::Float(scale_linear(
            x,
            mapper_sdk::shortest_decimals(x),
            scale,
            offset,
        )),
        other => other,
    }
}

/// Decodes the registers read for `a` (exactly `a.register_count()` words).
pub fn decode_registers(a: &ModbusAddress, words: &[u16]) -> DriverResult<Value> {
    let dt = a.data_type();
    if dt == DataType::Bit {
        let bit = a.bit.unwrap_or(0);
        return Ok(Value::Bool(words[0] >> bit & 1 == 1));
    }
    let b = to_bytes(words, a.is_swap, a.is_register_swap);
    let raw = match dt {
        DataType::Bool => Value::Bool(words.iter().any(|w| *w != 0)),
        DataType::Int16 => Value::Int(i64::from(i16::from_be_bytes(arr(&b)))),
        DataType::Uint16 => Value::Int(i64::from(u16::from_be_bytes(arr(&b)))),
        DataType::Int32 => Value::Int(i64::from(i32::from_be_bytes(arr(&b)))),
        DataType::Uint32 => Value::Int(i64::from(u32::from_be_bytes(arr(&b)))),
        DataType::Int64 => Value::Int(i64::from_be_bytes(arr(&b))),
        DataType::Uint64 => {
            let v = u64::from_be_bytes(arr(&b));
            i64::try_from(v)
                .map(Value::Int)
                .unwrap_or(Value::Float(v as f64))
        }
        DataType::Float32 => Value::Float(f32_as_short_f64(f32::from_be_bytes(arr(&b)))),
        DataType::Float64 => Value::Float(f64::from_be_bytes(arr(&b))),
        DataType::String => {
            // The text ends at its first NUL; bytes after it are not part of it.
            let text = b.split(|c| *c == 0).next().unwrap_or_default();
            let end = text.iter().rposition(|c| *c != b' ').map_or(0, |i| i + 1);
            let bytes = &text[..end];
            match a.string_encoding.unwrap_or_default() {
                StringEncoding::Ascii if !bytes.is_ascii() => {
                    return Err(DriverError::Value(format!(
                        "register text is not ASCII: {bytes:?}"
                    )));
                }
                _ => Value::String(String::from_utf8_lossy(bytes).into_owned()),
            }
        }
        // Bits were answered above, before the byte conversion.
        DataType::Bit => Value::Bool(words[0] & 1 == 1),
    };
    Ok(transform(a, raw))
}

/// The integer register value for `x`. `x` must be whole: a value between two
/// register steps (desired 21.75 with `scale: 0.1`, or 21.5 on an integer
/// register) cannot be written exactly and is refused, naming the nearest
/// values that can, instead of being rounded silently and reported as applied.
fn int_in<T: TryFrom<i64>>(x: f64, name: &str) -> DriverResult<T> {
    let r = x.round();
    if !r.is_finite() || r < i64::MIN as f64 || r > i64::MAX as f64 {
        return Err(DriverError::Value(format!("{x} does not fit {name}")));
    }
    if (x - r).abs() > 1e-9 * r.abs().max(1.0) {
        return Err(DriverError::Value(format!(
            "the register ({name}) would have to hold {x}, which is not a whole number; \
             the nearest values it can hold are {} and {}",
            x.floor(),
            x.ceil()
        )));
    }
    T::try_from(r as i64).map_err(|_| DriverError::Value(format!("{x} does not fit {name}")))
}

/// Encodes a value for the registers of `a` (after the inverse of scale/offset).
pub fn encode_registers(a: &ModbusAddress, v: &Value) -> DriverResult<Vec<u16>> {
    let dt = a.data_type();
    let count = usize::from(a.register_count());
    let numeric = || -> DriverResult<f64> {
        let x = v
            .as_f64()
            .ok_or_else(|| DriverError::Value(format!("{v:?} is not a number")))?;
        let (scale, offset) = (a.scale.unwrap_or(1.0), a.value_offset.unwrap_or(0.0));
        if scale == 0.0 {
            return Err(DriverError::Value(
                "scale is 0; the register value cannot be derived".into(),
            ));
        }
        if scale == 1.0 && offset == 0.0 {
            return Ok(x);
        }
        Ok(round_significant((x - offset) / scale, 15))
    };
    let bytes: Vec<u8> = match dt {
        DataType::Bool | DataType::Bit => {
            let on = match v {
                Value::Bool(b) => *b,
                other => {
                    other
                        .as_f64()
                        .ok_or_else(|| DriverError::Value(format!("{other:?} is not a boolean")))?
                        != 0.0
                }
            };
            let mut words = vec![0u16; count];
            words[count - 1] = u16::from(on);
            return Ok(words);
        }
        DataType::Int16 => int_in::<i16>(numeric()?, "int16")?.to_be_bytes().to_vec(),
        DataType::Uint16 => int_in::<u16>(numeric()?, "uint16")?.to_be_bytes().to_vec(),
        DataType::Int32 => int_in::<i32>(numeric()?, "int32")?.to_be_bytes().to_vec(),
        DataType::Uint32 => int_in::<u32>(numeric()?, "uint32")?.to_be_bytes().to_vec(),
        DataType::Int64 => int_in::<i64>(numeric()?, "int64")?.to_be_bytes().to_vec(),
        DataType::Uint64 => {
            let x = numeric()?.round();
            if !(0.0..=u64::MAX as f64).contains(&x) {
                return Err(DriverError::Value(format!("{x} does not fit uint64")));
            }
            (x as u64).to_be_bytes().to_vec()
        }
        DataType::Float32 => {
            let x = numeric()?;
            if x.is_finite() && x.abs() > f64::from(f32::MAX) {
                return Err(DriverError::Value(format!("{x} does not fit float32")));
            }
            (x as f32).to_be_bytes().to_vec()
        }
        DataType::Float64 => numeric()?.to_be_bytes().to_vec(),
        DataType::String => {
            let s = match v {
                Value::String(s) => s.as_bytes().to_vec(),
                Value::Bytes(b) => b.clone(),
                other => other.to_string().into_bytes(),
            };
            if a.string_encoding.unwrap_or_default() == StringEncoding::Ascii && !s.is_ascii() {
                return Err(DriverError::Value("text is not ASCII".into()));
            }
            if s.len() > count * 2 {
                return Err(DriverError::Value(format!(
                    "text of {} bytes does not fit {count} registers",
                    s.len()
                )));
            }
            let mut padded = s;
            padded.resize(count * 2, 0);
            padded
        }
    };
    Ok(from_bytes(&bytes, a.is_swap, a.is_register_swap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Table;

    fn addr(dt: DataType, byte_swap: bool, word_swap: bool) -> ModbusAddress {
        ModbusAddress {
            register: Table::Holding,
            offset: 0,
            limit: None,
            scale: None,
            is_swap: byte_swap,
            is_register_swap: word_swap,
            data_type: Some(dt),
            bit: None,
            value_offset: None,
            string_encoding: None,
        }
    }

    #[test]
    fn known_layouts() {
        // 0x12345678 as int32: big-endian words 0x1234 0x5678.
        let a = addr(DataType::Int32, false, false);
        assert_eq!(
            decode_registers(&a, &[0x1234, 0x5678]).unwrap(),
            Value::Int(0x1234_5678)
        );
        // Word swapped (little-endian word order, "CDAB").
        let a = addr(DataType::Int32, false, true);
        assert_eq!(
            decode_registers(&a, &[0x5678, 0x1234]).unwrap(),
            Value::Int(0x1234_5678)
        );
        // Byte swapped ("BADC").
        let a = addr(DataType::Int32, true, false);
        assert_eq!(
            decode_registers(&a, &[0x3412, 0x7856]).unwrap(),
            Value::Int(0x1234_5678)
        );
        // Both ("DCBA").
        let a = addr(DataType::Int32, true, true);
        assert_eq!(
            decode_registers(&a, &[0x7856, 0x3412]).unwrap(),
            Value::Int(0x1234_5678)
        );
        // float32 1.5 = 0x3FC00000.
        let a = addr(DataType::Float32, false, false);
        assert_eq!(
            decode_registers(&a, &[0x3FC0, 0x0000]).unwrap(),
            Value::Float(1.5)
        );
        // -2 as int16.
        let a = addr(DataType::Int16, false, false);
        assert_eq!(decode_registers(&a, &[0xFFFE]).unwrap(), Value::Int(-2));
        let a = addr(DataType::Uint16, false, false);
        assert_eq!(decode_registers(&a, &[0xFFFE]).unwrap(), Value::Int(65534));
    }

    #[test]
    fn round_trips_every_type_and_order() {
        let cases: Vec<(DataType, Value)> = vec![
            (DataType::Int16, Value::Int(-12345)),
            (DataType::Uint16, Value::Int(54321)),
            (DataType::Int32, Value::Int(-2_000_000_000)),
            (DataType::Uint32, Value::Int(4_000_000_000)),
            (DataType::Int64, Value::Int(-9_000_000_000_000_000_000)),
            (DataType::Uint64, Value::Int(9_000_000_000_000_000_000)),
            (DataType::Float32, Value::Float(-273.15)),
            (DataType::Float64, Value::Float(6.02214076e23)),
            (DataType::Bool, Value::Bool(true)),
        ];
        for (dt, v) in cases {
            for (bs, ws) in [(false, false), (true, false), (false, true), (true, true)] {
                let a = addr(dt, bs, ws);
                let words = encode_registers(&a, &v).unwrap();
                assert_eq!(words.len(), usize::from(a.register_count()), "{dt:?}");
                assert_eq!(
                    decode_registers(&a, &words).unwrap(),
                    v,
                    "{dt:?} swap {bs}/{ws}"
                );
            }
        }
    }

    #[test]
    fn float32_reads_as_its_short_decimal() {
        for (f, want) in [
            (1.8f32, 1.8),
            (-12.5, -12.5),
            (0.1, 0.1),
            (3.25, 3.25),
            (1e-7, 1e-7),
            (123456.7, 123456.7),
            (0.0, 0.0),
        ] {
            assert_eq!(f32_as_short_f64(f), want, "{f}");
        }
        // Agrees with the shortest text of every f32 in a sweep.
        for i in 0..20_000u32 {
            let f = f32::from_bits(0x3c00_0000 + i * 7919);
            assert_eq!(
                f32_as_short_f64(f),
                f.to_string().parse::<f64>().unwrap(),
                "{f}"
            );
        }
    }

    #[test]
    fn scale_and_offset() {
        let mut a = addr(DataType::Int16, false, false);
        a.scale = Some(0.1);
        a.value_offset = Some(-40.0);
        // raw 625 → 625 × 0.1 − 40 = 22.5
        let Value::Float(x) = decode_registers(&a, &[625]).unwrap() else {
            panic!()
        };
        assert!((x - 22.5).abs() < 1e-9);
        assert_eq!(
            encode_registers(&a, &Value::Float(22.5)).unwrap(),
            vec![625]
        );
        assert_eq!(
            encode_registers(&a, &Value::Float(-45.0)).unwrap(),
            vec![(-50i16) as u16]
        );
    }

    #[test]
    fn out_of_range_and_bad_values() {
        let a = addr(DataType::Uint16, false, false);
        assert!(
            encode_registers(&a, &Value::Int(70000))
                .unwrap_err()
                .to_string()
                .contains("does not fit uint16")
        );
        assert!(encode_registers(&a, &Value::Int(-1)).is_err());
        assert!(encode_registers(&a, &Value::String("x".into())).is_err());
    }

    #[test]
    fn strings_and_bits() {
        let mut a = addr(DataType::String, false, false);
        a.limit = Some(3);
        let w = encode_registers(&a, &Value::String("ABCD".into())).unwrap();
        assert_eq!(w, vec![0x4142, 0x4344, 0]);
        assert_eq!(
            decode_registers(&a, &w).unwrap(),
            Value::String("ABCD".into())
        );
        assert!(encode_registers(&a, &Value::String("ABCDEFG".into())).is_err());
        let mut b = addr(DataType::Bit, false, false);
        b.bit = Some(3);
        assert_eq!(decode_registers(&b, &[0b1000]).unwrap(), Value::Bool(true));
        assert_eq!(decode_registers(&b, &[0b0111]).unwrap(), Value::Bool(false));
    }
    fn scaled(dt: DataType, scale: f64, offset: Option<f64>) -> ModbusAddress {
        let mut a = addr(dt, false, false);
        a.scale = Some(scale);
        a.value_offset = offset;
        a
    }

    fn shown(a: &ModbusAddress, words: &[u16]) -> String {
        decode_registers(a, words).unwrap().to_string()
    }

    #[test]
    fn scaled_values_print_without_binary_noise() {
        let tenths = scaled(DataType::Uint16, 0.1, None);
        assert_eq!(shown(&tenths, &[217]), "21.7");
        assert_eq!(shown(&tenths, &[3]), "0.3");
        assert_eq!(shown(&tenths, &[0]), "0");
        let signed = scaled(DataType::Int16, 0.01, None);
        assert_eq!(shown(&signed, &[(-25i16) as u16]), "-0.25");
        assert_eq!(shown(&signed, &[(-1i16) as u16]), "-0.01");
        let offset = scaled(DataType::Int16, 0.1, Some(-40.0));
        assert_eq!(shown(&offset, &[625]), "22.5");
        assert_eq!(shown(&offset, &[401]), "0.1");
        assert_eq!(shown(&offset, &[400]), "0");
        let halves = scaled(DataType::Uint16, 0.5, None);
        assert_eq!(shown(&halves, &[43]), "21.5");
        let big = scaled(DataType::Uint32, 0.001, None);
        assert_eq!(shown(&big, &[0xFFFF, 0xFFFF]), "4294967.295");
        // Float registers: the raw's decimals are its shortest float32/float64 text.
        let f32s = scaled(DataType::Float32, 0.1, None);
        assert_eq!(shown(&f32s, &[0x3FE6, 0x6666]), "0.18", "1.8f × 0.1");
        let f64s = scaled(DataType::Float64, 0.001, None);
        assert_eq!(
            shown(&f64s, &[0x4093, 0x4A45, 0x6D5C, 0xFAAD]),
            "1.2345678",
            "1234.5678 × 0.001"
        );
        // Booleans and text are not scaled.
        let mut b = scaled(DataType::Bool, 0.1, None);
        b.limit = Some(1);
        assert_eq!(decode_registers(&b, &[1]).unwrap(), Value::Bool(true));
    }

    #[test]
    fn scaled_writes_hit_the_intended_register() {
        // (21.7 − 0) / 0.1 is 216.99999999999997 in binary: it must write 217.
        let tenths = scaled(DataType::Uint16, 0.1, None);
        let desired = mapper_sdk::parse_value(mapper_sdk::PropertyType::Float, "21.7").unwrap();
        let words = encode_registers(&tenths, &desired).unwrap();
        assert_eq!(words, vec![217]);
        assert_eq!(shown(&tenths, &words), "21.7");
        for (text, raw) in [("0.3", 3u16), ("0.7", 7), ("6553.5", 65535), ("0", 0)] {
            let v = mapper_sdk::parse_value(mapper_sdk::PropertyType::Float, text).unwrap();
            let w = encode_registers(&tenths, &v).unwrap();
            assert_eq!(w, vec![raw], "{text}");
            assert_eq!(shown(&tenths, &w), text);
        }
        let signed = scaled(DataType::Int16, 0.01, Some(-40.0));
        let w = encode_registers(&signed, &Value::Float(-40.25)).unwrap();
        assert_eq!(w, vec![(-25i16) as u16]);
        assert_eq!(shown(&signed, &w), "-40.25");
        // Float registers get the value without the division's noise.
        let f64s = scaled(DataType::Float64, 0.1, None);
        let w = encode_registers(&f64s, &Value::Float(21.7)).unwrap();
        assert_eq!(
            decode_registers(&addr(DataType::Float64, false, false), &w).unwrap(),
            Value::Float(217.0)
        );
        assert_eq!(shown(&f64s, &w), "21.7");
        let f32s = scaled(DataType::Float32, 0.1, None);
        let w = encode_registers(&f32s, &Value::Float(21.7)).unwrap();
        assert_eq!(shown(&f32s, &w), "21.7");
    }

    fn text_at(limit: u16, bs: bool, ws: bool, enc: StringEncoding) -> ModbusAddress {
        let mut a = addr(DataType::String, bs, ws);
        a.limit = Some(limit);
        a.string_encoding = Some(enc);
        a
    }

    #[test]
    fn strings_end_at_the_first_nul() {
        // The field case: a 16-byte C string in 9 registers, then 0x0B 0x2A.
        let words = [
            0x414C, 0x4431, 0x4435, 0x4644, 0x3030, 0x4133, 0x4130, 0x3000, 0x0B2A,
        ];
        for enc in [StringEncoding::Ascii, StringEncoding::Utf8] {
            let a = text_at(9, false, false, enc);
            assert_eq!(shown(&a, &words), "ALD1D5FD00A3A00", "{enc:?}");
        }
        // Bytes after the NUL that are not ASCII (or not UTF-8) do not matter.
        let a = text_at(3, false, false, StringEncoding::Ascii);
        assert_eq!(shown(&a, &[0x4142, 0x00FF, 0xFEFF]), "AB");
        let u = text_at(3, false, false, StringEncoding::Utf8);
        assert_eq!(shown(&u, &[0xC3A9, 0x00C3, 0x2800]), "é");
        // A NUL in the first byte is the empty text; no NUL is the whole field.
        assert_eq!(shown(&a, &[0x0041, 0x4243, 0x4445]), "");
        assert_eq!(shown(&a, &[0x4142, 0x4344, 0x4546]), "ABCDEF");
        // Space padding is still trimmed, before the NUL too.
        assert_eq!(shown(&a, &[0x4142, 0x2020, 0x0058]), "AB");
        // Every byte and word order: the NUL is looked for in text order, after
        // the swaps. "ABC\0" then garbage, written by the encoder in each order
        // and then dirtied after the terminator.
        for (bs, ws) in [(false, false), (true, false), (false, true), (true, true)] {
            for enc in [StringEncoding::Ascii, StringEncoding::Utf8] {
                let a = text_at(3, bs, ws, enc);
                let mut bytes = b"ABC\0".to_vec();
                bytes.extend_from_slice(&[0x0B, 0x2A]);
                let words = from_bytes(&bytes, bs, ws);
                assert_eq!(shown(&a, &words), "ABC", "swap {bs}/{ws} {enc:?}");
                // And what the encoder writes reads back.
                let w = encode_registers(&a, &Value::String("ABCD".into())).unwrap();
                assert_eq!(shown(&a, &w), "ABCD", "swap {bs}/{ws} {enc:?}");
            }
        }
    }
    #[test]
    fn values_between_register_steps_are_refused_not_rounded() {
        let mut a = addr(DataType::Uint16, false, false);
        a.scale = Some(0.1);
        assert!(encode_registers(&a, &Value::Float(21.7)).is_ok());
        let e = encode_registers(&a, &Value::Float(21.75)).unwrap_err();
        assert!(matches!(e, DriverError::Value(_)), "{e}");
        assert!(e.to_string().contains("217 and 218"), "{e}");
        a.scale = Some(3.0);
        assert!(encode_registers(&a, &Value::Int(99)).is_ok());
        assert!(encode_registers(&a, &Value::Int(100)).is_err());
        a.scale = None;
        assert!(encode_registers(&a, &Value::Float(21.5)).is_err());
        assert!(encode_registers(&a, &Value::Float(21.0)).is_ok());
    }
}
