//! Alibaba error codes -> cloud-neutral [`ErrorKind`]s.
//!
//! Owns the one table that decides how the generic layer treats each code
//! Alibaba's ECS and VPC OpenAPI answer with (retry, cool-down, give up), for
//! whole-call errors and for the per-entry failures of the batch route calls.

use crate::error::{ErrorKind, LimitKind};

/// The kind of an error answer with `code` and HTTP `status`. The code wins
/// when it is known; the status decides otherwise (5xx transient, 4xx the
/// request's fault).
pub fn kind_for(code: &str, status: u16) -> ErrorKind {
    if let Some(kind) = kind_for_code(code) {
        return kind;
    }
    match status {
        429 => ErrorKind::Throttled,
        500..=599 => ErrorKind::Transient,
        _ => ErrorKind::InvalidRequest,
    }
}

fn kind_for_code(code: &str) -> Option<ErrorKind> {
    // Order matters: `InvalidAccessKeyId.NotFound` is an auth failure, not a
    // missing object, and the specific quota codes name a limit.
    if code.starts_with("Throttling") {
        return Some(ErrorKind::Throttled);
    }
    if code == "SignatureDoesNotMatch"
        || code == "SignatureNonceUsed"
        || code.starts_with("InvalidAccessKeyId")
        || code.starts_with("InvalidSecurityToken")
        || code.starts_with("Forbidden")
        || code == "NoPermission"
        || code == "IncompleteSignature"
    {
        return Some(ErrorKind::Auth);
    }
    let kind = match code {
        "ServiceUnavailable" | "InternalError" | "UnknownError" | "InternalError.Dispatch" => {
            ErrorKind::Transient
        }
        "OperationConflict"
        | "Operation.Conflict"
        | "IncorrectRouteEntryStatus"
        | "IncorrectVpcStatus"
        | "TaskConflict"
        | "InvalidOperation.InvalidEniState"
        | "IncorrectInstanceStatus"
        // ECS Attach/DetachNetworkInterface: the instance's state does not
        // allow the operation now (HTTP 400), as while it is busy with other
        // ENI operations; it passes once those settle.
        | "InvalidOperation.InvalidEcsState"
        // ECS: a call with the same ClientToken is still being processed.
        | "LastTokenProcessing" => ErrorKind::Conflict,
        "InvalidVSwitchId.IpNotEnough" => ErrorKind::SubnetExhausted,
        "EniPerInstanceLimitExceeded" | "MaxEniCountExceeded" => ErrorKind::LimitExceeded {
            what: LimitKind::EnisPerInstance,
        },
        "QuotaExceeded.PrivateIpAddress" => ErrorKind::LimitExceeded {
            what: LimitKind::IpsPerEni,
        },
        "QuotaExceeded.RouteEntry" | "QuotaExceed.RouteEntry" => ErrorKind::LimitExceeded {
            what: LimitKind::RouteEntriesPerTable,
        },
        "InvalidCIDRBlock.Duplicate" | "RouteEntryConflict.Duplicated" => ErrorKind::AlreadyExists,
        "InvalidIp.IpUnassigned" => ErrorKind::NotFound,
        "IdempotentFailed" | "IdempotentParameterMismatch" => ErrorKind::InvalidRequest,
        _ if code.starts_with("QuotaExceeded") => ErrorKind::QuotaExceeded,
        _ if code.ends_with(".NotFound") || code == "NotFound" => ErrorKind::NotFound,
        _ => return None,
    };
    Some(kind)
}

