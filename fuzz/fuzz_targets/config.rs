//! The controller's config loader: loads or names the problem.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = controller::config::Config::parse(&text) {
        let _ = controller::explain::explain(&c);
    }
});
