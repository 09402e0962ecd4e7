//! `configData` as it arrives over DMI: arbitrary bytes decoded as a
//! `CustomizedValue` (prost), then `dmi_proto::config_data::from_any_map`.
//!
//! Must never panic. What decodes is flat key → scalar JSON, so it must also
//! encode again with both number encodings, and the lossless encoding must give
//! the same JSON back.

#![no_main]

use dmi_proto::config_data::{NumberEncoding, from_any_map, to_any_map};
use dmi_proto::v1beta1::CustomizedValue;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(cv) = CustomizedValue::decode(data) else {
        return;
    };
    let json = match from_any_map(&cv.data) {
        Ok(json) => json,
        Err(e) => {
            // The message names the key; formatting it must not panic either.
            let _ = e.to_string();
            return;
        }
    };
    let stock = to_any_map(&json, NumberEncoding::Stock);
    assert!(
        stock.is_ok(),
        "decoded configData does not re-encode (stock): {stock:?}"
    );
    let lossless = to_any_map(&json, NumberEncoding::Lossless);
    let Ok(lossless) = lossless else {
        panic!("decoded configData does not re-encode (lossless): {lossless:?}");
    };
    let again = from_any_map(&lossless);
    assert_eq!(
        again.as_ref().ok(),
        Some(&json),
        "lossless round trip changed the JSON"
    );
});
