//! libFuzzer target: raw bytes as the peer's chunk stream into the client_session path (must never panic).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    relay::fuzz::client_session(data);
});
