//! Alibaba Cloud RPC request signing, Signature Version 1.0 (HMAC-SHA1).
//!
//! Owns the percent-encoding rule, the canonicalized query string, the
//! string-to-sign and the signature itself. Public so that tests (and the
//! `fake-alibaba` mock) can sign and check requests exactly as the client does.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;

/// Everything but `A-Z a-z 0-9 - _ . ~` is escaped; with UTF-8 bytes and
/// uppercase hex this gives `%20` for space, `%2A` for `*` and keeps `~`,
/// which is what Alibaba requires (form-encoding's `+` and unescaped `*`
/// would break the signature).
const ALIBABA_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encode one key or value the way Alibaba's signer does.
pub fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, ALIBABA_ENCODE).to_string()
}

/// `k1=v1&k2=v2...` with keys sorted (byte order) and both sides encoded.
/// `Signature` itself is never part of the signed set.
pub fn canonicalized_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "Signature")
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    sorted.sort();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `METHOD&%2F&percentEncode(canonicalized query)`.
pub fn string_to_sign(method: &str, params: &[(String, String)]) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode("/"),
        percent_encode(&canonicalized_query(params))
    )
}

/// The base64 HMAC-SHA1 signature of a request's parameters, keyed with
/// `secret + "&"`.
pub fn sign(method: &str, params: &[(String, String)], access_key_secret: &str) -> String {
    let key = format!("{access_key_secret}&");
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha1> as KeyInit>::new_from_slice(key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(string_to_sign(method, params).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn documented_request() -> Vec<(String, String)> {
        p(&[
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ])
    }

    #[test]
    fn documented_vector_signs_as_alibaba_says() {
        assert_eq!(
            sign("GET", &documented_request(), "testsecret"),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
    }

    #[test]
    fn documented_vector_string_to_sign() {
        assert_eq!(
            string_to_sign("GET", &documented_request()),
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML\
             %26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf\
             %26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
        );
    }

    #[test]
    fn parameter_order_does_not_change_the_signature() {
        let mut reversed = documented_request();
        reversed.reverse();
        assert_eq!(
            sign("GET", &reversed, "testsecret"),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
    }

    #[test]
    fn signature_parameter_is_not_signed() {
        let mut with_sig = documented_request();
        with_sig.push(("Signature".into(), "whatever".into()));
        assert_eq!(
            sign("GET", &with_sig, "testsecret"),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
    }

    #[test]
    fn method_and_secret_change_the_signature() {
        let get = sign("GET", &documented_request(), "testsecret");
        assert_ne!(sign("POST", &documented_request(), "testsecret"), get);
        assert_ne!(sign("GET", &documented_request(), "othersecret"), get);
    }

    #[test]
    fn encoding_of_special_characters() {
        assert_eq!(percent_encode("a b"), "a%20b");
        assert_eq!(percent_encode("a*b"), "a%2Ab");
        assert_eq!(percent_encode("a~b"), "a~b");
        assert_eq!(percent_encode("a/b"), "a%2Fb");
        assert_eq!(percent_encode("a+b"), "a%2Bb");
        assert_eq!(percent_encode("a=b"), "a%3Db");
        assert_eq!(percent_encode("-_.AZaz09"), "-_.AZaz09");
        assert_eq!(percent_encode("杭州"), "%E6%9D%AD%E5%B7%9E");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn special_values_are_double_encoded_in_string_to_sign() {
        let params = p(&[("Description", "pod eni*~/+=é")]);
        assert_eq!(
            canonicalized_query(&params),
            "Description=pod%20eni%2A~%2F%2B%3D%C3%A9"
        );
        assert_eq!(
            string_to_sign("POST", &params),
            "POST&%2F&Description%3Dpod%2520eni%252A~%252F%252B%253D%25C3%25A9"
        );
    }

    #[test]
    fn repeated_list_parameters_sort_by_full_key() {
        let params = p(&[
            ("Tag.2.Value", "b"),
            ("SecurityGroupIds.1", "sg-1"),
            ("Tag.1.Key", "cluster"),
            ("Tag.10.Key", "z"),
            ("SecurityGroupIds.2", "sg-2"),
            ("Tag.1.Value", "c 1"),
        ]);
        // Byte order: "Tag.1." < "Tag.10" < "Tag.2." (as Alibaba's own signer sorts).
        assert_eq!(
            canonicalized_query(&params),
            "SecurityGroupIds.1=sg-1&SecurityGroupIds.2=sg-2&Tag.1.Key=cluster\
             &Tag.1.Value=c%201&Tag.10.Key=z&Tag.2.Value=b"
        );
    }

    #[test]
    fn a_changed_value_changes_the_signature() {
        let a = p(&[("Tag.1.Key", "cluster"), ("Tag.1.Value", "a b")]);
        let b = p(&[("Tag.1.Key", "cluster"), ("Tag.1.Value", "a+b")]);
        assert_ne!(sign("POST", &a, "s"), sign("POST", &b, "s"));
    }

    mod arbitrary_input {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// The canonical form never panics and is what the signature is
            /// computed over: percent-encoding leaves only unreserved
            /// characters and `%XX` escapes.
            #[test]
            fn any_parameters_canonicalise_and_sign(
                params in proptest::collection::vec(("\\PC{0,16}", "\\PC{0,32}"), 0..12),
                secret in "\\PC{0,32}",
            ) {
                let params: Vec<(String, String)> = params;
                let query = canonicalized_query(&params);
                prop_assert!(query.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%=&".contains(&b)));
                let encoded = percent_encode(&secret);
                prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
                let s1 = sign("GET", &params, &secret);
                prop_assert_eq!(s1, sign("GET", &params, &secret));
            }
        }
    }
}
