//! Bounded polling for the clouds' asynchronous results (an ENI reaching
//! `InUse` or `Available`, a route entry becoming `Available`).

use crate::cloud::Cloud;
use crate::error::{CloudError, CloudResult, ErrorKind};
use crate::model::{Eni, EniFilter, EniStatus};
use ipam::ids::EniId;
use std::time::Duration;

/// How long and how often to poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollPolicy {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(120),
        }
    }
}

/// Poll until the ENI reports `want`. Fails with `NotFound` if the ENI
/// disappears and `Transient` when the bound runs out.
pub async fn wait_eni_status(
    cloud: &dyn Cloud,
    eni: &EniId,
    want: EniStatus,
    policy: PollPolicy,
) -> CloudResult<Eni> {
    let deadline = tokio::time::Instant::now() + policy.timeout;
    let filter = EniFilter {
        eni_ids: vec![eni.clone()],
        ..EniFilter::default()
    };
    loop {
        let found = cloud.describe_enis(&filter).await?;
        let Some(current) = found.into_iter().find(|e| &e.id == eni) else {
            return Err(CloudError::new(
                ErrorKind::NotFound,
                "DescribeNetworkInterfaces",
                "InvalidEniId.NotFound",
                format!("ENI {eni} disappeared while waiting for {want:?}"),
            ));
        };
        if current.status == want {
            return Ok(current);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CloudError::new(
                ErrorKind::Transient,
                "DescribeNetworkInterfaces",
                "WaitTimeout",
                format!(
                    "ENI {eni} still {:?} after {:?}, expected {want:?}",
                    current.status, policy.timeout
                ),
            ));
        }
        tokio::time::sleep(policy.interval).await;
    }
}
