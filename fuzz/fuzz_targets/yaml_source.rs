//! A file of the YAML device directory: any bytes, as UTF-8 (lossy), through
//! `edgecore_dmi::source::parse_file`.
//!
//! Must never panic, and must return in bounded time (hack/fuzz.sh runs
//! libFuzzer with `-timeout=10`): alias expansion and nesting are limited
//! before the parser sees a document.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = edgecore_dmi::source::parse_file("fuzz.yaml", &text);
    // Touch what a caller reads.
    let _ = (
        parsed.devices.len(),
        parsed.models.len(),
        parsed.errors.iter().map(String::len).sum::<usize>(),
        parsed.failed_objects.len(),
    );
});
