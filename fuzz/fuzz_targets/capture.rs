//! Arbitrary bytes as a capture file, through the pcap/pcapng reader, the header decoder, the
//! shared flow logic and every detector. Any panic is a bug.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    probe::replay::exercise(data);
});
