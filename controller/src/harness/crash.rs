//! Crash injection: a replica that stops for good right after a chosen step
//! of an ENI allocation or release ([`CrashAt`] cancels its token there, as if
//! the process were killed), and the controller's Lease as a kill leaves it
//! (still held, just renewed) or as a restart of the whole Deployment finds
//! it (gone, so the next replica leads at once).

use super::{FakeCloud, Harness, Replica};
use crate::config::Config;
use crate::eni::{CrashAt, Step, StepHook};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

impl<C: FakeCloud> Harness<C> {
    /// Start a replica with `config` that stops for good right after `step`
    /// (see [`CrashAt::fired`]).
    pub async fn start_replica_crashing_at(
        &mut self,
        config: Config,
        step: Step,
    ) -> anyhow::Result<(Replica, Arc<CrashAt>)> {
        let token = CancellationToken::new();
        let crash = CrashAt::new(step, token.clone());
        let hook = crash.clone() as Arc<dyn StepHook>;
        let replica = self.start_replica_with(config, token, Some(hook)).await?;
        Ok((replica, crash))
    }

    /// Stop every replica and delete the Lease `config` names: a restart of
    /// the whole Deployment, the next replica leads at once.
    pub async fn kill_replicas(&self, config: &Config) {
        self.stop_replicas();
        ControllerLease::of(config).forget(self.client()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Lease replicas started with a config elect their leader on.
#[derive(Clone, Debug)]
pub struct ControllerLease {
    pub name: String,
    pub namespace: String,
}

impl ControllerLease {
    /// Named as `run::start` names it.
    pub fn of(config: &Config) -> ControllerLease {
        let le = &config.controller.leader_election;
        ControllerLease {
            name: le.lease_name.clone(),
            namespace: le
                .namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "kube-system".into()),
        }
    }

    fn api(&self, client: &kube::Client) -> Api<Lease> {
        Api::namespaced(client.clone(), &self.namespace)
    }

    /// Who holds it, if it exists and anyone does.
    pub async fn holder(&self, client: &kube::Client) -> anyhow::Result<Option<String>> {
        Ok(self
            .api(client)
            .get_opt(&self.name)
            .await?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity))
    }

    /// Delete it (gone already is fine).
    pub async fn forget(&self, client: &kube::Client) {
        let _ = self
            .api(client)
            .delete(&self.name, &DeleteParams::default())
            .await;
    }

    /// A replica stopped by a crash hook hands its Lease back; a killed
    /// process would not. Wait (up to `deadline`) for `holder` to let go, then
    /// put the Lease back as the kill would have left it: held by `holder`,
    /// just renewed.
    pub async fn leave_as_a_kill_would(
        &self,
        client: &kube::Client,
        holder: &str,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            match self.holder(client).await? {
                Some(h) if h == holder => {
                    if started.elapsed() > deadline {
                        anyhow::bail!("the stopped replica {holder} never handed its Lease back");
                    }
                }
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let now = chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        self.api(client)
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({
                    "spec": {"holderIdentity": holder, "renewTime": now}
                })),
            )
            .await?;
        Ok(())
    }
}
