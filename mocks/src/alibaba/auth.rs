//! Who may call the fake, checked as Alibaba's gateway does: the common
//! parameters, the timestamp window (15 minutes either way), the access key,
//! an STS security token where the key has one, the Signature V1.0 value,
//! and single use of every `SignatureNonce`.
//!
//! Keys live here, not in the cloud model, so that a test can add, rotate and
//! expire credentials while the server runs (an STS refresh).

use super::error::ApiError;
use super::params::Params;
use super::sign;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use parking_lot::{Mutex, RwLock};
use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// How far a request's `Timestamp` may be from the server clock.
pub const TIMESTAMP_WINDOW: Duration = Duration::minutes(15);

/// One access key the fake accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
    /// Set for STS credentials: requests must carry this `SecurityToken`.
    pub security_token: Option<String>,
    /// STS credentials past their expiration are refused as expired.
    pub expired: bool,
}

impl AccessKey {
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: secret.into(),
            security_token: None,
            expired: false,
        }
    }

    pub fn sts(
        id: impl Into<String>,
        secret: impl Into<String>,
        security_token: impl Into<String>,
    ) -> Self {
        Self {
            security_token: Some(security_token.into()),
            ..Self::new(id, secret)
        }
    }
}

// Secrets and tokens never reach logs, even through Debug.
impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("sts", &self.security_token.is_some())
            .field("expired", &self.expired)
            .finish_non_exhaustive()
    }
}

/// The keys the fake accepts and the nonces it has seen.
#[derive(Default)]
pub struct KeyStore {
    keys: RwLock<HashMap<String, AccessKey>>,
    /// (AccessKeyId, nonce) -> when the entry may be forgotten.
    nonces: Mutex<Nonces>,
}

impl KeyStore {
    pub fn new(keys: impl IntoIterator<Item = AccessKey>) -> Self {
        let store = Self::default();
        for key in keys {
            store.put(key);
        }
        store
    }

    /// Add a key, or replace the key with the same id (rotation).
    pub fn put(&self, key: AccessKey) {
        self.keys.write().insert(key.id.clone(), key);
    }

    /// Forget a key: later requests with it get `InvalidAccessKeyId.NotFound`.
    pub fn remove(&self, id: &str) {
        self.keys.write().remove(id);
    }

