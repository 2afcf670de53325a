//! EC2 error codes -> [`CloudError`] kinds. The only place that looks at an
//! SDK error; nothing of the SDK's error types leaves this module.

use crate::error::{CloudError, ErrorKind, LimitKind};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::RequestId;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// The kind of an EC2 error code, `None` for codes we do not know (they fall
/// back to the HTTP status).
pub(crate) fn kind_of_code(code: &str) -> Option<ErrorKind> {
    let kind = match code {
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled" => {
            ErrorKind::Throttled
        }
        "AttachmentLimitExceeded" => ErrorKind::LimitExceeded {
            what: LimitKind::EnisPerInstance,
        },
        "PrivateIpAddressLimitExceeded" => ErrorKind::LimitExceeded {
            what: LimitKind::IpsPerEni,
        },
        "RouteLimitExceeded" => ErrorKind::LimitExceeded {
            what: LimitKind::RouteEntriesPerTable,
        },
        "InsufficientFreeAddressesInSubnet" => ErrorKind::SubnetExhausted,
        // The account's ENI quota for the region, not a per-object limit.
        "NetworkInterfaceLimitExceeded" => ErrorKind::QuotaExceeded,
        "InvalidNetworkInterfaceID.NotFound"
        | "InvalidRoute.NotFound"
        | "InvalidInstanceID.NotFound"
        | "InvalidAttachmentID.NotFound"
        | "InvalidRouteTableID.NotFound"
        | "InvalidSubnetID.NotFound"
        | "InvalidInstanceType" => ErrorKind::NotFound,
        "RouteAlreadyExists" => ErrorKind::AlreadyExists,
        "UnauthorizedOperation"
        | "AuthFailure"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "RequestExpired" => ErrorKind::Auth,
        // `IncorrectInstanceState` (a common client error, HTTP 400) is also
        // how EC2 refuses an ENI operation on an instance busy with others:
        // retried, it passes once those settle.
        "DependencyViolation"
        | "InvalidNetworkInterface.InUse"
        | "IncorrectState"
        | "IncorrectInstanceState" => ErrorKind::Conflict,
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable" => {
            ErrorKind::Transient
        }
        _ => return None,
    };
    Some(kind)
}

/// Map an SDK error of operation `api` to a [`CloudError`].
pub(crate) fn from_sdk<E>(api: &str, err: SdkError<E, HttpResponse>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let request_id = err.request_id().map(str::to_owned);
    let mapped = match &err {
        SdkError::ServiceError(ctx) => {
            let service = ctx.err();
            let status = ctx.raw().status().as_u16();
            let code = service.code().unwrap_or("Unknown").to_owned();
            let kind = kind_of_code(&code).unwrap_or(if status >= 500 {
                ErrorKind::Transient
            } else {
                ErrorKind::InvalidRequest
            });
            let message = service.message().unwrap_or_default().to_owned();
            CloudError::new(kind, api, code, message)
        }
        SdkError::TimeoutError(_) => {
            CloudError::new(ErrorKind::Transient, api, "Timeout", "operation timed out")
        }
        SdkError::DispatchFailure(failure) => {
            // No answer at all (connect refused, DNS, TLS, credentials not
            // resolvable yet): the next try may well succeed.
            CloudError::new(
                ErrorKind::Transient,
                api,
                "DispatchFailure",
                error_chain(&err, failure.is_timeout()),
            )
        }
        SdkError::ResponseError(_) => CloudError::new(
            ErrorKind::Transient,
            api,
            "ResponseError",
            error_chain(&err, false),
        ),
        SdkError::ConstructionFailure(_) => CloudError::new(
            ErrorKind::InvalidRequest,
            api,
            "ConstructionFailure",
            error_chain(&err, false),
        ),
        _ => CloudError::new(
            ErrorKind::Transient,
            api,
            "Unknown",
            error_chain(&err, false),
        ),
    };
    match request_id {
        Some(id) => mapped.with_request_id(id),
        None => mapped,
    }
}

/// The error and its sources on one line (the SDK's top-level message alone
/// says little, e.g. "dispatch failure").
fn error_chain(err: &(dyn std::error::Error + 'static), timeout: bool) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    if timeout {
        out.push_str(" (timeout)");
    }
    out
}

/// An answer EC2 gave that we cannot use (a field missing or unparsable).
pub(crate) fn malformed(api: &str, what: impl Into<String>) -> CloudError {
    CloudError::new(ErrorKind::Transient, api, "MalformedResponse", what)
}

/// A refusal decided here, before any mutating call went out.
pub(crate) fn refused(
    kind: ErrorKind,
    api: &str,
    code: &str,
    message: impl Into<String>,
) -> CloudError {
    CloudError::new(kind, api, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_has_its_kind() {
        let cases = [
            ("RequestLimitExceeded", ErrorKind::Throttled),
            ("Throttling", ErrorKind::Throttled),
            (
                "AttachmentLimitExceeded",
                ErrorKind::LimitExceeded {
                    what: LimitKind::EnisPerInstance,
                },
            ),
            (
                "PrivateIpAddressLimitExceeded",
                ErrorKind::LimitExceeded {
                    what: LimitKind::IpsPerEni,
                },
            ),
            (
                "InsufficientFreeAddressesInSubnet",
                ErrorKind::SubnetExhausted,
            ),
            ("InvalidNetworkInterfaceID.NotFound", ErrorKind::NotFound),
            ("InvalidRoute.NotFound", ErrorKind::NotFound),
            ("InvalidInstanceID.NotFound", ErrorKind::NotFound),
            ("RouteAlreadyExists", ErrorKind::AlreadyExists),
            ("UnauthorizedOperation", ErrorKind::Auth),
            ("AuthFailure", ErrorKind::Auth),
            ("DependencyViolation", ErrorKind::Conflict),
            ("InvalidNetworkInterface.InUse", ErrorKind::Conflict),
            ("IncorrectState", ErrorKind::Conflict),
            ("IncorrectInstanceState", ErrorKind::Conflict),
        ];
        for (code, kind) in cases {
            assert_eq!(kind_of_code(code), Some(kind), "{code}");
        }
        assert_eq!(kind_of_code("InvalidParameterValue"), None);
    }
}
