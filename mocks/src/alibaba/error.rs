//! Errors as the Alibaba OpenAPI gateway answers them: an HTTP status and a
//! JSON body `{RequestId, HostId, Code, Message}`, plus the table that maps
//! an Alibaba error code (from the gateway or from the cloud model) to the
//! HTTP status Alibaba uses for it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use providers::{CloudError, ErrorKind};
use serde_json::json;

/// One error answer, before the request id and host are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            code: code.into(),
            message: message.into(),
        }
    }

    /// A gateway-level parameter (AccessKeyId, Timestamp...) is absent: the
    /// gateway names the parameter in the code itself.
    pub fn missing_common(name: &str) -> Self {
        Self::new(
            400,
            format!("Missing{name}"),
            format!("{name} is mandatory for this action."),
        )
    }

    /// An action parameter is absent.
    pub fn missing(name: &str) -> Self {
        Self::new(
            400,
            "MissingParameter",
            format!(
                "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
            ),
        )
    }

    /// An action parameter has a value the action cannot use.
    pub fn invalid(name: &str, why: &str) -> Self {
        Self::new(
            400,
            "InvalidParameter",
            format!("The specified parameter \"{name}\" is not valid: {why}"),
        )
    }

    /// An error the cloud model returned, with Alibaba's status for its code.
    pub fn from_cloud(err: &CloudError) -> Self {
        Self {
            status: StatusCode::from_u16(status_for(&err.code, &err.kind))
                .unwrap_or(StatusCode::BAD_REQUEST),
            code: err.code.clone(),
            message: gateway_message(&err.code)
                .map(str::to_owned)
                .unwrap_or_else(|| err.message.clone()),
        }
    }

    /// The HTTP answer Alibaba sends for this error.
    pub fn into_response_with(self, request_id: &str, host_id: &str) -> Response {
        let body = json!({
            "RequestId": request_id,
            "HostId": host_id,
            "Code": self.code,
            "Message": self.message,
        });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<CloudError> for ApiError {
    fn from(err: CloudError) -> Self {
        ApiError::from_cloud(&err)
    }
}

/// Alibaba's own wording for the gateway-level codes, which clients match on
/// in logs; the model's message is kept for every other code.
fn gateway_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "Throttling.User" => "Request was denied due to user flow control.",
        "Throttling" => "Request was denied due to request throttling.",
        "ServiceUnavailable" => "The request has failed due to a temporary failure of the server.",
        "InternalError" => {
            "The request processing has failed due to some unknown error, exception or failure."
        }
        "InvalidAccessKeyId.NotFound" => "Specified access key is not found.",
        _ => return None,
    })
}

/// Alibaba's HTTP status for an error code. Codes named here use the status
/// from Alibaba's public error tables; any other code falls back on its kind
/// (not found 404, permission and resource-state refusals 403, server faults
/// 5xx, everything else 400).
pub fn status_for(code: &str, kind: &ErrorKind) -> u16 {
    match code {
        // Flow control is a client error at Alibaba, not 429 or 503.
        c if c == "Throttling" || c.starts_with("Throttling.") => 400,
        "ServiceUnavailable" | "ServiceUnavailableTemporary" => 503,
        "InternalError" | "InternalFailure" | "UnknownError" => 500,
        "SignatureDoesNotMatch"
        | "SignatureNonceUsed"
        | "InvalidTimeStamp.Expired"
        | "InvalidTimeStamp.Format"
        | "IncompleteSignature"
        | "MissingParameter"
        | "InvalidParameter"
        | "IdempotentParameterMismatch"
        | "IdempotentFailed"
        | "InvalidVersion" => 400,
        c if c.starts_with("InvalidSecurityToken.")
            || c.starts_with("Missing")
            || c.starts_with("InvalidParam") =>
        {
            400
        }
        "InvalidAccessKeyId.NotFound" | "InvalidAction.NotFound" => 404,
        "InvalidAccessKeyId.Inactive" => 403,
        c if c.starts_with("Forbidden") => 403,
        c if c.ends_with(".NotFound") || c.ends_with("NotFound") => 404,
        // AttachNetworkInterface's error table lists an instance whose state
        // does not allow the operation (busy with other ENI operations)
        // with HTTP 400.
        "InvalidOperation.InvalidEcsState" => 400,
        // ECS refuses per-object limits and wrong resource states with 403.
        "EniPerInstanceLimitExceeded"
        | "MaxEniCountExceeded"
        | "QuotaExceeded.PrivateIpAddress"
        | "InvalidOperation.InvalidEniState"
        | "IncorrectInstanceStatus"
        | "InvalidVSwitchId.IpNotEnough" => 403,
        _ => match kind {
            ErrorKind::NotFound => 404,
            ErrorKind::Auth => 403,
            ErrorKind::LimitExceeded { .. }
            | ErrorKind::QuotaExceeded
            | ErrorKind::SubnetExhausted => 403,
            ErrorKind::Transient => 503,
            ErrorKind::Throttled
            | ErrorKind::Conflict
            | ErrorKind::AlreadyExists
            | ErrorKind::InvalidRequest
            | ErrorKind::Fenced => 400,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use providers::LimitKind;

    #[test]
    fn statuses_follow_alibaba_tables() {
        assert_eq!(status_for("Throttling", &ErrorKind::Throttled), 400);
        assert_eq!(status_for("Throttling.User", &ErrorKind::Throttled), 400);
        assert_eq!(status_for("ServiceUnavailable", &ErrorKind::Transient), 503);
        assert_eq!(status_for("InternalError", &ErrorKind::Transient), 500);
        assert_eq!(
            status_for("InvalidAccessKeyId.NotFound", &ErrorKind::Auth),
            404
        );
        assert_eq!(status_for("SignatureDoesNotMatch", &ErrorKind::Auth), 400);
        assert_eq!(status_for("Forbidden.RAM", &ErrorKind::Auth), 403);
        assert_eq!(
            status_for("InvalidEniId.NotFound", &ErrorKind::NotFound),
            404
        );
        assert_eq!(
            status_for("InvalidOperation.InvalidEcsState", &ErrorKind::Conflict),
            400
        );
        assert_eq!(
            status_for(
                "EniPerInstanceLimitExceeded",
                &ErrorKind::LimitExceeded {
                    what: LimitKind::EnisPerInstance
                }
            ),
            403
        );
    }

    #[test]
    fn unknown_codes_fall_back_on_their_kind() {
        assert_eq!(status_for("Whatever.Gone", &ErrorKind::NotFound), 404);
        assert_eq!(status_for("SomeBackendFault", &ErrorKind::Transient), 503);
        assert_eq!(status_for("OperationConflict", &ErrorKind::Conflict), 400);
        assert_eq!(status_for("Nope", &ErrorKind::InvalidRequest), 400);
    }
}
