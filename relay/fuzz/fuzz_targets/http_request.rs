//! libFuzzer target: raw bytes as a request head to the media HTTP listener (HTTP-FLV parsing; must never panic).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    relay::fuzz::http_request(data);
});