/// The kind of one failed entry of `CreateRouteEntries` / `DeleteRouteEntries`.
/// Those answer with upper-snake `FailedCode`s such as
/// `VPC_ROUTE_ENTRY_CIDR_BLOCK_DUPLICATE` besides the usual dotted codes.
pub fn kind_for_batch_failure(code: &str) -> ErrorKind {
    if let Some(kind) = kind_for_code(code) {
        return kind;
    }
    let upper = code.to_ascii_uppercase();
    if upper.contains("DUPLICATE") || upper.contains("ALREADY_EXIST") {
        ErrorKind::AlreadyExists
    } else if upper.contains("NOT_EXIST") || upper.contains("NOT_FOUND") {
        ErrorKind::NotFound
    } else if upper.contains("QUOTA") {
        ErrorKind::LimitExceeded {
            what: LimitKind::RouteEntriesPerTable,
        }
    } else if upper.contains("CONFLICT") || upper.contains("STATUS") {
        ErrorKind::Conflict
    } else if upper.contains("THROTTL") {
        ErrorKind::Throttled
    } else if upper.contains("INTERNAL") {
        ErrorKind::Transient
    } else {
        ErrorKind::InvalidRequest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(what: LimitKind) -> ErrorKind {
        ErrorKind::LimitExceeded { what }
    }

    #[test]
    fn throttling_codes_are_throttled() {
        for code in [
            "Throttling",
            "Throttling.User",
            "Throttling.Api",
            "Throttling.Resource",
        ] {
            assert_eq!(kind_for(code, 400), ErrorKind::Throttled, "{code}");
            assert_eq!(kind_for(code, 503), ErrorKind::Throttled, "{code}");
        }
    }

    #[test]
    fn server_side_failures_are_transient() {
        assert_eq!(kind_for("ServiceUnavailable", 503), ErrorKind::Transient);
        assert_eq!(kind_for("InternalError", 500), ErrorKind::Transient);
        assert_eq!(kind_for("SomethingNew", 502), ErrorKind::Transient);
        assert_eq!(kind_for("", 504), ErrorKind::Transient);
    }

    #[test]
    fn busy_objects_are_conflicts() {
        for code in [
            "OperationConflict",
            "Operation.Conflict",
            "IncorrectRouteEntryStatus",
            "IncorrectVpcStatus",
            "TaskConflict",
            "InvalidOperation.InvalidEniState",
            "IncorrectInstanceStatus",
            "InvalidOperation.InvalidEcsState",
            "LastTokenProcessing",
        ] {
            assert_eq!(kind_for(code, 400), ErrorKind::Conflict, "{code}");
            assert_eq!(kind_for(code, 403), ErrorKind::Conflict, "{code}");
        }
    }

    #[test]
    fn limits_name_what_was_hit() {
        assert_eq!(
            kind_for("InvalidVSwitchId.IpNotEnough", 400),
            ErrorKind::SubnetExhausted
        );
        assert_eq!(
            kind_for("EniPerInstanceLimitExceeded", 400),
            limit(LimitKind::EnisPerInstance)
        );
        assert_eq!(
            kind_for("MaxEniCountExceeded", 400),
            limit(LimitKind::EnisPerInstance)
        );
        assert_eq!(
            kind_for("QuotaExceeded.PrivateIpAddress", 400),
            limit(LimitKind::IpsPerEni)
        );
        assert_eq!(
            kind_for("QuotaExceeded.RouteEntry", 400),
            limit(LimitKind::RouteEntriesPerTable)
        );
        assert_eq!(kind_for("QuotaExceeded", 400), ErrorKind::QuotaExceeded);
        assert_eq!(kind_for("QuotaExceeded.Eni", 400), ErrorKind::QuotaExceeded);
    }

    #[test]
    fn duplicates_already_exist() {
        assert_eq!(
            kind_for("InvalidCIDRBlock.Duplicate", 400),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind_for("RouteEntryConflict.Duplicated", 400),
            ErrorKind::AlreadyExists
        );
    }

    #[test]
    fn missing_objects_are_not_found() {
        for code in [
            "InvalidEniId.NotFound",
            "InvalidRouteEntry.NotFound",
            "InvalidInstanceId.NotFound",
            "InvalidVSwitchId.NotFound",
            "InvalidIp.IpUnassigned",
        ] {
            assert_eq!(kind_for(code, 404), ErrorKind::NotFound, "{code}");
            assert_eq!(kind_for(code, 400), ErrorKind::NotFound, "{code}");
        }
    }

    #[test]
    fn idempotency_mismatch_is_the_requests_fault() {
        assert_eq!(kind_for("IdempotentFailed", 400), ErrorKind::InvalidRequest);
        assert_eq!(
            kind_for("IdempotentParameterMismatch", 400),
            ErrorKind::InvalidRequest
        );
    }

    #[test]
    fn credential_problems_are_auth() {
        for code in [
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId.NotFound",
            "InvalidAccessKeyId.Inactive",
            "Forbidden.RAM",
            "Forbidden",
            "Forbidden.AccessKeyDisabled",
            "InvalidSecurityToken.Expired",
            "InvalidSecurityToken.MismatchWithAccessKey",
        ] {
            assert_eq!(kind_for(code, 403), ErrorKind::Auth, "{code}");
            assert_eq!(kind_for(code, 400), ErrorKind::Auth, "{code}");
        }
    }

    #[test]
    fn unknown_client_errors_are_invalid_requests() {
        assert_eq!(kind_for("InvalidParameter", 400), ErrorKind::InvalidRequest);
        assert_eq!(kind_for("MissingVSwitchId", 400), ErrorKind::InvalidRequest);
        assert_eq!(kind_for("", 404), ErrorKind::InvalidRequest);
        assert_eq!(kind_for("", 429), ErrorKind::Throttled);
    }

    #[test]
    fn batch_failure_codes() {
        assert_eq!(
            kind_for_batch_failure("VPC_ROUTE_ENTRY_CIDR_BLOCK_DUPLICATE"),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind_for_batch_failure("RouteEntryConflict.Duplicated"),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind_for_batch_failure("VPC_ROUTE_ENTRY_NOT_EXIST"),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind_for_batch_failure("InvalidRouteEntry.NotFound"),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind_for_batch_failure("QuotaExceeded.RouteEntry"),
            limit(LimitKind::RouteEntriesPerTable)
        );
        assert_eq!(
            kind_for_batch_failure("VPC_ROUTE_ENTRY_QUOTA_EXCEEDED"),
            limit(LimitKind::RouteEntriesPerTable)
        );
        assert_eq!(
            kind_for_batch_failure("IncorrectRouteEntryStatus"),
            ErrorKind::Conflict
        );
        assert_eq!(
            kind_for_batch_failure("InvalidNextHop"),
            ErrorKind::InvalidRequest
        );
    }
}
