//! The `vpc-eni.io/allocation` annotation parser (anyone may write the
//! annotation): parses or refuses, and what parses writes back the same.
#![no_main]
use ipam::allocation::PodAllocation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(a) = PodAllocation::parse(&text) {
        assert_eq!(PodAllocation::parse(&a.to_json()).ok(), Some(a));
    }
});
