//! Arbitrary text as a config file, through `check-config`'s path and a reload: every value ends
//! in a setting or a one-line error. Any panic is a bug.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        probe::config::exercise(text);
    }
});
