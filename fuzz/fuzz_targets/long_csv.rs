//! Any text as a long CSV of labelled sequences (`case,label,t,x0,...`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = recurrent::data::parse_long_csv(text, "fuzz");
    }
});
