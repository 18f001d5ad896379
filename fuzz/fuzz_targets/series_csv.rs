//! Any text as a time-series CSV, with missing values refused and interpolated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recurrent::data::{parse_series_csv, MissingValues};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_series_csv(text, "fuzz", MissingValues::Error);
        let _ = parse_series_csv(text, "fuzz", MissingValues::Interpolate);
    }
});
