//! The named steps of an ENI allocation and release, and the hook a test
//! (or a fault drill) uses to stop the controller right after one of them.
//! In production no hook is set and reaching a step costs nothing.

use futures::future::BoxFuture;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A point in the life of a pod's ENI, reached right after the named effect
/// is durable (written to kube or accepted by the cloud).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// The release finalizer is on the pod.
    FinalizerAdded,
    /// The cloud created the ENI (tagged, not attached).
    EniCreated,
    /// The cloud accepted the attach request (the ENI is attaching).
    AttachRequested,
    /// The ENI is attached and in use.
    EniInUse,
    /// The allocation annotation is on the pod.
    Annotated,
    /// The cloud accepted the detach request.
    DetachRequested,
    /// The ENI is detached (available).
    EniDetached,
    /// The cloud deleted the ENI (the finalizer is not removed yet).
    EniDeleted,
    /// Shared mode: the cloud assigned secondary IPs to a shared ENI (the
    /// books do not have them yet).
    IpsAssigned,
    /// Shared mode: the cloud unassigned free IPs of a shared ENI.
    IpsUnassigned,
}

impl Step {
    /// The steps of an allocation, in order.
    pub const ALLOCATION: [Step; 5] = [
        Step::FinalizerAdded,
        Step::EniCreated,
        Step::AttachRequested,
        Step::EniInUse,
        Step::Annotated,
    ];
    /// The steps of a release, in order.
    pub const RELEASE: [Step; 3] = [Step::DetachRequested, Step::EniDetached, Step::EniDeleted];
    /// The steps shared mode reaches (`pod` is then the node's name, or the
    /// pod's key for `Annotated`).
    pub const SHARED: [Step; 9] = [
        Step::EniCreated,
        Step::AttachRequested,
        Step::EniInUse,
        Step::IpsAssigned,
        Step::Annotated,
        Step::IpsUnassigned,
        Step::DetachRequested,
        Step::EniDetached,
        Step::EniDeleted,
    ];
}

/// Called at every step with the pod's `namespace/name`. The allocation or
/// release goes on when the returned future completes.
pub trait StepHook: Send + Sync + 'static {
    fn reached(&self, step: Step, pod: &str) -> BoxFuture<'static, ()>;
}

/// Simulates a controller crash right after `step`: cancels the replica's
/// shutdown token and never lets the interrupted work go on, so nothing the
/// controller would have done next happens.
pub struct CrashAt {
    pub step: Step,
    pub replica: CancellationToken,
    fired: parking_lot::Mutex<bool>,
}

impl CrashAt {
    pub fn new(step: Step, replica: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            step,
            replica,
            fired: parking_lot::Mutex::new(false),
        })
    }

    /// Whether the crash has happened.
    pub fn fired(&self) -> bool {
        *self.fired.lock()
    }
}

impl StepHook for CrashAt {
    fn reached(&self, step: Step, pod: &str) -> BoxFuture<'static, ()> {
        if step != self.step {
            return Box::pin(async {});
        }
        tracing::warn!(?step, pod, "injected crash");
        *self.fired.lock() = true;
        self.replica.cancel();
        Box::pin(futures::future::pending())
    }
}

/// Reaches steps through the optional hook.
#[derive(Clone, Default)]
pub struct Steps(Option<Arc<dyn StepHook>>);

impl Steps {
    pub fn new(hook: Option<Arc<dyn StepHook>>) -> Self {
        Self(hook)
    }

    pub async fn reached(&self, step: Step, pod: &str) {
        if let Some(hook) = &self.0 {
            hook.reached(step, pod).await;
        }
    }
}
