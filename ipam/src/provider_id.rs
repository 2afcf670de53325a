//! Parsing a Node's `spec.providerID` into the cloud instance behind it.
//!
//! Accepted forms:
//! - Alibaba Cloud: `<region>.<instance-id>` (`cn-hangzhou.i-bp1abc`), also
//!   with an `alicloud://` prefix;
//! - AWS: `aws:///<zone>/<instance-id>` (`aws:///us-east-1a/i-0abc`).

use crate::ids::InstanceId;

/// The accepted forms, quoted in every error so the user can compare.
pub const ACCEPTED_FORMS: &str = "\"<region>.<instance-id>\" or \"alicloud://<region>.<instance-id>\" (Alibaba Cloud), \"aws:///<zone>/<instance-id>\" (AWS)";

/// Which cloud wrote the providerID, and where the instance lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderLocation {
    Alibaba { region: String },
    Aws { zone: String },
}

/// A parsed `spec.providerID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderId {
    pub location: ProviderLocation,
    pub instance: InstanceId,
}

/// Why a providerID could not be understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderIdError {
    #[error("node has no spec.providerID yet (the cloud controller manager sets it); expected {ACCEPTED_FORMS}")]
    Empty,
    #[error("providerID {value:?} is not recognised: {problem}; expected {ACCEPTED_FORMS}")]
    Malformed {
        value: String,
        problem: &'static str,
    },
}

/// Parses a providerID and keeps where the instance lives.
pub fn parse_provider_id(value: &str) -> Result<ProviderId, ProviderIdError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ProviderIdError::Empty);
    }
    let bad = |problem: &'static str| ProviderIdError::Malformed {
        value: value.to_owned(),
        problem,
    };
    if let Some(rest) = trimmed.strip_prefix("aws://") {
        // `aws:///zone/id`: the host part is empty, so `rest` starts with '/'.
        let path = rest
            .strip_prefix('/')
            .ok_or_else(|| bad("an AWS providerID has three slashes after \"aws:\""))?;
        let (zone, id) = path
            .split_once('/')
            .ok_or_else(|| bad("the AWS zone or instance id is missing"))?;
        if zone.is_empty() || !is_name(zone) {
            return Err(bad("the AWS availability zone is missing or malformed"));
        }
        let instance = instance_id(id).ok_or_else(|| {
            bad("the instance id must look like \"i-\" followed by letters and digits")
        })?;
        return Ok(ProviderId {
            location: ProviderLocation::Aws {
                zone: zone.to_owned(),
            },
            instance,
        });
    }
    if trimmed.contains("://") && !trimmed.starts_with("alicloud://") {
        return Err(bad("unknown scheme"));
    }
    let rest = trimmed.strip_prefix("alicloud://").unwrap_or(trimmed);
    let (region, id) = rest
        .split_once('.')
        .ok_or_else(|| bad("no '.' between region and instance id"))?;
    if region.is_empty() || !is_name(region) {
        return Err(bad("the region is missing or malformed"));
    }
    let instance = instance_id(id).ok_or_else(|| {
        bad("the instance id must look like \"i-\" followed by letters and digits")
    })?;
    Ok(ProviderId {
        location: ProviderLocation::Alibaba {
            region: region.to_owned(),
        },
        instance,
    })
}

/// Parses a providerID into just the instance id.
pub fn instance_from_provider_id(value: &str) -> Result<InstanceId, ProviderIdError> {
    parse_provider_id(value).map(|p| p.instance)
}

/// Region and zone names: lowercase letters, digits and hyphens.
fn is_name(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn instance_id(s: &str) -> Option<InstanceId> {
    let tail = s.strip_prefix("i-")?;
    (!tail.is_empty() && tail.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| InstanceId::new(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn alibaba_forms() {
        let p = parse_provider_id("cn-hangzhou.i-bp1abc").unwrap();
        assert_eq!(p.instance.as_str(), "i-bp1abc");
        assert_eq!(
            p.location,
            ProviderLocation::Alibaba {
                region: "cn-hangzhou".into()
            }
        );
        let p = parse_provider_id("alicloud://cn-beijing.i-2ze0abc").unwrap();
        assert_eq!(p.instance.as_str(), "i-2ze0abc");
    }

    #[test]
    fn aws_form() {
        let p = parse_provider_id("aws:///us-east-1a/i-0abc123").unwrap();
        assert_eq!(p.instance.as_str(), "i-0abc123");
        assert_eq!(
            p.location,
            ProviderLocation::Aws {
                zone: "us-east-1a".into()
            }
        );
    }

    #[test]
    fn errors_name_the_value_and_the_accepted_forms() {
        for bad in [
            "gce://project/zone/vm",
            "aws://us-east-1a/i-0abc",
            "aws:///us-east-1a/",
            "aws:///i-0abc",
            "cn-hangzhou",
            "cn-hangzhou.bp1abc",
            ".i-bp1abc",
            "cn-hangzhou.i-",
            "cn-hangzhou.i-bp1/abc",
        ] {
            let err = parse_provider_id(bad).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("aws:///<zone>/<instance-id>"), "{msg}");
            assert!(msg.contains("<region>.<instance-id>"), "{msg}");
        }
        assert_eq!(parse_provider_id("  "), Err(ProviderIdError::Empty));
        assert!(parse_provider_id("")
            .unwrap_err()
            .to_string()
            .contains("spec.providerID"));
    }

    proptest! {
        #[test]
        fn round_trips_generated_ids(
            region in "[a-z]{2}-[a-z]{3,9}(-[0-9])?",
            id in "[a-z0-9]{1,20}",
        ) {
            let instance = format!("i-{id}");
            for form in [format!("{region}.{instance}"), format!("alicloud://{region}.{instance}"), format!("aws:///{region}a/{instance}")] {
                let got = instance_from_provider_id(&form).unwrap();
                prop_assert_eq!(got.as_str(), instance.as_str());
            }
        }

        #[test]
        fn never_panics_and_only_returns_instance_shaped_ids(s in "\\PC{0,40}") {
            if let Ok(id) = instance_from_provider_id(&s) {
                prop_assert!(id.as_str().starts_with("i-"));
                prop_assert!(s.contains(id.as_str()));
            }
        }
    }
}
