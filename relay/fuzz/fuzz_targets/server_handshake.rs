//! libFuzzer target: raw bytes from the first byte of a connection (handshake, then chunks) into the server.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    relay::fuzz::server_from_handshake(data);
});
