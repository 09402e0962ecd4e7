//! A Modbus property's `visitors.configData` and the registers a device
//! answers with, through `mapper_modbus`: `ModbusAddress` (serde, from JSON as
//! the SDK hands it over), `prepare`, `codec::decode_registers` on exactly
//! `register_count()` words, and `codec::encode_registers` of a value.
//!
//! Must never panic, and an encoded value is always `register_count()` words
//! (the driver writes that many registers and reads them back).
//!
//! Input layout (missing bytes read as 0):
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | `register` (one of [`TABLES`]) |
//! | 1-2 | `offset`, big-endian |
//! | 3 | `limit`: 0 absent, else 1 + (b − 1) % 8 |
//! | 4 | `dataType` (one of [`DATA_TYPES`]; `None` leaves it out) |
//! | 5 | bit 0 `isSwap`, bit 1 `isRegisterSwap`, bit 2 `bit` present, bit 3 `stringEncoding` present, bit 4 `stringEncoding` utf8 (else ascii), bits 5-7 the model's property type (0: none) |
//! | 6 | `scale`: 0 absent, 255 an f64 from 8 more bytes, else one of [`NUMBERS`] |
//! | 7 | `valueOffset`: as `scale` |
//! | 8 | `bit` |
//! | … | the raw f64s of `scale` and `valueOffset` when selected (8 bytes each, big-endian) |
//! | … | `register_count()` words, big-endian |
//! | … | the value to encode: one selector byte, then its payload (the rest) |

#![no_main]

use libfuzzer_sys::fuzz_target;
use mapper_modbus::ModbusAddress;
use mapper_modbus::codec::{decode_registers, encode_registers};
use mapper_sdk::{PropertyType, Value};
use serde_json::{Map, Value as Json};

/// `register` spellings: KubeEdge's four, the aliases `Table` accepts, one it refuses.
const TABLES: &[&str] = &[
    "HoldingRegister",
    "InputRegister",
    "CoilRegister",
    "DiscreteInputRegister",
    "holding_registers",
    "Coils",
    "discrete-input",
    "bogus",
];

/// `dataType` values, with the aliases serde accepts and one it refuses.
const DATA_TYPES: &[Option<&str>] = &[
    None,
    Some("bool"),
    Some("boolean"),
    Some("int16"),
    Some("uint16"),
    Some("int32"),
    Some("uint32"),
    Some("int64"),
    Some("uint64"),
    Some("float32"),
    Some("float"),
    Some("float64"),
    Some("double"),
    Some("string"),
    Some("bit"),
    Some("int8"),
];

const MODELS: &[Option<PropertyType>] = &[
    None,
    Some(PropertyType::Int),
    Some(PropertyType::Float),
    Some(PropertyType::Double),
    Some(PropertyType::String),
    Some(PropertyType::Boolean),
    Some(PropertyType::Bytes),
    Some(PropertyType::Stream),
];

/// Scales, offsets and values a config or a desired value could hold.
const NUMBERS: &[f64] = &[
    1.0,
    0.1,
    0.01,
    0.001,
    10.0,
    -1.0,
    0.5,
    -40.0,
    1e-300,
    1e300,
    f64::MIN_POSITIVE,
    f64::MAX,
    f64::MIN,
    0.0,
    -0.0,
    65535.0,
    4_294_967_296.0,
    9.223_372_036_854_776e18,
    1.844_674_407_370_955_2e19,
    3.4e38,
];

/// Reads the input front to back; past its end every byte is 0.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        b.iter_mut().for_each(|x| *x = self.u8());
        u64::from_be_bytes(b)
    }

    fn rest(&mut self) -> &[u8] {
        std::mem::take(&mut self.0)
    }
}

/// A number chosen by `sel`, taking 8 more bytes for 255; `None` for 0.
fn number(sel: u8, raw: &mut Input<'_>) -> Option<f64> {
    match sel {
        0 => None,
        255 => Some(f64::from_bits(raw.u64())),
        s => Some(NUMBERS[usize::from(s - 1) % NUMBERS.len()]),
    }
}

fn value(input: &mut Input<'_>) -> Value {
    let sel = input.u8();
    match sel % 7 {
        0 => Value::Bool(sel & 0x80 != 0),
        1 => Value::Int(input.u64() as i64),
        2 => Value::Float(f64::from_bits(input.u64())),
        3 => Value::Float(NUMBERS[usize::from(sel / 7) % NUMBERS.len()]),
        4 => Value::String(String::from_utf8_lossy(input.rest()).into_owned()),
        5 => Value::Bytes(input.rest().to_vec()),
        _ => Value::Int(i64::from(input.u16() as i16)),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let table = TABLES[usize::from(input.u8()) % TABLES.len()];
    let offset = input.u16();
    let limit = match input.u8() {
        0 => None,
        b => Some(1 + (b - 1) % 8),
    };
    let data_type = DATA_TYPES[usize::from(input.u8()) % DATA_TYPES.len()];
    let flags = input.u8();
    let (scale_sel, offset_sel, bit) = (input.u8(), input.u8(), input.u8());
    let scale = number(scale_sel, &mut input);
    let value_offset = number(offset_sel, &mut input);

    // The visitor's configData as the SDK hands it to serde: a JSON object.
    // JSON holds no NaN or infinity (configData refuses them too), so a raw
    // f64 that is not finite leaves the key out.
    let mut cfg = Map::new();
    cfg.insert("register".into(), table.into());
    cfg.insert("offset".into(), offset.into());
    if let Some(l) = limit {
        cfg.insert("limit".into(), l.into());
    }
    if let Some(dt) = data_type {
        cfg.insert("dataType".into(), dt.into());
    }
    cfg.insert("isSwap".into(), (flags & 1 != 0).into());
    cfg.insert("isRegisterSwap".into(), (flags & 2 != 0).into());
    if flags & 4 != 0 {
        cfg.insert("bit".into(), bit.into());
    }
    if flags & 8 != 0 {
        let enc = if flags & 16 != 0 { "utf8" } else { "ascii" };
        cfg.insert("stringEncoding".into(), enc.into());
    }
    for (key, n) in [("scale", scale), ("valueOffset", value_offset)] {
        if let Some(n) = n.and_then(serde_json::Number::from_f64) {
            cfg.insert(key.into(), Json::Number(n));
        }
    }
    let model = MODELS[usize::from(flags >> 5)];

    let Ok(mut addr) = serde_json::from_value::<ModbusAddress>(Json::Object(cfg)) else {
        return;
    };
    if addr.prepare(model).is_err() {
        return;
    }
    let count = usize::from(addr.register_count());
    let words: Vec<u16> = (0..count).map(|_| input.u16()).collect();
    let _ = decode_registers(&addr, &words);

    let v = value(&mut input);
    if let Ok(encoded) = encode_registers(&addr, &v) {
        assert_eq!(
            encoded.len(),
            count,
            "{addr:?}: {v:?} encoded to {} words, not register_count() = {count}",
            encoded.len()
        );
        let _ = decode_registers(&addr, &encoded);
    }
});
