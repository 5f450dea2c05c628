//! libFuzzer target: raw bytes as the peer's chunk stream into the server_session path (must never panic).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    relay::fuzz::server_session(data);
});
