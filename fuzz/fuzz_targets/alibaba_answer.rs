//! Every Alibaba OpenAPI response parser and conversion on one answer body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    providers::alibaba::read_any_answer(data);
});
