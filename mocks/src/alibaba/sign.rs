//! Alibaba Cloud RPC Signature Version 1.0 (HMAC-SHA1), as the fake checks it.
//!
//! Written from the public description of the scheme and deliberately kept
//! independent of the provider's signer: if either one drifts from the
//! documented algorithm, requests from the provider stop verifying here.
//!
//! The algorithm: take every request parameter except `Signature`, sort by
//! name, percent-encode names and values (RFC 3986 unreserved characters stay,
//! everything else becomes `%XX` in upper case, so a space is `%20`), join as
//! `name=value` with `&`; then
//! `StringToSign = METHOD & percentEncode("/") & percentEncode(canonical)`,
//! and `Signature = Base64(HMAC-SHA1(secret + "&", StringToSign))`.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use std::collections::BTreeMap;

/// Everything but RFC 3986 unreserved characters is encoded.
const ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encode one name or value the way the signature scheme requires.
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODE_SET).to_string()
}

/// The sorted, encoded `name=value&...` string of every parameter but
/// `Signature`.
pub fn canonicalized_query(params: &BTreeMap<String, String>) -> String {
    // Sorted by raw parameter name, as Alibaba's SDKs sort their parameter
    // maps; the BTreeMap is already in that order. Sorting the joined
    // `name=value` strings instead would put `A.=` before `A=`.
    params
        .iter()
        .filter(|(name, _)| name.as_str() != "Signature")
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The string the server signs for a request with this method and parameters.
pub fn string_to_sign(method: &str, params: &BTreeMap<String, String>) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode("/"),
        percent_encode(&canonicalized_query(params))
    )
}

/// Base64 HMAC-SHA1 of `string_to_sign`, keyed with `secret + "&"`.
pub fn sign(secret: &str, string_to_sign: &str) -> String {
    let key = format!("{secret}&");
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha1>::new_from_slice(key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Compare two signatures without an early exit, so timing does not reveal
/// how many leading characters matched.
pub fn signatures_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_params() -> BTreeMap<String, String> {
        [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn documented_vector_signs_to_documented_signature() {
        let sts = string_to_sign("GET", &vector_params());
        assert_eq!(
            sts,
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML\
             %26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf\
             %26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
        );
        assert_eq!(sign("testsecret", &sts), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
    }

    #[test]
    fn signature_parameter_is_not_signed() {
        let mut params = vector_params();
        let before = string_to_sign("GET", &params);
        params.insert("Signature".into(), "whatever".into());
        assert_eq!(string_to_sign("GET", &params), before);
    }

    #[test]
    fn reserved_characters_are_encoded_as_the_scheme_requires() {
        assert_eq!(percent_encode("a b*c~d"), "a%20b%2Ac~d");
        assert_eq!(percent_encode("x/y+z="), "x%2Fy%2Bz%3D");
        assert_eq!(percent_encode("中"), "%E4%B8%AD");
    }

    #[test]
    fn parameters_sort_by_name_with_prefixes_first() {
        let params: BTreeMap<String, String> = [("A.", "1"), ("A", "2"), ("B", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(canonicalized_query(&params), "A=2&A.=1&B=");
    }

    #[test]
    fn method_is_part_of_the_signed_string() {
        let params = vector_params();
        assert_ne!(
            sign("testsecret", &string_to_sign("GET", &params)),
            sign("testsecret", &string_to_sign("POST", &params))
        );
    }

    #[test]
    fn signature_comparison_rejects_any_difference() {
        assert!(signatures_equal("abc=", "abc="));
        assert!(!signatures_equal("abc=", "abd="));
        assert!(!signatures_equal("abc=", "abc"));
    }
}