    /// Mark STS credentials as past their expiration.
    pub fn expire(&self, id: &str) {
        if let Some(key) = self.keys.write().get_mut(id) {
            key.expired = true;
        }
    }

    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.keys.read().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Check one request. `method` is the HTTP method it came with.
    pub fn verify(
        &self,
        method: &str,
        params: &Params,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        for name in [
            "AccessKeyId",
            "Signature",
            "SignatureMethod",
            "SignatureVersion",
            "SignatureNonce",
            "Timestamp",
        ] {
            if params.get(name).is_none() {
                return Err(ApiError::missing_common(name));
            }
        }
        let get = |name| params.get(name).unwrap_or_default();

        if get("SignatureMethod") != "HMAC-SHA1" {
            return Err(ApiError::new(
                400,
                "InvalidParameter",
                "The specified parameter \"SignatureMethod\" is not valid.",
            ));
        }
        if get("SignatureVersion") != "1.0" {
            return Err(ApiError::new(
                400,
                "InvalidParameter",
                "The specified parameter \"SignatureVersion\" is not valid.",
            ));
        }

        let timestamp = parse_timestamp(get("Timestamp")).ok_or_else(|| {
            ApiError::new(
                400,
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
            )
        })?;
        if (now - timestamp).abs() > TIMESTAMP_WINDOW {
            return Err(ApiError::new(
                400,
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired.",
            ));
        }

        let key = self
            .keys
            .read()
            .get(get("AccessKeyId"))
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "InvalidAccessKeyId.NotFound",
                    "Specified access key is not found.",
                )
            })?;

        if let Some(token) = &key.security_token {
            let Some(sent) = params.get("SecurityToken") else {
                return Err(ApiError::missing_common("SecurityToken"));
            };
            if !sign::signatures_equal(sent, token) {
                return Err(ApiError::new(
                    400,
                    "InvalidSecurityToken.MismatchWithAccessKey",
                    "Specified SecurityToken mismatch with the AccessKey.",
                ));
            }
            if key.expired {
                return Err(ApiError::new(
                    400,
                    "InvalidSecurityToken.Expired",
                    "Specified SecurityToken is expired.",
                ));
            }
        } else if key.expired {
            return Err(ApiError::new(
                400,
                "InvalidAccessKeyId.Inactive",
                "Specified access key is disabled.",
            ));
        }

        let string_to_sign = sign::string_to_sign(method, params.as_map());
        let expected = sign::sign(&key.secret, &string_to_sign);
        if !sign::signatures_equal(get("Signature"), &expected) {
            // Alibaba shows its own string-to-sign so a client can diff it.
            return Err(ApiError::new(
                400,
                "SignatureDoesNotMatch",
                format!(
                    "Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}"
                ),
            ));
        }

        // Only a correctly signed request consumes its nonce, so garbage
        // cannot burn the nonce of a real request.
        self.use_nonce(&key.id, get("SignatureNonce"), timestamp, now)
    }

    fn use_nonce(
        &self,
        key_id: &str,
        nonce: &str,
        timestamp: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let mut nonces = self.nonces.lock();
        // A nonce must be remembered until its request's timestamp leaves the
        // window; after that the timestamp check refuses a replay anyway.
        // Sweeping only when the table has doubled keeps a busy run linear.
        if nonces.seen.len() >= nonces.sweep_at {
            nonces.seen.retain(|_, forget_at| *forget_at > now);
            nonces.sweep_at = (nonces.seen.len() * 2).max(1024);
        }
        let forget_at = timestamp.max(now) + TIMESTAMP_WINDOW;
        match nonces.seen.entry((key_id.to_owned(), nonce.to_owned())) {
            Entry::Occupied(slot) if *slot.get() > now => Err(ApiError::new(
                400,
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
            )),
            Entry::Occupied(mut slot) => {
                slot.insert(forget_at);
                Ok(())
            }
            Entry::Vacant(slot) => {
                slot.insert(forget_at);
                Ok(())
            }
        }
    }
}

/// Nonces seen, each with the time after which it may be forgotten.
#[derive(Default)]
struct Nonces {
    seen: HashMap<(String, String), DateTime<Utc>>,
    /// Sweep forgotten entries once `seen` reaches this size.
    sweep_at: usize,
}

