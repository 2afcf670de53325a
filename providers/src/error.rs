//! Cloud error kinds: what every backend maps its own error codes into, so that
//! the generic layer decides retry, backoff and cool-down without knowing which
//! cloud answered.

use std::fmt;
use std::time::Duration;

/// Which limit a `LimitExceeded` error hit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// The instance cannot take another ENI (Alibaba `EniPerInstanceLimitExceeded`,
    /// EC2 `AttachmentLimitExceeded`).
    EnisPerInstance,
    /// The ENI cannot take more private IPs (Alibaba
    /// `QuotaExceeded.PrivateIpAddress`, EC2 `PrivateIpAddressLimitExceeded`).
    IpsPerEni,
    /// More private IPs in one call than the cloud accepts (Alibaba: 10).
    IpsPerCall,
    /// The route table holds as many entries as its quota allows.
    RouteEntriesPerTable,
    /// Any other named limit.
    Other(String),
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitKind::EnisPerInstance => f.write_str("ENIs per instance"),
            LimitKind::IpsPerEni => f.write_str("private IPs per ENI"),
            LimitKind::IpsPerCall => f.write_str("private IPs per call"),
            LimitKind::RouteEntriesPerTable => f.write_str("route entries per table"),
            LimitKind::Other(what) => f.write_str(what),
        }
    }
}

/// What went wrong, as far as the generic layer needs to know.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Rate limited by the cloud: retry after a backoff.
    Throttled,
    /// The object is busy with another change (route table in a change, ENI
    /// attaching): retry later.
    Conflict,
    /// The object does not exist.
    NotFound,
    /// The object (or an equal route destination) exists already.
    AlreadyExists,
    /// A per-object limit of the cloud was hit.
    LimitExceeded { what: LimitKind },
    /// The subnet has no free address left.
    SubnetExhausted,
    /// An account-level quota was hit.
    QuotaExceeded,
    /// Credentials are wrong, expired or lack permission.
    Auth,
    /// The request itself is wrong: retrying it unchanged cannot help.
    InvalidRequest,
    /// The cloud failed or could not be reached: retry after a backoff.
    Transient,
    /// Nothing was sent: the caller may not write any more (a controller
    /// replica whose leadership is not current). Never retried by the call
    /// wrapper; the caller tries again once it leads.
    Fenced,
}

impl ErrorKind {
    /// Whether the shared call wrapper retries this kind by itself.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled | ErrorKind::Transient | ErrorKind::Conflict
        )
    }

    /// How long a caller should leave the object alone after this error before
    /// trying the same thing again (beyond the wrapper's own retries).
    pub fn cool_down(&self) -> Option<Duration> {
        match self {
            ErrorKind::LimitExceeded { .. } => Some(Duration::from_secs(60)),
            ErrorKind::SubnetExhausted => Some(Duration::from_secs(600)),
            ErrorKind::QuotaExceeded => Some(Duration::from_secs(600)),
            _ => None,
        }
    }

    /// Short stable label for metrics and Event reasons.
    pub fn label(&self) -> &'static str {
        match self {
            ErrorKind::Throttled => "throttled",
            ErrorKind::Conflict => "conflict",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::LimitExceeded { .. } => "limit_exceeded",
            ErrorKind::SubnetExhausted => "subnet_exhausted",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::Auth => "auth",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Transient => "transient",
            ErrorKind::Fenced => "fenced",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::LimitExceeded { what } => write!(f, "limit exceeded ({what})"),
            other => f.write_str(other.label()),
        }
    }
}

/// A failed cloud call: the kind the generic layer acts on, plus what the cloud
/// said (code, message, request id) for Events and logs. Never carries secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{api} failed: {kind}: {code}: {message}{}", request_id.as_deref().map(|r| format!(" (request {r})")).unwrap_or_default())]
pub struct CloudError {
    pub kind: ErrorKind,
    /// The API (action) that failed, e.g. `CreateNetworkInterface`.
    pub api: String,
    /// The cloud's own error code, e.g. `InvalidVSwitchId.IpNotEnough`.
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
}

impl CloudError {
    pub fn new(
        kind: ErrorKind,
        api: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            api: api.into(),
            code: code.into(),
            message: message.into(),
            request_id: None,
        }
    }

    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    pub fn is(&self, kind: &ErrorKind) -> bool {
        &self.kind == kind
    }
}

pub type CloudResult<T> = Result<T, CloudError>;
