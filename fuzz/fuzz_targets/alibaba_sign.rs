//! The signer's canonical form: any parameters canonicalise to unreserved
//! characters and escapes only, and sign deterministically.
#![no_main]
use libfuzzer_sys::fuzz_target;
use providers::alibaba::sign::{canonicalized_query, sign};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let params: Vec<(String, String)> = text
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.to_owned(), String::new()),
        })
        .collect();
    let query = canonicalized_query(&params);
    assert!(query
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~%=&".contains(&b)));
    assert_eq!(sign("GET", &params, &text), sign("GET", &params, &text));
});