/// ISO 8601 UTC as Alibaba takes it: `YYYY-MM-DDThh:mm:ssZ` (fractions allowed).
fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let naive = s.strip_suffix('Z')?;
    NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn signed(key: &AccessKey, now: DateTime<Utc>, nonce: &str, extra: &[(&str, &str)]) -> Params {
        let mut map: BTreeMap<String, String> = [
            ("AccessKeyId", key.id.as_str()),
            ("Action", "DescribeVSwitches"),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", nonce),
            ("Version", "2016-04-28"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        map.insert(
            "Timestamp".into(),
            now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
        if let Some(token) = &key.security_token {
            map.entry("SecurityToken".into()).or_insert(token.clone());
        }
        let sig = sign::sign(&key.secret, &sign::string_to_sign("POST", &map));
        map.insert("Signature".into(), sig);
        Params::new(map)
    }

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    #[test]
    fn a_correct_request_passes_once() {
        let key = AccessKey::new("id", "secret");
        let store = KeyStore::new([key.clone()]);
        let p = signed(&key, now(), "n1", &[]);
        assert_eq!(store.verify("POST", &p, now()), Ok(()));
        assert_eq!(
            store.verify("POST", &p, now()).unwrap_err().code,
            "SignatureNonceUsed"
        );
    }

    #[test]
    fn a_wrong_secret_shows_the_server_string_to_sign() {
        let store = KeyStore::new([AccessKey::new("id", "secret")]);
        let p = signed(&AccessKey::new("id", "other"), now(), "n1", &[]);
        let err = store.verify("POST", &p, now()).unwrap_err();
        assert_eq!(err.code, "SignatureDoesNotMatch");
        assert_eq!(err.status.as_u16(), 400);
        assert!(err
            .message
            .contains(&sign::string_to_sign("POST", p.as_map())));
    }

    #[test]
    fn a_nonce_is_refused_within_the_window_and_forgotten_after_it() {
        let key = AccessKey::new("id", "secret");
        let store = KeyStore::new([key.clone()]);
        let t = now();
        assert_eq!(store.verify("POST", &signed(&key, t, "n", &[]), t), Ok(()));
        let t2 = t + Duration::minutes(10);
        assert_eq!(
            store
                .verify("POST", &signed(&key, t2, "n", &[]), t2)
                .unwrap_err()
                .code,
            "SignatureNonceUsed"
        );
        // Another key may use the same nonce.
        let other = AccessKey::new("id2", "secret2");
        store.put(other.clone());
        assert_eq!(
            store.verify("POST", &signed(&other, t2, "n", &[]), t2),
            Ok(())
        );
        let t3 = t + Duration::minutes(31);
        assert_eq!(
            store.verify("POST", &signed(&key, t3, "n", &[]), t3),
            Ok(())
        );
    }

    #[test]
    fn timestamps_outside_fifteen_minutes_are_expired() {
        let key = AccessKey::new("id", "secret");
        let store = KeyStore::new([key.clone()]);
        let t = now();
        let old = signed(&key, t - Duration::minutes(16), "a", &[]);
        assert_eq!(
            store.verify("POST", &old, t).unwrap_err().code,
            "InvalidTimeStamp.Expired"
        );
        let future = signed(&key, t + Duration::minutes(16), "b", &[]);
        assert_eq!(
            store.verify("POST", &future, t).unwrap_err().code,
            "InvalidTimeStamp.Expired"
        );
        let recent = signed(&key, t - Duration::minutes(14), "c", &[]);
        assert_eq!(store.verify("POST", &recent, t), Ok(()));
    }

    #[test]
    fn sts_keys_need_their_token_and_expire() {
        let key = AccessKey::sts("STS.a", "s", "tok-1");
        let store = KeyStore::new([key.clone()]);
        let t = now();

        let mut no_token = signed(&AccessKey::new("STS.a", "s"), t, "n0", &[]);
        assert_eq!(
            store.verify("POST", &no_token, t).unwrap_err().code,
            "MissingSecurityToken"
        );
        no_token = signed(&key, t, "n1", &[("SecurityToken", "tok-2")]);
        assert_eq!(
            store.verify("POST", &no_token, t).unwrap_err().code,
            "InvalidSecurityToken.MismatchWithAccessKey"
        );
        assert_eq!(store.verify("POST", &signed(&key, t, "n2", &[]), t), Ok(()));

        store.expire("STS.a");
        assert_eq!(
            store
                .verify("POST", &signed(&key, t, "n3", &[]), t)
                .unwrap_err()
                .code,
            "InvalidSecurityToken.Expired"
        );
        let fresh = AccessKey::sts("STS.b", "s2", "tok-3");
        store.put(fresh.clone());
        assert_eq!(
            store.verify("POST", &signed(&fresh, t, "n4", &[]), t),
            Ok(())
        );
    }

    #[test]
    fn unknown_keys_and_missing_parameters() {
        let store = KeyStore::new([AccessKey::new("id", "secret")]);
        let t = now();
        let p = signed(&AccessKey::new("nobody", "x"), t, "n", &[]);
        let err = store.verify("POST", &p, t).unwrap_err();
        assert_eq!(
            (err.code.as_str(), err.status.as_u16()),
            ("InvalidAccessKeyId.NotFound", 404)
        );

        let mut map = p.as_map().clone();
        map.remove("SignatureNonce");
        let err = store.verify("POST", &Params::new(map), t).unwrap_err();
        assert_eq!(err.code, "MissingSignatureNonce");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let shown = format!("{:?}", AccessKey::sts("id", "topsecret", "tok"));
        assert!(!shown.contains("topsecret") && !shown.contains("tok\""));
    }
}
