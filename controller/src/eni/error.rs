//! Why a pod's ENI allocation or release did not finish: one kind per cause,
//! each with the Event reason the pod gets, the label its metric carries and
//! how soon trying again can help.

use ipam::backoff::Backoff;
use ipam::ids::EniId;
use providers::{CloudError, ErrorKind};
use std::time::Duration;

/// Which half of the pod's life the error happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Allocate,
    Release,
}

/// A pod's allocation or release that did not finish. `Display` is what the
/// pod's Warning Event says.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The cloud refused or failed a call.
    #[error("{error}")]
    Cloud { phase: Phase, error: CloudError },
    /// The apiserver refused or failed a call.
    #[error("kube API: {error}")]
    Kube { phase: Phase, error: kube::Error },
    /// A kube write was refused because our copy of the pod was stale (a
    /// `test` op saw a newer pod).
    #[error("kube API: the pod changed under us: {error}")]
    Stale { phase: Phase, error: kube::Error },
    /// The pod asks for something that cannot be served as written (a bad
    /// quantity); only a change to the pod helps.
    #[error("{0}")]
    BadRequest(String),
    /// An ENI the pod points at is not tagged as this cluster's: never touched.
    #[error("refusing to release {eni}: it is not tagged as this cluster's")]
    NotOurs { eni: EniId },
    /// Something outside the pod must change first (the node's providerID,
    /// the pod changing under us).
    #[error("{message}")]
    Blocked { phase: Phase, message: String },
    /// The pod's node cannot serve it as things stand (no ENI slot or
    /// subnet address left, more asked for than the node offers).
    #[error("{message}")]
    Unservable { message: String },
}

/// Retry after transient trouble (network, 5xx, a busy table, a stale copy).
const TRANSIENT: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(120));
/// Retry after throttling: the budget is shared with every other pod, so
/// push less.
const THROTTLED: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(120));
/// Retry while waiting for something else to change (addresses freed, a
/// slot released, the node fixed): a floor that spares the cloud, the same
/// ceiling so recovery stays prompt.
const WAITING: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(120));
/// Retry after refusals only an operator can fix (credentials, a bad
/// security group).
const OPERATOR: Backoff = Backoff::new(Duration::from_secs(30), Duration::from_secs(600));

impl PodError {
    pub fn cloud(phase: Phase) -> impl Fn(CloudError) -> PodError {
        move |error| PodError::Cloud { phase, error }
    }

    pub fn kube(phase: Phase) -> impl Fn(kube::Error) -> PodError {
        move |error| PodError::Kube { phase, error }
    }

    pub fn blocked(phase: Phase, message: impl Into<String>) -> Self {
        PodError::Blocked {
            phase,
            message: message.into(),
        }
    }

    pub fn unservable(message: impl Into<String>) -> Self {
        PodError::Unservable {
            message: message.into(),
        }
    }

    /// Whether the pod's node cannot serve it until something outside
    /// changes: after a few of these in a row the pod is better placed
    /// elsewhere.
    pub fn node_cannot_serve(&self) -> bool {
        match self {
            PodError::Unservable { .. } => true,
            PodError::Cloud { phase, error } => {
                *phase == Phase::Allocate
                    && matches!(
                        error.kind,
                        ErrorKind::LimitExceeded { .. }
                            | ErrorKind::SubnetExhausted
                            | ErrorKind::QuotaExceeded
                    )
            }
            _ => false,
        }
    }

    pub fn phase(&self) -> Phase {
        match self {
            PodError::Cloud { phase, .. }
            | PodError::Kube { phase, .. }
            | PodError::Stale { phase, .. }
            | PodError::Blocked { phase, .. } => *phase,
            PodError::BadRequest(_) | PodError::Unservable { .. } => Phase::Allocate,
            PodError::NotOurs { .. } => Phase::Release,
        }
    }

    /// The Event reason the pod gets (Terway's names).
    pub fn event_reason(&self) -> &'static str {
        match self.phase() {
            Phase::Allocate => "AllocIPFailed",
            Phase::Release => "ReleaseENIFailed",
        }
    }

    /// The Event's action.
    pub fn event_action(&self) -> &'static str {
        match self.phase() {
            Phase::Allocate => "AllocateENI",
            Phase::Release => "ReleaseENI",
        }
    }

    /// The `kind` label of the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PodError::Cloud { error, .. } => match error.kind {
                ErrorKind::Throttled => "cloud_throttled",
                ErrorKind::Transient => "cloud_transient",
                ErrorKind::Conflict => "cloud_conflict",
                ErrorKind::NotFound => "cloud_not_found",
                ErrorKind::AlreadyExists => "cloud_already_exists",
                ErrorKind::LimitExceeded { .. } => "cloud_limit_exceeded",
                ErrorKind::SubnetExhausted => "cloud_subnet_exhausted",
                ErrorKind::QuotaExceeded => "cloud_quota_exceeded",
                ErrorKind::Auth => "cloud_auth",
                ErrorKind::InvalidRequest => "cloud_invalid_request",
                ErrorKind::Fenced => "fenced",
            },
            PodError::Kube { .. } => "kube",
            PodError::Stale { .. } => "stale",
            PodError::BadRequest(_) => "bad_request",
            PodError::NotOurs { .. } => "not_ours",
            PodError::Blocked { .. } => "blocked",
            PodError::Unservable { .. } => "unservable",
        }
    }

    /// How trying again is paced, or `None` when only a change to the pod
    /// can help (then the pod waits for that change).
    pub fn retry(&self) -> Option<Backoff> {
        match self {
            PodError::BadRequest(_) | PodError::NotOurs { .. } => None,
            PodError::Kube { .. } | PodError::Stale { .. } => Some(TRANSIENT),
            PodError::Blocked { .. } | PodError::Unservable { .. } => Some(WAITING),
            PodError::Cloud { error, .. } => Some(match error.kind {
                ErrorKind::Throttled => THROTTLED,
                ErrorKind::Transient
                | ErrorKind::Conflict
                | ErrorKind::NotFound
                | ErrorKind::AlreadyExists
                | ErrorKind::Fenced => TRANSIENT,
                ErrorKind::LimitExceeded { .. }
                | ErrorKind::SubnetExhausted
                | ErrorKind::QuotaExceeded => WAITING,
                ErrorKind::Auth | ErrorKind::InvalidRequest => OPERATOR,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use providers::LimitKind;

    fn cloud(kind: ErrorKind, phase: Phase) -> PodError {
        PodError::cloud(phase)(CloudError::new(
            kind,
            "CreateNetworkInterface",
            "Code",
            "msg",
        ))
    }

    #[test]
    fn reason_follows_the_phase() {
        assert_eq!(
            cloud(ErrorKind::Transient, Phase::Allocate).event_reason(),
            "AllocIPFailed"
        );
        assert_eq!(
            cloud(ErrorKind::Transient, Phase::Release).event_reason(),
            "ReleaseENIFailed"
        );
        assert_eq!(
            PodError::NotOurs {
                eni: EniId::new("eni-x")
            }
            .event_reason(),
            "ReleaseENIFailed"
        );
        assert_eq!(
            PodError::BadRequest("x".into()).event_reason(),
            "AllocIPFailed"
        );
    }

    #[test]
    fn throttled_backs_off_harder_than_transient_and_bad_requests_wait_for_a_change() {
        let first = |e: PodError| e.retry().map(|b| b.after(1));
        let throttled = first(cloud(ErrorKind::Throttled, Phase::Allocate)).unwrap();
        let transient = first(cloud(ErrorKind::Transient, Phase::Allocate)).unwrap();
        let exhausted = first(cloud(ErrorKind::SubnetExhausted, Phase::Allocate)).unwrap();
        let auth = first(cloud(ErrorKind::Auth, Phase::Allocate)).unwrap();
        assert!(throttled > transient);
        assert!(exhausted > transient);
        assert!(auth > exhausted);
        assert_eq!(first(PodError::BadRequest("bad quantity".into())), None);
        assert_eq!(
            first(PodError::NotOurs {
                eni: EniId::new("eni-x")
            }),
            None
        );
        assert_eq!(
            cloud(
                ErrorKind::LimitExceeded {
                    what: LimitKind::EnisPerInstance
                },
                Phase::Allocate
            )
            .metric_label(),
            "cloud_limit_exceeded"
        );
    }
}
